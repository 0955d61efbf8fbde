"""Model files the integration tests create (nothing is downloaded): a tiny random VLM folder, tiny
UniFusion checkpoints for it (pixel and flux16), a FLUX-architecture VAE, a LoRA, reference images,
and an extra_model_paths.yaml that loads this pack through an extra custom_nodes path.

The VAE has the real FLUX.1 AE architecture (83.8M random parameters, ~335 MB): ComfyUI's VAE loader
hard-codes ch=128, ch_mult=(1, 2, 4, 4), num_res_blocks=2 for this key layout, so the tiny test AE
(downscale 2) would be mis-built. It is made once per test session.
"""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from unifusion_core.checkpoint import build_modules, save_checkpoint
from unifusion_core.config import UniFusionConfig, VLMSpec
from unifusion_core.vae import FluxAEConfig, FluxAutoEncoder, save_flux_vae
from unifusion_core.vlm import build_tiny_vlm, load_vlm

ROOT = Path(__file__).resolve().parents[2]

# placeholder file names used in workflows/*.json -> fixture names (see README "Workflows")
VLM_NAME, OTHER_VLM_NAME, NOT_VLM_NAME = "tiny-qwen2_5_vl", "tiny-llm", "not-a-vlm"
CKPT_FLUX, CKPT_PIXEL, CKPT_CORRUPT, CKPT_OTHER = ("uf_tiny_flux16.safetensors", "uf_tiny_pixel.safetensors",
                                                   "uf_corrupt.safetensors", "uf_tiny_for_llm.safetensors")
LORA_NAME, VAE_NAME = "uf_tiny_lora.safetensors", "ae_random.safetensors"
REFS = ("uf_ref1.png", "uf_ref2.png")
PLACEHOLDERS = {"Qwen2.5-VL-7B-Instruct": VLM_NAME, "unifusion_flux16.safetensors": CKPT_FLUX,
                "ae.safetensors": VAE_NAME, "unifusion_ref1.png": REFS[0], "unifusion_ref2.png": REFS[1]}


def tiny_config(identity: dict, layers, latent_format: str) -> UniFusionConfig:
    vlm = VLMSpec(architecture=identity["architecture"], num_layers=identity["num_layers"],
                  hidden_size=identity["hidden_size"], layers=tuple(layers), name="tiny")
    cfg = UniFusionConfig.preset("tiny", vlm)
    dit, samp = cfg.dit, cfg.sampling
    if latent_format == "flux16":
        dit = replace(dit, in_channels=16, patch_size=2)
    samp = replace(samp, latent_format=latent_format, shift=3.0 if latent_format == "flux16" else 1.0)
    return replace(cfg, dit=dit, sampling=samp)


def make_checkpoint(path: Path, cfg: UniFusionConfig, seed: int) -> None:
    """Initialised modules, with the zero-init gates and output layer perturbed so outputs vary."""
    torch.manual_seed(seed)
    pooler, dit = build_modules(cfg)
    pooler.init_weights()
    dit.init_weights()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in dit.named_parameters():
            if "adaLN" in name or "proj_out" in name:
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
    save_checkpoint(path, cfg, pooler, dit)


def make_lora(path: Path, cfg: UniFusionConfig, rank: int = 2) -> None:
    """A kohya-style LoRA on every attention qkv of the DiT blocks (lora_unet_<module> keys)."""
    D = cfg.dit.hidden_size
    g = torch.Generator().manual_seed(7)
    sd = {}
    for i in range(cfg.dit.depth):
        key = f"lora_unet_blocks_{i}_attn_qkv"
        sd[f"{key}.lora_up.weight"] = torch.randn(3 * D, rank, generator=g) * 0.5
        sd[f"{key}.lora_down.weight"] = torch.randn(rank, D, generator=g) * 0.5
        sd[f"{key}.alpha"] = torch.tensor(float(rank))
    save_file(sd, str(path))


def make_vae(path: Path) -> None:
    ae = FluxAutoEncoder(FluxAEConfig())
    ae.init_weights(torch.Generator().manual_seed(3))
    save_flux_vae(ae, path)


def make_image(path: Path, size, seed: int) -> None:
    rng = np.random.default_rng(seed)
    arr = (rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)
    Image.fromarray(arr).save(path)


def build_all(base: Path, vae_path: Path | None = None) -> dict:
    """Create every fixture under ``base``; returns the paths and identities the tests use."""
    models = base / "models"
    llm, diff, loras, vae_dir = (models / d for d in ("LLM", "diffusion_models", "loras", "vae"))
    for d in (llm, diff, loras, vae_dir, base / "input", base / "output", base / "temp", base / "custom_nodes"):
        d.mkdir(parents=True, exist_ok=True)
    vlm_dir = build_tiny_vlm("qwen2_5_vl", llm / VLM_NAME, seed=0)
    other_dir = build_tiny_vlm("llm", llm / OTHER_VLM_NAME, seed=1, num_layers=3, hidden_size=48)
    (llm / NOT_VLM_NAME).mkdir(exist_ok=True)
    (llm / NOT_VLM_NAME / "config.json").write_text('{"model_type": "bert", "architectures": ["BertModel"]}')
    identity = load_vlm(vlm_dir).identity
    layers = (1, 2, 3, 4)
    cfgs = {"flux16": tiny_config(identity, layers, "flux16"), "pixel": tiny_config(identity, layers, "pixel")}
    make_checkpoint(diff / CKPT_FLUX, cfgs["flux16"], seed=10)
    make_checkpoint(diff / CKPT_PIXEL, cfgs["pixel"], seed=20)
    make_checkpoint(diff / CKPT_OTHER, tiny_config(load_vlm(other_dir).identity, (1, 2, 3), "pixel"), seed=30)
    (diff / CKPT_CORRUPT).write_bytes(os.urandom(4096))
    make_lora(loras / LORA_NAME, cfgs["pixel"])
    if vae_path is None or not vae_path.is_file():
        make_vae(vae_dir / VAE_NAME)
    else:
        os.symlink(vae_path, vae_dir / VAE_NAME)
    make_image(base / "input" / REFS[0], (48, 40), 1)
    make_image(base / "input" / REFS[1], (32, 56), 2)
    os.symlink(ROOT, base / "custom_nodes" / "unifusion")
    yaml = base / "extra_model_paths.yaml"
    yaml.write_text(
        "unifusion_test:\n"
        f"    base_path: {base}\n"
        "    custom_nodes: custom_nodes\n"
        "    LLM: models/LLM\n"
        "    diffusion_models: models/diffusion_models\n"
        "    loras: models/loras\n"
        "    vae: models/vae\n")
    return {"base": base, "yaml": yaml, "vlm_dir": vlm_dir, "configs": cfgs,
            "ckpt": {k: diff / n for k, n in (("flux16", CKPT_FLUX), ("pixel", CKPT_PIXEL))},
            "vae": vae_dir / VAE_NAME}
