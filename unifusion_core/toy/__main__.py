"""``python -m unifusion_core.toy {write,check,show,train-vlm,eval-vlm,curve,ship-vlm,soup-vlm}``: write a
shapes dataset, check it, show a scene, train the toy VLM from scratch, measure a toy VLM folder, score a
training run's snapshots strictly (learning curve), ship a continued VLM, average continued VLMs."""
from __future__ import annotations

import argparse
import json
import logging
import random
import sys
from pathlib import Path

from ..errors import UniFusionError
from .evaluator import read_scene, score, score_edit
from .language import SPLITS, describe, paraphrase
from .tasks import write_dataset
from .world import Scene, random_scene

log = logging.getLogger("unifusion_core.toy")


def cmd_write(args) -> None:
    write_dataset(args.out, t2i=args.t2i, edit=args.edit, recon=args.recon, compose=args.compose, size=args.size,
                  seed=args.seed, split=args.split, canonical_share=args.canonical_share, noise=args.noise,
                  blur=args.blur, rewrite_order=args.rewrite_order)


def cmd_check(args) -> None:
    """Read every target image of a written dataset back and report the evaluator's fact accuracy."""
    folder = Path(args.folder)
    for manifest, scenes in (("manifest.jsonl", "scenes.jsonl"), ("compose.jsonl", "compose_scenes.jsonl")):
        if not (folder / manifest).is_file():
            continue
        accs, pres = [], []
        for rec_line, sc_line in zip((folder / manifest).read_text().splitlines(),
                                     (folder / scenes).read_text().splitlines()):
            rec, sc = json.loads(rec_line), json.loads(sc_line)
            pred, target = read_scene(_open(folder / rec["target"])), Scene.from_json(sc["target"])
            accs.append(score(pred, target).accuracy)
            if sc["task"] == "edit":
                pres.append(score_edit(pred, Scene.from_json(sc["refs"][0]), target).preservation)
        log.info("%s: %d records, fact accuracy %.4f, edit preservation %s", manifest, len(accs),
                 sum(accs) / len(accs), f"{sum(pres) / len(pres):.4f}" if pres else "n/a")


def _open(path: Path):
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


def cmd_show(args) -> None:
    rng = random.Random(args.seed)
    scene = random_scene(rng)
    log.info("scene: %s", json.dumps(scene.to_json()))
    log.info("canonical: %s", describe(scene))
    for split in SPLITS:
        for _ in range(args.n):
            log.info("%s: %s", split, paraphrase(scene, rng, split))


def cmd_train_vlm(args) -> None:
    from .vlm_train import parse_args, train

    train(parse_args(args.rest))  # every option after train-vlm belongs to the trainer


def cmd_eval_vlm(args) -> None:
    import torch

    from .vlm_train import evaluate

    torch.set_num_threads(args.threads)
    results = evaluate(args.folder, n=args.n, seed=args.seed, tasks=tuple(args.tasks.split(",")))
    log.info("%s", json.dumps(results, indent=2))


def cmd_curve(args) -> None:
    import torch

    from .curve import score_snapshots

    torch.set_num_threads(args.threads)
    log.info("wrote %s", score_snapshots(args.run_dir, args.vlm, n=args.n, verifi=args.verifi, n_edit=args.n_edit))


def cmd_ship_vlm(args) -> None:
    from .recipe import ship_vlm_only

    ship_vlm_only(Path(args.folder))


def cmd_soup_vlm(args) -> None:
    from .vlm_train import soup

    soup(args.out, args.sources)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m unifusion_core.toy", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write", help="write PNGs + manifest.jsonl + scenes.jsonl to a folder")
    w.add_argument("out")
    for name, default in (("t2i", 1000), ("edit", 1000), ("recon", 30), ("compose", 0)):
        w.add_argument(f"--{name}", type=int, default=default, help=f"number of {name} records")
    w.add_argument("--size", type=int, default=32, help="image side in px (32..64)")
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--split", choices=SPLITS, default="train", help="paraphrase / instruction split")
    w.add_argument("--canonical-share", type=float, default=0.2,
                   help="share of T2I prompts that are the canonical description (1.0: canonical only)")
    w.add_argument("--noise", type=float, default=0.0, help="Gaussian noise std (0..1 units)")
    w.add_argument("--blur", type=float, default=0.0, help="Gaussian blur radius in px")
    w.add_argument("--rewrite-order", default="canonical", choices=("canonical", "request"),
                   help="T2I VERIFI rewrites list the objects by cell or in the request's order")
    w.set_defaults(func=cmd_write)
    c = sub.add_parser("check", help="evaluate a written dataset's target images against its scenes")
    c.add_argument("folder")
    c.set_defaults(func=cmd_check)
    s = sub.add_parser("show", help="print a random scene, its canonical description and paraphrases")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--n", type=int, default=3, help="paraphrases per split")
    s.set_defaults(func=cmd_show)
    t = sub.add_parser("train-vlm", help="train the toy VLM from scratch (see vlm_train.parse_args)",
                       add_help=False)
    t.set_defaults(func=cmd_train_vlm)
    e = sub.add_parser("eval-vlm", help="caption / rewrite accuracy of a toy VLM folder (greedy)")
    e.add_argument("folder")
    e.add_argument("--n", type=int, default=200, help="scenes per task")
    e.add_argument("--seed", type=int, default=12345)
    e.add_argument("--tasks", default="caption,t2i,edit", help="comma-separated: caption,t2i,edit,pick")
    e.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    e.set_defaults(func=cmd_eval_vlm)
    k = sub.add_parser("curve", help="score a training run's snapshots strictly: curve.csv and curve.png")
    k.add_argument("run_dir")
    k.add_argument("--vlm", default=None, help="the run's frozen VLM folder (default: the shipped toy VLM)")
    k.add_argument("--n", type=int, default=60, help="probe scenes (canonical prompts, 1-3 objects)")
    k.add_argument("--verifi", action="store_true", help="condition on the VLM's rewrites (slower)")
    k.add_argument("--n-edit", type=int, default=28,
                   help="held-out edit instructions, the kinds in turn, scored with the VLM's and the true rewrite (0: none)")
    k.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    k.set_defaults(func=cmd_curve)
    v = sub.add_parser("ship-vlm", help="ship a continued toy VLM folder with the shipped DiT unchanged "
                                        "(its checkpoint retargeted to name it; measure the pair first)")
    v.add_argument("folder")
    v.set_defaults(func=cmd_ship_vlm)
    m = sub.add_parser("soup-vlm", help="average the weights of toy VLM folders continued from one shared stage "
                                        "into a new folder (a model soup; measure it before shipping)")
    m.add_argument("out", help="the new folder")
    m.add_argument("sources", nargs="+", help="two or more toy VLM folders of the same sizes and vocabulary")
    m.set_defaults(func=cmd_soup_vlm)
    return p


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and args.command != "train-vlm":
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.rest = rest
    try:
        args.func(args)
    except UniFusionError as err:
        log.error("error: %s", err)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
