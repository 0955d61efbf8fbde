"""Rectified-flow (flow matching) math: the one time/velocity convention of the package.

Convention (ComfyUI's ``CONST`` model sampling, ``ModelType.FLOW``):

    x_sigma = (1 - sigma) * x0 + sigma * noise          sigma in [0, 1], 1 = pure noise
    v       = noise - x0                                 what the DiT predicts
    x0      = x_sigma - sigma * v                        ComfyUI's calculate_denoised
    timestep fed to the DiT = sigma * multiplier         (multiplier 1.0: t in [0, 1])

Mapping to ComfyUI (what the node layer relies on for parity with this module):
  * ``ModelSamplingDiscreteFlow(shift, multiplier)`` holds a 1000-entry table
    ``sigmas[i] = shift_sigma((i + 1) / 1000, shift)``; ``timestep(sigma) = sigma * multiplier``.
    The stock ``ModelSamplingAuraFlow`` node sets (shift, multiplier=1.0) and so matches a UniFusion
    checkpoint with multiplier 1.0; ``ModelSamplingSD3`` uses multiplier 1000 and does NOT.
  * ComfyUI's ``simple`` scheduler picks ``sigmas[-(1 + int(i * 1000 / steps))]`` for i < steps, then
    0: ``comfy_simple_sigmas`` reproduces it.
  * KSampler ``euler`` with CFG combines the *denoised* predictions, uncond + (cond - uncond) * cfg, and
    steps ``x += (x - denoised) / sigma * (sigma_next - sigma)``: ``euler_sample`` does the same.
  * The latent handed to the DiT is ComfyUI's ``process_latent_in`` of the VAE latent: see latent.py.

Training samples sigma logit-normally and applies the same shift (a resolution-dependent one, SD3
style, when ``resolution_shift`` is used), and regresses v with MSE.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

ModelFn = Callable[..., torch.Tensor]  # (x, timesteps, context, attention_mask) -> velocity


def interpolate(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x_sigma for per-sample sigma (B,)."""
    s = sigma.view(-1, *([1] * (x0.ndim - 1))).to(x0.dtype)
    return (1 - s) * x0 + s * noise


def shift_sigma(sigma: torch.Tensor | float, shift: float):
    """ComfyUI's time_snr_shift: sigma' = shift*sigma / (1 + (shift-1)*sigma)."""
    if shift == 1.0:
        return sigma
    return shift * sigma / (1 + (shift - 1) * sigma)


def resolution_shift(num_tokens: int, base_shift: float = 1.0, base_tokens: int = 256) -> float:
    """SD3's resolution-dependent shift: more latent tokens need more noise, shift ~ sqrt(tokens)."""
    return base_shift * math.sqrt(num_tokens / base_tokens)


def sample_sigmas(n: int, *, shift: float = 1.0, mean: float = 0.0, std: float = 1.0,
                  generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Logit-normal sigma samples (n,), then shifted."""
    u = torch.randn(n, generator=generator, device=device) * std + mean
    return shift_sigma(torch.sigmoid(u), shift)


def flow_matching_loss(model: ModelFn, x0, context, attention_mask, sigma, noise, multiplier: float = 1.0):
    """MSE between predicted and true velocity. Returns (mean loss, per-sample loss (B,))."""
    x_t = interpolate(x0, noise, sigma)
    v = model(x_t, sigma * multiplier, context, attention_mask)
    per_sample = (v.float() - (noise - x0).float()).pow(2).flatten(1).mean(1)
    return per_sample.mean(), per_sample


# ---------------------------------------------------------------------------------------------
# inference: ComfyUI's schedule and the reference Euler sampler
# ---------------------------------------------------------------------------------------------

def comfy_flow_table(shift: float, multiplier: float = 1.0, timesteps: int = 1000) -> torch.Tensor:
    """ModelSamplingDiscreteFlow.sigmas: shift_sigma(i/timesteps) for i = 1..timesteps."""
    t = torch.arange(1, timesteps + 1, 1) / timesteps * multiplier
    return shift_sigma(t / multiplier, shift)


def comfy_simple_sigmas(steps: int, shift: float, multiplier: float = 1.0) -> torch.Tensor:
    """ComfyUI's ``simple`` scheduler on a flow model: steps + 1 sigmas ending in 0."""
    table = comfy_flow_table(shift, multiplier)
    stride = len(table) / steps
    sigs = [float(table[-(1 + int(i * stride))]) for i in range(steps)] + [0.0]
    return torch.FloatTensor(sigs)


@torch.no_grad()
def euler_sample(model: ModelFn, noise, sigmas, cond, cond_mask, uncond=None, uncond_mask=None,
                 cfg: float = 1.0, multiplier: float = 1.0, callback=None, should_stop=None):
    """Euler ODE sampler with classifier-free guidance on the denoised prediction.

    noise (B, C, h, w); sigmas (steps + 1,) descending to 0; cond/uncond (B, T, D) with masks.
    Starts from x = sigmas[0] * noise (an empty latent), as ComfyUI does for full denoise.
    """
    x = noise * sigmas[0]
    use_cfg = uncond is not None and cfg != 1.0
    for i in range(len(sigmas) - 1):
        if should_stop is not None and should_stop():
            raise InterruptedError("sampling was interrupted")
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        ts = torch.full((x.shape[0],), float(sigma) * multiplier, device=x.device)
        denoised = x - model(x, ts, cond, cond_mask) * sigma
        if use_cfg:
            den_u = x - model(x, ts, uncond, uncond_mask) * sigma
            denoised = den_u + (denoised - den_u) * cfg
        d = (x - denoised) / sigma
        x = x + d * (sigma_next - sigma)
        if callback is not None:
            callback(i + 1, len(sigmas) - 1)
    return x
