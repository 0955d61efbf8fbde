"""UniFusion inside a real ComfyUI, measured side by side in one run (needs COMFYUI_PATH).

    COMFYUI_PATH=/path/to/ComfyUI /path/to/ComfyUI/python benchmarks/bench_comfy.py [--size 256 --steps 10]

Run it with ComfyUI's interpreter. Prints the machine first, then one line per figure:
1. comfy_sampling_vs_core_forward: KSampler euler/simple with CFG (ComfyUI's MODEL: comfy.ops layers,
   the host's optimized attention, its sampler loop, the refiner cached across steps) / the core's
   standalone loop (torch.nn, SDPA; refiner once, DiT per step) on the same batch [cond; uncond] for
   the same number of steps. Also without the refiner cache (before it) and with ComfyUI's SDPA
   attention, to separate the attention-kernel choice of the host from the integration's overhead.
2. peak_t2i_vs_vlm_plus_dit: peak device memory of VLM encode -> LAP -> sampling (through the pack's
   node code and ComfyUI's model management, with the VRAM budget capped to fit one model) / (VLM
   bytes + DiT bytes). CUDA only: on a CPU the offload device is the load device.
Exits 0 even when a goal is missed.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from common import best_of, interleaved_best, machine

ROOT = Path(__file__).resolve().parents[1]
COMFY = os.environ.get("COMFYUI_PATH")
PACK = "unifusion_bench_pack"


def boot_comfy():
    """Import ComfyUI in-process (CPU mode when there is no CUDA) and this repo as its pack package."""
    sys.path.insert(0, COMFY)
    import torch
    from comfy.cli_args import args

    args.cpu = not torch.cuda.is_available()
    spec = importlib.util.spec_from_file_location(PACK, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[PACK] = mod
    spec.loader.exec_module(mod)


def bench_files(tmp: Path, width: int, depth: int):
    """A tiny VLM folder and a flux16 checkpoint for it with a DiT of the given width/depth."""
    from_core = lambda name: importlib.import_module(f"{PACK}.unifusion_core.{name}")  # noqa: E731
    vlm_mod, cfg_mod, ckpt_mod = from_core("vlm"), from_core("config"), from_core("checkpoint")
    vlm_dir = vlm_mod.build_tiny_vlm("qwen2_5_vl", tmp / "vlm")
    ident = vlm_mod.load_vlm(vlm_dir).identity
    spec = cfg_mod.VLMSpec(ident["architecture"], ident["num_layers"], ident["hidden_size"], (1, 2, 3, 4))
    cfg = cfg_mod.UniFusionConfig.preset("tiny", spec)
    heads = width // 64
    dit = replace(cfg.dit, in_channels=16, patch_size=2, hidden_size=width, num_heads=heads, depth=depth,
                  axes_dims=(16, 24, 24))
    cfg = replace(cfg, dit=dit, sampling=replace(cfg.sampling, latent_format="flux16", shift=3.0))
    pooler, model = ckpt_mod.build_modules(cfg)
    pooler.init_weights()
    model.init_weights()
    path = tmp / "bench.safetensors"
    ckpt_mod.save_checkpoint(path, cfg, pooler, model)
    return vlm_dir, path, cfg


def bench_sampling(torch, path, cfg, size, steps, tokens=77):
    import comfy.ldm.modules.attention as attention
    import comfy.model_management as mm
    import comfy.sample

    comfy_model = importlib.import_module(f"{PACK}.nodes.comfy_model")
    ckpt_mod = importlib.import_module(f"{PACK}.unifusion_core.checkpoint")
    flow = importlib.import_module(f"{PACK}.unifusion_core.flow")
    patcher, _ = comfy_model.load_unifusion(str(path))
    dev = mm.get_torch_device()
    g = torch.Generator().manual_seed(0)
    cond = torch.randn(1, tokens, cfg.dit.cond_dim, generator=g)
    mask = torch.ones(1, tokens)
    pos, neg = [[cond, {"attention_mask": mask}]], [[torch.zeros_like(cond), {"attention_mask": mask}]]
    latent = torch.zeros(1, 16, size // 8, size // 8)
    noise = comfy.sample.prepare_noise(latent, 0)

    def comfy_run():
        comfy.sample.sample(patcher, noise, steps, 4.0, "euler", "simple", pos, neg, latent, disable_pbar=True)
        if dev.type == "cuda":
            torch.cuda.synchronize()

    _, _, core_dit = ckpt_mod.load_modules(path, device=dev, dtype=patcher.model.get_dtype())
    x = torch.randn(2, 16, size // 8, size // 8, device=dev, dtype=patcher.model.get_dtype())
    ctx = torch.cat([cond, torch.zeros_like(cond)]).to(dev, x.dtype)
    msk = torch.ones(2, tokens, device=dev)
    sig = flow.comfy_simple_sigmas(steps, cfg.sampling.shift, cfg.sampling.multiplier)

    def core_run():  # as the standalone sampler: the refiner once, then the DiT each step
        refined = core_dit.refine(ctx, msk)
        for s in sig[:-1]:
            core_dit(x, torch.full((2,), float(s) * cfg.sampling.multiplier, device=dev), ctx, msk,
                     refined_context=refined)
        if dev.type == "cuda":
            torch.cuda.synchronize()

    dit = patcher.model.diffusion_model
    cache, host_fn = dit.refine_cache, dit.attn_fn

    def variant(refine_cache, attn_fn):
        def run():
            dit.refine_cache, dit.attn_fn = refine_cache, attn_fn
            comfy_run()
        return run

    with torch.inference_mode():
        t = interleaved_best({"core": core_run, "comfy": variant(cache, host_fn),
                              "nocache": variant(None, host_fn),  # before the cache: the refiner on every step
                              "sdpa": variant(cache, attention.attention_pytorch)}, repeat=5)
    dit.refine_cache, dit.attn_fn = cache, host_fn
    t_core, t_comfy, t_comfy_nocache, t_comfy_sdpa = t["core"], t["comfy"], t["nocache"], t["sdpa"]
    host_attn = attention.optimized_attention.__name__
    print(f"comfy_sampling_vs_core_forward = {t_comfy / t_core:.3f}x  (goal <= 1.03x)  "
          f"[{t_comfy:.3f}s vs {t_core:.3f}s, {steps} steps, {size}px, host attention {host_attn}, refiner cached]")
    print(f"comfy_sampling_without_refiner_cache_vs_core = {t_comfy_nocache / t_core:.3f}x  (before the cache)  "
          f"[{t_comfy_nocache:.3f}s: the refiner on every step]")
    print(f"comfy_sampling_sdpa_vs_core_forward = {t_comfy_sdpa / t_core:.3f}x  (goal <= 1.03x)  "
          f"[{t_comfy_sdpa:.3f}s; ComfyUI's attention_pytorch, i.e. the same kernel as the core; refiner cached]")


def bench_block(torch, width, size, tokens=77, heads=None):
    """Our single-stream DiT block against ComfyUI's own Flux SingleStreamBlock at equal width, heads
    and tokens (both comfy.ops layers, both the host's attention, both RoPE over 3 axes): forward time."""
    import comfy.ldm.flux.layers as flux
    import comfy.ops
    from comfy.ldm.modules.attention import optimized_attention

    blocks = importlib.import_module(f"{PACK}.unifusion_core.blocks")
    heads = heads or max(1, width // 64)
    head_dim = width // heads
    axes = (head_dim - 2 * (head_dim * 3 // 8 // 2 * 2), head_dim * 3 // 8 // 2 * 2, head_dim * 3 // 8 // 2 * 2)
    ops = comfy.ops.disable_weight_init
    ours = blocks.Block(width, heads, 4.0, modulated=True, operations=ops)
    theirs = flux.SingleStreamBlock(width, heads, mlp_ratio=4.0, operations=ops)
    for m in (ours, theirs):
        for q in m.parameters():
            torch.nn.init.normal_(q, std=0.02)
    n = tokens + (size // 16) ** 2  # condition tokens + latent patches (1/8 VAE, patch 2)
    g = torch.Generator().manual_seed(0)
    x, c = torch.randn(2, n, width, generator=g), torch.randn(2, width, generator=g)
    pos = torch.stack([torch.arange(n).float(), torch.zeros(n), torch.zeros(n)], -1)[None].expand(2, -1, -1)
    rope = blocks.rope_angles(pos, axes, 10000.0)
    pe = flux.EmbedND(head_dim, 10000, list(axes))(pos)

    with torch.inference_mode():  # ours takes the host's kernel as the MODEL does (optimized_attention)
        t_ours = best_of(lambda: ours(x, c, rope, None, optimized_attention), repeat=5)
        t_theirs = best_of(lambda: theirs(x.clone(), c, pe), repeat=5)
    count = lambda m: sum(q.numel() for q in m.parameters()) / 1e6  # noqa: E731
    print(f"dit_block_vs_flux_single_stream_block = {t_ours / t_theirs:.3f}x  (reported)  [{t_ours * 1e3:.1f} ms vs "
          f"{t_theirs * 1e3:.1f} ms forward, width {width}, {heads} heads, {n} tokens, batch 2; params "
          f"{count(ours):.2f} M (adaLN-zero, SwiGLU) vs {count(theirs):.2f} M (parallel attn + GELU MLP)]")


def bench_memory(torch, vlm_dir, path, size, steps):
    if not torch.cuda.is_available():
        print("peak_t2i_vs_vlm_plus_dit = n/a  (goal <= 0.6)  [needs CUDA: on a CPU the offload device is the "
              "load device, so offloading frees nothing]")
        return
    import comfy.model_management as mm
    import comfy.sample

    loaders = importlib.import_module(f"{PACK}.nodes.loaders")
    encode = importlib.import_module(f"{PACK}.nodes.encode")
    comfy_model = importlib.import_module(f"{PACK}.nodes.comfy_model")
    paths = importlib.import_module(f"{PACK}.nodes.paths")
    paths.vlm_path = lambda name: str(vlm_dir)  # the bench VLM is not under models/
    vlm = loaders.UniFusionVLMLoader.execute("bench").args[0]
    model, pooler = comfy_model.load_unifusion(str(path))
    vlm_bytes, dit_bytes = vlm.patcher.model_size(), model.model_size()
    dev = mm.get_torch_device()
    total = mm.get_total_memory(dev)
    mm.EXTRA_RESERVED_VRAM = max(0, total - int(1.25 * max(vlm_bytes, dit_bytes)) - 2 * 1024 ** 3)
    mm.unload_all_models()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    with torch.inference_mode():
        feats = encode.extract_features(vlm, "a red fox in the snow", "", None, None, (), pooler.config.vlm.layers)
        pos = encode.pool_condition(pooler, feats)
        neg = [[torch.zeros_like(pos[0][0]), dict(pos[0][1])]]
        latent = torch.zeros(1, 16, size // 8, size // 8)
        comfy.sample.sample(model, comfy.sample.prepare_noise(latent, 0), steps, 4.0, "euler", "simple", pos, neg,
                            latent, disable_pbar=True)
    peak = torch.cuda.max_memory_allocated() - base
    print(f"peak_t2i_vs_vlm_plus_dit = {peak / (vlm_bytes + dit_bytes):.3f}  (goal <= 0.6)  "
          f"[peak {peak / 2**20:.0f} MiB, VLM {vlm_bytes / 2**20:.0f} MiB, DiT {dit_bytes / 2**20:.0f} MiB]")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=0, help="image side in pixels (default 256 on CPU, 1024 on CUDA)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--width", type=int, default=0, help="DiT width (default 384 on CPU, 2048 on CUDA)")
    p.add_argument("--depth", type=int, default=0, help="DiT depth (default 6 on CPU, 16 on CUDA)")
    a = p.parse_args(argv)
    if not COMFY:
        print("COMFYUI_PATH is not set: bench_comfy.py measures UniFusion inside a ComfyUI checkout; nothing run.")
        return 0
    import torch

    boot_comfy()
    cuda = torch.cuda.is_available()
    size, width, depth = (a.size or (1024 if cuda else 256), a.width or (2048 if cuda else 384),
                          a.depth or (16 if cuda else 6))
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        vlm_dir, path, cfg = bench_files(Path(tmp), width, depth)
        bench_sampling(torch, path, cfg, size, a.steps)
        bench_block(torch, width, size)
        bench_memory(torch, vlm_dir, path, size, a.steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
