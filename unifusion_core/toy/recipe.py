"""`make toy-train` (second half): the shipped toy UniFusion model, reproduced from scratch with the
project's trainer on the frozen toy VLM.

Stages (each a plain `python -m unifusion_core.train` run):
  1. T2I: paraphrased prompts with canonical VERIFI rewrites, VERIFI / raw mixed per sample
     (``--verifi_share``), ~3% reconstruction;
  2. edit fine-tune from stage 1: single-reference edits plus T2I examples (never two references).
Ablations at the stage-1 budget (same data, steps, batch, seed): ``--pooler last_layer`` (the last VLM
layer instead of LAP) and ``--verifi_share 0`` (raw prompts only, no VERIFI).

Runs go two at a time (``--parallel``), one torch thread each: stage 1 and the last-layer ablation
first; the edit fine-tune takes the first free slot once stage 1 is done, the raw-only ablation the
other. Stage timings go to
``out/recipe.json``; the shipped files are the fine-tuned checkpoint (fp32) and, under
``unifusion_core/toy/models/ablations/``, stage 1 and the ablations in fp16 (for the quality report).

    python -m unifusion_core.toy.recipe --vlm unifusion_core/toy/models/unifusion-toy-vlm --out runs/toy
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .language import EDIT_REWRITES
from .shipped import CHECKPOINT, MODELS_DIR, VLM_DIR
from .tasks import write_dataset

log = logging.getLogger(__name__)

ABLATIONS_DIR = MODELS_DIR / "ablations"


def _command(run_dir: Path, manifest: Path, args, steps: int, **overrides) -> list[str]:
    flags = {"manifest": manifest, "vlm": args.vlm, "run_dir": run_dir, "preset": "toy", "resolution": 32,
             "buckets": "1:1", "batch_size": args.batch_size, "lr": args.lr, "warmup_steps": 50,
             "max_steps": steps, "mixed_precision": "auto", "ema_decay": 0.995, "save_every": 250,
             "log_every": 50, "sample_steps": 20, "seed": 0, "verifi_share": args.verifi_share,
             "attention": "eager", **overrides}
    return [sys.executable, "-m", "unifusion_core.train", *(x for k, v in flags.items() for x in (f"--{k}", str(v)))]


def _run_all(jobs: list[tuple[str, list[str], str | None]], parallel: int, logs: Path) -> dict[str, float]:
    """Run (name, command, name of the run it needs first or None) ``parallel`` at a time, one torch
    thread each, each as soon as a slot is free and its dependency has finished -> minutes per run."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    pending, running, minutes = list(jobs), {}, {}
    while pending or running:
        ready = [j for j in pending if j[2] is None or j[2] in minutes]
        while ready and len(running) < parallel:
            job = ready.pop(0)
            pending.remove(job)
            name, cmd, _ = job
            log.info("starting %s: %s", name, " ".join(cmd))
            out = open(logs / f"{name}.log", "w")
            running[name] = (subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env), time.time(), out)
        time.sleep(2)
        for name, (proc, t0, out) in list(running.items()):
            if proc.poll() is not None:
                out.close()
                del running[name]
                if proc.returncode:
                    raise SystemExit(f"{name} failed (exit {proc.returncode}); see {logs / (name + '.log')}")
                minutes[name] = round((time.time() - t0) / 60, 1)
                log.info("%s finished in %.1f min", name, minutes[name])
    return minutes


def _dataset(folder: Path, **kw) -> Path:
    """``write_dataset`` unless ``folder`` already holds one written with the same arguments."""
    stamp, manifest = folder / "recipe_args.json", folder / "manifest.jsonl"
    if manifest.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == kw:
        return manifest
    manifest = write_dataset(folder, **kw)
    stamp.write_text(json.dumps(kw))
    return manifest


