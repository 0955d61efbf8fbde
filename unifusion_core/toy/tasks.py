"""Shapes-world tasks (seeded, JSON-serialisable examples) and the dataset writer.

Examples are dicts: ``task`` ("t2i" | "edit" | "recon" | "compose"), ``kind`` (edit / composition
kind), ``split``, ``target`` (scene JSON), ``refs`` (reference scenes JSON: the edit source, or the
two composition inputs), ``prompts`` (instruction texts) and ``rewrite`` (the canonical description
of the target, i.e. the VERIFI rewrite). Compositions are for evaluation only: ``write_dataset``
puts them in ``compose.jsonl``, never in the training manifest.

Dataset folder (paths in the manifests are relative to the folder)::

    manifest.jsonl  {"task", "target": "img/000000.png", "prompt", "refs": ["img/000000_ref0.png"],
                     "rewrite", "width", "height"}                   (the trainer's format)
    scenes.jsonl    {"task", "kind", "split", "target": scene, "refs": [scene, ...]}  (same line order)
    compose.jsonl / compose_scenes.jsonl   the same for two-reference compositions
    img/*.png
"""
from __future__ import annotations

import json
import logging
import random
from dataclasses import replace
from pathlib import Path

from ..errors import UniFusionError
from . import language
from . import lexicon as lx
from .language import (COMPOSE_KINDS, EDIT_KINDS, compose_instruction, describe, describe_in_order, edit_instruction,
                       paraphrase_ordered)
from .world import BACKGROUNDS, OBJECT_COLORS, SHAPES, Scene, check_size, random_object, random_scene, render

log = logging.getLogger(__name__)

RECON_PROMPT = lx.RECON_TEMPLATES[0]
# object counts of the source scene per edit kind, so the target keeps 1..3 objects
_EDIT_COUNTS = {"add": (1, 2), "remove": (2, 3)}


def _example(task: str, kind: str, split: str, target: Scene, refs: list[Scene], prompts: list[str]) -> dict:
    return {"task": task, "kind": kind, "split": split, "target": target.to_json(),
            "refs": [r.to_json() for r in refs], "prompts": prompts, "rewrite": describe(target)}


def t2i_example(rng: random.Random, split: str = "train", n_prompts: int = 1, canonical_share: float = 0.2,
                rewrite_order: str = "canonical") -> dict:
    """A random scene and ``n_prompts`` prompts: the canonical description with probability
    ``canonical_share``, else a paraphrase of ``split``. The VERIFI rewrite lists the objects by cell
    (``rewrite_order`` "canonical") or in the order the (single) prompt names them ("request")."""
    if rewrite_order not in ("canonical", "request") or (rewrite_order == "request" and n_prompts != 1):
        raise UniFusionError(f"rewrite_order should be 'canonical', or 'request' with one prompt, found "
                             f"{rewrite_order!r} with {n_prompts} prompts.")
    scene = random_scene(rng)
    words = random.Random(rng.random())  # prompts draw apart, so scenes do not depend on split / share
    prompts, order = [], scene.objects
    for _ in range(n_prompts):
        if words.random() < canonical_share:
            prompts.append(describe(scene))
        else:
            text, _, order = paraphrase_ordered(scene, words, split)
            prompts.append(text)
    ex = _example("t2i", "", split, scene, [], prompts)
    return {**ex, "rewrite": describe_in_order(scene, order)} if rewrite_order == "request" else ex


def recon_example(rng: random.Random, split: str = "train") -> dict:
    """Reconstruction: the target is its own (only) reference."""
    scene = random_scene(rng)
    return _example("recon", "", split, scene, [scene], [RECON_PROMPT])


def _other(rng: random.Random, options, current):
    return rng.choice([o for o in options if o != current])


