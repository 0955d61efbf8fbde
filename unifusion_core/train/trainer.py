"""The training loop: flow matching of LAP + refiner + DiT on a frozen VLM, on accelerate.

The same command runs 1 CPU process or N GPUs on M machines (`accelerate launch --config_file`
starts the processes, see accelerate_configs/); ``--strategy ddp`` replicates LAP + refiner + DiT,
``--strategy fsdp`` shards them with FSDP2 (sharding.py). Legend: B batch, T tokens, D width.
"""
from __future__ import annotations

import csv
import logging
import math
import os
import signal
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from .. import flow
from ..checkpoint import build_modules, check_vlm, load_checkpoint
from ..blocks import ATTENTION
from ..condition import null_condition
from ..config import LATENT_CHANNELS, UniFusionConfig, VLMSpec
from ..errors import UniFusionError
from .batches import BatchMaker, training_shift
from .config import TrainConfig
from .data import Dataset, load_manifest, micro_batch
from .ema import EMA
from . import sharding
from .state import export, latest_state, sample_grid, save_state

log = logging.getLogger(__name__)
SIGMA_BINS = 4


class Trainable(nn.Module):
    """LAP + DiT as one module so DDP/FSDP wrap (and sync) both."""

    def __init__(self, pooler, dit):
        super().__init__()
        self.lap, self.dit = pooler, dit

    def forward(self, hidden, mask, x_t, timesteps, drop):
        cond = self.lap(hidden, mask)  # (B, T, D)
        cond = null_condition(cond, drop)  # CFG dropout: those rows get ConditioningZeroOut's null
        return self.dit(x_t, timesteps, cond, mask)


def model_config(t: TrainConfig, vlm) -> UniFusionConfig:
    """The checkpoint's config: from ``init_from`` when fine-tuning, else the preset for this VLM."""
    from ..vlm import select_layers

    prompts = {task: getattr(t, f"system_prompt_{task}", "") or _preset_prompt(task) for task in ("t2i", "edit")}
    if t.init_from:
        cfg = load_checkpoint(t.init_from)[0]
        check_vlm(cfg, vlm.identity, where=f"init_from {t.init_from}")
        got = vlm.identity.get("fingerprint", "")
        if got and got != cfg.vlm.fingerprint:  # continued on another VLM of the same shapes: name that one
            log.info("init_from %s was trained on VLM %s (%s); this run and its exports use %s (%s)", t.init_from,
                     cfg.vlm.name, cfg.vlm.fingerprint or "no fingerprint", Path(t.vlm).name, got)
            cfg = replace(cfg, vlm=replace(cfg.vlm, fingerprint=got, name=Path(t.vlm).name))
        return _with_abs_pos(replace(cfg, system_prompts={**cfg.system_prompts, **prompts}), t)
    ident = vlm.identity
    layers = select_layers(t.layers, ident["num_layers"]) if t.layers else vlm.default_layers()
    spec = VLMSpec(ident["architecture"], ident["num_layers"], ident["hidden_size"], layers, name=Path(t.vlm).name,
                   fingerprint=ident.get("fingerprint", ""))
    cfg = UniFusionConfig.preset(t.preset, spec)
    latent_format = t.latent_format or cfg.sampling.latent_format
    dit = replace(cfg.dit, in_channels=LATENT_CHANNELS[latent_format])
    return _with_abs_pos(replace(cfg, lap=replace(cfg.lap, kind=t.pooler), dit=dit, system_prompts=prompts,
                                 sampling=replace(cfg.sampling, latent_format=latent_format)), t)


def _with_abs_pos(cfg: UniFusionConfig, t: TrainConfig) -> UniFusionConfig:
    return cfg if t.abs_pos_grid < 0 else replace(cfg, dit=replace(cfg.dit, abs_pos_grid=t.abs_pos_grid))


def _preset_prompt(task: str) -> str:
    from ..verifi import system_prompt

    return system_prompt(task)


def lr_lambda(t: TrainConfig):
    def f(step):
        if step < t.warmup_steps:
            return (step + 1) / t.warmup_steps
        frac = (step - t.warmup_steps) / max(1, t.max_steps - t.warmup_steps)
        return {"constant": 1.0, "linear": 1.0 - frac, "cosine": 0.5 * (1 + math.cos(math.pi * frac))}[t.decay]
    return f


