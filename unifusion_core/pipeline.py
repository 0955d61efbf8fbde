"""Standalone generate / edit / multi-reference without ComfyUI (Python API behind the CLI).

Legend: B batch, T kept condition tokens, D condition width, C latent channels, h/w latent size.

Flow: prompt + images -> VLM (frozen) -> Features of the checkpoint's layers -> ``condition.pool``
(image + instruction tokens; with VERIFI the VLM first rewrites the request in the same pass, or a
given rewrite is teacher-forced, and image + generated tokens are kept) -> condition (B, T, D) + mask
-> Euler/CFG sampling of the DiT -> latent -> pixels (pixel checkpoints) or the FLUX.1 VAE decoder
(flux16 checkpoints). The negative is ``ConditioningZeroOut`` of the positive: zeros with the same
mask, as in training. Size, steps and guidance default to the checkpoint's.

    pipe = UniFusionPipeline.from_files(checkpoint, vlm_folder)
    gen = pipe(Request("a red circle", verifi=True))   # gen.images (1, H, W, 3), gen.rewrite
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from . import flow, latent
from .checkpoint import check_vlm, load_modules
from .condition import null_condition, pool
from .config import UniFusionConfig
from .errors import UniFusionError
from .vlm.features import PLAIN_ROLES, VERIFI_ROLES

log = logging.getLogger(__name__)


@dataclass
class Request:
    """One generation request.

    ``images``: reference images (PIL or IMAGE tensors (H,W,3)/(B,H,W,3)); none = text-to-image.
    ``width`` / ``height``: None = the checkpoint's training resolution. ``steps`` / ``guidance``
    (the CFG scale): None = the checkpoint's defaults. ``verifi``: the VLM rewrites the request
    in-pass and the DiT conditions on the generated tokens (+ image tokens); ``rewrite``: condition on
    this rewrite instead, by teacher forcing (implies VERIFI). ``system_prompt``: the VLM's system
    turn (VERIFI: the rewriter instruction; None = the checkpoint's training prompt for the task).
    ``verifi_sampling``: how the rewrite is decoded (None: greedy, up to 256 tokens).
    """

    prompt: str
    images: list = field(default_factory=list)
    system_prompt: str | None = None
    width: int | None = None
    height: int | None = None
    seed: int = 0
    steps: int | None = None
    guidance: float | None = None
    batch: int = 1
    verifi: bool = False
    rewrite: str | None = None
    verifi_sampling: object = None  # vlm.Sampling | None

    @property
    def mode(self) -> str:
        return "verifi" if self.verifi or self.rewrite is not None else "plain"


@dataclass
class Generation:
    """What a request produced: ``images`` (batch, H, W, 3) in 0..1 and, in VERIFI mode, the rewrite
    the DiT was conditioned on (generated, or the given one)."""

    images: torch.Tensor
    rewrite: str | None = None


class UniFusionPipeline:
    def __init__(self, config: UniFusionConfig, pooler, dit, vlm, vae=None):
        check_vlm(config, vlm.identity)
        if config.sampling.latent_format == "flux16" and vae is None:
            raise UniFusionError("this checkpoint generates FLUX.1 VAE latents, so a FLUX.1 VAE (ae.safetensors) is required.")
        self.config, self.pooler, self.dit, self.vlm, self.vae = config, pooler, dit, vlm, vae
        self._warned_sizes: set = set()

    @classmethod
    def from_files(cls, checkpoint, vlm, vae=None, *, device="cpu", dtype=None):
        """Load a checkpoint, a VLM folder (or a loaded VLMEncoder) and, for flux16, ae.safetensors."""
        from .vlm import load_vlm

        config, pooler, dit = load_modules(checkpoint, dtype=dtype, device=device)
        if isinstance(vlm, (str, bytes)) or hasattr(vlm, "__fspath__"):
            vlm = load_vlm(vlm, device=device)
        if vae is not None and config.sampling.latent_format == "flux16":
            from .vae import load_flux_vae

            vae = load_flux_vae(vae, device=device)
        return cls(config, pooler, dit, vlm, vae)

    # -- conditioning ------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, prompts, images=None, system=None, roles=PLAIN_ROLES, progress=None):
        """prompts: list of str; images: list (per prompt) of image lists -> (cond (B,T,D), mask (B,T))."""
        from .vlm import Prompt

        images = images or [[] for _ in prompts]
        feats = self.vlm.encode([Prompt(instruction=p, system=system, images=list(im)) for p, im in zip(prompts, images)],
                                layers=self.config.vlm.layers, progress=progress)
        return self.condition(feats, roles)

    @torch.no_grad()
    def encode_verifi(self, prompts, images=None, system=None, *, rewrites=None, sampling=None,
                      progress=None, should_stop=None):
        """VERIFI: the VLM rewrites each prompt (or, given ``rewrites``, teacher-forces them) with
        the checkpoint's system prompt unless ``system`` is given; the condition keeps image +
        generated tokens -> (cond (B,T,D), mask (B,T), rewritten texts)."""
        from .verifi import verifi_prompt

        images = images or [[] for _ in prompts]
        vprompts = [verifi_prompt(p, im, system=system, cfg=self.config) for p, im in zip(prompts, images)]
        if rewrites is None:
            feats = self.vlm.generate(vprompts, self.config.vlm.layers, sampling=sampling, progress=progress,
                                      should_stop=should_stop)
            texts = list(feats.texts)
        else:
            rewrites = list(rewrites)
            feats = self.vlm.teacher_force(vprompts, rewrites, self.config.vlm.layers)
            texts = [r if isinstance(r, str) else t for r, t in zip(rewrites, feats.texts)]  # given text as given
        cond, mask = self.condition(feats, VERIFI_ROLES)
        return cond, mask, texts

    def condition(self, feats, roles=PLAIN_ROLES):
        """Features -> pooled condition tokens (B, T, D) and mask (B, T) (``condition.pool``)."""
        return pool(self.pooler, self.config, feats, roles)

    # -- sampling ----------------------------------------------------------------------------------
    def default_size(self) -> tuple[int, int]:
        """(width, height) the checkpoint was trained at (its first bucket), else 256 x 256."""
        s = self.config.sampling
        if s.buckets:
            return tuple(s.buckets[0])
        return (s.resolution, s.resolution) if s.resolution else (256, 256)

    def _check_size(self, width: int, height: int) -> None:
        """One warning per size far (over 2x in pixel count) from the training resolution."""
        trained = self.config.sampling.resolution
        if not trained or (width, height) in self._warned_sizes:
            return
        ratio = width * height / trained ** 2
        if ratio > 2 or ratio < 0.5:
            self._warned_sizes.add((width, height))
            log.warning("%dx%d is far from the %d px this checkpoint was trained at; expect poor images "
                        "(leave width/height unset for the training size).", width, height, trained)

    @torch.no_grad()
    def sample(self, cond, mask, *, width, height, seed=0, steps=None, guidance=None, batch=1, callback=None,
               seeds=None):
        """Condition (1 or B, T, D) -> images (B, H, W, 3) in 0..1.

        Noise: ``batch`` images from one CPU generator seeded with ``seed`` (ComfyUI's prepare_noise).
        ``seeds`` [(seed, n), ...] instead: the rows in order, each group of n from its own generator,
        so a batch of requests gives the images each would give alone.
        """
        s = self.config.sampling
        down = self.vae.downscale if s.latent_format == "flux16" else 1  # 8 for the real FLUX.1 VAE
        p = self.config.dit.patch_size
        if width % (down * p) or height % (down * p):
            raise UniFusionError(f"width and height must be multiples of {down * p} for this checkpoint, "
                                 f"found {width}x{height}.")
        self._check_size(width, height)
        param = next(self.dit.parameters())
        shape = (self.config.dit.in_channels, height // down, width // down)
        seeds = [(seed, batch)] if seeds is None else seeds
        noise = torch.cat([torch.randn((n, *shape), generator=torch.Generator("cpu").manual_seed(int(x)))
                           for x, n in seeds])
        batch = noise.shape[0]
        noise = noise.to(param.device, param.dtype)
        cond = cond.to(param.dtype).expand(batch, -1, -1)
        mask = mask.expand(batch, -1)
        sigmas = flow.comfy_simple_sigmas(steps or s.steps, s.shift, s.multiplier).to(param.device, param.dtype)
        # the refiner does not depend on the timestep: refine positive and negative once, not every step
        refined, refined_null = self.dit.refine(cond, mask), self.dit.refine(null_condition(cond), mask)

        def model(x, t, ctx, m):
            return self.dit(x, t, attention_mask=m, refined_context=ctx)

        z = flow.euler_sample(model, noise, sigmas, refined, mask, refined_null, mask,
                              cfg=s.cfg if guidance is None else guidance, multiplier=s.multiplier, callback=callback)
        return self.decode(z)

    def decode(self, z):
        raw = latent.process_out(z.float(), self.config.sampling.latent_format)
        if self.config.sampling.latent_format == "pixel":
            return latent.pixels_to_image(raw)
        return self.vae.decode_to_image(raw)

    # -- requests ----------------------------------------------------------------------------------
    def __call__(self, req: Request, callback=None) -> Generation:
        """Text-to-image when ``req.images`` is empty, otherwise editing / multi-reference; plain or
        VERIFI conditioning (``req.verifi`` / ``req.rewrite``)."""
        return self.generate([req], callback=callback)[0]

    @torch.no_grad()
    def generate(self, requests, callback=None) -> list[Generation]:
        """Several requests, batched where they share size, steps, guidance, mode and system prompt.
        Each request's noise comes from its own generator (seeded with its seed, as ComfyUI draws a
        batch), so its images equal what running it alone gives."""
        out: list = [None] * len(requests)
        groups: dict = {}
        for i, req in enumerate(requests):
            if not isinstance(req, Request):
                raise UniFusionError(f"generate() takes Request objects, found {type(req).__name__}.")
            if req.batch < 1:
                raise UniFusionError(f"Request.batch should be >= 1, found {req.batch}.")
            key = (req.width, req.height, req.steps, req.guidance, req.mode, req.rewrite is None,
                   req.system_prompt, req.verifi_sampling if req.mode == "verifi" else None)
            groups.setdefault(key, []).append(i)
        for idx in groups.values():
            reqs = [requests[i] for i in idx]
            first = reqs[0]
            dw, dh = self.default_size()
            width, height = first.width or dw, first.height or dh
            prompts, images = [r.prompt for r in reqs], [list(r.images) for r in reqs]
            if first.mode == "verifi":
                rewrites = None if first.rewrite is None else [r.rewrite for r in reqs]
                cond, mask, texts = self.encode_verifi(prompts, images, first.system_prompt, rewrites=rewrites,
                                                       sampling=first.verifi_sampling)
                texts = [t.strip() for t in texts]
            else:
                (cond, mask), texts = self.encode(prompts, images, first.system_prompt), [None] * len(reqs)
            rows = [n for n, r in enumerate(reqs) for _ in range(r.batch)]
            imgs = self.sample(cond[rows], mask[rows], width=width, height=height, steps=first.steps,
                               guidance=first.guidance, callback=callback, seeds=[(r.seed, r.batch) for r in reqs])
            start = 0
            for n, i in enumerate(idx):
                out[i] = Generation(imgs[start:start + reqs[n].batch], texts[n])
                start += reqs[n].batch
        return out
