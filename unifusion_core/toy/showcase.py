"""The `make demo` showcase on the shipped toy models: what is asked, what it should look like, and how
the outputs are scored and laid out on one contact sheet.

The same jobs run through the standalone pipeline (``run_standalone``) and through the shipped ComfyUI
workflows (``workflows/api/toy_*.json``, written from ``JOBS`` by tests/integration/build_workflows.py),
so the two paths can be compared picture for picture:

- ``t2i_verifi`` / ``t2i_raw``: one paraphrase, with and without the VLM rewriting it;
- ``edit_1..3``: an edit chain, each edit applied to the previous output (starting from ``t2i_verifi``);
- ``ref_1``, ``ref_2`` -> ``compose``: two generated references, then a zero-shot two-reference
  composition (the DiT never trained on two references).

The paraphrase and the edit instructions are drawn afresh from the training phrasing forms
(``PHRASING``; the split the training sets draw from), so the sheet shows what the models do with wording
like their training data; how far they fall on the held-out phrasing split is measured by the quality
report (`make quality`), not here.

Each output is read back by the model-free evaluator and judged strictly against the scene the job
asks for: exact scene, object F1, and per target object whether it is there in all four attributes
(edits also: change applied, untouched objects preserved). The contact sheet shows the target render
next to the output with that verdict.
"""
from __future__ import annotations

import random
import textwrap
from dataclasses import dataclass, field

from .language import describe, edit_instruction, paraphrase
from .tasks import apply_edit
from .world import Obj, Scene

SIZE = 32  # generated image side (px), the toy model's training resolution
SEED = 7  # sampler noise seed of the first job (each job adds its index)
STEPS, CFG = 20, 3.0  # Euler steps and CFG scale of every job (KSampler euler / simple in ComfyUI)
REWRITE_TOKENS = 96  # greedy VERIFI rewrites: canonical descriptions are < 60 tokens
OUTPUT_PREFIX = "unifusion_toy"  # the workflows save <job>.png under ComfyUI's output/unifusion_toy/

_START = Scene("beige", (Obj("circle", "red", "large", 0, 0), Obj("square", "blue", "small", 2, 2)))
_REF_1 = Scene("grey", (Obj("triangle", "green", "large", 1, 1),))
_REF_2 = Scene("black", (Obj("cross", "yellow", "small", 0, 2),))
_EDITS = ("recolor", "move", "add")
PHRASING = "train"  # paraphrase / instruction split of the prompts (fresh draws; held-out: make quality)


@dataclass(frozen=True)
class Job:
    """One generation: its prompt, the scene it should produce, where its reference images come from
    (names of earlier jobs) and whether the VLM rewrites the prompt (VERIFI)."""

    name: str
    title: str
    prompt: str
    target: Scene
    refs: tuple[str, ...] = ()
    verifi: bool = True
    source: Scene | None = None  # edits: the scene being edited (for the preservation score)
    seed: int = 0


def _jobs() -> tuple[Job, ...]:
    rng = random.Random(2026)
    t2i_prompt = paraphrase(_START, rng, PHRASING)
    jobs = [Job("t2i_verifi", "text-to-image, VERIFI", t2i_prompt, _START),
            Job("t2i_raw", "text-to-image, raw prompt (no rewrite)", t2i_prompt, _START, verifi=False)]
    scene, prev = _START, "t2i_verifi"
    for i, kind in enumerate(_EDITS, 1):
        target, fields = apply_edit(scene, kind, rng)
        jobs.append(Job(f"edit_{i}", f"edit {i} of the chain ({kind})",
                        edit_instruction(kind, scene, rng, PHRASING, **fields), target, (prev,), source=scene))
        scene, prev = target, f"edit_{i}"
    jobs += [Job("ref_1", "reference 1 (text-to-image)", describe(_REF_1), _REF_1),
             Job("ref_2", "reference 2 (text-to-image)", describe(_REF_2), _REF_2),
             Job("compose", "zero-shot composition of references 1 and 2",
                 "put the objects of the first image on the background of the second",
                 Scene(_REF_2.background, _REF_1.objects), ("ref_1", "ref_2"))]
    return tuple(Job(**{**j.__dict__, "seed": SEED + i}) for i, j in enumerate(jobs))


JOBS = _jobs()


def to_uint8(image):
    """(H, W, 3) floats in 0..1 (tensor or array) -> uint8 numpy array."""
    import numpy as np

    return (np.clip(np.asarray(image, dtype=np.float32), 0, 1) * 255).round().astype(np.uint8)


