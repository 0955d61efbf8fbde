"""Quality of a toy UniFusion model, measured strictly, with its baselines measured in the same run.

Shared by ``benchmarks/quality_toy.py`` (the report, ``make quality``) and ``tests/test_toy_quality.py``
(its fast subset on the shipped model).

Strict (``evaluator.strict_score``): read objects are matched one to one to the target's; an object
counts only when shape, colour, size and cell all match; extra objects cost precision; a scene is
*exact* only with the right background, the right count, every object right and nothing extra.
Edits are judged as edits (``evaluator.edit_verdict``): change applied, untouched objects preserved.

Baselines, on the same examples: the *chance floor* (the same images scored against another scene with
the same background and object count), *do nothing* (the edit's source unchanged; each composition
reference unchanged) and the *ceiling* (the ground-truth render read back by the evaluator).
Comparisons (VERIFI vs raw, held-out vs canonical, model vs ablation) are paired: same scenes, same
noise; intervals are bootstrap 95% over examples.

Every figure is over fresh seeded examples (seed strings disjoint from the training recipe's integer
seeds), generated in chunks with the showcase sampler settings.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch

from . import evaluator as ev
from . import tasks
from .language import parse_description
from .showcase import CFG, REWRITE_TOKENS, SIZE, STEPS
from .world import BACKGROUNDS, Scene, random_object, render

SEED = 987_654
CHUNK = 25
ATTRS = ("colour", "shape", "size", "position")


# -- statistics ----------------------------------------------------------------------------------------

def bootstrap(values, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): the mean of ``values`` with its bootstrap 95% interval over examples."""
    v = np.asarray(values, np.float64)
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    idx = np.random.default_rng(seed).integers(0, v.size, (n_boot, v.size))
    means = v[idx].mean(axis=1)
    return float(v.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def fmt(values, scale: float = 100.0, unit: str = "%") -> str:
    m, lo, hi = bootstrap(values)
    return f"{scale * m:.1f}{unit} [{scale * lo:.1f}, {scale * hi:.1f}]"


def fmt_delta(a, b) -> str:
    """Paired difference a - b (same examples) in points, with its interval."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    m, lo, hi = bootstrap(d)
    return f"{100 * m:+.1f} pts [{100 * lo:+.1f}, {100 * hi:+.1f}]"


# -- generation ----------------------------------------------------------------------------------------

def _greedy():
    from ..vlm.sampling import Sampling

    return Sampling(max_new_tokens=REWRITE_TOKENS)


@torch.no_grad()
def generate(pipe, prompts, refs, verifi: bool, seed: int, cfg: float = CFG, steps: int = STEPS,
             rewrites=None):
    """Images (B, H, W, 3) for prompts with their reference image lists, through the pipeline's
    requests (``Request``, greedy VERIFI rewrites), a chunk at a time; example i's noise comes from
    seed ``seed + i`` alone, so two runs on the same examples are paired. ``rewrites``: condition on
    these rewrites instead (teacher-forced VERIFI), which takes the VLM's rewriting out of the result."""
    from ..pipeline import Request

    images = []
    for s in range(0, len(prompts), CHUNK):
        reqs = [Request(p, images=list(r), width=SIZE, height=SIZE, seed=seed + s + k, steps=steps, guidance=cfg,
                        verifi=verifi, verifi_sampling=_greedy() if verifi else None,
                        rewrite=None if rewrites is None else rewrites[s + k])
                for k, (p, r) in enumerate(zip(prompts[s:s + CHUNK], refs[s:s + CHUNK]))]
        images += [g.images[0] for g in pipe.generate(reqs)]
    return torch.stack(images)


def floor_scene(scene: Scene, rng: random.Random) -> Scene:
    """Another scene with the same background and object count (the chance floor's target)."""
    while True:
        cells = rng.sample(range(9), len(scene.objects))
        other = Scene(scene.background, tuple(random_object(rng, c) for c in cells))
        if set(other.objects) != set(scene.objects):
            return other


# -- scene sets ----------------------------------------------------------------------------------------

@dataclass
class SceneSet:
    """Strict scores of generated images (``scores``), of the same images against floor scenes
    (``floor``) and of the ground-truth renders (``ceiling``), per example."""

    targets: list
    scores: list
    floor: list
    ceiling: list
    lenient: list  # the old DPG-style fact share, a secondary column

    @staticmethod
    def of(images, targets, seed: str) -> "SceneSet":
        rng = random.Random(f"{SEED}-floor-{seed}")
        reads = [ev.read_scene(im) for im in images]
        floors = [floor_scene(t, rng) for t in targets]
        return SceneSet(list(targets), [ev.strict_score(p, t) for p, t in zip(reads, targets)],
                        [ev.strict_score(p, f) for p, f in zip(reads, floors)],
                        [ev.strict_score(ev.read_scene(render(t, SIZE)), t) for t in targets],
                        [ev.score(p, t).accuracy for p, t in zip(reads, targets)])


def exact(scores) -> list[float]:
    return [float(s.exact) for s in scores]


def f1(scores) -> list[float]:
    return [s.f1 for s in scores]


def applied_and_preserved(verdicts, idx=None) -> list[float]:
    """Per edit verdict (of ``idx`` only, when given): 1.0 when the asked change is visible and every
    untouched object is kept exactly, else 0.0; the headline edit figure."""
    idx = range(len(verdicts)) if idx is None else idx
    return [float(verdicts[i].applied and verdicts[i].preserved) for i in idx]


def attribute_accuracy(scores, k: int) -> float:
    assigned = sum(s.assigned for s in scores)
    return sum(s.attr_hits[k] for s in scores) / assigned if assigned else float("nan")


def t2i_scenes(n: int, counts: tuple[int, int] = (1, 3), tag: str = "t2i", base: int = SEED) -> list[tuple[Scene, str, str]]:
    """``n`` fresh scenes with ``counts`` objects, each with its canonical description and a held-out
    paraphrase (so canonical vs held-out phrasing compares the same scenes)."""
    from .language import describe, paraphrase
    from .world import random_scene

    rng = random.Random(f"{base}-{tag}-{counts}")
    out = []
    for _ in range(n):
        scene = random_scene(rng, *counts)
        out.append((scene, describe(scene), paraphrase(scene, random.Random(rng.random()), "heldout")))
    return out


def t2i_set(pipe, scenes, prompts, verifi: bool, seed: int = SEED) -> SceneSet:
    images = generate(pipe, list(prompts), [[] for _ in prompts], verifi, seed)
    return SceneSet.of(images, list(scenes), f"t2i-{seed}")


# -- edits ---------------------------------------------------------------------------------------------

def edit_examples(n: int, split: str = "heldout", base: int = SEED, edit_rewrite: str = "target") -> list[dict]:
    """``n`` single-reference edits, the kinds in turn (equal counts per kind); their true rewrites in
    the style the models were trained with (``vlm_train.trained_edit_rewrite``; the scenes and
    instructions do not depend on it)."""
    rng = random.Random(f"{base}-edit-{split}")
    return [tasks.edit_example(rng, kind=tasks.EDIT_KINDS[i % len(tasks.EDIT_KINDS)], split=split,
                               edit_rewrite=edit_rewrite) for i in range(n)]


@dataclass
class EditSet:
    kinds: list
    verdicts: list  # model
    unchanged: list  # "do nothing": the source returned as it is
    ceiling: list  # the target render
    true_rewrite: list | None = None  # the model conditioned on the true rewrite (teacher-forced): the DiT alone


def edit_set(pipe, examples, verifi: bool = True, seed: int = SEED + 1, true_rewrite: bool = False) -> EditSet:
    """Edit verdicts of the model, "do nothing" and the ceiling; with ``true_rewrite`` also of the
    model conditioned on each example's true rewrite (same noise), which separates the DiT's share
    of the errors from the VLM's."""
    sources = [Scene.from_json(e["refs"][0]) for e in examples]
    targets = [Scene.from_json(e["target"]) for e in examples]
    shown = [render(s, SIZE) for s in sources]  # rendered once: the model's reference and "do nothing"
    prompts, refs = [e["prompts"][0] for e in examples], [[im] for im in shown]
    images = generate(pipe, prompts, refs, verifi, seed)
    kinds = [e["kind"] for e in examples]

    def verdicts(reads):
        return [ev.edit_verdict(p, s, t, k) for p, s, t, k in zip(reads, sources, targets, kinds)]

    given = None
    if true_rewrite:
        given = verdicts([ev.read_scene(im) for im in
                          generate(pipe, prompts, refs, True, seed, rewrites=[e["rewrite"] for e in examples])])
    return EditSet(kinds, verdicts([ev.read_scene(im) for im in images]),
                   verdicts([ev.read_scene(im) for im in shown]),
                   verdicts([ev.read_scene(render(t, SIZE)) for t in targets]), given)


# -- compositions --------------------------------------------------------------------------------------

@dataclass
class ComposeSet:
    scores: list
    refs: list  # per reference k: the strict scores of returning reference k unchanged
    ceiling: list


def compose_set(pipe, n: int, verifi: bool = True, seed: int = SEED + 2, base: int = SEED) -> ComposeSet:
    rng = random.Random(f"{base}-compose")
    exs = [tasks.compose_example(rng) for _ in range(n)]
    targets = [Scene.from_json(e["target"]) for e in exs]
    refs = [[Scene.from_json(r) for r in e["refs"]] for e in exs]
    shown = [[render(r, SIZE) for r in rs] for rs in refs]  # rendered once: the model's input and the baselines
    images = generate(pipe, [e["prompts"][0] for e in exs], shown, verifi, seed)
    return ComposeSet([ev.strict_score(ev.read_scene(im), t) for im, t in zip(images, targets)],
                      [[ev.strict_score(ev.read_scene(ims[k]), t) for ims, t in zip(shown, targets)]
                       for k in range(2)],
                      [ev.strict_score(ev.read_scene(render(t, SIZE)), t) for t in targets])


# -- the VLM ---------------------------------------------------------------------------------------------

@dataclass
class TextVerdict:
    """A VLM text (caption or rewrite) parsed back and judged against the true scene."""

    exact: bool  # the text parses to exactly the true scene (objects in any order: a request-order rewrite counts)
    parsed: bool
    invented: bool  # states an object with no counterpart in the scene (one-to-one, any attribute agreeing)
    dropped: bool  # leaves out an object of the scene (no counterpart in the text)
    score: ev.StrictScore  # attributes of the matched objects: ``attr_hits`` of ``assigned``


def judge_text(text: str, truth: Scene) -> TextVerdict:
    pred = parse_description(text)
    s = ev.strict_score(pred, truth)
    if pred is None:
        return TextVerdict(False, False, False, True, s)
    m = ev.assign(pred, truth)
    return TextVerdict(pred == truth, True,
                       len(pred.objects) > sum(j is not None for j in m), None in m, s)


def vlm_prompts(task: str, n: int, phrasing: str, base: int = SEED):
    """``n`` fresh (prompt, true scene) pairs: "caption" (an image), "t2i" (a request phrased
    "canonical" or as a "heldout" / "train" paraphrase) or "edit" (an instruction of that split)."""
    from ..verifi import system_prompt
    from ..vlm import Prompt
    from .vlm_train import make_prompt

    rng, out = random.Random(f"{base}-vlm-{task}-{phrasing}"), []
    for _ in range(n):
        if task == "t2i":
            ex = tasks.t2i_example(rng, "train" if phrasing == "canonical" else phrasing,
                                   canonical_share=1.0 if phrasing == "canonical" else 0.0)
            out.append((Prompt(ex["prompts"][0], system_prompt("t2i")), Scene.from_json(ex["target"])))
        else:
            prompt, target = make_prompt(task, rng, "train" if task == "caption" else phrasing)
            prompt.generated = None
            out.append((prompt, target))
    return out


@torch.no_grad()
def vlm_texts(encoder, task: str, n: int, phrasing: str = "canonical", base: int = SEED) -> list[TextVerdict]:
    """Greedy captions (task "caption") or rewrites ("t2i" / "edit") of ``n`` fresh scenes, judged."""
    from ..vlm.sampling import Sampling

    pairs, out = vlm_prompts(task, n, phrasing, base), []
    for s in range(0, n, CHUNK):
        chunk = pairs[s:s + CHUNK]
        texts = encoder.generate([p for p, _ in chunk], layers=[0],
                                 sampling=Sampling(max_new_tokens=REWRITE_TOKENS)).texts
        out += [judge_text(t, scene) for t, (_, scene) in zip(texts, chunk)]
    return out
