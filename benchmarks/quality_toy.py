"""Quality of the shipped toy models, measured the way the paper measures (fact accuracy, DPG-style).

    .venv/bin/python benchmarks/quality_toy.py [--n 100] [--vlm-n 200]

Every figure is the mean over fresh seeded examples (seeds never used in training), scored by the
model-free evaluator of unifusion_core.toy (unifusion_core/toy/quality.py). One line per figure,
`name = value (goal OP threshold)`, machine first; then the ablations at equal budget (the fp16 copies
in unifusion_core/toy/models/ablations/ written by `make toy-train`) next to the paper's corresponding deltas.
Exits 0 even when a goal is missed.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import machine  # noqa: E402
from unifusion_core.pipeline import UniFusionPipeline  # noqa: E402
from unifusion_core.toy import quality as q  # noqa: E402
from unifusion_core.toy.recipe import ABLATIONS_DIR  # noqa: E402
from unifusion_core.toy.shipped import CHECKPOINT, VLM_DIR  # noqa: E402

PAPER = {  # the paper's corresponding deltas (shared/reference/paper.md §6)
    "lap_vs_last_layer": "LAP 0.685 vs last layer 0.658 VQAScore (+0.027, GenAI-Bench, Llama-3.1-8B)",
    "verifi_vs_raw": "+VERIFI 0.786 vs LAP 0.766 VQAScore (+0.020, GenAI-Bench, InternVL-2.5-8B)",
    "edit_ft_t2i": "UniFusion-Edit > Base by over +2 pp DPG micro avg",
}


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100, help="examples per generation figure")
    ap.add_argument("--vlm-n", type=int, default=200,
                    help="scenes per VLM caption / rewrite figure (0 skips them: `python -m unifusion_core.toy "
                         "eval-vlm` prints the same figures)")
    ap.add_argument("--vlm", default=str(VLM_DIR))
    ap.add_argument("--checkpoint", default=str(CHECKPOINT))
    ap.add_argument("--ablations", default=str(ABLATIONS_DIR))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ablations-only", action="store_true", help="only the ablation table (and the main "
                    "model's T2I figure it compares with)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    t0, n = time.perf_counter(), args.n
    print(machine())
    pipe = UniFusionPipeline.from_files(args.checkpoint, args.vlm)
    v = q.t2i_accuracy(pipe, n, verifi=True)
    if not args.ablations_only:
        print(f"evaluator_fact_accuracy_clean = {pct(q.evaluator_accuracy(200))}  (goal >= 99%)  [200 renders]")
        print(f"evaluator_fact_accuracy_mild = {pct(q.evaluator_accuracy(200, noise=0.03, blur=0.5))}  (goal >= 95%)  "
              f"[200 renders, blur 0.5 px + noise 0.03]")
        if args.vlm_n:
            from unifusion_core.toy.vlm_train import evaluate as evaluate_vlm

            vlm = evaluate_vlm(args.vlm, n=args.vlm_n, tasks=("caption", "t2i", "edit", "compose"))
            print(f"vlm_caption_fact_accuracy = {pct(vlm['caption']['fact_accuracy'])}  (goal >= 98%)  "
                  f"[{args.vlm_n} scenes, greedy captions parsed back]")
            for task in ("t2i", "edit", "compose"):
                print(f"vlm_{task}_rewrite_fact_accuracy = {pct(vlm[task]['fact_accuracy'])}  (goal: report)  "
                      f"[{args.vlm_n} held-out {task} prompts rewritten, parsed back]")
        r = q.t2i_accuracy(pipe, n, verifi=False)
        canon = q.t2i_accuracy(pipe, n, verifi=False, canonical=True)
        held = q.t2i_accuracy(pipe, n, split="heldout", verifi=False)
        held_v = q.t2i_accuracy(pipe, n, split="heldout", verifi=True)
        print(f"t2i_fact_accuracy_verifi = {pct(v)}  (goal >= 90%)  [{n} train-split paraphrases, VLM rewrite]")
        print(f"t2i_fact_accuracy_raw = {pct(r)}  (goal >= 80%)  [same prompts, no rewrite]")
        print(f"t2i_heldout_minus_canonical_raw = {100 * (held - canon):+.1f} pts  (goal >= -5 pts)  "
              f"[held-out paraphrases {pct(held)} vs canonical {pct(canon)}, raw prompts]")
        print(f"t2i_heldout_minus_canonical_verifi = {100 * (held_v - canon):+.1f} pts  (goal >= -5 pts)  "
              f"[held-out paraphrases with VERIFI {pct(held_v)} vs canonical raw {pct(canon)}]")
        e, k = q.edit_scores(pipe, n)
        print(f"edit_target_facts = {pct(e)}  (goal >= 85%)  [{n} held-out edit instructions, VERIFI]")
        print(f"edit_preservation = {pct(k)}  (goal >= 90%)")
        c = q.compose_accuracy(pipe, n)
        print(f"compose_two_refs_fact_accuracy = {pct(c)}  (goal >= 60%)  [zero-shot for the DiT, VERIFI]")
        c_raw = q.compose_accuracy(pipe, n, verifi=False)
        print(f"compose_two_refs_fact_accuracy_raw = {pct(c_raw)}  (goal: report)  [no rewrite]")
    abl = Path(args.ablations)
    if (abl / "t2i.safetensors").is_file():
        def t2i_of(name, verifi):
            path = abl / f"{name}.safetensors"
            if not path.is_file():
                return None
            return q.t2i_accuracy(UniFusionPipeline.from_files(path, pipe.vlm), n, verifi=verifi)

        def row(label, a, b, paper):
            if a is None or b is None:
                return f"| {label} | n/a (no {'model' if a is None else 'ablation'} file) | n/a | {paper} |"
            return f"| {label} | {pct(a)} vs {pct(b)} | {100 * (a - b):+.1f} pts | {paper} |"

        base_v, base_r = t2i_of("t2i", True), t2i_of("t2i", False)
        last_v, raw_only = t2i_of("ablation_last_layer", True), t2i_of("ablation_raw_only", False)
        budget = json.loads((abl / "recipe.json").read_text())["args"] if (abl / "recipe.json").is_file() else {}
        print(f"\nablations at equal budget ({budget.get('t2i_steps', '?')} steps x batch "
              f"{budget.get('batch_size', '?')}, same data and seed), T2I fact accuracy on {n} paraphrases:")
        print("| comparison | toy (this run) | delta | paper |")
        print("|---|---|---|---|")
        print(row("LAP vs last-layer pooler (VERIFI)", base_v, last_v, PAPER["lap_vs_last_layer"]))
        print(row("VERIFI/raw mix with VERIFI vs raw-only training", base_v, raw_only, PAPER["verifi_vs_raw"]))
        print(row("same mixed model, raw prompts vs raw-only training", base_r, raw_only, "-"))
        print(row("T2I after vs before the edit fine-tune (VERIFI)", v, base_v, PAPER["edit_ft_t2i"]))
    else:
        print(f"ablations: n/a  [no {abl / 't2i.safetensors'}; `make toy-train` writes them]")
    print(f"\nquality report finished in {(time.perf_counter() - t0) / 60:.1f} min")


if __name__ == "__main__":
    main()