@dataclass
class Result:
    """One job's output image (H, W, 3 floats in 0..1), its VERIFI rewrite and its scores."""

    job: Job
    image: object
    rewrite: str = ""
    scores: dict = field(default_factory=dict)


def score_job(job: Job, image) -> dict:
    """Strict verdict of ``image`` against the job's target scene: exact scene, object F1, the lenient
    fact share (secondary), edits' applied / preserved, and one line per object (``verdict``)."""
    from .evaluator import edit_verdict, read_scene, score, strict_score

    pred = read_scene(image)
    s = strict_score(pred, job.target)
    out = {"exact": float(s.exact), "object_f1": s.f1, "facts": score(pred, job.target).accuracy}
    if job.source is not None:
        v = edit_verdict(pred, job.source, job.target)
        out.update(applied=float(v.applied), preserved=float(v.preserved))
    out["verdict"] = verdict_lines(pred, job.target)
    return out


def verdict_lines(pred: Scene | None, target: Scene) -> list[str]:
    """Per target object "ok" or "MISSING", then every read object that is not asked for ("EXTRA")."""
    from .language import object_canonical

    if pred is None:
        return ["unreadable: not a shapes-world picture"]
    lines = [f"background {pred.background}" + (" ok" if pred.background == target.background
                                                 else f" WRONG (asked {target.background})")]
    lines += [f"{'ok' if o in pred.objects else 'MISSING'}: {object_canonical(o)}" for o in target.objects]
    lines += [f"EXTRA: {object_canonical(o)}" for o in pred.objects if o not in target.objects]
    return lines


def run_standalone(pipe, progress=print) -> list[Result]:
    """Every job through the pipeline's ``Request`` (greedy VERIFI rewrites, Euler ``STEPS`` at ``CFG``)."""
    from ..pipeline import Request
    from ..vlm.sampling import Sampling

    done: dict[str, Result] = {}
    for job in JOBS:
        refs = [done[r].image for r in job.refs]
        gen = pipe(Request(job.prompt, images=refs, width=SIZE, height=SIZE, seed=job.seed, steps=STEPS,
                           guidance=CFG, verifi=job.verifi,
                           verifi_sampling=Sampling(max_new_tokens=REWRITE_TOKENS) if job.verifi else None))
        image = gen.images[0]
        done[job.name] = Result(job, image, gen.rewrite or "", score_job(job, image))
        progress(f"{job.name}: {_score_text(done[job.name].scores)}")
    return list(done.values())


def _score_text(scores: dict) -> str:
    return ", ".join(f"{k} {100 * v:.0f}%" for k, v in scores.items() if k != "verdict")


def contact_sheet(results: list[Result], header: str, scale: int = 4):
    """One PIL image: a row per job with its reference images, the target render, its output and the
    text (prompt, rewrite, strict scores, the per-object verdict)."""
    from .world import render
    from PIL import Image, ImageDraw

    by_name = {r.job.name: r for r in results}
    tile, pad, text_w, line_h = SIZE * scale, 8, 560, 12

    def pil(img):
        return Image.fromarray(to_uint8(img)).resize((tile, tile), Image.NEAREST)

    rows = []
    for r in results:
        lines = [r.job.title, f"prompt: {r.job.prompt}"]
        if r.rewrite:
            lines.append(f"VLM rewrite: {r.rewrite}")
        lines += [f"should show: {describe(r.job.target)}", f"strict: {_score_text(r.scores)}",
                  "read back: " + "; ".join(r.scores.get("verdict", []))]
        rows.append((r, [w for line in lines for w in textwrap.wrap(line, 92)]))
    height = pad + 2 * line_h + sum(max(tile, len(ls) * line_h) + pad for _, ls in rows)
    sheet = Image.new("RGB", (pad + 4 * (tile + pad) + text_w, height), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((pad, pad), header + "   columns: references | target (render) | output", fill="black")
    y = pad + 2 * line_h
    for r, lines in rows:
        x = pad
        for ref in r.job.refs:
            sheet.paste(pil(by_name[ref].image), (x, y))
            x += tile + pad
        if r.job.refs:
            draw.text((x - pad + 1, y + tile // 2 - 6), ">", fill="black")
        target = render(r.job.target, SIZE)
        sheet.paste(target.resize((tile, tile), Image.NEAREST), (pad + 2 * (tile + pad), y))
        sheet.paste(pil(r.image), (pad + 3 * (tile + pad), y))
        for k, line in enumerate(lines):
            draw.text((pad + 4 * (tile + pad), y + k * line_h), line, fill="black")
        y += max(tile, len(lines) * line_h) + pad
    return sheet
