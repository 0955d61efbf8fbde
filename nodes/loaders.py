"""Loader nodes: the frozen VLM (its own ModelPatcher) and a UniFusion checkpoint (MODEL + pooler)."""
from __future__ import annotations

import comfy.model_management as mm
import comfy.model_patcher
import torch
from comfy_api.latest import io

from ..unifusion_core.vlm.prefix_cache import PrefixCache
from . import paths
from .comfy_model import load_unifusion
from .common import (ATTN_IMPLEMENTATIONS, VLM_DEVICES, VLM_DTYPES, WEIGHT_DTYPES, VLMHandle, choice,
                     require_transformers, user_errors)
from .types import POOLER, VLM

_VLM_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


class UniFusionVLMLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="UniFusionVLMLoader", display_name="Load VLM (UniFusion)", category="UniFusion/loaders",
            description="Loads a frozen vision-language model from a Hugging Face folder (config.json + "
                        "safetensors + tokenizer/processor) in models/LLM or models/text_encoders. ComfyUI's "
                        "model management moves it to the GPU for encoding and offloads it while the DiT samples.",
            inputs=[
                io.Combo.Input("vlm_folder", options=paths.vlm_folders(),
                               tooltip="A Hugging Face model folder (with config.json) under models/LLM or "
                                       "models/text_encoders. unifusion-toy-vlm is the pack's own trained "
                                       "shapes-world VLM (for unifusion-toy.safetensors)."),
                io.Combo.Input("dtype", options=list(VLM_DTYPES), default="auto",
                               tooltip="Weight dtype. auto: bf16 (or fp16) on a GPU, fp32 on the CPU."),
                io.Combo.Input("device", options=list(VLM_DEVICES), default="default",
                               tooltip="default: ComfyUI's device (GPU if any); cpu: always run the VLM on the CPU."),
                io.Combo.Input("attention", options=list(ATTN_IMPLEMENTATIONS), default="auto",
                               tooltip="transformers attention implementation; auto lets transformers choose."),
                io.Boolean.Input("trust_remote_code", default=False,
                                 tooltip="Run Python code shipped inside the model folder. Leave off unless you "
                                         "trust the folder; the supported families do not need it."),
                io.Int.Input("prefix_cache_mb", default=1024, min=0, max=1 << 20, step=64,
                             tooltip="Memory (CPU RAM, MiB) for reusing the VLM's work on reference images when "
                                     "only the instruction, rewrite or sampling change; 0 turns the cache off."),
            ],
            outputs=[VLM.Output(display_name="vlm", tooltip="The loaded VLM, for the UniFusion encode nodes.")],
        )

    @classmethod
    def execute(cls, vlm_folder, dtype="auto", device="default", attention="auto", trust_remote_code=False,
                prefix_cache_mb=1024):
        require_transformers()
        choice("The VLM dtype", dtype, VLM_DTYPES)
        choice("The VLM device", device, VLM_DEVICES)
        choice("The attention implementation", attention, ATTN_IMPLEMENTATIONS)
        load_device = torch.device("cpu") if device == "cpu" else mm.get_torch_device()
        torch_dtype = _VLM_DTYPES.get(dtype) or _auto_dtype(load_device)
        with user_errors():
            from ..unifusion_core.vlm import load_vlm

            path = paths.vlm_path(vlm_folder)
            encoder = load_vlm(path, dtype=torch_dtype, device="cpu", trust_remote_code=trust_remote_code,
                               attn_implementation=None if attention == "auto" else attention)
            # entries live in CPU RAM (moved to the VLM's device on a hit), outside ComfyUI's VRAM accounting
            encoder.prefix_cache = PrefixCache(int(prefix_cache_mb) << 20, device="cpu") if prefix_cache_mb else None
        patcher = comfy.model_patcher.ModelPatcher(_Holder(encoder.model), load_device=load_device,
                                                   offload_device=torch.device("cpu"))
        return io.NodeOutput(VLMHandle(encoder, patcher, path))


class _Holder(torch.nn.Module):
    """ModelPatcher assigns ``model.device``, a read-only property on HF models: patch a container."""

    def __init__(self, model):
        super().__init__()
        self.vlm = model


def _auto_dtype(device) -> torch.dtype:
    if device.type == "cpu":
        return torch.float32
    return torch.bfloat16 if mm.should_use_bf16(device) else torch.float16


class UniFusionCheckpointLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="UniFusionCheckpointLoader", display_name="Load UniFusion Checkpoint",
            category="UniFusion/loaders",
            description="Loads a UniFusion checkpoint (one .safetensors in models/diffusion_models holding the "
                        "LAP pooler, refiner and DiT, with its config in the metadata). MODEL works with every "
                        "stock sampler; decode its latents with the Flux VAE (flux16) or pixel_space (pixel).",
            inputs=[
                io.Combo.Input("checkpoint", options=paths.checkpoint_files(),
                               tooltip="A UniFusion .safetensors file in models/diffusion_models. "
                                       "unifusion-toy.safetensors is the pack's own trained shapes-world "
                                       "demo model (use it with the unifusion-toy-vlm VLM)."),
                io.Combo.Input("weight_dtype", options=list(WEIGHT_DTYPES), default="default",
                               tooltip="DiT weight dtype. default follows ComfyUI's rules for the device; fp8 "
                                       "stores weights in 8 bits and computes in bf16/fp16/fp32."),
            ],
            outputs=[
                io.Model.Output(display_name="MODEL", tooltip="The DiT (with refiner) as a flow-matching MODEL."),
                POOLER.Output(display_name="pooler",
                              tooltip="The checkpoint's layerwise attention pooler and the VLM it expects."),
            ],
        )

    @classmethod
    def execute(cls, checkpoint, weight_dtype="default"):
        choice("The weight dtype", weight_dtype, WEIGHT_DTYPES)
        with user_errors():
            model, pooler = load_unifusion(paths.checkpoint_path(checkpoint), weight_dtype)
        return io.NodeOutput(model, pooler)
