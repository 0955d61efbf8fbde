"""A UniFusion checkpoint as a real ComfyUI MODEL (BaseModel + ModelPatcher), and its pooler.

The DiT is built by ComfyUI's BaseModel with ``comfy.ops`` operations and ComfyUI's optimized
attention, so every stock sampler, scheduler, guider, ModelSampling node and LoRA loader works.
Model type FLOW (``ModelSamplingDiscreteFlow`` + CONST): timestep = sigma * multiplier, as in
``unifusion_core.flow``. Conditioning: ``c_crossattn`` (B, T, D) and ``attention_mask`` (B, T),
1 = real token; the DiT turns the keep-mask into an additive bias itself.
"""
from __future__ import annotations

import logging

import comfy.conds
import comfy.latent_formats
import comfy.model_base
import comfy.model_management as mm
import comfy.model_patcher
import comfy.ops
import comfy.patcher_extension
import comfy.supported_models_base
import torch
from comfy.ldm.modules.attention import optimized_attention

from ..unifusion_core.checkpoint import load_checkpoint
from ..unifusion_core.dit import RefinerCache, UniFusionDiT
from ..unifusion_core.errors import UniFusionError
from ..unifusion_core.lap import build_pooler
from .common import PoolerHandle, UserFacingError

log = logging.getLogger(__name__)

LATENT_FORMATS = {"flux16": comfy.latent_formats.Flux, "pixel": comfy.latent_formats.ChromaRadiance}
_DTYPE_OPTIONS = {"default": None, "bf16": torch.bfloat16, "fp16": torch.float16,
                  "fp8_e4m3fn": torch.float8_e4m3fn, "fp8_e4m3fn_fast": torch.float8_e4m3fn}


class UniFusionModelConfig(comfy.supported_models_base.BASE):
    """Model config of one checkpoint: its DiT config, sampling settings and latent format."""

    unet_extra_config = {}
    supported_inference_dtypes = [torch.bfloat16, torch.float16, torch.float32]
    memory_usage_factor = 1.0

    def __init__(self, cfg):
        self.latent_format = LATENT_FORMATS[cfg.sampling.latent_format]
        self.sampling_settings = {"shift": cfg.sampling.shift, "multiplier": cfg.sampling.multiplier}
        super().__init__({"config": cfg.dit, "attn_fn": optimized_attention})
        self.unifusion = cfg


class UniFusionModel(comfy.model_base.BaseModel):
    def __init__(self, model_config: UniFusionModelConfig, device=None):
        super().__init__(model_config, comfy.model_base.ModelType.FLOW, device=device, unet_model=UniFusionDiT)
        dit = self.diffusion_model
        dit.should_stop = mm.throw_exception_if_processing_interrupted  # an interrupt ends a step between blocks
        dit.refine_cache = RefinerCache()  # cleared per sampling run by the patcher's OUTER_SAMPLE wrapper
        self._warned_sizes = set()

    def extra_conds(self, **kwargs):
        noise = kwargs.get("noise")
        if noise is not None and noise.ndim == 4:
            check_latent_size(self.model_config.unifusion, tuple(noise.shape[-2:]), self._warned_sizes)
        out = super().extra_conds(**kwargs)
        cross = kwargs.get("cross_attn")
        if cross is not None:  # CONDRegular: never repeat tokens to a common length (CONDCrossAttn would)
            out["c_crossattn"] = comfy.conds.CONDRegular(cross)
        mask = kwargs.get("attention_mask")
        if mask is not None and cross is not None:
            out["attention_mask"] = comfy.conds.CONDRegular(_fit_mask(mask, cross))
        return out


