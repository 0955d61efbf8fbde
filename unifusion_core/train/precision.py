"""Training precision chosen by measurement: bf16 autocast only where it is faster on this machine.

CPUs differ: an Intel Xeon with AVX-512 BF16 / AMX runs bf16 matmuls ~3x faster than fp32, an AMD EPYC
with AVX2 only emulates bf16 ~9x slower (shared/notes/cpu-training-budget.md). CUDA GPUs always take bf16
when they support it. The probe times a forward + backward of a small MLP at the toy DiT's width.
"""
from __future__ import annotations

import logging
import time

import torch

log = logging.getLogger(__name__)


def _time(dtype: torch.dtype | None, width: int = 128, tokens: int = 4096, reps: int = 5) -> float:
    """Seconds per forward + backward of a 2-layer MLP (tokens x width), median of ``reps``."""
    gen = torch.Generator().manual_seed(0)
    w1 = torch.randn(width, 4 * width, generator=gen, requires_grad=True)
    w2 = torch.randn(4 * width, width, generator=gen, requires_grad=True)
    x = torch.randn(tokens, width, generator=gen)
    times = []
    for _ in range(reps + 1):  # the first pass builds kernels
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            y = torch.nn.functional.gelu(x @ w1) @ w2
        y.float().square().mean().backward()
        times.append(time.perf_counter() - t0)
    return sorted(times[1:])[len(times[1:]) // 2]


def choose_precision(device: str | None = None) -> str:
    """-> "bf16" or "no" (accelerate's mixed_precision), logged with the measurement behind it."""
    if (device or ("cuda" if torch.cuda.is_available() else "cpu")) == "cuda":
        choice = "bf16" if torch.cuda.is_bf16_supported() else "no"
        log.info("precision: %s (CUDA, bf16 supported: %s)", choice, choice == "bf16")
        return choice
    fp32, bf16 = _time(None), _time(torch.bfloat16)
    choice = "bf16" if bf16 < 0.8 * fp32 else "no"
    log.info("precision probe on this CPU: fp32 %.1f ms, bf16 autocast %.1f ms per MLP step -> %s",
             fp32 * 1e3, bf16 * 1e3, "bf16" if choice == "bf16" else "fp32")
    return choice