def _setup(t: TrainConfig, acc):
    from ..vlm import load_vlm

    vlm_device = acc.device if t.vlm_device == "auto" else torch.device("cpu")
    vlm = load_vlm(t.vlm, device=vlm_device, dtype="bf16" if acc.device.type == "cuda" else None)
    log.info("frozen VLM on %s", vlm_device)
    ucfg = model_config(t, vlm)
    vae = None
    if ucfg.sampling.latent_format == "flux16":
        if not t.vae:
            raise UniFusionError("a flux16 model needs --vae pointing at the FLUX.1 ae.safetensors, found none.")
        from ..vae import load_flux_vae

        vae = load_flux_vae(t.vae, device=acc.device)
    unit = ucfg.dit.patch_size * (vae.downscale if vae is not None else 1)
    ds = Dataset.build(load_manifest(t.manifest), t.resolution, t.buckets, unit)
    grid = ds.buckets[0]
    # the checkpoint stores the shift of the first bucket's resolution, for samplers (ComfyUI's too)
    shift = training_shift(t, (grid[0] // unit) * (grid[1] // unit))
    # ... and the training size, so the pipeline and the nodes default to it
    ucfg = replace(ucfg, sampling=replace(ucfg.sampling, shift=round(shift, 4), resolution=t.resolution,
                                          buckets=tuple(tuple(b) for b in ds.buckets)))
    return vlm, vae, ucfg, ds


def _build_model(t: TrainConfig, ucfg):
    torch.manual_seed(t.seed)  # identical init on every process
    pooler, dit = build_modules(ucfg, attn_fn=ATTENTION[t.attention])
    if t.init_from:
        state = load_checkpoint(t.init_from)[1]
        pooler.load_state_dict(state["lap"])
        dit.init_weights()  # only what the checkpoint lacks keeps this init (a new abs_pos table: zeros)
        missing, unexpected = dit.load_state_dict(state["dit"], strict=False)
        if unexpected or set(missing) - {"abs_pos"}:
            raise UniFusionError(f"init_from {t.init_from} does not fit this DiT: missing {sorted(missing)}, "
                                 f"unexpected {sorted(unexpected)} (abs_pos_grid {t.abs_pos_grid}).")
    else:
        pooler.init_weights()
        dit.init_weights()
    dit.gradient_checkpointing = t.grad_checkpointing
    return Trainable(pooler, dit)


class Meter:
    """Loss per sigma bin and grad norm, accumulated on device and synced only when logged."""

    def __init__(self, device):
        self.sums = torch.zeros(SIGMA_BINS, device=device)
        self.counts = torch.zeros(SIGMA_BINS, device=device)
        self.grad = torch.zeros((), device=device)
        self.steps = 0

    def add(self, per_sample, sigma, grad_norm):
        bins = (sigma * SIGMA_BINS).long().clamp(0, SIGMA_BINS - 1)
        self.sums.index_add_(0, bins, per_sample.detach().float())
        self.counts.index_add_(0, bins, torch.ones_like(per_sample, dtype=torch.float))
        self.grad += grad_norm.detach().float() if torch.is_tensor(grad_norm) else float(grad_norm or 0.0)
        self.steps += 1

    def flush(self, acc) -> dict:
        sums, counts = acc.reduce(self.sums, "sum"), acc.reduce(self.counts, "sum")
        out = {"loss": float(sums.sum() / counts.sum().clamp_min(1)), "grad_norm": float(self.grad) / max(self.steps, 1)}
        out |= {f"loss_sigma{b}": float(sums[b] / counts[b]) if counts[b] > 0 else float("nan") for b in range(SIGMA_BINS)}
        self.sums.zero_(); self.counts.zero_(); self.grad.zero_(); self.steps = 0
        return out


def _log_row(path: Path, row: dict):
    new = not path.exists()
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


def _truncate_log(path: Path, step: int):
    """On resume, drop log rows past the resumed step so no step appears twice."""
    if not path.exists():
        return
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    kept = [r for r in rows if int(r["step"]) <= step]
    with path.open("w", newline="") as f:
        if rows:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(kept)


def _check_ranks_agree(acc, trainable, run_dir: Path, step: int):
    """Every process must end with the same weights; record their digests in run_dir/final_state.json.
    (Sharded: the digest of the weights gathered from every process's shards.)"""
    import hashlib
    import json

    from accelerate.utils import gather_object

    state = sharding.full_state(trainable) if sharding.is_sharded(trainable) else \
        acc.unwrap_model(trainable).state_dict()
    h = hashlib.sha256()
    for k, v in sorted(state.items()):
        h.update(k.encode())
        h.update(v.detach().float().cpu().contiguous().numpy().tobytes())
    digests = gather_object([h.hexdigest()])
    if acc.is_main_process:
        (run_dir / "final_state.json").write_text(json.dumps({"step": step, "weights_sha256": digests}))
        if len(set(digests)) != 1:
            log.error("processes ended with different weights: %s", digests)


def train(t: TrainConfig) -> Path:
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    if t.mixed_precision == "auto":
        from .precision import choose_precision

        t = replace(t, mixed_precision=choose_precision())
    acc = Accelerator(mixed_precision=t.mixed_precision, gradient_accumulation_steps=t.grad_accum,
                      cpu=t.device == "cpu" or not torch.cuda.is_available())  # N CPU processes: MULTI_CPU (gloo)
    run_dir = Path(t.run_dir)
    if acc.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        t.dump(run_dir / "config.json")
    vlm, vae, ucfg, ds = _setup(t, acc)
    maker = BatchMaker(t, ucfg, ds, vlm, vae, acc.device)
    trainable = _build_model(t, ucfg)
    fsdp = t.strategy == "fsdp"
    if fsdp:  # before the optimizer and the EMA: both hold the shards
        sharding.shard(trainable, acc.device, t.mixed_precision)
    opt = torch.optim.AdamW(trainable.parameters(), lr=t.lr, betas=(0.9, 0.99), weight_decay=t.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(t))
    ema = EMA(trainable, t.ema_decay) if t.ema_decay > 0 else None
    if not fsdp:  # DDP (several processes) or nothing; FSDP2 modules sync themselves
        trainable, opt = acc.prepare(trainable, opt)
    acc.register_for_checkpointing(sched)
    if ema is not None and not fsdp:
        acc.register_for_checkpointing(ema)
    save_shards = (lambda folder: sharding.save(folder, trainable, opt, ema)) if fsdp else None
    step = 0
    found = latest_state(run_dir) if t.resume else None
    if found:
        acc.load_state(str(found[0]))
        if fsdp:
            sharding.load(found[0], trainable, opt, ema)
        step = found[1]
        if acc.is_main_process:
            _truncate_log(run_dir / "log.csv", step)
        log.info("resumed from %s at step %d", found[0], step)
    model_fn = torch.compile(trainable) if t.compile else trainable
    meter, bar = Meter(acc.device), tqdm(total=t.max_steps, initial=step, disable=not acc.is_main_process,
                                         desc="train", dynamic_ncols=True)
    samples_per_step = t.batch_size * acc.num_processes * t.grad_accum
    tick = time.perf_counter()
    while step < t.max_steps:
        grad_norm = None
        for micro in range(t.grad_accum):
            m = step * t.grad_accum + micro
            b = maker.make(micro_batch(ds, m, t.seed, t.batch_size, acc.process_index, acc.num_processes),
                           m, acc.process_index)
            if fsdp:  # reduce-scatter the gradients on the last micro-batch only
                trainable.set_requires_gradient_sync(micro == t.grad_accum - 1)
            with acc.accumulate(trainable):
                with acc.autocast():
                    loss, per = flow.flow_matching_loss(
                        lambda x, ts, ctx, msk: model_fn(ctx, msk, x, ts, b["drop"]), b["x0"], b["hidden"],
                        b["mask"], b["sigma"], b["noise"], ucfg.sampling.multiplier)
                acc.backward(loss)
                if acc.sync_gradients:  # max_norm inf: measure the norm for the log, clip nothing
                    clip = sharding.clip_grad_norm_ if fsdp else acc.clip_grad_norm_
                    grad_norm = clip(trainable.parameters(), t.grad_clip or float("inf"))
                    opt.step()
                    opt.zero_grad(set_to_none=True)
            meter.add(per, b["sigma"], grad_norm if acc.sync_gradients else 0.0)
        sched.step()
        step += 1
        if ema is not None:
            ema.update(acc.unwrap_model(trainable))
        bar.update(1)
        if step % t.log_every == 0 or step == t.max_steps:
            dt = time.perf_counter() - tick
            row = {"step": step, "lr": sched.get_last_lr()[0], **meter.flush(acc),
                   "samples_per_s": samples_per_step * t.log_every / max(dt, 1e-9), "skipped": len(ds.skipped)}
            tick = time.perf_counter()
            if acc.is_main_process:
                bar.set_postfix(loss=f"{row['loss']:.4f}", samples_s=f"{row['samples_per_s']:.1f}")
                _log_row(run_dir / "log.csv", row)
        if t.save_every and step % t.save_every == 0 and step < t.max_steps:
            save_state(acc, run_dir, step, t.keep_states, save_shards)
        if t.pause_at_step == step and acc.is_main_process and hasattr(signal, "SIGSTOP"):
            log.info("pausing at step %d (pause_at_step)", step)
            os.kill(os.getpid(), signal.SIGSTOP)
        if t.snapshot_every and step % t.snapshot_every == 0:
            export(acc, ucfg, trainable, ema, run_dir / "snapshots" / f"step_{step:07d}.safetensors", step)
        if t.sample_every and step % t.sample_every == 0 and step < t.max_steps:
            model = export(acc, ucfg, trainable, ema, run_dir / "unifusion_latest.safetensors", step)
            if model is not None:
                sample_grid(model, maker, run_dir / "samples" / f"step_{step:07d}.png", t.sample_steps)
    bar.close()
    save_state(acc, run_dir, step, t.keep_states, save_shards)
    _check_ranks_agree(acc, trainable, run_dir, step)
    out = Path(t.export or run_dir / "unifusion.safetensors")
    model = export(acc, ucfg, trainable, ema, out, step)
    if model is not None:
        few = range(len(ds.records)) if len(ds.records) <= 16 else None  # small runs: sample every record
        mses = sample_grid(model, maker, run_dir / "samples" / f"step_{step:07d}.png", t.sample_steps, few)
        log.info("final samples: pixel MSE %s; %d manifest records skipped", [round(x, 4) for x in mses],
                 len(ds.skipped))
    acc.wait_for_everyone()
    acc.end_training()
    return out
