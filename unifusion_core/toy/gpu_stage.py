"""A prepared GPU stage of the shipped toy models (issue 12), for a session that is lent a GPU.

    python3 -m unifusion_core.toy.gpu_stage vlm --out "$OUT" --minutes 4      # the toy VLM, further
    python3 -m unifusion_core.toy.gpu_stage dit --out "$OUT" --vlm VLM_FOLDER --steps 2000

Each part is one command that ends inside the device machine's 10-minute limit and leaves at most
eight files of at most 16 MB under ``--out`` (what comes back from the machine):

``vlm``: continues the shipped toy VLM (``--init`` to start elsewhere) on the GPU for ``--minutes``
  (batches drawn by ``--workers`` loader processes), then scores it greedily on fresh scenes (captions;
  rewrites of held-out phrasing) -> ``vlm.tar`` (the whole VLM folder, ~6 MB, its train.log holding
  every stage), ``vlm_eval.json``, ``vlm_stage.json`` (settings, timings).
``dit``: a further DiT stage of the shipped checkpoint (``toy.recipe`` ``continue_stage``: a fresh mixed
  T2I + edit data set, the VLM features precomputed by a second process, the project's trainer) on the
  VLM given, then the strict learning curve of its snapshots -> ``unifusion-toy.safetensors`` (fp32,
  ~10 MB), ``curve.csv``, ``curve.png``, ``log.csv``, ``dit_stage.json``.

Nothing is shipped on the device: bring the files back, unpack ``vlm.tar`` under ``runs/``, run the
strict quality report (``benchmarks/quality_toy.py --checkpoint ... --vlm ...``) here and ship only
what beats the shipped models. On a CPU, ``--smoke`` runs the same code at tiny sizes.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tarfile
import time
from pathlib import Path

from .language import EDIT_REWRITES
from .shipped import CHECKPOINT, VLM_DIR

log = logging.getLogger(__name__)


def _workers() -> int:
    return max(0, min(14, (os.cpu_count() or 2) - 2))


def vlm_stage(a) -> int:
    from .vlm_train import VLMTrainConfig, evaluate, train

    out, work, t0 = Path(a.out), Path(a.work) / "vlm", time.time()
    out.mkdir(parents=True, exist_ok=True)
    cfg = VLMTrainConfig(out=str(work), init_from=a.init or str(VLM_DIR), minutes=a.minutes, batch_size=a.batch_size,
                         lr=a.lr, warmup_steps=50, seed=a.seed, device="auto", workers=a.workers, threads=1,
                         mix=a.mix, edit_kinds=a.edit_kinds, augment=a.augment, rewrite_order=a.rewrite_order,
                         edit_rewrite=a.edit_rewrite, preset="test" if a.smoke else "toy",
                         max_steps=3 if a.smoke else 0)
    train(cfg)
    minutes = (time.time() - t0) / 60
    with tarfile.open(out / "vlm.tar", "w") as tar:
        tar.add(work, arcname="vlm")
    results = evaluate(work, n=4 if a.smoke else a.eval_n)
    (out / "vlm_eval.json").write_text(json.dumps(results, indent=2))
    (out / "vlm_stage.json").write_text(json.dumps({"config": vars(a), "train_minutes": round(minutes, 2),
                                                    "total_minutes": round((time.time() - t0) / 60, 2)}, indent=2))
    log.info("VLM stage finished in %.1f min: %s", (time.time() - t0) / 60, results)
    return 0


def dit_stage(a) -> int:
    from . import curve
    from . import recipe

    out, work, t0 = Path(a.out), Path(a.work) / "stage", time.time()
    out.mkdir(parents=True, exist_ok=True)
    recipe.main(["--vlm", a.vlm, "--out", str(work), "--continue_from", a.init or str(CHECKPOINT),
                 "--stage_steps", str(a.steps), "--stage_t2i", str(a.t2i), "--stage_edits", str(a.edits),
                 "--stage_seed", str(a.seed), "--abs_pos_grid", "-1", "--batch_size", str(a.batch_size),
                 "--lr", str(a.lr), "--snapshot_every", str(max(1, a.steps // 6)), "--rewrite_order", a.rewrite_order,
                 "--edit_rewrite", a.edit_rewrite])
    run = work / "main"
    shutil.copy(run / "unifusion.safetensors", out / "unifusion-toy.safetensors")
    shutil.copy(run / "log.csv", out / "log.csv")
    train_minutes = (time.time() - t0) / 60
    curve.score_snapshots(run, vlm=a.vlm, n=a.curve_n, n_edit=a.curve_edits)
    curve.plot(run)
    for name in ("curve.csv", "curve.png"):
        shutil.copy(run / name, out / name)
    (out / "dit_stage.json").write_text(json.dumps({"config": vars(a), "train_minutes": round(train_minutes, 2),
                                                    "total_minutes": round((time.time() - t0) / 60, 2)}, indent=2))
    log.info("DiT stage finished in %.1f min", (time.time() - t0) / 60)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="part", required=True)
    v = sub.add_parser("vlm", help="continue the toy VLM on the GPU")
    v.add_argument("--minutes", type=float, default=4.0)
    v.add_argument("--batch_size", type=int, default=64)
    v.add_argument("--lr", type=float, default=4e-4)
    v.add_argument("--augment", type=float, default=0.0)
    v.add_argument("--mix", default="0.22,0.24,0.44,0.03,0.07",
                   help="task weights: caption,t2i,edit,pick,compose (default: the shipped VLM's last stage)")
    v.add_argument("--edit_kinds", default="", help="edit kind weights in language.EDIT_KINDS order (default: equal)")
    v.add_argument("--rewrite_order", default="canonical", choices=("canonical", "request"))
    v.add_argument("--edit_rewrite", default=None, choices=EDIT_REWRITES, help="default: the style of the VLM continued")
    v.add_argument("--workers", type=int, default=_workers())
    v.add_argument("--eval_n", type=int, default=100)
    d = sub.add_parser("dit", help="a further DiT stage on the GPU")
    d.add_argument("--vlm", default=str(VLM_DIR), help="the VLM the stage trains on (e.g. the unpacked vlm.tar)")
    d.add_argument("--steps", type=int, default=2000)
    d.add_argument("--batch_size", type=int, default=64)
    d.add_argument("--lr", type=float, default=1e-3)
    d.add_argument("--t2i", type=int, default=20000)
    d.add_argument("--edits", type=int, default=-1, help="-1: 40%% of --t2i")
    d.add_argument("--curve_n", type=int, default=60)
    d.add_argument("--curve_edits", type=int, default=28, help="held-out edits in the curve's probe")
    d.add_argument("--rewrite_order", default="canonical", choices=("canonical", "request"))
    d.add_argument("--edit_rewrite", default=None, choices=EDIT_REWRITES, help="default: the style --vlm was trained with")
    for p in (v, d):
        p.add_argument("--out", required=True, help="where the files to bring back go ($OUT on the device)")
        p.add_argument("--work", default="runs/gpu_stage", help="scratch folder (stays on the device)")
        p.add_argument("--init", default="", help="start from this VLM folder / checkpoint instead of the shipped one")
        p.add_argument("--seed", type=int, default=21)
        p.add_argument("--smoke", action="store_true", help="tiny sizes: checks the script on a CPU")
    a = ap.parse_args(argv)
    from .vlm_train import stage_edit_rewrite
    a.edit_rewrite = stage_edit_rewrite(a.edit_rewrite, (a.init or VLM_DIR) if a.part == "vlm" else a.vlm)
    if a.part == "vlm":
        from .language import EDIT_KINDS
        from .vlm_train import TASKS, parse_weights
        try:
            a.mix = parse_weights("--mix", a.mix, TASKS)
            a.edit_kinds = parse_weights("--edit_kinds", a.edit_kinds, EDIT_KINDS) if a.edit_kinds else ()
        except ValueError as e:
            v.error(str(e))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if a.part == "dit" and a.smoke:
        a.steps, a.t2i, a.curve_n, a.curve_edits = min(a.steps, 4), min(a.t2i, 20), min(a.curve_n, 4), min(a.curve_edits, 2)
    return vlm_stage(a) if a.part == "vlm" else dit_stage(a)


if __name__ == "__main__":
    sys.exit(main())
