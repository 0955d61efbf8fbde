"""Learning curves of a toy training run, measured strictly.

    python -m unifusion_core.toy curve RUN_DIR [--vlm VLM] [--n 60] [--verifi] [--n-edit 28]

The trainer keeps exported checkpoints every ``--snapshot_every`` steps in RUN_DIR/snapshots/. This
scores each one not yet scored on a small fixed probe set (fresh scenes with canonical prompts, one to
three objects, never used in training) with the strict metric, appends the figures to
RUN_DIR/curve.csv and draws RUN_DIR/curve.png (strict figures and the training loss of log.csv over
steps). It can run beside the training (on the other core) or afterwards; rerunning scores only new
snapshots.

Canonical T2I saturates early in a staged run, so the probe also holds ``n_edit`` held-out edit
instructions (the kinds in turn, fresh scenes): ``edit_both`` is the share applied with every
untouched object kept, through VERIFI with the VLM's own rewrite; ``edit_both_true`` the same with
the true rewrite teacher-forced (the DiT's share alone). Rows scored before these columns existed
leave them empty.
"""
from __future__ import annotations

import csv
import logging
import re
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)
FIELDS = ("step", "exact", "f1", "floor_f1", "colour", "shape", "size", "position", "read_per_image",
          "edit_both", "edit_both_true")
EDIT_BASE = 424_242  # the edit probe's scenes: their own seed, apart from the quality report's


def _scored(path: Path) -> dict[int, dict]:
    if not path.is_file():
        return {}
    with path.open(newline="") as f:
        return {int(r["step"]): r for r in csv.DictReader(f)}


def score_snapshots(run_dir, vlm=None, n: int = 60, verifi: bool = False, n_edit: int = 28) -> Path:
    import torch

    from ..pipeline import UniFusionPipeline
    from . import quality as q
    from .shipped import VLM_DIR
    from .vlm_train import trained_edit_rewrite

    run_dir = Path(run_dir)
    out, done = run_dir / "curve.csv", _scored(run_dir / "curve.csv")
    snaps = sorted(run_dir.glob("snapshots/step_*.safetensors"))
    scenes = q.t2i_scenes(n, tag="curve")
    edits = q.edit_examples(n_edit, base=EDIT_BASE, edit_rewrite=trained_edit_rewrite(vlm or VLM_DIR))
    encoder = None
    for snap in snaps:
        step = int(re.search(r"step_(\d+)", snap.name).group(1))
        if step in done:
            continue
        with torch.no_grad():
            pipe = UniFusionPipeline.from_files(snap, encoder or vlm or VLM_DIR)
            encoder = pipe.vlm
            s = q.t2i_set(pipe, [x[0] for x in scenes], [x[1] for x in scenes], verifi=verifi)
            e = q.edit_set(pipe, edits, true_rewrite=True) if edits else None
        row = {"step": step, "exact": np.mean(q.exact(s.scores)), "f1": np.mean(q.f1(s.scores)),
               "floor_f1": np.mean(q.f1(s.floor)),
               **{a: q.attribute_accuracy(s.scores, k) for k, a in enumerate(q.ATTRS)},
               "read_per_image": np.mean([x.n_read for x in s.scores])}
        if e is not None:
            row["edit_both"] = np.mean(q.applied_and_preserved(e.verdicts))
            row["edit_both_true"] = np.mean(q.applied_and_preserved(e.true_rewrite))
        row = {k: (f"{v:.4f}" if isinstance(v, (float, np.floating)) else v) for k, v in row.items()}
        new = not out.exists()
        with out.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=FIELDS)
            if new:
                w.writeheader()
            w.writerow(row)
        log.info("step %d: %s", step, row)
    rows = sorted(_scored(out).values(), key=lambda r: int(r["step"]))
    if rows:  # keep the file in step order (a snapshot may be added before earlier ones)
        with out.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=FIELDS)
            w.writeheader()
            w.writerows(rows)
    plot(run_dir)
    return out


def plot(run_dir) -> Path:
    """RUN_DIR/curve.png: exact scene, object F1 (with its chance floor) and per-attribute accuracy
    (0..1, left) and the training loss (log scale, right) over steps."""
    from PIL import Image, ImageDraw

    run_dir = Path(run_dir)
    rows = sorted(_scored(run_dir / "curve.csv").values(), key=lambda r: int(r["step"]))
    losses = []
    if (run_dir / "log.csv").is_file():
        with (run_dir / "log.csv").open(newline="") as f:
            losses = [(int(r["step"]), float(r["loss"])) for r in csv.DictReader(f)]
    W, H, L, B = 760, 360, 50, 40
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    steps = [int(r["step"]) for r in rows] + [s for s, _ in losses]
    top = max(steps) if steps else 1

    def xy(step, frac):
        return L + (W - 2 * L) * step / top, H - B - (H - 2 * B) * frac

    d.rectangle([L, B, W - L, H - B], outline="black")
    colours = {"exact": (200, 0, 0), "f1": (0, 0, 200), "floor_f1": (150, 150, 150), "colour": (230, 140, 0),
               "shape": (0, 150, 0), "size": (150, 0, 150), "position": (0, 150, 150),
               "edit_both": (255, 0, 120), "edit_both_true": (120, 120, 0)}
    x = L + 5
    for name, c in colours.items():
        pts = [xy(int(r["step"]), float(r[name])) for r in rows if r.get(name) not in (None, "", "nan")]
        if len(pts) > 1:
            d.line(pts, fill=c, width=2)
        for p in pts:
            d.ellipse([p[0] - 2, p[1] - 2, p[0] + 2, p[1] + 2], fill=c)
        d.text((x, 8), name, fill=c)
        x += 6 * len(name) + 12
    if losses:
        lo, hi = np.log10(min(v for _, v in losses)), np.log10(max(v for _, v in losses))
        pts = [xy(s, (np.log10(v) - lo) / max(hi - lo, 1e-6)) for s, v in losses]
        d.line(pts, fill=(0, 0, 0), width=1)
        d.text((W - L + 4, B), f"loss {10 ** hi:.3f}", fill="black")
        d.text((W - L + 4, H - B - 10), f"{10 ** lo:.3f}", fill="black")
    for frac in (0.0, 0.5, 1.0):
        d.text((8, xy(0, frac)[1] - 6), f"{frac:.1f}", fill="black")
    d.text((L, H - B + 8), "0", fill="black")
    d.text((W - L - 40, H - B + 8), f"step {top}", fill="black")
    d.text((L, 22), "strict figures on the probe set (left axis) and training loss (black, log, right)", fill="black")
    img.save(run_dir / "curve.png")
    return run_dir / "curve.png"
