"""`make toy-train`: the shipped toy UniFusion model, reproduced from scratch with the project's trainer.

Stages (each a plain `python -m unifusion_core.train` run on the frozen toy VLM):
  1. T2I: paraphrased prompts with canonical VERIFI rewrites (mixed VERIFI / raw, ~3% recon);
  2. edit fine-tune from stage 1: single-reference edits plus T2I examples (never two references).
Ablations at the same budget: `--pooler last_layer` and `--verifi_share 0` (raw prompts only).

    python -m unifusion_core.toy.recipe --vlm models/toy/unifusion-toy-vlm --out runs/toy --minutes 20
"""
from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .tasks import write_dataset

log = logging.getLogger(__name__)


def _train(run_dir: Path, manifest: Path, vlm: str, steps: int, extra: list[str]) -> Path:
    cmd = [sys.executable, "-m", "unifusion_core.train", "--manifest", str(manifest), "--vlm", vlm,
           "--run_dir", str(run_dir), "--preset", "toy", "--resolution", "32", "--buckets", "1:1",
           "--batch_size", "64", "--lr", "1e-3", "--warmup_steps", "50", "--max_steps", str(steps),
           "--mixed_precision", "bf16", "--ema_decay", "0.995", "--save_every", "500", "--log_every", "50",
           "--sample_steps", "20", *extra]
    log.info("running %s", " ".join(cmd))
    subprocess.run(cmd, check=True)
    return run_dir / "unifusion.safetensors"


def steps_for(minutes: float, seconds_per_step: float) -> int:
    return max(50, int(minutes * 60 / seconds_per_step))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vlm", default="models/toy/unifusion-toy-vlm")
    ap.add_argument("--out", default="runs/toy")
    ap.add_argument("--t2i_steps", type=int, default=3000)
    ap.add_argument("--edit_steps", type=int, default=1000)
    ap.add_argument("--examples", type=int, default=4000, help="T2I examples in stage 1")
    ap.add_argument("--ablations", action="store_true", help="also train last-layer and raw-only at stage-1 budget")
    ap.add_argument("--ship", default="models/toy/unifusion-toy.safetensors")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out, t0 = Path(args.out), time.perf_counter()
    t2i = write_dataset(out / "data_t2i", t2i=args.examples, recon=args.examples // 30, size=32, seed=1)
    edit = write_dataset(out / "data_edit", t2i=args.examples // 4, edit=args.examples, size=32, seed=2)
    stage1 = _train(out / "t2i", t2i, args.vlm, args.t2i_steps, [])
    stage2 = _train(out / "edit", edit, args.vlm, args.edit_steps, ["--init_from", str(stage1), "--warmup_steps", "10"])
    if args.ablations:
        _train(out / "ablation_last_layer", t2i, args.vlm, args.t2i_steps, ["--pooler", "last_layer"])
        _train(out / "ablation_raw_only", t2i, args.vlm, args.t2i_steps, ["--verifi_share", "0"])
    Path(args.ship).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(stage2, args.ship)
    log.info("shipped %s (stage 1 %s) in %.1f min", args.ship, stage1, (time.perf_counter() - t0) / 60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