def check_latent_size(cfg, hw: tuple[int, int], warned: set) -> None:
    """A latent far smaller than any image this checkpoint could draw is the wrong latent node (ComfyUI
    silently refits an empty 4-channel latent to our channels, keeping its 1/8 size): one sentence.
    A size far from the training resolution logs one warning per size."""
    down = 1 if cfg.sampling.latent_format == "pixel" else 8
    h, w = hw[0] * down, hw[1] * down
    trained = cfg.sampling.resolution
    if cfg.sampling.latent_format == "pixel" and (min(h, w) < 2 * cfg.dit.patch_size or
                                                  (trained and h * w * 40 < trained ** 2)):
        raise UserFacingError(
            f"This pixel-space UniFusion checkpoint{f' (trained at {trained} px)' if trained else ''} got a "
            f"{w}x{h} latent, which would be a {w}x{h} px image: Empty Latent Image makes 1/8-size latents for VAE "
            f"models; use Empty Chroma Radiance Latent Image (EmptyChromaRadianceLatentImage) at the image size.")
    if trained and (h * w > 2 * trained ** 2 or 2 * h * w < trained ** 2) and (w, h) not in warned:
        warned.add((w, h))
        log.warning("UniFusion: %dx%d is far from the %d px this checkpoint was trained at; expect poor images "
                    "(and long steps when larger).", w, h, trained)


def refiner_cache_wrapper(cache: RefinerCache):
    """An OUTER_SAMPLE wrapper: the refiner cache starts and ends every sampling run empty, and is off
    for runs whose conditions carry hooks (hooks may change the weights from one step to the next)."""
    def wrapper(executor, *args, **kwargs):
        conds = getattr(executor.class_obj, "conds", None) or {}
        cache.clear()
        cache.enabled = not any(c.get("hooks") is not None for group in conds.values() for c in group)
        try:
            return executor(*args, **kwargs)
        finally:
            cache.clear()
            cache.enabled = True
    return wrapper


def _fit_mask(mask: torch.Tensor, cross: torch.Tensor) -> torch.Tensor:
    """(B, T') keep-mask -> (B, T) float; tokens appended by ConditioningConcat are kept."""
    mask = mask.float().reshape(mask.shape[0], -1)
    extra = cross.shape[1] - mask.shape[1]
    if extra > 0:
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], extra)], dim=1)
    return mask[:, : cross.shape[1]]


def load_unifusion(path: str, weight_dtype: str = "default"):
    """-> (ModelPatcher of the DiT, PoolerHandle), with ComfyUI's dtype rules (load_diffusion_model_state_dict)."""
    cfg, state = load_checkpoint(path)  # validated: keys and shapes match the config in the metadata
    model_config = UniFusionModelConfig(cfg)
    load_device, offload_device = mm.get_torch_device(), mm.unet_offload_device()
    dtype = _DTYPE_OPTIONS[weight_dtype]
    if dtype is None:
        params = sum(t.numel() for t in state["dit"].values())
        found = next(iter(state["dit"].values())).dtype
        dtype = mm.unet_dtype(model_params=params, supported_dtypes=model_config.supported_inference_dtypes,
                              weight_dtype=found)
    manual_cast = mm.unet_manual_cast(dtype, load_device, model_config.supported_inference_dtypes)
    model_config.set_inference_dtype(dtype, manual_cast)
    if weight_dtype == "fp8_e4m3fn_fast":
        model_config.optimizations["fp8"] = True
    model = UniFusionModel(model_config, device=offload_device)
    _load_dit_weights(model, state["dit"], path)
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=offload_device)
    patcher.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, "unifusion_refiner_cache",
                                 refiner_cache_wrapper(model.diffusion_model.refine_cache))
    return patcher, _load_pooler(cfg, state["lap"], manual_cast or dtype, load_device, offload_device, path)


def _load_dit_weights(model, dit_state: dict, path: str):
    sd = {f"dit.{k}": v for k, v in dit_state.items()}
    expected = set(model.diffusion_model.state_dict())
    missing = sorted(expected - {k[4:] for k in sd})
    model.load_model_weights(sd, "dit.")  # pops the dit.* keys; strict=False, hence the check above
    if missing:
        raise UniFusionError(f"{path}: the DiT weights lack {len(missing)} tensors such as dit.{missing[0]}.")


def _load_pooler(cfg, lap_state, dtype, load_device, offload_device, path) -> PoolerHandle:
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        dtype = torch.float32  # fp8 is for the DiT's weights; the small pooler computes in full precision
    operations = comfy.ops.pick_operations(dtype, None)
    pooler = build_pooler(cfg.lap, dtype=dtype, device=offload_device, operations=operations)
    pooler.load_state_dict(lap_state, strict=True)
    pooler.eval().requires_grad_(False)
    patcher = comfy.model_patcher.ModelPatcher(pooler, load_device=load_device, offload_device=offload_device)
    return PoolerHandle(pooler, patcher, cfg, path)
