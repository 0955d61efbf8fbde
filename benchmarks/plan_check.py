"""The planner (`python -m unifusion_core.train plan`) against what small CPU training steps measure.

    .venv/bin/python benchmarks/plan_check.py

For each case a fresh process builds the trainer's modules (LAP + refiner + DiT as `trainer.Trainable`,
AdamW, the EMA) on random VLM features and runs three training steps in fp32 (no autocast, as a CPU run
without bf16 instructions trains), measuring
  - the FLOPs of one step's forward + backward with ``torch.utils.flop_counter`` against the planner's
    training FLOPs per sample x batch;
  - the peak resident memory the steps add (``ru_maxrss`` after them minus the resident size before the
    model was built) against the planner's total for the same run (``--compute fp32 --gpus 1
    --strategy ddp --features cached``: weights, gradients, Adam, EMA and activations; no VLM).
Each line prints measured / predicted. The planner counts the dominant terms only (the refiner's and
LAP's activations, the loss and allocator slack are not in it), so the memory ratio sits a little above 1.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = [  # preset, resolution (pixel latents), condition tokens, batch, activation checkpointing
    ("toy", 64, 24, 32, False),
    ("toy", 64, 24, 32, True),
    ("tiny", 64, 16, 16, False),
]


def _measure(preset: str, res: int, n_cond: int, batch: int, ckpt: bool) -> dict:
    """Runs in the child process: the measured FLOPs and peak memory of the steps (and the planner's figures)."""
    import gc
    import os
    import resource

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    sys.path.insert(0, str(ROOT))
    from unifusion_core import flow
    from unifusion_core.blocks import eager_attention
    from unifusion_core.checkpoint import build_modules
    from unifusion_core.config import UniFusionConfig, VLMSpec
    from unifusion_core.train.ema import EMA
    from unifusion_core.train.plan import latent_tokens, plan
    from unifusion_core.train.trainer import Trainable

    torch.set_num_threads(1)
    spec = VLMSpec("X", 4, 128, (1, 2, 3, 4))
    cfg = UniFusionConfig.preset(preset, spec)

    def inputs(n):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(n, cfg.dit.in_channels, res, res, generator=g)
        return {"hidden": torch.randn(n, len(spec.layers), n_cond, spec.hidden_size, generator=g),
                "mask": torch.ones(n, n_cond), "x0": x, "noise": torch.randn_like(x),
                "sigma": torch.rand(n, generator=g), "drop": torch.zeros(n, dtype=torch.bool)}

    def build():
        pooler, dit = build_modules(cfg)  # SDPA attention, the trainer's default
        pooler.init_weights()
        dit.init_weights()
        dit.gradient_checkpointing = ckpt
        model = Trainable(pooler, dit)
        return model, torch.optim.AdamW(model.parameters(), lr=1e-4), EMA(model, 0.999)

    def step(model, opt, ema, b):
        loss, _ = flow.flow_matching_loss(lambda x, ts, ctx, msk: model(ctx, msk, x, ts, b["drop"]), b["x0"],
                                          b["hidden"], b["mask"], b["sigma"], b["noise"])
        loss.backward()
        if opt is not None:
            opt.step()
            opt.zero_grad(set_to_none=True)
            ema.update(model)

    # the same steps at batch 1 first: the library code they run is then resident and not counted
    step(*build(), inputs(1))
    gc.collect()
    b = inputs(batch)
    before = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")  # resident now
    model, opt, ema = build()
    for _ in range(3):
        step(model, opt, ema, b)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before  # ru_maxrss: KiB on Linux
    model.dit.attn_fn = eager_attention  # the flop counter sees attention's matmuls only when they are plain ops
    with FlopCounterMode(display=False) as counter:
        step(model, None, None, b)
    pl = plan(cfg, resolution=res, gpus=1, strategy="ddp", batch_per_gpu=batch, cond_tokens=n_cond,
              grad_checkpointing=ckpt, vlm_params=0, features="cached", gpu_tflops=1, mfu=1, compute="fp32")
    return {"flops": counter.get_total_flops(), "flops_planned": pl.flops_train * batch, "peak": peak,
            "peak_planned": sum(pl.memory.values()), "tokens": latent_tokens(cfg, res) + n_cond,
            "params": sum(p.numel() for p in model.parameters())}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--case":
        print(json.dumps(_measure(*json.loads(sys.argv[2]))))
        return 0
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import machine

    print(machine().replace(" torch threads", " torch threads per case (1 used)"))
    for case in CASES:
        r = subprocess.run([sys.executable, __file__, "--case", json.dumps(case)], capture_output=True, text=True,
                           timeout=900)
        if r.returncode:
            print(r.stderr[-2000:])
            return 1
        m = json.loads(r.stdout.strip().splitlines()[-1])
        preset, res, n_cond, batch, ckpt = case
        name = f"{preset}_{res}px_batch{batch}{'_checkpointing' if ckpt else ''}"
        print(f"plan_flops_{name} = {m['flops'] / m['flops_planned']:.3f}x measured/planned  "
              f"[{m['flops'] / 1e9:.1f} vs {m['flops_planned'] / 1e9:.1f} GFLOP per step, {m['params'] / 1e6:.2f} M params, "
              f"{m['tokens']} tokens]")
        print(f"plan_memory_{name} = {m['peak'] / m['peak_planned']:.3f}x measured/planned  "
              f"[peak RSS added {m['peak'] / 2**20:.0f} MiB vs planner total {m['peak_planned'] / 2**20:.0f} MiB]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
