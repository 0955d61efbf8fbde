"""Core performance ratios on the `toy` preset, measured side by side in one run.

    python benchmarks/bench_core.py

Prints the machine first, then one line per figure: `name = value  (goal OP threshold)`.
1. selected-layer extraction (hooks, stops after the deepest tapped layer) / plain VLM forward
2. LAP + refiner time as a share of 28 CFG steps, as the standalone pipeline runs them: LAP once,
   the refiner once for the positive and once for the zero negative, 2 DiT forwards per step
3. peak memory growth of extraction keeping 10 of 32 layers / keeping all 33 hidden states
   (each in a fresh subprocess: Linux peak RSS, reset through /proc/self/clear_refs after loading)
Exits 0 even when a goal is missed.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import best_of, machine  # noqa: E402

NUM_LAYERS, HIDDEN, KEEP = 32, 256, tuple(range(4, 32, 3))  # 10 of 32 layers, as in the paper
PROMPT = "a red circle to the left of a small blue square on a grey background, " * 6


def bench_extraction(vlm_dir):
    from unifusion_core.vlm import Prompt, load_vlm

    enc = load_vlm(vlm_dir)
    prompt = Prompt(instruction=PROMPT)
    inputs = enc.tokenizer(PROMPT, return_tensors="pt")
    with torch.no_grad():
        plain = best_of(lambda: enc.model(**inputs))
        extract = best_of(lambda: enc.encode([prompt], layers=KEEP))
    tokens = inputs["input_ids"].shape[1]
    return extract / plain, tokens


def bench_pooling_share():
    from unifusion_core.checkpoint import build_modules
    from unifusion_core.config import UniFusionConfig, VLMSpec

    spec = VLMSpec("Qwen2ForCausalLM", NUM_LAYERS, HIDDEN, KEEP)
    cfg = UniFusionConfig.preset("toy", spec)
    pooler, dit = build_modules(cfg)
    pooler.init_weights(); dit.init_weights()
    T = 48  # condition tokens
    hidden, mask = torch.randn(1, len(KEEP), T, HIDDEN), torch.ones(1, T, dtype=torch.bool)
    x = torch.randn(1, 3, 32, 32)
    ctx = pooler(hidden, mask).detach()
    with torch.no_grad():
        refined = dit.refine(ctx, mask)
        lap = best_of(lambda: pooler(hidden, mask))
        refiner = best_of(lambda: dit.refine(ctx, mask))
        step = best_of(lambda: dit(x, torch.tensor([0.5]), attention_mask=mask, refined_context=refined))
    return (lap + 2 * refiner) / (28 * 2 * step), lap, refiner, step


CHILD = r"""
import json, sys, torch
sys.path.insert(0, {root!r})
from unifusion_core.vlm import Prompt, load_vlm

def status(key):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key + ":"))

enc = load_vlm({vlm!r})
prompt = Prompt(instruction={prompt!r} * 8)
with torch.no_grad():
    enc.encode([prompt], layers=(1,))  # warm-up: allocator pools, lazy inits
    open("/proc/self/clear_refs", "w").write("5")  # reset the peak-RSS mark (Linux >= 4.0)
    base = status("VmRSS")
    feats = enc.encode([prompt], layers={layers!r}).hidden
peak = status("VmHWM")
print(json.dumps({{"kb": peak - base, "shape": list(feats.shape)}}))
"""


def bench_memory(vlm_dir):
    res = {}
    for mode in ("selected", "all"):
        layers = KEEP if mode == "selected" else tuple(range(NUM_LAYERS + 1))
        code = CHILD.format(root=str(ROOT), vlm=str(vlm_dir), prompt=PROMPT, layers=layers)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        res[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    return res


def main():
    from unifusion_core.vlm import build_tiny_vlm

    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        vlm_dir = build_tiny_vlm("llm", Path(tmp) / "vlm32", num_layers=NUM_LAYERS, hidden_size=HIDDEN)
        ratio, tokens = bench_extraction(vlm_dir)
        print(f"extract_vs_plain_forward = {ratio:.3f}x  (goal <= 1.05x)  [{len(KEEP)} of {NUM_LAYERS} layers, "
              f"{tokens} tokens, {NUM_LAYERS}-layer x {HIDDEN} text VLM]")
        share, lap, refiner, step = bench_pooling_share()
        print(f"lap_refiner_share_of_28_steps = {100 * share:.2f}%  (goal <= 2%)  "
              f"[LAP {lap * 1e3:.2f} ms, refiner {refiner * 1e3:.2f} ms x2, DiT forward {step * 1e3:.2f} ms x56; "
              f"toy preset, 48 condition tokens, 32x32 px]")
        mem = bench_memory(vlm_dir)
        sel, full = mem["selected"], mem["all"]
        print(f"feature_peak_mem_10_of_32_vs_all = {sel['kb'] / max(full['kb'], 1):.3f}x  (goal <= 0.5x)  "
              f"[{sel['kb'] / 1024:.1f} MiB vs {full['kb'] / 1024:.1f} MiB peak RSS growth; "
              f"features {sel['shape']} vs {full['shape']}]")


if __name__ == "__main__":
    main()
