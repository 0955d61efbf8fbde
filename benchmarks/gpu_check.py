"""The prepared GPU check (issue 14): one script, a few minutes on one H100/H200, figures to a file.

    python benchmarks/gpu_check.py --out gpu_check.txt          # on the GPU machine
    python benchmarks/gpu_check.py --smoke --out /tmp/x.txt     # the same code paths at tiny shapes, CPU ok

1. peak bf16 matmul throughput of this GPU (8192^3, best of 5): the MFU denominator;
2. bf16 forward + backward of the DiT (random weights) at the ``base`` and ``paper`` shapes at 1024^2
   (4096 latent + 256 condition tokens, batch 1, activation checkpointing on ``paper``): time, MFU
   against (1), peak memory against the planner's activation + weight estimate;
3. VLM multi-layer extraction on a random 2048-wide, 32-layer text model (10 of 32 layers tapped):
   time against a plain forward of the same model;
4. real trainer steps with FSDP2 on this one GPU (``--strategy fsdp``, a process group of one): the
   ``small`` preset on pixel latents at 128^2 (4096 latent tokens, the token count of 1024^2 on FLUX
   latents), batch 2, bf16, activation checkpointing, EMA, a sharded state save and the gathered export,
   on synthetic data with a tiny random VLM whose features ``precompute`` writes first (the run keeps
   the VLM on the CPU, ``--vlm_device cpu``): seconds per step, MFU, peak memory against the planner.
Every line is also printed.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import machine  # noqa: E402

from unifusion_core.checkpoint import build_modules  # noqa: E402
from unifusion_core.config import PAPER_VLM, UniFusionConfig, VLMSpec  # noqa: E402
from unifusion_core.train.plan import activation_bytes_per_block, forward_flops  # noqa: E402


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn, dev, repeat=3):
    fn()
    _sync(dev)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        _sync(dev)
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_peak(dev, n: int) -> float:
    a = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    t = _timed(lambda: a @ b, dev, repeat=5)
    return 2 * n ** 3 / t


def dit_step(cfg: UniFusionConfig, dev, n_lat_side: int, n_cond: int, checkpointing: bool, peak: float, out):
    torch.manual_seed(0)
    with torch.device(dev):
        _, dit = build_modules(cfg, dtype=torch.bfloat16)
    dit.init_weights()
    dit.gradient_checkpointing = checkpointing
    dit.train()
    p = cfg.dit.patch_size
    x = torch.randn(1, cfg.dit.in_channels, n_lat_side * p, n_lat_side * p, device=dev, dtype=torch.bfloat16)
    ctx = torch.randn(1, n_cond, cfg.dit.cond_dim, device=dev, dtype=torch.bfloat16)
    mask = torch.ones(1, n_cond, device=dev)
    t = torch.tensor([0.5], device=dev)

    def step():
        dit.zero_grad(set_to_none=True)
        dit(x, t, ctx, mask).float().square().mean().backward()

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    secs = _timed(step, dev)
    flops = sum(forward_flops(cfg, n_lat_side ** 2, n_cond).values()) - forward_flops(cfg, n_lat_side ** 2, n_cond)["lap"]
    flops *= 4 if checkpointing else 3
    params = sum(q.numel() for q in dit.parameters())
    seq = n_lat_side ** 2 + n_cond
    acts = (cfg.dit.depth * 2 * seq * cfg.dit.hidden_size + activation_bytes_per_block(cfg, seq)) if checkpointing \
        else cfg.dit.depth * activation_bytes_per_block(cfg, seq)
    predicted = params * 2 * 2 + acts  # bf16 weights + bf16 grads + activations (no optimizer in this check)
    peak_mem = torch.cuda.max_memory_allocated() if dev.type == "cuda" else float("nan")
    out(f"dit_fwd_bwd_{cfg_name(cfg)} = {secs * 1e3:.1f} ms  [{params / 1e9:.2f} B params, {seq} tokens, "
        f"{'checkpointing, ' if checkpointing else ''}{flops / secs / 1e12:.1f} TFLOP/s = MFU {flops / secs / peak:.1%} "
        f"of the measured matmul peak; peak memory {peak_mem / 2**30:.1f} GiB vs planner {predicted / 2**30:.1f} GiB]")
    del dit


def cfg_name(cfg) -> str:
    return f"{cfg.dit.depth}x{cfg.dit.hidden_size}"


def vlm_extraction(dev, out, smoke: bool):
    import tempfile

    from unifusion_core.vlm import Prompt, build_tiny_vlm, load_vlm

    layers, hidden = (4, 64) if smoke else (32, 2048)  # ~1.6 B parameters, written as a random HF folder
    with tempfile.TemporaryDirectory() as tmp:
        path = build_tiny_vlm("llm", Path(tmp) / "vlm", num_layers=layers, hidden_size=hidden)
        vlm = load_vlm(path, dtype=torch.bfloat16 if dev.type == "cuda" else None, device=str(dev))
        prompt = Prompt("a photograph of " + "a red fox in the snow, " * (20 if smoke else 40))
        tapped = tuple(range(4, layers, 3)) if not smoke else (1, 2)
        inputs = vlm.build_inputs(prompt)[0]
        ids = inputs["input_ids"].to(dev)
        with torch.no_grad():
            t_extract = _timed(lambda: vlm.encode(prompt, layers=tapped), dev)
            t_plain = _timed(lambda: vlm.model(input_ids=ids), dev)
        out(f"vlm_extract_{len(tapped)}_of_{layers}_vs_plain_forward = {t_extract / t_plain:.3f}x  "
            f"[{t_extract * 1e3:.1f} ms vs {t_plain * 1e3:.1f} ms, {ids.shape[1]} tokens, {layers} x {hidden} random VLM]")


def fsdp_trainer_steps(dev, out, smoke: bool, peak: float):
    import csv
    import json
    import math
    import subprocess
    import tempfile

    import numpy as np
    from PIL import Image
    from safetensors import safe_open

    from unifusion_core.checkpoint import load_checkpoint
    from unifusion_core.train.config import TrainConfig
    from unifusion_core.train.plan import plan
    from unifusion_core.train.trainer import train
    from unifusion_core.vlm import build_tiny_vlm

    res, preset, batch, steps = (16, "tiny", 2, 4) if smoke else (128, "small", 2, 8)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rng = np.random.default_rng(0)
        recs = []
        for i in range(8):  # synthetic data: noise images, short prompts (the check times the trainer, not learning)
            Image.fromarray(rng.integers(0, 255, (res, res, 3), dtype=np.uint8)).save(tmp / f"{i}.png")
            recs.append({"task": "t2i", "target": f"{i}.png", "prompt": f"a noisy picture number {i}",
                         "rewrite": f"random coloured noise, picture {i}"})
        (tmp / "m.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
        vlm = build_tiny_vlm("qwen2_5_vl", tmp / "vlm")
        t = TrainConfig(manifest=str(tmp / "m.jsonl"), vlm=str(vlm), run_dir=str(tmp / "run"), preset=preset,
                        latent_format="pixel", resolution=res, buckets="1:1", batch_size=batch, max_steps=steps,
                        warmup_steps=1, log_every=1, save_every=0, keep_states=1, sample_steps=1, strategy="fsdp",
                        mixed_precision="bf16" if dev.type == "cuda" else "no", grad_checkpointing=True,
                        feature_cache=str(tmp / "features"), recon_share=0, vlm_device="cpu",
                        device="auto" if dev.type == "cuda" else "cpu")
        t.dump(tmp / "run.json")  # the VLM alone first, in its own process (the CLI a user runs); the
        pre = subprocess.run([sys.executable, "-m", "unifusion_core.train.precompute", "--config", str(tmp / "run.json")],
                             capture_output=True, text=True, timeout=600)  # run then keeps the VLM on the CPU
        if pre.returncode:
            raise SystemExit(f"precompute failed: {pre.stderr[-2000:]}")
        if dev.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        ckpt = train(t)
        wall = time.perf_counter() - t0
        peak_mem = torch.cuda.max_memory_allocated() if dev.type == "cuda" else float("nan")
        with (tmp / "run" / "log.csv").open() as f:
            rows = list(csv.DictReader(f))
        per_s = float(np.median([float(r["samples_per_s"]) for r in rows[1:]]))  # step 1 includes warm-up
        shards = len(list((tmp / "run" / "state").rglob("*.distcp")))
        digests = json.loads((tmp / "run" / "final_state.json").read_text())["weights_sha256"]
        cfg = load_checkpoint(ckpt)[0]
        vlm_params = 0
        for path in Path(vlm).glob("*.safetensors"):  # shapes from the headers, no weights read
            with safe_open(str(path), "pt") as f:
                vlm_params += sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
        n_cond = 24  # about what the tiny VLM's tokenizer makes of these prompts (kept tokens)
        pl = plan(cfg, resolution=res, gpus=1, strategy="fsdp", batch_per_gpu=batch, cond_tokens=n_cond,
                  grad_checkpointing=True, vlm_params=vlm_params, features="cached", gpu_tflops=peak / 1e12, mfu=1)
    tflops = pl.flops_train * per_s
    out(f"fsdp2_trainer_{preset}_{res}px = {batch / per_s:.3f} s/step  [batch {batch}, {pl.tokens_latent} latent tokens, "
        f"{(pl.params_dit + pl.params_lap) / 1e9:.2f} B params, {per_s:.2f} samples/s = {tflops / 1e12:.1f} TFLOP/s = "
        f"MFU {tflops / peak:.1%}; peak memory {peak_mem / 2**30:.1f} GiB vs planner {sum(pl.memory.values()) / 2**30:.1f} GiB; "
        f"{steps} steps + sharded state ({shards} .distcp) + export in {wall:.0f} s; ranks agree: {len(set(digests)) == 1}]")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="gpu_check.txt")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes (any machine): checks the script itself")
    a = ap.parse_args(argv)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    lines = []

    def out(line):
        print(line, flush=True)
        lines.append(line)

    out(machine())
    t0 = time.perf_counter()
    peak = matmul_peak(dev, 512 if a.smoke else 8192)
    out(f"bf16_matmul_peak = {peak / 1e12:.1f} TFLOP/s  [{'512' if a.smoke else '8192'}^3, best of 5]")
    for preset, ckpt in (("base", False), ("paper", True)):
        cfg = UniFusionConfig.preset(preset, PAPER_VLM)
        side, n_cond = 64, 256  # 1024^2 px on FLUX latents at patch 2
        if a.smoke:  # the tiny preset stands in for both shapes
            cfg = UniFusionConfig.preset("tiny", VLMSpec("X", 4, 64, (1, 2)))
            side, n_cond = 8, 16
        dit_step(cfg, dev, side, n_cond, ckpt, peak, out)
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    vlm_extraction(dev, out, a.smoke)
    fsdp_trainer_steps(dev, out, a.smoke, peak)
    out(f"gpu_check finished in {time.perf_counter() - t0:.0f} s")
    Path(a.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
