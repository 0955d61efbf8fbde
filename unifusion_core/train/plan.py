"""A memory / throughput planner for a training run at a model preset's shapes, without any weights:

    python -m unifusion_core.train plan --preset paper --resolution 1024 --gpus 8 --strategy fsdp [--grad-checkpointing]

Parameters are counted on the meta device. FLOPs are the matmul FLOPs of the formulas below (2 per
multiply-add; forward + backward = 3x forward, + 1 forward more with activation checkpointing);
``tests/test_train_plan.py`` checks them against ``torch.utils.flop_counter`` on real small models.

Per sample, S = Tc + N tokens in the DiT (Tc condition tokens, N latent patches), D width, H its SwiGLU
width, per block: 2 S (4 D^2 + 3 D H) + 4 S^2 D (+ 12 D^2 for adaLN); the refiner the same over Tc
tokens; LAP over Tc tokens x Lv layers at its width W.

Memory per GPU (bytes): fp32 master weights, gradients and two Adam moments (16 per trainable
parameter) and the EMA (4), divided by the GPU count under FSDP, whole under DDP; plus a bf16 copy of the weights for
compute (FSDP: the GPU's shard and one gathered block, DDP: all); activations per sample and block in
bf16 with a fused attention kernel (no S^2 scores kept), after Korthikanti et al. 2022: S (34 D + 6 H)
bytes times 1.2 (what our block measures), or with checkpointing the 2 S D bytes of each block's input plus one block recomputed,
and as much again for the gradients of one block's activations during the backward; the
frozen VLM in bf16 unless the features come from a cache (``--features cached``). ``--compute fp32``
(a CPU run without autocast) keeps no bf16 copy and 4-byte activations. These are
estimates of the dominant terms, not an allocator trace: leave headroom.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch

from ..blocks import swiglu_hidden
from ..config import PAPER_VLM, PRESETS, UniFusionConfig
from ..errors import UniFusionError

GiB = 1024 ** 3


@dataclass
class Plan:
    params_dit: int
    params_lap: int
    tokens_latent: int
    tokens_cond: int
    flops_forward: float  # per sample
    flops_train: float  # per sample, forward + backward (+ recompute)
    memory: dict  # name -> bytes per GPU
    step_seconds: float


def latent_tokens(cfg: UniFusionConfig, resolution: int) -> int:
    down = 8 if cfg.sampling.latent_format == "flux16" else 1
    side = resolution // (down * cfg.dit.patch_size)
    return side * side


def forward_flops(cfg: UniFusionConfig, n_latent: int, n_cond: int) -> dict:
    """Matmul FLOPs of one sample's forward, by part."""
    d, dit = cfg.dit.hidden_size, cfg.dit
    h = swiglu_hidden(d, dit.mlp_ratio)
    s = n_cond + n_latent

    def blocks(tokens, dim, hidden, count, modulated):
        per = 2 * tokens * (4 * dim * dim + 3 * dim * hidden) + 4 * tokens * tokens * dim
        return count * (per + (12 * dim * dim if modulated else 0))

    cp = dit.in_channels * dit.patch_size ** 2
    out = {"dit_blocks": blocks(s, d, h, dit.depth, True),
           "refiner": 2 * n_cond * dit.cond_dim * d + blocks(n_cond, d, h, dit.refiner_depth, False),
           "embed_and_out": 2 * n_latent * cp * d * 2 + 2 * (dit.time_freq_dim * d + d * d) + 4 * d * d}
    lap = cfg.lap
    lv, w = lap.num_layers, lap.width
    if lap.kind == "lap":
        hl = swiglu_hidden(w, lap.mlp_ratio)
        inp = 2 * n_cond * lv * lap.in_dim * w if w != lap.in_dim else 0
        per_token_blocks = lap.blocks * (2 * lv * (4 * w * w + 3 * w * hl) + 4 * lv * lv * w)
        out["lap"] = inp + n_cond * per_token_blocks + 2 * n_cond * w * lap.out_dim
    else:
        out["lap"] = 2 * n_cond * (lap.in_dim * w + w * lap.out_dim)
    return out


# Korthikanti et al.'s S (34 D + 6 H) bytes per block (bf16, fused attention) undercounts our block
# (adaLN-zero modulation, QK-norm, RoPE): the tensors autograd saves measure 1.2x it on the toy and tiny
# presets (tests/test_train_plan.py measures them).
ACTIVATION_FACTOR = 1.2


def activation_bytes_per_block(cfg: UniFusionConfig, seq: int, bytes_per_value: int = 2) -> float:
    """Bytes one DiT block keeps for its backward, per sample of ``seq`` tokens (bf16 by default)."""
    d = cfg.dit.hidden_size
    return ACTIVATION_FACTOR * seq * (34 * d + 6 * swiglu_hidden(d, cfg.dit.mlp_ratio)) * bytes_per_value / 2


def count_params(cfg: UniFusionConfig) -> tuple[int, int]:
    from ..checkpoint import build_modules

    with torch.device("meta"):
        pooler, dit = build_modules(cfg)
    return sum(p.numel() for p in dit.parameters()), sum(p.numel() for p in pooler.parameters())


