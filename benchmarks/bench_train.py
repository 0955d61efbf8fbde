"""Training throughput: samples/s on CPU for the `toy` preset; on a GPU, step time and model FLOPs
utilisation (MFU) for the `base` and `paper` DiT shapes (random weights, bf16 autocast).

    python benchmarks/bench_train.py [--gpu-peak-tflops 989]

One line per figure, `name = value  (goal OP threshold)`, machine first; exits 0 even when a goal is
missed. The step is the trainer's own (Trainable = LAP + DiT, flow-matching loss, AdamW), fed with
random VLM features of the preset's shapes (the frozen VLM's forward is not part of the step).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import best_of, machine  # noqa: E402
from unifusion_core import flow  # noqa: E402
from unifusion_core.checkpoint import build_modules  # noqa: E402
from unifusion_core.config import PAPER_VLM, UniFusionConfig, VLMSpec  # noqa: E402
from unifusion_core.train.trainer import Trainable  # noqa: E402


def make_step(cfg, batch, px, tokens, device, dtype):
    pooler, dit = build_modules(cfg, device=device)
    pooler.init_weights(); dit.init_weights()
    model = Trainable(pooler, dit).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    down = 8 if cfg.sampling.latent_format == "flux16" else 1
    x0 = torch.randn(batch, cfg.dit.in_channels, px // down, px // down, device=device)
    hidden = torch.randn(batch, cfg.lap.num_layers, tokens, cfg.lap.in_dim, device=device)
    mask = torch.ones(batch, tokens, dtype=torch.bool, device=device)
    drop = torch.zeros(batch, dtype=torch.bool, device=device)

    def step():
        sigma, noise = torch.rand(batch, device=device), torch.randn_like(x0)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss, _ = flow.flow_matching_loss(lambda x, t, c, m: model(c, m, x, t, drop), x0, hidden, mask, sigma, noise)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    n_params = sum(p.numel() for p in model.parameters())
    seq = tokens + (px // down // cfg.dit.patch_size) ** 2
    return step, n_params, seq


def cpu_toy():
    vlm = VLMSpec("Qwen2ForCausalLM", 12, 256, (4, 7, 10))
    cfg = UniFusionConfig.preset("toy", vlm)
    step, n, seq = make_step(cfg, batch=64, px=32, tokens=24, device=torch.device("cpu"), dtype=torch.bfloat16)
    dt = best_of(step, repeat=5, warmup=2)
    print(f"toy_train_samples_per_s = {64 / dt:.1f}  (goal > 0, reported)  [batch 64, 32x32 px, bf16 autocast, "
          f"{n / 1e6:.2f} M params, {seq} tokens, {dt:.3f} s/step]")


def gpu_mfu(peak_tflops):
    from dataclasses import replace

    # the full 8B paper DiT with AdamW states (~130 GB) needs FSDP over several GPUs; on one GPU the
    # paper-width model is measured with 8 of its 26 blocks (MFU is per block, so it carries over)
    for name, px, batch, depth in (("base", 512, 8, None), ("paper", 1024, 2, 8)):
        cfg = UniFusionConfig.preset(name, PAPER_VLM)
        if depth:
            cfg = replace(cfg, dit=replace(cfg.dit, depth=depth))
        step, n, seq = make_step(cfg, batch, px, tokens=256, device=torch.device("cuda"), dtype=torch.bfloat16)
        dt = best_of(step, repeat=5, warmup=2)
        # 6 N per token for the weights (fwd + bwd) + attention 12 * depth * seq * D per token
        flops = batch * seq * (6 * n + 12 * cfg.dit.depth * seq * cfg.dit.hidden_size)
        mfu = flops / dt / (peak_tflops * 1e12)
        print(f"{name}_mfu = {100 * mfu:.1f}%  (goal >= 40%)  [{dt * 1e3:.0f} ms/step, batch {batch}, {px} px, "
              f"{seq} tokens, {n / 1e9:.2f} B params]")
        del step
        torch.cuda.empty_cache()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gpu-peak-tflops", type=float, default=989.0, help="dense bf16 peak (H100 SXM: 989)")
    args = ap.parse_args()
    print(machine())
    cpu_toy()
    if torch.cuda.is_available():
        gpu_mfu(args.gpu_peak_tflops)
    else:
        print("base_mfu = n/a  (goal >= 40%)  [no GPU in this run]")
        print("paper_mfu = n/a  (goal >= 40%)  [no GPU in this run]")


if __name__ == "__main__":
    main()