def apply_edit(source: Scene, kind: str, rng: random.Random) -> tuple[Scene, dict]:
    """A random edit of ``kind`` on ``source`` -> (target, the fields ``edit_instruction`` needs)."""
    objs = list(source.objects)
    if kind == "background":
        bg = _other(rng, tuple(BACKGROUNDS), source.background)
        return Scene(bg, source.objects), {"background": bg}
    if kind == "add":
        new = random_object(rng, rng.choice(source.free_cells()))
        return Scene(source.background, (*objs, new)), {"new": new}
    i = rng.randrange(len(objs))
    obj = objs[i]
    if kind == "remove":
        return Scene(source.background, tuple(objs[:i] + objs[i + 1:])), {"obj": obj}
    if kind == "recolor":
        new = replace(obj, color=_other(rng, tuple(OBJECT_COLORS), obj.color))
    elif kind == "move":
        cell = rng.choice(source.free_cells())
        new = replace(obj, row=cell // 3, col=cell % 3)
    elif kind == "resize":
        new = replace(obj, size="small" if obj.size == "large" else "large")
    elif kind == "reshape":
        new = replace(obj, shape=_other(rng, SHAPES, obj.shape))
    else:
        raise UniFusionError(f"edit kind must be one of {EDIT_KINDS}, found {kind!r}.")
    objs[i] = new
    return Scene(source.background, tuple(objs)), {"obj": obj, "new": new}


def edit_example(rng: random.Random, kind: str | None = None, split: str = "train", n_prompts: int = 1,
                 edit_rewrite: str = "target") -> dict:
    """A single-reference edit: (source scene, instruction(s), target scene); its VERIFI rewrite in
    ``edit_rewrite`` (``language.edit_rewrite``)."""
    kind = kind or rng.choice(EDIT_KINDS)
    if kind not in EDIT_KINDS:
        raise UniFusionError(f"edit kind must be one of {EDIT_KINDS}, found {kind!r}.")
    source = random_scene(rng, *_EDIT_COUNTS.get(kind, (1, 3)))
    target, fields = apply_edit(source, kind, rng)
    words = random.Random(rng.random())
    prompts = [edit_instruction(kind, source, words, split, **fields) for _ in range(n_prompts)]
    return {**_example("edit", kind, split, target, [source], prompts),
            "rewrite": language.edit_rewrite(source, target, edit_rewrite)}


def compose_example(rng: random.Random, kind: str | None = None) -> dict:
    """A two-reference composition (evaluation only): refs [first, second] -> target."""
    kind = kind or rng.choice(COMPOSE_KINDS)
    if kind == "objects_on_background":
        first = random_scene(rng)
        second = random_scene(rng)
        while second.background == first.background:
            second = random_scene(rng)
        target = Scene(second.background, first.objects)
    elif kind == "combine":
        first = random_scene(rng, 1, 2)
        cells = rng.sample(first.free_cells(), rng.randint(1, 2))
        second = Scene(rng.choice(tuple(BACKGROUNDS)), tuple(random_object(rng, c) for c in cells))
        target = Scene(first.background, first.objects + second.objects)
    elif kind == "recolor_like":
        first = random_scene(rng, 1, 1)
        second = random_scene(rng, 1, 1)
        while second.objects[0].color == first.objects[0].color:
            second = random_scene(rng, 1, 1)
        target = Scene(first.background, (replace(first.objects[0], color=second.objects[0].color),))
    else:
        raise UniFusionError(f"composition kind must be one of {COMPOSE_KINDS}, found {kind!r}.")
    return _example("compose", kind, "eval", target, [first, second], [compose_instruction(kind, rng)])


# -- writer -------------------------------------------------------------------------------------------

def _write_records(out: Path, examples: list[dict], stem: str, names: tuple[str, str], seed: int,
                   render_kw: dict) -> None:
    """Render and write ``examples``; render noise is seeded by (``seed``, record, image)."""
    size = render_kw["size"]
    with open(out / names[0], "w") as man, open(out / names[1], "w") as sc:
        for n, ex in enumerate(examples):
            name = f"img/{stem}{n:06d}"
            target = f"{name}.png"
            render(Scene.from_json(ex["target"]), seed=seed * 1_000_003 + n * 8, **render_kw).save(out / target)
            refs = [target] if ex["task"] == "recon" else []
            for k, ref in enumerate(ex["refs"] if ex["task"] != "recon" else []):
                refs.append(f"{name}_ref{k}.png")
                render(Scene.from_json(ref), seed=seed * 1_000_003 + n * 8 + k + 1, **render_kw).save(out / refs[-1])
            man.write(json.dumps({"task": ex["task"], "target": target, "prompt": ex["prompts"][0], "refs": refs,
                                  "rewrite": ex["rewrite"], "width": size, "height": size}) + "\n")
            sc.write(json.dumps({k: ex[k] for k in ("task", "kind", "split", "target", "refs")}) + "\n")


def write_dataset(out, *, t2i: int = 0, edit: int = 0, recon: int = 0, compose: int = 0, size: int = 32,
                  seed: int = 0, split: str = "train", canonical_share: float = 0.2, noise: float = 0.0,
                  blur: float = 0.0, rewrite_order: str = "canonical", edit_rewrite: str = "target") -> Path:
    """Write ``out``/manifest.jsonl (+ scenes.jsonl, img/, and compose*.jsonl if ``compose``).

    ``canonical_share``: share of T2I prompts that are the canonical description (1.0 for a
    canonical-prompt evaluation set, 0.0 for paraphrases only); ``rewrite_order``: how the T2I VERIFI
    rewrites list the objects (``t2i_example``); ``edit_rewrite``: the edits' rewrite style
    (``language.edit_rewrite``). Each task draws from its own
    generator seeded from (seed, task), so counts of one task do not change the examples of
    another. Returns the manifest path.
    """
    check_size(size)
    out = Path(out)
    (out / "img").mkdir(parents=True, exist_ok=True)
    gen = {t: random.Random(f"{seed}/{t}") for t in ("t2i", "edit", "recon", "compose")}
    examples = ([t2i_example(gen["t2i"], split, canonical_share=canonical_share, rewrite_order=rewrite_order)
                 for _ in range(t2i)]
                + [edit_example(gen["edit"], split=split, edit_rewrite=edit_rewrite) for _ in range(edit)]
                + [recon_example(gen["recon"], split) for _ in range(recon)])
    kw = {"size": size, "noise": noise, "blur": blur}
    _write_records(out, examples, "", ("manifest.jsonl", "scenes.jsonl"), seed, kw)
    if compose:
        comps = [compose_example(gen["compose"]) for _ in range(compose)]
        _write_records(out, comps, "compose_", ("compose.jsonl", "compose_scenes.jsonl"), seed + 1, kw)
    log.info("wrote %d records (+%d compositions) to %s", len(examples), compose, out)
    return out / "manifest.jsonl"
