"""Latent formats: how a UniFusion checkpoint's model space relates to images (ComfyUI-compatible).

``flux16``: FLUX.1 VAE latents (B, 16, H/8, W/8). ComfyUI keeps raw VAE latents in LATENT and the
sampler applies ``process_in`` = (raw - 0.1159) * 0.3611 before the model; the DiT works in that space.
``pixel``: RGB pixels in model space [-1, 1] (B, 3, H, W); ComfyUI's pixel_space VAE turns IMAGE 0..1
into that range on encode and back on decode.
"""
from __future__ import annotations

import torch

from .vae import flux_process_in, flux_process_out


def process_in(raw: torch.Tensor, latent_format: str) -> torch.Tensor:
    """Raw latent (what VAEDecode consumes) -> DiT model space."""
    return flux_process_in(raw) if latent_format == "flux16" else raw


def process_out(z: torch.Tensor, latent_format: str) -> torch.Tensor:
    """DiT model space -> raw latent."""
    return flux_process_out(z) if latent_format == "flux16" else z


def pixels_to_image(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] -> ComfyUI IMAGE (B, H, W, 3) in [0, 1]."""
    return ((x.float() + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1)
