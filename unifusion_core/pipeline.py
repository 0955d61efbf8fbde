"""Standalone generate / edit / multi-reference without ComfyUI (Python API behind the CLI).

Legend: B batch, T kept condition tokens, D condition width, C latent channels, h/w latent size.

Flow: prompt + images -> VLM (frozen) -> Features of the checkpoint's layers -> keep image +
instruction tokens -> pooler (LAP) -> condition (B, T, D) + mask -> Euler/CFG sampling of the DiT
-> latent -> pixels (pixel checkpoints) or the FLUX.1 VAE decoder (flux16 checkpoints).
The negative is ``ConditioningZeroOut`` of the positive: zeros with the same mask, as in training.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from . import flow, latent
from .checkpoint import check_vlm, load_modules
from .config import UniFusionConfig
from .errors import UniFusionError
from .vlm.features import PLAIN_ROLES, VERIFI_ROLES

log = logging.getLogger(__name__)


@dataclass
class Request:
    """One generation request. ``images`` are reference images (PIL or IMAGE tensors (H,W,3)/(B,H,W,3))."""

    prompt: str
    images: list = field(default_factory=list)
    system: str | None = None
    width: int = 256
    height: int = 256
    seed: int = 0
    steps: int | None = None  # None: the checkpoint's default
    cfg: float | None = None
    batch: int = 1


def pool(pooler, cfg: UniFusionConfig, feats, roles=PLAIN_ROLES, where: str = "the checkpoint"):
    """Features -> condition tokens (B, T, D) and mask (B, T) on the pooler's device and dtype.

    Checks the VLM identity, takes the checkpoint's layers, keeps the tokens of ``roles``, pools.
    Shared by the standalone pipeline and the ComfyUI nodes.
    """
    if feats.identity:
        check_vlm(cfg, feats.identity, where=where)
    try:
        feats = feats.select(cfg.vlm.layers)
    except UniFusionError as err:
        raise UniFusionError(f"{where} pools VLM layers {list(cfg.vlm.layers)}, but the features hold layers "
                             f"{list(feats.layers)}; extract them with the checkpoint's layers.") from err
    hidden, mask = feats.keep(roles)  # (B, Lv, T, Dv), (B, T)
    param = next(pooler.parameters())
    with torch.no_grad():
        tokens = pooler(hidden.to(param.device, param.dtype), mask.to(param.device))  # (B, T, D)
    return tokens, mask.to(param.device)


class UniFusionPipeline:
    def __init__(self, cfg: UniFusionConfig, pooler, dit, vlm, vae=None):
        check_vlm(cfg, vlm.identity)
        if cfg.sampling.latent_format == "flux16" and vae is None:
            raise UniFusionError("this checkpoint generates FLUX.1 VAE latents, so a FLUX.1 VAE (ae.safetensors) is required.")
        self.cfg, self.pooler, self.dit, self.vlm, self.vae = cfg, pooler, dit, vlm, vae

    @classmethod
    def from_files(cls, checkpoint, vlm, vae=None, *, device="cpu", dtype=None):
        """Load a checkpoint, a VLM folder (or a loaded VLMEncoder) and, for flux16, ae.safetensors."""
        from .vlm import load_vlm

        cfg, pooler, dit = load_modules(checkpoint, dtype=dtype, device=device)
        if isinstance(vlm, (str, bytes)) or hasattr(vlm, "__fspath__"):
            vlm = load_vlm(vlm, device=device)
        if vae is not None and cfg.sampling.latent_format == "flux16":
            from .vae import load_flux_vae

            vae = load_flux_vae(vae, device=device)
        return cls(cfg, pooler, dit, vlm, vae)

    # -- conditioning ------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, prompts, images=None, system=None, roles=PLAIN_ROLES, progress=None):
        """prompts: list of str; images: list (per prompt) of image lists -> (cond (B,T,D), mask (B,T))."""
        from .vlm import Prompt

        images = images or [[] for _ in prompts]
        feats = self.vlm.encode([Prompt(instruction=p, system=system, images=list(im)) for p, im in zip(prompts, images)],
                                layers=self.cfg.vlm.layers, progress=progress)
        return self.condition(feats, roles)

    @torch.no_grad()
    def encode_verifi(self, prompts, images=None, system=None, *, rewrites=None, sampling=None,
                      progress=None, should_stop=None):
        """VERIFI: the VLM rewrites each prompt (or, given ``rewrites``, teacher-forces them) with
        the checkpoint's system prompt unless ``system`` is given; the condition keeps image +
        generated tokens -> (cond (B,T,D), mask (B,T), rewritten texts)."""
        from .verifi import verifi_prompt

        images = images or [[] for _ in prompts]
        vprompts = [verifi_prompt(p, im, system=system, cfg=self.cfg) for p, im in zip(prompts, images)]
        if rewrites is None:
            feats = self.vlm.generate(vprompts, self.cfg.vlm.layers, sampling=sampling, progress=progress,
                                      should_stop=should_stop)
        else:
            feats = self.vlm.teacher_force(vprompts, list(rewrites), self.cfg.vlm.layers)
        cond, mask = self.condition(feats, VERIFI_ROLES)
        return cond, mask, list(feats.texts)

    def condition(self, feats, roles=PLAIN_ROLES):
        """Features -> pooled condition tokens (B, T, D) and mask (B, T)."""
        return pool(self.pooler, self.cfg, feats, roles)

    # -- sampling ----------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, cond, mask, *, width, height, seed=0, steps=None, cfg=None, batch=1, callback=None):
        """Condition (1 or B, T, D) -> images (B, H, W, 3) in 0..1."""
        s = self.cfg.sampling
        down = self.vae.downscale if s.latent_format == "flux16" else 1  # 8 for the real FLUX.1 VAE
        p = self.cfg.dit.patch_size
        if width % (down * p) or height % (down * p):
            raise UniFusionError(f"width and height must be multiples of {down * p} for this checkpoint, "
                                 f"found {width}x{height}.")
        param = next(self.dit.parameters())
        # same noise as ComfyUI's prepare_noise: a CPU generator seeded with `seed`
        gen = torch.Generator("cpu").manual_seed(seed)
        noise = torch.randn((batch, self.cfg.dit.in_channels, height // down, width // down), generator=gen)
        noise = noise.to(param.device, param.dtype)
        cond = cond.to(param.dtype).expand(batch, -1, -1)
        mask = mask.expand(batch, -1)
        sigmas = flow.comfy_simple_sigmas(steps or s.steps, s.shift, s.multiplier).to(param.device, param.dtype)
        # the refiner does not depend on the timestep: refine positive and negative once, not every step
        refined, refined_null = self.dit.refine(cond, mask), self.dit.refine(torch.zeros_like(cond), mask)

        def model(x, t, ctx, m):
            return self.dit(x, t, attention_mask=m, refined_context=ctx)

        z = flow.euler_sample(model, noise, sigmas, refined, mask, refined_null, mask,
                              cfg=s.cfg if cfg is None else cfg, multiplier=s.multiplier, callback=callback)
        return self.decode(z)

    def decode(self, z):
        raw = latent.process_out(z.float(), self.cfg.sampling.latent_format)
        if self.cfg.sampling.latent_format == "pixel":
            return latent.pixels_to_image(raw)
        return self.vae.decode_to_image(raw)

    def __call__(self, req: Request, callback=None):
        """Text-to-image when ``req.images`` is empty, otherwise editing / multi-reference."""
        cond, mask = self.encode([req.prompt], [req.images], system=req.system)
        return self.sample(cond, mask, width=req.width, height=req.height, seed=req.seed, steps=req.steps,
                           cfg=req.cfg, batch=req.batch, callback=callback)
