"""Toy VLM edit rewrites by edit kind: does the VLM read the source and apply the instruction?

    .venv/bin/python benchmarks/vlm_edit_probe.py VLM_FOLDER [--per-kind 20] [--split train|heldout]

For ``per-kind`` fresh edits of each kind (source image + instruction of the split) the edit rewrite is
decoded greedily and counts when it parses into exactly the target scene (any object order). Beside it,
on the same source images: the VLM's *caption* of the source (can it read the image at all? exact when it
parses into the source scene) and *do nothing* (the source's true description offered as the rewrite,
exact only when the edit changes nothing, i.e. never). A kind whose captions are right but whose rewrites
are not fails at editing, not at reading. A VLM trained with ``--edit-rewrite source_first`` writes the
source's description before the mark: its *source part* column counts those that parse into the source
scene (reading in the edit's context), and the instructions' true rewrites take that style. Wilson 95%
intervals; fresh seeds, never trained on.
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vlm_rewrite_probe import wilson  # noqa: E402

CHUNK = 25


def main() -> int:
    import torch

    from unifusion_core.toy import tasks
    from unifusion_core.toy.language import describe, parse_description, source_part
    from unifusion_core.toy.vlm_train import CAPTION_INSTRUCTIONS, trained_edit_rewrite
    from unifusion_core.toy.world import Scene, render
    from unifusion_core.verifi import system_prompt
    from unifusion_core.vlm import Prompt, load_vlm
    from unifusion_core.vlm.sampling import Sampling

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("vlm")
    ap.add_argument("--per-kind", type=int, default=20)
    ap.add_argument("--split", default="heldout", choices=("train", "heldout"))
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    t0, enc, rng = time.perf_counter(), load_vlm(a.vlm), random.Random(f"edit-probe-{a.split}")
    style = trained_edit_rewrite(a.vlm)
    exs = [tasks.edit_example(rng, kind=k, split=a.split, edit_rewrite=style)
           for k in tasks.EDIT_KINDS for _ in range(a.per_kind)]
    sources = [Scene.from_json(e["refs"][0]) for e in exs]
    targets = [Scene.from_json(e["target"]) for e in exs]
    images = [render(s) for s in sources]

    def decode(prompts):
        out = []
        for s in range(0, len(prompts), CHUNK):
            out += enc.generate(prompts[s:s + CHUNK], layers=[0], sampling=Sampling(max_new_tokens=96)).texts
        return out

    with torch.no_grad():
        rewrites = decode([Prompt(e["prompts"][0], system_prompt("edit"), [im]) for e, im in zip(exs, images)])
        captions = decode([Prompt(CAPTION_INSTRUCTIONS[i % len(CAPTION_INSTRUCTIONS)], system_prompt("edit"), [im])
                           for i, im in enumerate(images)])
    print(f"VLM {a.vlm} (edit rewrites: {style}), {a.split} edit instructions, {a.per_kind} fresh edits per kind")
    totals = [0, 0, 0, 0, 0]
    for kind in tasks.EDIT_KINDS:
        idx = [i for i, e in enumerate(exs) if e["kind"] == kind]
        right = sum(parse_description(rewrites[i]) == targets[i] for i in idx)
        read = sum(parse_description(captions[i]) == sources[i] for i in idx)
        nothing = sum(parse_description(describe(sources[i])) == targets[i] for i in idx)
        head = sum(source_part(rewrites[i]) == sources[i] for i in idx)  # source_first: reading in context
        n = len(idx)
        for j, v in enumerate((right, read, nothing, head, n)):
            totals[j] += v
        print(f"edit_rewrite_{a.split}_{kind} = {right}/{n} = {100 * right / n:.0f}% {wilson(right, n)} | caption of "
              f"the same sources {read}/{n} = {100 * read / n:.0f}% {wilson(read, n)} | do nothing {nothing}/{n}"
              + (f" | source part {head}/{n}" if style == "source_first" else ""))
    right, read, nothing, head, n = totals
    print(f"edit_rewrite_{a.split}_all = {right}/{n} = {100 * right / n:.0f}% {wilson(right, n)} | caption of the "
          f"same sources {read}/{n} = {100 * read / n:.0f}% {wilson(read, n)} | do nothing {nothing}/{n}"
          + (f" | source part {head}/{n} = {100 * head / n:.0f}% {wilson(head, n)}" if style == "source_first" else "")
          + f"  ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
