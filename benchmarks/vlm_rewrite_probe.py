"""Toy VLM T2I rewrites by object count: is a paraphrase rewritten into the right scene?

    .venv/bin/python benchmarks/vlm_rewrite_probe.py VLM_FOLDER [--n 120] [--split train|heldout]

For ``n`` fresh scenes (one to three objects) a paraphrase of the split is rewritten greedily; a rewrite
counts when it parses into exactly the asked scene (any object order), and separately when it is the
canonical string itself (objects by cell). Baseline on the same scenes: the canonical description as the
request (the VLM only has to copy it). Wilson 95% intervals. Scenes and phrasings are fresh seeds; the
held-out split is never trained on.

``--by-form`` also tallies the rewrites by the forms each request used (its scene frame, object and
background templates, and "pos:<phrase form>" for a held-out position phrase such as "at the top on the
left"), so a form the VLM cannot read stands out from the object count it happens to share.
"""
from __future__ import annotations

import argparse
import collections
import math
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def wilson(k: int, n: int) -> str:
    if n == 0:
        return "[n/a]"
    p, z = k / n, 1.96
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return f"[{100 * max(0, c - h):.0f}, {100 * min(1, c + h):.0f}]"


def main() -> int:
    import torch

    from unifusion_core.toy import lexicon
    from unifusion_core.toy.language import describe, paraphrase_ordered, parse_description
    from unifusion_core.toy.world import random_scene
    from unifusion_core.verifi import system_prompt
    from unifusion_core.vlm import Prompt, load_vlm
    from unifusion_core.vlm.sampling import Sampling

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("vlm")
    ap.add_argument("--n", type=int, default=120)
    ap.add_argument("--split", default="heldout", choices=("train", "heldout"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--by-form", action="store_true", help="also tally the rewrites by the forms the requests used")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    enc, rng = load_vlm(a.vlm), random.Random(f"probe-{a.split}")
    counts = collections.defaultdict(lambda: [0, 0, 0, 0])  # scene right, canonical string, copy baseline, n
    forms = collections.defaultdict(lambda: [0, 0])  # right, n
    held_positions = {p: _position_form(p) for c in lexicon.POSITIONS["heldout"].values() for p in c}

    def rewrite(text):
        return enc.generate(Prompt(text, system_prompt("t2i")), layers=[0],
                            sampling=Sampling(max_new_tokens=96)).texts[0].strip()

    for _ in range(a.n):
        scene = random_scene(rng)
        text, trace, _ = paraphrase_ordered(scene, random.Random(rng.random()), a.split)
        out, copy = rewrite(text), rewrite(describe(scene))
        right = parse_description(out) == scene
        for form in set(trace) | {f"pos:{form}" for p, form in held_positions.items() if p in text}:
            forms[form][0] += right
            forms[form][1] += 1
        c = counts[len(scene.objects)]
        c[0] += right
        c[1] += out == describe(scene)
        c[2] += parse_description(copy) == scene
        c[3] += 1
    print(f"VLM {a.vlm}, {a.split} paraphrases, {a.n} fresh scenes")
    for k in sorted(counts):
        right, string, copy, n = counts[k]
        print(f"rewrite_{a.split}_{k}obj_scene_right = {right}/{n} = {100 * right / n:.0f}% {wilson(right, n)} | "
              f"canonical string {string}/{n} | baseline (canonical request copied) {copy}/{n} = "
              f"{100 * copy / n:.0f}% {wilson(copy, n)}")
    if a.by_form:
        for form, (right, n) in sorted(forms.items(), key=lambda kv: kv[1][0] / kv[1][1]):
            print(f"rewrite_{a.split}_form_{form} = {right}/{n} = {100 * right / n:.0f}% {wilson(right, n)}")
    return 0


def _position_form(phrase: str) -> str:
    """A held-out position phrase's form with its words abstracted: 'at the top on the left' -> 'at the
    ROW on the COL', 'on the left in the middle' -> 'on the COL in the middle'."""
    for word, tag in (("top", "ROW"), ("bottom", "ROW"), ("left", "COL"), ("right", "COL")):
        phrase = phrase.replace(word, tag)
    return phrase


if __name__ == "__main__":
    sys.exit(main())
