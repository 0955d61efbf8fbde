"""What every benchmark shares: the machine line printed first, and best-of timing."""
from __future__ import annotations

import platform
import time

import torch


def machine() -> str:
    """`machine: <CPU>, <threads>, <GPU or CPU only>, torch <v>, transformers <v>`."""
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = f"GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "CPU only"
    try:
        import transformers

        tf = f", transformers {transformers.__version__}"
    except ImportError:
        tf = ""
    return f"machine: {cpu}, {torch.get_num_threads()} torch threads, {gpu}, torch {torch.__version__}{tf}"


def best_of(fn, repeat: int = 5, warmup: int = 1) -> float:
    """Fastest of ``repeat`` timed calls after ``warmup`` untimed ones (CUDA synchronised)."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return min(times)


def interleaved_best(fns: dict, repeat: int = 5, warmup: int = 1) -> dict:
    """``best_of`` for several variants timed in turn (A B C A B C ...), so a load that comes and goes
    on a shared machine hits each variant alike: name -> fastest time."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    best = {name: float("inf") for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best
