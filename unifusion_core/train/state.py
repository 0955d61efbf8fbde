"""Training state on disk: atomic accelerate checkpoints, resume, the final export, sample grids."""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import torch

from ..checkpoint import build_modules, save_checkpoint

log = logging.getLogger(__name__)


def save_state(acc, run_dir: Path, step: int, keep: int, also=None):
    """accelerate.save_state into a temp folder, then rename: a crash never leaves a half state.
    ``also(folder)``, when given, writes more into it on every process (the FSDP shards)."""
    states = run_dir / "state"
    tmp, final = states / f".tmp_step_{step:07d}", states / f"step_{step:07d}"
    if acc.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    acc.wait_for_everyone()
    acc.save_state(str(tmp), safe_serialization=True)
    if also is not None:
        also(tmp)
    acc.wait_for_everyone()
    if acc.is_main_process:
        (tmp / "step.json").write_text(json.dumps({"step": step}))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        latest_tmp = states / ".latest.tmp"
        latest_tmp.write_text(final.name)
        os.replace(latest_tmp, states / "latest")
        for old in sorted(p for p in states.glob("step_*") if p.is_dir())[:-keep]:
            shutil.rmtree(old)
    acc.wait_for_everyone()


def latest_state(run_dir: Path):
    """-> (folder, step) of the newest complete state, or None."""
    marker = run_dir / "state" / "latest"
    if not marker.is_file():
        return None
    folder = run_dir / "state" / marker.read_text().strip()
    if not (folder / "step.json").is_file():
        log.warning("state marker points at %s, which is incomplete; starting from scratch", folder)
        return None
    return folder, json.loads((folder / "step.json").read_text())["step"]


def export(acc, ucfg, trainable, ema, path: Path, step: int):
    """Write the UniFusion checkpoint (EMA weights when EMA is on) that the nodes and pipeline load.
    Every process calls it (a sharded model and EMA are gathered here, once); the main one writes."""
    from .sharding import full_state, is_sharded

    if is_sharded(trainable):
        state = full_state(trainable)
        shadow = ema.full_shadow(trainable) if ema is not None else None
    else:
        state, shadow = acc.get_state_dict(trainable), None  # full weights on the main process
    if not acc.is_main_process:
        return None
    pooler, dit = build_modules(ucfg)
    model = torch.nn.ModuleDict({"lap": pooler, "dit": dit})
    model.load_state_dict(state)
    if ema is not None:
        ema.copy_to(model, shadow)
    save_checkpoint(path, ucfg, model["lap"], model["dit"], extra={"train_steps": step})
    log.info("exported %s (step %d%s)", path, step, ", EMA weights" if ema is not None else "")
    return model


@torch.no_grad()
def sample_grid(model, maker, out: Path, steps: int, records=None) -> list[float]:
    """Render records (default: the first 4) next to their targets, conditioned as in training
    (the VERIFI rewrite when the record has one); -> pixel MSE per record, in 0..1 units."""
    from PIL import Image

    from ..condition import pool
    from ..pipeline import UniFusionPipeline
    from .data import fit_to

    ucfg, ds = maker.ucfg, maker.ds
    pipe = UniFusionPipeline(ucfg, model["lap"].eval(), model["dit"].eval(), maker.vlm, maker.vae)
    tiles, mses = [], []
    for i in records if records is not None else range(min(4, len(ds.records))):
        if i in ds.skipped:
            continue
        _, target, refs = ds.load(i)
        rec = ds.records[i]
        mode = "recon" if rec.task == "recon" else ("verifi" if rec.rewrite is not None else "raw")
        prompt, roles = maker.prompt_for(rec, mode, target, refs)
        cond, mask = pool(model["lap"], ucfg, maker.vlm.encode([prompt], layers=ucfg.vlm.layers), roles)
        w, h = ds.buckets[ds.assignment[i]]
        img = pipe.sample(cond, mask, width=w, height=h, seed=i, steps=steps, guidance=1.0)[0]  # (H, W, 3)
        want = (fit_to(target, (w, h)).permute(1, 2, 0) + 1) / 2
        mses.append(float(((img - want) ** 2).mean()))
        tiles.append(torch.cat([want, img], dim=1))
    if tiles:
        width = max(t.shape[1] for t in tiles)
        grid = torch.cat([torch.nn.functional.pad(t, (0, 0, 0, width - t.shape[1])) for t in tiles], dim=0)
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((grid.clamp(0, 1) * 255).round().byte().numpy()).save(out)
        out.with_suffix(".json").write_text(json.dumps({"mse": mses}))
    model.train()
    return mses
