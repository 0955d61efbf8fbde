"""Quality of the shipped toy models, measured the way the paper measures (fact accuracy, DPG-style).

    .venv/bin/python benchmarks/quality_toy.py [--n 50] [--vlm models/toy/unifusion-toy-vlm]
        [--checkpoint models/toy/unifusion-toy.safetensors] [--ablation NAME=PATH ...]

Every figure is the mean over --n fresh seeded examples (held-out seeds, never used in training),
scored by the model-free evaluator of unifusion_core.toy. One line per figure, `name = value
(goal OP threshold)`, machine first; exits 0 even when a goal is missed.
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import machine  # noqa: E402
from unifusion_core.pipeline import UniFusionPipeline  # noqa: E402
from unifusion_core.toy import evaluator, tasks  # noqa: E402
from unifusion_core.toy.world import Scene, render  # noqa: E402
from unifusion_core.vlm.sampling import Sampling  # noqa: E402

GREEDY = Sampling(max_new_tokens=96)  # canonical descriptions are < 60 tokens

SEED = 987_654  # evaluation seeds: disjoint from the training recipe's


def _scene(js) -> Scene:
    return Scene.from_json(js)


def _img(pipe, cond, mask, seed, size):
    return pipe.sample(cond, mask, width=size, height=size, seed=seed)[0]  # (H, W, 3) in 0..1


def t2i_accuracy(pipe, n, size, split="train", verifi=True, canonical=False) -> float:
    rng, accs = random.Random(f"{SEED}-t2i-{split}"), []
    for i in range(n):
        ex = tasks.t2i_example(rng, split, canonical_share=1.0 if canonical else 0.0)
        if verifi:
            cond, mask, _ = pipe.encode_verifi([ex["prompts"][0]], sampling=GREEDY)
        else:
            cond, mask = pipe.encode([ex["prompts"][0]])
        accs.append(evaluator.evaluate_image(_img(pipe, cond, mask, i, size), _scene(ex["target"])).accuracy)
    return sum(accs) / n


def edit_scores(pipe, n, size, verifi=True) -> tuple[float, float]:
    rng, edit, keep = random.Random(f"{SEED}-edit"), [], []
    for i in range(n):
        ex = tasks.edit_example(rng, split="heldout")
        src = _scene(ex["refs"][0])
        ref = render(src, size)
        if verifi:
            cond, mask, _ = pipe.encode_verifi([ex["prompts"][0]], [[ref]], sampling=GREEDY)
        else:
            cond, mask = pipe.encode([ex["prompts"][0]], [[ref]])
        s = evaluator.evaluate_image(_img(pipe, cond, mask, i, size), _scene(ex["target"]), src)
        edit.append(s.edit)
        keep.append(s.preservation)
    return sum(edit) / n, sum(keep) / n


def compose_accuracy(pipe, n, size) -> float:
    rng, accs = random.Random(f"{SEED}-compose"), []
    for i in range(n):
        ex = tasks.compose_example(rng)
        refs = [render(_scene(r), size) for r in ex["refs"]]
        cond, mask, _ = pipe.encode_verifi([ex["prompts"][0]], [refs], sampling=GREEDY)
        accs.append(evaluator.evaluate_image(_img(pipe, cond, mask, i, size), _scene(ex["target"])).accuracy)
    return sum(accs) / n


def evaluator_accuracy(n, size) -> float:
    rng = random.Random(f"{SEED}-eval")
    accs = []
    for i in range(n):
        scene = tasks.t2i_example(rng)["target"]
        accs.append(evaluator.evaluate_image(render(_scene(scene), size, seed=i), _scene(scene)).accuracy)
    return sum(accs) / n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--vlm", default=str(ROOT / "models/toy/unifusion-toy-vlm"))
    ap.add_argument("--checkpoint", default=str(ROOT / "models/toy/unifusion-toy.safetensors"))
    ap.add_argument("--ablation", action="append", default=[], help="NAME=PATH of another checkpoint (T2I only)")
    args = ap.parse_args()
    torch.manual_seed(0)
    print(machine())
    n, size = args.n, args.size
    print(f"evaluator_fact_accuracy = {100 * evaluator_accuracy(200, size):.1f}%  (goal >= 99%)  [200 clean renders]")
    try:
        from unifusion_core.toy.vlm_train import evaluate as evaluate_vlm

        cap = evaluate_vlm(args.vlm, n=n, tasks=("caption",))["caption"]["fact_accuracy"]
        print(f"vlm_caption_fact_accuracy = {100 * cap:.1f}%  (goal >= 98%)  [{n} scenes, greedy captions parsed back]")
    except ImportError:
        print("vlm_caption_fact_accuracy = n/a  (goal >= 98%)  [toy VLM trainer not installed]")
    pipe = UniFusionPipeline.from_files(args.checkpoint, args.vlm)
    with torch.no_grad():
        v = t2i_accuracy(pipe, n, size, verifi=True)
        r = t2i_accuracy(pipe, n, size, verifi=False)
        canon = t2i_accuracy(pipe, n, size, verifi=False, canonical=True)
        held = t2i_accuracy(pipe, n, size, split="heldout", verifi=False)
        print(f"t2i_fact_accuracy_verifi = {100 * v:.1f}%  (goal >= 90%)  [{n} paraphrased prompts]")
        print(f"t2i_fact_accuracy_raw = {100 * r:.1f}%  (goal >= 80%)  [same prompts, no rewrite]")
        print(f"t2i_heldout_minus_canonical = {100 * (held - canon):+.1f} pts  (goal >= -5 pts)  "
              f"[held-out paraphrases {100 * held:.1f}% vs canonical {100 * canon:.1f}%, raw prompts]")
        e, k = edit_scores(pipe, n, size)
        print(f"edit_target_facts = {100 * e:.1f}%  (goal >= 85%)  [{n} held-out edit instructions, VERIFI]")
        print(f"edit_preservation = {100 * k:.1f}%  (goal >= 90%)")
        c = compose_accuracy(pipe, n, size)
        print(f"compose_two_refs_fact_accuracy = {100 * c:.1f}%  (goal >= 60%)  [zero-shot: never trained on two refs]")
        for spec in args.ablation:
            name, path = spec.split("=", 1)
            other = UniFusionPipeline.from_files(path, pipe.vlm)
            acc = t2i_accuracy(other, n, size, verifi=other.cfg.system_prompts != {} and name != "raw_only")
            print(f"ablation_{name}_t2i_fact_accuracy = {100 * acc:.1f}%  (goal: report)  [vs main {100 * v:.1f}%]")


if __name__ == "__main__":
    main()