def plan(cfg: UniFusionConfig, *, resolution: int, gpus: int, strategy: str, batch_per_gpu: int,
         cond_tokens: int, grad_checkpointing: bool, vlm_params: float, features: str, gpu_tflops: float,
         mfu: float, ema: bool = True, compute: str = "bf16") -> Plan:
    if strategy not in ("fsdp", "ddp"):
        raise UniFusionError(f"--strategy should be 'fsdp' or 'ddp', found {strategy!r}.")
    if compute not in ("bf16", "fp32"):
        raise UniFusionError(f"--compute should be 'bf16' or 'fp32', found {compute!r}.")
    if gpus < 1 or batch_per_gpu < 1 or resolution < 1:
        raise UniFusionError(f"--gpus, --batch_per_gpu and --resolution should be >= 1, found {gpus}, "
                             f"{batch_per_gpu}, {resolution}.")
    p_dit, p_lap = count_params(cfg)
    n_lat = latent_tokens(cfg, resolution)
    fwd = sum(forward_flops(cfg, n_lat, cond_tokens).values())
    train = fwd * (4 if grad_checkpointing else 3)
    trainable = p_dit + p_lap
    d, depth = cfg.dit.hidden_size, cfg.dit.depth
    h = swiglu_hidden(d, cfg.dit.mlp_ratio)
    s = n_lat + cond_tokens
    value = 2 if compute == "bf16" else 4  # bytes per activation
    per_block = activation_bytes_per_block(cfg, s, bytes_per_value=value)
    shard = gpus if strategy == "fsdp" else 1
    sharded = ", sharded" if shard > 1 else ""
    largest_block = 12 * d * d + 3 * d * h  # parameters of one DiT block (attention + SwiGLU + adaLN)
    memory = {
        f"weights+grads+adam (fp32{sharded})": 16 * trainable / shard,
        f"EMA (fp32{sharded})": 4 * trainable / shard if ema else 0,
        "bf16 compute weights": 0 if compute == "fp32" else
        2 * (trainable / shard + largest_block if shard > 1 else trainable),
        "activations": batch_per_gpu * (depth * value * s * d + per_block if grad_checkpointing else depth * per_block),
        "backward buffers": batch_per_gpu * per_block,  # one block's activation gradients at a time
        "frozen VLM (bf16)": 0 if features == "cached" else 2 * vlm_params,
    }
    step = train * batch_per_gpu / (gpu_tflops * 1e12 * mfu)
    return Plan(p_dit, p_lap, n_lat, cond_tokens, fwd, train, memory, step)


def format_plan(args, pl: Plan) -> str:
    lines = [f"preset {args.preset} at {args.resolution}^2 px, {args.gpus} GPU(s), {args.strategy}"
             f"{', activation checkpointing' if args.grad_checkpointing else ''}, batch {args.batch_per_gpu} per GPU",
             f"parameters: DiT {pl.params_dit / 1e9:.3f} B + pooler {pl.params_lap / 1e9:.3f} B (trainable); "
             f"VLM {args.vlm_params / 1e9:.1f} B (frozen)",
             f"tokens per sample: {pl.tokens_latent} latent + {pl.tokens_cond} condition",
             f"FLOPs per sample: forward {pl.flops_forward / 1e12:.2f} TFLOP, training step "
             f"{pl.flops_train / 1e12:.2f} TFLOP (forward + backward{' + recompute' if args.grad_checkpointing else ''})",
             "memory per GPU:"]
    lines += [f"  {k:38s} {v / GiB:8.1f} GiB" for k, v in pl.memory.items()]
    lines += [f"  {'total':38s} {sum(pl.memory.values()) / GiB:8.1f} GiB",
              f"step time at {args.mfu:.0%} MFU of {args.gpu_tflops:.0f} TFLOP/s: {pl.step_seconds:.2f} s "
              f"({args.batch_per_gpu * args.gpus / pl.step_seconds:.1f} samples/s over {args.gpus} GPU(s))"]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m unifusion_core.train plan", description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="paper", choices=sorted(PRESETS))
    ap.add_argument("--resolution", type=int, default=1024)
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--strategy", default="fsdp", help="fsdp | ddp")
    ap.add_argument("--batch_per_gpu", type=int, default=4)
    ap.add_argument("--cond_tokens", type=int, default=256, help="condition tokens per sample (prompt + image tokens)")
    ap.add_argument("--grad-checkpointing", "--grad_checkpointing", dest="grad_checkpointing", action="store_true")
    ap.add_argument("--vlm_params", type=float, default=8e9, help="frozen VLM parameters (InternVL-2.5-8B: 8e9)")
    ap.add_argument("--features", default="online", choices=("online", "cached"),
                    help="cached: VLM features precomputed (python -m unifusion_core.train.precompute), no VLM in memory")
    ap.add_argument("--gpu_tflops", type=float, default=989.0, help="peak dense bf16 TFLOP/s per GPU (H100 SXM: 989)")
    ap.add_argument("--mfu", type=float, default=0.4)
    ap.add_argument("--compute", default="bf16", choices=("bf16", "fp32"), help="fp32: no bf16 weight copy, 4-byte activations")
    ap.add_argument("--no_ema", dest="ema", action="store_false", help="a run without an EMA (--ema_decay 0)")
    args = ap.parse_args(argv)
    try:
        cfg = UniFusionConfig.preset(args.preset, PAPER_VLM)
        pl = plan(cfg, resolution=args.resolution, gpus=args.gpus, strategy=args.strategy,
                  batch_per_gpu=args.batch_per_gpu, cond_tokens=args.cond_tokens,
                  grad_checkpointing=args.grad_checkpointing, vlm_params=args.vlm_params, features=args.features,
                  gpu_tflops=args.gpu_tflops, mfu=args.mfu, ema=args.ema, compute=args.compute)
    except UniFusionError as err:
        print(f"error: {err}")
        return 2
    print(format_plan(args, pl))
    return 0