def _half(src: Path, dst: Path) -> None:
    """A fp16 copy of a checkpoint (same keys and metadata): the loader casts it back."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # each read once
        meta = f.metadata()
    tensors = {k: t.half() if t.is_floating_point() else t for k, t in tensors.items()}
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(dst), metadata=meta)


def continue_stage(args) -> int:
    """A further training stage of the shipped model (``--continue_from``): T2I and edits mixed in one
    data set, the VLM features precomputed by a second process into an on-disk cache that the training
    run (one thread) reads as they appear; the learning curve comes from the kept snapshots
    (``python -m unifusion_core.toy curve OUT/main``)."""
    out, t0 = Path(args.out), time.time()
    out.mkdir(parents=True, exist_ok=True)
    edits = args.stage_edits if args.stage_edits >= 0 else args.stage_t2i * 2 // 5
    styles = {k: v for k, v, default in (("rewrite_order", args.rewrite_order, "canonical"),
                                         ("edit_rewrite", args.edit_rewrite, "target"))
              if v != default}  # defaults left out: the same stamp as data sets written before the options
    data = _dataset(out / "data", t2i=args.stage_t2i, edit=edits, recon=args.stage_t2i * 3 // 100,
                    size=32, seed=args.stage_seed, **styles)
    flags = {"manifest": data, "vlm": args.vlm, "preset": "toy", "resolution": 32, "buckets": "1:1",
             "feature_cache": out / "features", "verifi_share": args.verifi_share}
    common = [x for k, v in flags.items() for x in (f"--{k}", str(v))]
    train = _command(out / "main", data, args, args.stage_steps, init_from=args.continue_from, warmup_steps=100,
                     ema_decay=0.999, snapshot_every=args.snapshot_every, abs_pos_grid=args.abs_pos_grid,
                     feature_cache=out / "features")
    pre = [sys.executable, "-m", "unifusion_core.train.precompute", *common, "--run_dir", str(out / "precompute")]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    with open(out / "precompute.log", "w") as log_pre:
        helper = subprocess.Popen(pre, stdout=log_pre, stderr=subprocess.STDOUT, env=env)
        minutes = _run_all([("main", train, None)], 1, out)
        helper.wait()
    record = {"args": vars(args), "run_minutes": minutes, "total_minutes": round((time.time() - t0) / 60, 1),
              "cpu_count": os.cpu_count()}
    (out / "recipe.json").write_text(json.dumps(record, indent=2, default=str))
    if args.ship:
        CHECKPOINT.write_bytes((out / "main" / "unifusion.safetensors").read_bytes())
        log.info("shipped %s", CHECKPOINT)
        if Path(args.vlm).resolve() != VLM_DIR.resolve():  # the DiT was trained on this VLM: they go together
            _ship_vlm(Path(args.vlm))
    return 0


def _ship_vlm(src: Path, before_swap=None) -> None:
    """Replace the shipped toy VLM folder with ``src`` (its train.log holds every stage's log), written
    beside it first, then swapped in. ``before_swap`` runs once the copy is complete: if it raises, the
    copy is removed and the shipped folder is untouched."""
    new, old = VLM_DIR.with_name(VLM_DIR.name + ".new"), VLM_DIR.with_name(VLM_DIR.name + ".old")
    shutil.rmtree(new, ignore_errors=True)
    shutil.copytree(src, new)
    if before_swap is not None:
        try:
            before_swap()
        except BaseException:
            shutil.rmtree(new, ignore_errors=True)
            raise
    shutil.rmtree(old, ignore_errors=True)
    VLM_DIR.rename(old)
    new.rename(VLM_DIR)
    shutil.rmtree(old)
    log.info("shipped %s (from %s)", VLM_DIR, src)


def ship_vlm_only(src: Path) -> None:
    """Ship the toy VLM folder ``src`` without retraining the DiT: a VLM stage continued from the shipped
    VLM (same shapes), measured with the shipped checkpoint first. The checkpoint's metadata is
    retargeted to name it (``checkpoint.retarget_vlm``), so loading the pair does not warn. The VLM is
    copied beside the shipped one first and the checkpoint retargeted only once the copy is complete, so
    a failed copy changes nothing and a refused retarget (other shapes) ships nothing."""
    from ..checkpoint import retarget_vlm
    from ..vlm import load_vlm

    identity = load_vlm(str(src)).identity  # a readable VLM folder, or one sentence saying what is wrong
    _ship_vlm(Path(src), before_swap=lambda: retarget_vlm(CHECKPOINT, identity, VLM_DIR.name))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vlm", default=str(MODELS_DIR / "unifusion-toy-vlm"))
    ap.add_argument("--out", default="runs/toy")
    ap.add_argument("--t2i_steps", type=int, default=1200)
    ap.add_argument("--edit_steps", type=int, default=400)
    ap.add_argument("--examples", type=int, default=16000, help="T2I examples in stage 1")
    ap.add_argument("--batch_size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--verifi_share", type=float, default=0.5, help="VERIFI (vs raw prompt) share of T2I/edit samples")
    ap.add_argument("--parallel", type=int, default=2, help="trainings at once (one thread each)")
    ap.add_argument("--no_ablations", action="store_true")
    ap.add_argument("--ship", action="store_true", help=f"copy the results to {MODELS_DIR}")
    stage = ap.add_argument_group("a further stage of an existing checkpoint (instead of the recipe from scratch)")
    stage.add_argument("--continue_from", default="", help="checkpoint to continue (e.g. the shipped one); with "
                       "--ship and another --vlm than the shipped one, that VLM is shipped too")
    stage.add_argument("--stage_steps", type=int, default=4000)
    stage.add_argument("--stage_t2i", type=int, default=20000, help="T2I scenes")
    stage.add_argument("--stage_edits", type=int, default=-1, help="single-reference edits (-1: 40%% of --stage_t2i)")
    stage.add_argument("--rewrite_order", default="canonical", choices=("canonical", "request"),
                       help="T2I VERIFI rewrites: objects by cell, or in the request's order (a VLM trained so)")
    stage.add_argument("--edit_rewrite", default=None, choices=EDIT_REWRITES,
                       help="edit VERIFI rewrites: the target's description by cell, in the source's object order "
                            "(in_place), or the source's first (source_first); default: the style --vlm was trained with")
    stage.add_argument("--snapshot_every", type=int, default=250, help="steps between the curve's snapshots")
    stage.add_argument("--stage_seed", type=int, default=11, help="data seed (each stage its own)")
    stage.add_argument("--abs_pos_grid", type=int, default=8, help="learned absolute position table (-1: keep)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from .vlm_train import stage_edit_rewrite

    args.edit_rewrite = stage_edit_rewrite(args.edit_rewrite, args.vlm)
    if args.continue_from:
        return continue_stage(args)
    out, t0 = Path(args.out), time.time()
    out.mkdir(parents=True, exist_ok=True)
    t2i = _dataset(out / "data_t2i", t2i=args.examples, recon=args.examples // 30, size=32, seed=1)
    edit = _dataset(out / "data_edit", t2i=args.examples // 4, edit=args.examples // 2, size=32, seed=2)
    data_minutes = round((time.time() - t0) / 60, 1)
    stage1 = out / "t2i" / "unifusion.safetensors"
    # the edit fine-tune is on the critical path: it takes the first free slot once stage 1 is done
    jobs = [("t2i", _command(out / "t2i", t2i, args, args.t2i_steps), None),
            ("edit", _command(out / "edit", edit, args, args.edit_steps, init_from=stage1, warmup_steps=10), "t2i")]
    if not args.no_ablations:
        jobs[1:1] = [("ablation_last_layer", _command(out / "ablation_last_layer", t2i, args, args.t2i_steps,
                                                      pooler="last_layer"), None)]
        jobs.append(("ablation_raw_only", _command(out / "ablation_raw_only", t2i, args, args.t2i_steps,
                                                   verifi_share=0), None))
    minutes = _run_all(jobs, args.parallel, out)
    record = {"args": vars(args), "data_minutes": data_minutes, "run_minutes": minutes,
              "total_minutes": round((time.time() - t0) / 60, 1), "cpu_count": os.cpu_count()}
    (out / "recipe.json").write_text(json.dumps(record, indent=2))
    if args.ship:
        CHECKPOINT.parent.mkdir(parents=True, exist_ok=True)
        CHECKPOINT.write_bytes((out / "edit" / "unifusion.safetensors").read_bytes())
        for name in (n for n, _, _ in jobs if n != "edit"):
            _half(out / name / "unifusion.safetensors", ABLATIONS_DIR / f"{name}.safetensors")
        (ABLATIONS_DIR / "recipe.json").write_text(json.dumps(record, indent=2))
        log.info("shipped %s and %s", CHECKPOINT, ABLATIONS_DIR)
    log.info("recipe finished in %.1f min: %s", record["total_minutes"], minutes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
