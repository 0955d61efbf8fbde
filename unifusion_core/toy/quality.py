"""Quality of a toy UniFusion model, measured the way the paper measures (DPG-style fact accuracy),
shared by ``benchmarks/quality_toy.py`` (the report) and ``tests/test_toy_quality.py`` (its fast
subset on the shipped model).

Every figure is a mean over ``n`` fresh seeded examples (seed strings disjoint from the training
recipe's integer seeds), generated in chunks (one VERIFI / encode call and one batched sampler run per
chunk) with the showcase sampler settings, and scored by the model-free evaluator.
"""
from __future__ import annotations

import random

import torch

from . import evaluator, tasks
from .showcase import CFG, REWRITE_TOKENS, SIZE, STEPS
from .world import Scene, render

SEED = 987_654
CHUNK = 25


def _greedy():
    from ..vlm.sampling import Sampling

    return Sampling(max_new_tokens=REWRITE_TOKENS)


@torch.no_grad()
def _generate(pipe, prompts, refs, verifi: bool, seed: int):
    """Images (B, H, W, 3) for prompts with their reference image lists, chunk by chunk."""
    images = []
    for s in range(0, len(prompts), CHUNK):
        p, r = prompts[s:s + CHUNK], refs[s:s + CHUNK]
        if verifi:
            cond, mask, _ = pipe.encode_verifi(p, r, sampling=_greedy())
        else:
            cond, mask = pipe.encode(p, r)
        images.append(pipe.sample(cond, mask, width=SIZE, height=SIZE, seed=seed + s, steps=STEPS, cfg=CFG,
                                  batch=len(p)))
    return torch.cat(images)


def t2i_accuracy(pipe, n: int, split: str = "train", verifi: bool = True, canonical: bool = False) -> float:
    """T2I fact accuracy on ``n`` scenes; prompts are paraphrases of ``split`` or canonical texts."""
    rng = random.Random(f"{SEED}-t2i-{split}")
    exs = [tasks.t2i_example(rng, split, canonical_share=1.0 if canonical else 0.0) for _ in range(n)]
    imgs = _generate(pipe, [e["prompts"][0] for e in exs], [[] for _ in exs], verifi, SEED)
    return sum(evaluator.evaluate_image(im, Scene.from_json(e["target"])).accuracy for im, e in zip(imgs, exs)) / n


def edit_scores(pipe, n: int, verifi: bool = True) -> tuple[float, float]:
    """(changed-fact accuracy, preservation) on ``n`` held-out single-reference edit instructions."""
    rng = random.Random(f"{SEED}-edit")
    exs = [tasks.edit_example(rng, split="heldout") for _ in range(n)]
    refs = [[render(Scene.from_json(e["refs"][0]), SIZE)] for e in exs]
    imgs = _generate(pipe, [e["prompts"][0] for e in exs], refs, verifi, SEED + 1)
    scores = [evaluator.evaluate_image(im, Scene.from_json(e["target"]), Scene.from_json(e["refs"][0]))
              for im, e in zip(imgs, exs)]
    return sum(s.edit for s in scores) / n, sum(s.preservation for s in scores) / n


def compose_accuracy(pipe, n: int, verifi: bool = True) -> float:
    """Fact accuracy of zero-shot two-reference compositions (the DiT never trained on two refs)."""
    rng = random.Random(f"{SEED}-compose")
    exs = [tasks.compose_example(rng) for _ in range(n)]
    refs = [[render(Scene.from_json(r), SIZE) for r in e["refs"]] for e in exs]
    imgs = _generate(pipe, [e["prompts"][0] for e in exs], refs, verifi, SEED + 2)
    return sum(evaluator.evaluate_image(im, Scene.from_json(e["target"])).accuracy for im, e in zip(imgs, exs)) / n


def evaluator_accuracy(n: int, noise: float = 0.0, blur: float = 0.0) -> float:
    """The evaluator on ``n`` renders (optionally degraded) of random scenes."""
    rng = random.Random(f"{SEED}-eval")
    accs = []
    for i in range(n):
        scene = Scene.from_json(tasks.t2i_example(rng)["target"])
        accs.append(evaluator.evaluate_image(render(scene, SIZE, noise=noise, blur=blur, seed=i), scene).accuracy)
    return sum(accs) / n
