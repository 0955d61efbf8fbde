"""Quality of the shipped toy models, measured strictly, every figure next to its baselines.

    .venv/bin/python benchmarks/quality_toy.py [--n 200] [--out quality_out]      (`make quality`)

Strict scoring and baselines: unifusion_core/toy/quality.py. Each line is
`name = value [95% interval] | baseline(s) | margin over the best baseline (goal)`, all measured in
this run on the same examples (fresh seeds, never used in training). Writes the text to
OUT/report.txt and a chart of the headline figures with their baselines to OUT/quality.png.
Exits 0 even when a goal is missed.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import machine  # noqa: E402
from unifusion_core.pipeline import UniFusionPipeline  # noqa: E402
from unifusion_core.toy import quality as q  # noqa: E402
from unifusion_core.toy.language import EDIT_KINDS  # noqa: E402
from unifusion_core.toy.recipe import ABLATIONS_DIR  # noqa: E402
from unifusion_core.toy.shipped import CHECKPOINT, VLM_DIR  # noqa: E402
from unifusion_core.toy.vlm_train import trained_edit_rewrite  # noqa: E402

GOALS = {"exact_1": 0.95, "exact_2": 0.85, "exact_3": 0.70, "f1": 0.95, "edit": 0.90, "compose_f1": 0.70}


class Report:
    def __init__(self):
        self.lines, self.chart = [], []  # chart: (label, value, [(baseline name, value)], goal)

    def __call__(self, text=""):
        print(text, flush=True)
        self.lines.append(text)

    def figure(self, name, values, baselines: dict, goal: str = "", chart_goal=None):
        """One line: the figure with its interval, each baseline, the margin over the best baseline."""
        floors = {b: v for b, v in baselines.items() if not b.startswith("ceiling")}  # a ceiling is no bar to beat
        best = max(floors.items(), key=lambda kv: np.mean(kv[1])) if floors else None
        parts = [f"{name} = {q.fmt(values)}"]
        parts += [f"{b} {q.fmt(v)}" for b, v in baselines.items()]
        if best is not None:
            parts.append(f"margin over {best[0]} {q.fmt_delta(values, best[1])}")
        self(" | ".join(parts) + (f"  ({goal})" if goal else ""))
        self.chart.append((name, float(np.mean(values)),
                           [(b, float(np.mean(v))) for b, v in baselines.items()], chart_goal))


def chart(rows, path: Path):
    """Horizontal bars (the figure) with baseline ticks (grey: floor / do nothing, green: ceiling) and
    the goal (red), 0..100%."""
    from PIL import Image, ImageDraw

    label_w, bar_w, row_h = 330, 400, 22
    img = Image.new("RGB", (label_w + bar_w + 70, 30 + row_h * len(rows)), "white")
    d = ImageDraw.Draw(img)
    d.text((6, 6), "strict quality (bar) | grey: floor / do nothing | green: ceiling | red: goal", fill="black")
    for i, (name, value, bases, goal) in enumerate(rows):
        y = 30 + i * row_h
        d.text((6, y + 4), name[:52], fill="black")
        d.rectangle([label_w, y + 3, label_w + bar_w, y + row_h - 3], outline=(200, 200, 200))
        d.rectangle([label_w, y + 3, label_w + int(bar_w * max(0.0, min(1.0, value))), y + row_h - 3],
                    fill=(70, 110, 200))
        for b, v in bases:
            x = label_w + int(bar_w * max(0.0, min(1.0, v)))
            d.line([x, y, x, y + row_h], fill=(0, 160, 0) if b.startswith("ceiling") else (120, 120, 120), width=3)
        if goal is not None:
            x = label_w + int(bar_w * goal)
            d.line([x, y, x, y + row_h], fill=(220, 0, 0), width=2)
        d.text((label_w + bar_w + 6, y + 4), f"{100 * value:.1f}%", fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def t2i_section(rep, pipe, n, name="model"):
    scenes = {c: q.t2i_scenes(n, (c, c)) for c in (1, 2, 3)}
    mixed = q.t2i_scenes(n)
    rep(f"\n## Text-to-image ({name}; canonical prompts unless stated; {n} fresh scenes per line)")
    sets = {}
    for c in (1, 2, 3):
        s = q.t2i_set(pipe, [x[0] for x in scenes[c]], [x[1] for x in scenes[c]], verifi=True)
        sets[c] = s
        rep.figure(f"t2i_exact_scene_{c}obj_verifi", q.exact(s.scores),
                   {"floor": q.exact(s.floor), "ceiling": q.exact(s.ceiling)},
                   f"goal >= {100 * GOALS[f'exact_{c}']:.0f}%", GOALS[f"exact_{c}"])
    v = q.t2i_set(pipe, [x[0] for x in mixed], [x[1] for x in mixed], verifi=True)
    r = q.t2i_set(pipe, [x[0] for x in mixed], [x[1] for x in mixed], verifi=False)
    h = q.t2i_set(pipe, [x[0] for x in mixed], [x[2] for x in mixed], verifi=True)
    rep.figure("t2i_exact_scene_1to3obj_verifi", q.exact(v.scores), {"floor": q.exact(v.floor), "ceiling": q.exact(v.ceiling)})
    rep.figure("t2i_object_f1_verifi", q.f1(v.scores), {"floor": q.f1(v.floor), "ceiling": q.f1(v.ceiling)},
               f"goal >= {100 * GOALS['f1']:.0f}%", GOALS["f1"])
    rep(f"t2i_object_precision_verifi = {q.fmt([s.precision for s in v.scores])} | "
        f"recall {q.fmt([s.recall for s in v.scores])} | read objects per image "
        f"{np.mean([s.n_read for s in v.scores]):.2f} vs {np.mean([s.n_target for s in v.scores]):.2f} asked")
    rep.figure("t2i_object_f1_raw", q.f1(r.scores), {"floor": q.f1(r.floor), "ceiling": q.f1(r.ceiling)})
    rep.figure("t2i_exact_scene_raw", q.exact(r.scores), {"floor": q.exact(r.floor)})
    rep(f"t2i_verifi_minus_raw (paired, same scenes and noise): exact {q.fmt_delta(q.exact(v.scores), q.exact(r.scores))}"
        f", object F1 {q.fmt_delta(q.f1(v.scores), q.f1(r.scores))}")
    rep.figure("t2i_object_f1_heldout_phrasing_verifi", q.f1(h.scores), {"floor": q.f1(h.floor)})
    rep(f"t2i_heldout_minus_canonical_verifi (paired, same scenes and noise): exact "
        f"{q.fmt_delta(q.exact(h.scores), q.exact(v.scores))}, object F1 {q.fmt_delta(q.f1(h.scores), q.f1(v.scores))}"
        f"  (goal: within 3 pts)")
    rep(f"t2i_lenient_fact_share_verifi (old metric, secondary) = {q.fmt(v.lenient)} | floor-free, see issue 11")
    rep("\nper attribute x object count (VERIFI, canonical): accuracy over assigned object pairs; exact; F1")
    rep("| objects | colour | shape | size | position | exact scene | object F1 |")
    rep("|---|---|---|---|---|---|---|")
    for c in (1, 2, 3):
        s = sets[c].scores
        accs = " | ".join(f"{100 * q.attribute_accuracy(s, k):.1f}%" for k in range(4))
        rep(f"| {c} | {accs} | {100 * np.mean(q.exact(s)):.1f}% | {100 * np.mean(q.f1(s)):.1f}% |")
    return v


def edit_section(rep, pipe, n, vlm_folder):
    exs = q.edit_examples(n, edit_rewrite=trained_edit_rewrite(vlm_folder))
    e = q.edit_set(pipe, exs, true_rewrite=True)
    rep(f"\n## Edits ({n} held-out instructions, {n // len(set(e.kinds))} per kind, VERIFI; "
        "applied = asked change visible, preserved = untouched objects exact; "
        "true rewrite = the DiT conditioned on the right rewrite, teacher-forced: the DiT's share alone)")
    rep("| kind | applied | do nothing | ceiling | preserved | do nothing | ceiling | both | both, true rewrite |")
    rep("|---|---|---|---|---|---|---|---|---|")

    both = q.applied_and_preserved
    for kind in sorted(set(e.kinds)):
        idx = [i for i, k in enumerate(e.kinds) if k == kind]

        def col(vs, attr):
            return q.fmt([float(getattr(vs[i], attr)) for i in idx])
        rep(f"| {kind} | {col(e.verdicts, 'applied')} | {col(e.unchanged, 'applied')} | {col(e.ceiling, 'applied')} | "
            f"{col(e.verdicts, 'preserved')} | {col(e.unchanged, 'preserved')} | {col(e.ceiling, 'preserved')} | "
            f"{q.fmt(both(e.verdicts, idx))} | {q.fmt(both(e.true_rewrite, idx))} |")
    rep.figure("edit_applied_and_preserved_all_kinds", both(e.verdicts),
               {"do nothing": both(e.unchanged), "ceiling": both(e.ceiling)},
               f"goal >= {100 * GOALS['edit']:.0f}% per kind, applied and preserved each", GOALS["edit"])
    rep.figure("edit_applied_and_preserved_true_rewrite", both(e.true_rewrite),
               {"VLM rewrite": both(e.verdicts), "ceiling": both(e.ceiling)},
               "the DiT alone; the gap to the VLM-rewrite line is the VLM's share")


def compose_section(rep, pipe, n):
    c = q.compose_set(pipe, n)
    rep(f"\n## Zero-shot two-reference composition ({n} examples, VERIFI; the DiT never trained on two references)")
    rep.figure("compose_object_f1", q.f1(c.scores), {"return ref 1": q.f1(c.refs[0]), "return ref 2": q.f1(c.refs[1]),
                                                    "ceiling": q.f1(c.ceiling)},
               f"goal >= {100 * GOALS['compose_f1']:.0f}% and >= 20 pts over both references", GOALS["compose_f1"])
    rep.figure("compose_exact_scene", q.exact(c.scores), {"return ref 1": q.exact(c.refs[0]),
                                                          "return ref 2": q.exact(c.refs[1])})


def vlm_section(rep, vlm, n):
    rep(f"\n## Toy VLM ({n} fresh scenes per line, greedy)")
    cap = q.vlm_texts(vlm, "caption", n)
    rep(f"vlm_caption_exact = {q.fmt([float(t.exact) for t in cap])} | per-attribute accuracy "
        + ", ".join(f"{a} {100 * q.attribute_accuracy([t.score for t in cap], k):.1f}%" for k, a in enumerate(q.ATTRS))
        + "  (goal: attributes >= 99%)")
    for task, phrasing, goal in (("t2i", "canonical", ">= 98%"), ("t2i", "heldout", ">= 90%"),
                                 ("edit", "train", "report"), ("edit", "heldout", "report")):
        ts = q.vlm_texts(vlm, task, n, phrasing)
        rep(f"vlm_{task}_rewrite_exact_{phrasing} = {q.fmt([float(t.exact) for t in ts])} | invented objects "
            f"{q.fmt([float(t.invented) for t in ts])} | dropped objects {q.fmt([float(t.dropped) for t in ts])}"
            " | attributes of matched objects "
            + ", ".join(f"{a} {100 * q.attribute_accuracy([t.score for t in ts], k):.1f}%" for k, a in enumerate(q.ATTRS))
            + f"  (goal: exact {goal}, invented <= 1%)")


def ablation_section(rep, vlm, n, folder: Path):
    names = {"t2i": "stage 1 (LAP, VERIFI/raw mix)", "ablation_last_layer": "last-layer pooler",
             "ablation_raw_only": "raw-only training"}
    paths = {k: folder / f"{k}.safetensors" for k in names}
    if not paths["t2i"].is_file():
        rep(f"\nablations: n/a [no {paths['t2i']}]")
        return
    scenes = q.t2i_scenes(n, tag="ablation")
    targets, prompts = [x[0] for x in scenes], [x[1] for x in scenes]
    res = {}
    for k, p in paths.items():
        if p.is_file():
            pipe = UniFusionPipeline.from_files(p, vlm)
            res[k] = q.t2i_set(pipe, targets, prompts, verifi=k != "ablation_raw_only")
    rep(f"\n## Ablations at equal budget (the fp16 files in {folder.relative_to(ROOT) if folder.is_relative_to(ROOT) else folder};"
        f" {n} canonical prompts, same scenes and noise; paired deltas)")
    rep("| comparison | object F1 | delta F1 | exact scene | delta exact |")
    rep("|---|---|---|---|---|")
    for a, b, label in (("t2i", "ablation_last_layer", "LAP vs last-layer pooler (VERIFI)"),
                        ("t2i", "ablation_raw_only", "VERIFI/raw mix with VERIFI vs raw-only training")):
        if a in res and b in res:
            A, B = res[a].scores, res[b].scores
            rep(f"| {label} | {q.fmt(q.f1(A))} vs {q.fmt(q.f1(B))} | {q.fmt_delta(q.f1(A), q.f1(B))} | "
                f"{q.fmt(q.exact(A))} vs {q.fmt(q.exact(B))} | {q.fmt_delta(q.exact(A), q.exact(B))} |")
    rep(f"chance floor of these sets (object F1): " + ", ".join(f"{k} {q.fmt(q.f1(s.floor))}" for k, s in res.items()))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="scenes per T2I line")
    ap.add_argument("--n-edit", type=int, default=140, help="edit examples (equal per kind; 0 skips them)")
    ap.add_argument("--n-compose", type=int, default=100, help="composition examples (0 skips them)")
    ap.add_argument("--vlm-n", type=int, default=200, help="scenes per VLM line (0 skips them)")
    ap.add_argument("--ablation-n", type=int, default=200, help="scenes per ablation model (0 skips them)")
    ap.add_argument("--vlm", default=str(VLM_DIR))
    ap.add_argument("--checkpoint", default=str(CHECKPOINT))
    ap.add_argument("--ablations", default=str(ABLATIONS_DIR))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="quality_out", help="folder for report.txt and quality.png")
    ap.add_argument("--only-vlm", action="store_true", help="only the toy VLM section")
    args = ap.parse_args()
    kinds = len(EDIT_KINDS)
    if args.n < 1 and not args.only_vlm:
        ap.error(f"--n should be at least 1 (scenes per T2I line), found {args.n}")
    if args.n_edit and args.n_edit < kinds:
        ap.error(f"--n-edit should be 0 (no edits) or at least {kinds} (one per edit kind), found {args.n_edit}")
    torch.set_num_threads(args.threads)
    t0, rep = time.perf_counter(), Report()
    rep(machine())
    rep(f"checkpoint: {args.checkpoint}; VLM: {args.vlm}; intervals: bootstrap 95% over examples")
    pipe = UniFusionPipeline.from_files(args.checkpoint, args.vlm)
    if not args.only_vlm:
        t2i_section(rep, pipe, args.n)
        if args.n_edit:
            edit_section(rep, pipe, args.n_edit, args.vlm)
        if args.n_compose:
            compose_section(rep, pipe, args.n_compose)
    if args.vlm_n:
        vlm_section(rep, pipe.vlm, args.vlm_n)
    if args.ablation_n and not args.only_vlm:
        ablation_section(rep, pipe.vlm, args.ablation_n, Path(args.ablations))
    rep(f"\nquality report finished in {(time.perf_counter() - t0) / 60:.1f} min")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.txt").write_text("\n".join(rep.lines) + "\n")
    chart(rep.chart, out / "quality.png")
    print(f"wrote {out / 'report.txt'} and {out / 'quality.png'}")


if __name__ == "__main__":
    main()
