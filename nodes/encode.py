"""Encode nodes: reference-image lists, VLM features, LAP conditioning, and a one-node encode.

CONDITIONING: [[tokens (B, T, D), {"attention_mask": (B, T) float, 1 = real token}]]. The null
condition is ComfyUI's ConditioningZeroOut of it (zeros, same mask), as in training.
"""
from __future__ import annotations

import contextlib

import comfy.model_management as mm
import comfy.utils
import torch
from comfy_api.latest import io

from ..unifusion_core.checkpoint import check_vlm
from ..unifusion_core.condition import pool, roles_for
from ..unifusion_core.errors import UniFusionError
from ..unifusion_core.vlm.features import Features
from ..unifusion_core.vlm.prompts import Prompt
from .common import TOKEN_MODES, ImageRef, choice, gather_images, layer_spec, make_detail, user_errors
from .types import FEATURES, IMAGES, POOLER, VLM

def _detail_inputs():
    return [
        io.Int.Input("max_pixels", default=0, min=0, max=16 * 1024 * 1024, step=1024,
                     tooltip="Images with more pixels are resized down (keeping aspect) before the VLM sees "
                             "them; 0 = the VLM processor's default. Lower it to save memory."),
        io.Int.Input("max_tiles", default=0, min=0, max=64,
                     tooltip="Cap on local tiles for tiling VLMs (InternVL, SmolVLM); 0 = default. Ignored "
                             "by other families."),
    ]


def _should_stop() -> bool:
    mm.throw_exception_if_processing_interrupted()  # raises ComfyUI's own interrupt exception
    return False


def extract_features(vlm, instruction, system, image, detail, more, layers) -> Features:
    """Run the VLM on one conversation (instruction + reference images) and tap ``layers``."""
    images, details = gather_images(image, detail, more)
    prompt = Prompt(instruction=instruction, system=(system or "").strip() or None, images=images,
                    detail=details or None)
    bar = comfy.utils.ProgressBar(1)
    with vlm_session(vlm, len(details)):
        feats = vlm.encoder.encode([prompt], layers, progress=lambda done, total: bar.update_absolute(done, total),
                                   should_stop=_should_stop)
    return feats.to(mm.intermediate_device())


@contextlib.contextmanager
def vlm_session(vlm, num_images: int):
    """The VLM on its device for one call; an interrupt ends the prompt as interrupted (ComfyUI's own
    exception) and out-of-memory becomes a one-sentence error."""
    mm.load_models_gpu([vlm.patcher], force_full_load=True)
    try:
        yield
    except InterruptedError:
        raise mm.InterruptProcessingException() from None
    except mm.OOM_EXCEPTION:
        mm.soft_empty_cache()
        raise UniFusionError(f"The VLM ran out of memory on {num_images} image(s); use fewer images or a "
                             f"lower max_pixels.") from None


def pool_condition(pooler, feats: Features, mode: str = "plain"):
    """Features -> CONDITIONING through the checkpoint's pooler (``condition.pool`` does the checks)."""
    mm.load_models_gpu([pooler.patcher], force_full_load=True)
    tokens, mask = pool(pooler.module, pooler.config, feats, roles_for(mode),
                        where=f"the UniFusion checkpoint {pooler.path}")
    out = mm.intermediate_device()
    return [[tokens.to(out, torch.float32), {"attention_mask": mask.to(out, torch.float32)}]]


class UniFusionImageList(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="UniFusionImageList", display_name="Reference Images (UniFusion)", category="UniFusion/encode",
            description="Collects reference images for the VLM, each with its own detail setting. Chain several "
                        "of these for any number of references of any size; order is chain order.",
            inputs=[io.Image.Input("image", tooltip="One image or a batch (a batch adds each image in order)."),
                    *_detail_inputs(),
                    IMAGES.Input("previous", optional=True, tooltip="Earlier references of the chain (optional).")],
            outputs=[IMAGES.Output(display_name="images", tooltip="The references so far, for VLM Features.")],
        )

    @classmethod
    def execute(cls, image, max_pixels=0, max_tiles=0, previous=None):
        with user_errors():
            ref = ImageRef(image, make_detail(max_pixels, max_tiles))
        return io.NodeOutput(tuple(previous or ()) + (ref,))


def _prompt_inputs():
    return [
        io.String.Input("instruction", multiline=True, default="",
                        tooltip="The request: a description to generate, or an edit of the reference images."),
        io.String.Input("system_prompt", multiline=True, default="",
                        tooltip="Optional system turn of the VLM conversation (its tokens never condition the "
                                "DiT, but shape the others). Empty: none."),
        io.Image.Input("image", optional=True, tooltip="Reference image(s) for editing or composition (optional)."),
        IMAGES.Input("more_images", optional=True,
                     tooltip="Further references from a Reference Images chain, after 'image' (optional)."),
        *_detail_inputs(),
    ]


class UniFusionVLMFeatures(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="UniFusionVLMFeatures", display_name="VLM Features (UniFusion)", category="UniFusion/encode",
            description="Runs the frozen VLM on the instruction and reference images and keeps the hidden states "
                        "of the selected layers with each token's role (system, instruction, image).",
            inputs=[VLM.Input("vlm", tooltip="From Load VLM (UniFusion)."), *_prompt_inputs(),
                    io.String.Input("layers", default="",
                                    tooltip="Layer override: '4,7,10' or 'every 3 from 4'. Empty: the connected "
                                            "pooler's layers, else the VLM's default (every 3rd)."),
                    POOLER.Input("pooler", optional=True,
                                 tooltip="Optional: extract exactly the layers this checkpoint pools.")],
            outputs=[FEATURES.Output(display_name="features",
                                     tooltip="Per-layer hidden states (B, layers, tokens, width) with roles.")],
        )

    @classmethod
    def execute(cls, vlm, instruction, system_prompt="", image=None, more_images=None, max_pixels=0, max_tiles=0,
                layers="", pooler=None):
        with user_errors():
            default = pooler.config.vlm.layers if pooler is not None else None
            feats = extract_features(vlm, instruction, system_prompt, image, make_detail(max_pixels, max_tiles),
                                     more_images, layer_spec(layers, default))
        return io.NodeOutput(feats)


def _mode_input():
    return io.Combo.Input("tokens", options=list(TOKEN_MODES), default="image + instruction",
                          tooltip="Which tokens condition the DiT: plain mode keeps image + instruction tokens; "
                                  "VERIFI keeps image + generated tokens.")


class UniFusionLAPConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="UniFusionLAPConditioning", display_name="LAP Conditioning (UniFusion)",
            category="UniFusion/encode",
            description="Pools the VLM features per token over layers with the checkpoint's Layerwise Attention "
                        "Pooling into a standard CONDITIONING with an attention mask. Checks the features come "
                        "from the VLM the checkpoint expects.",
            inputs=[POOLER.Input("pooler", tooltip="From Load UniFusion Checkpoint."),
                    FEATURES.Input("features", tooltip="From VLM Features (UniFusion)."), _mode_input()],
            outputs=[io.Conditioning.Output(display_name="CONDITIONING",
                                            tooltip="Positive conditioning; use ConditioningZeroOut of it as negative.")],
        )

    @classmethod
    def execute(cls, pooler, features, tokens="image + instruction"):
        with user_errors():
            return io.NodeOutput(pool_condition(pooler, features, TOKEN_MODES[choice("tokens", tokens, list(TOKEN_MODES))]))


class UniFusionEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="UniFusionEncode", display_name="Text/Image Encode (UniFusion)", category="UniFusion/encode",
            description="One-node encode: VLM features of the checkpoint's layers for the instruction and "
                        "reference images, pooled by LAP into CONDITIONING.",
            inputs=[VLM.Input("vlm", tooltip="From Load VLM (UniFusion)."),
                    POOLER.Input("pooler", tooltip="From Load UniFusion Checkpoint."), *_prompt_inputs()],
            outputs=[io.Conditioning.Output(display_name="CONDITIONING",
                                            tooltip="Positive conditioning; use ConditioningZeroOut of it as negative.")],
        )

    @classmethod
    def execute(cls, vlm, pooler, instruction, system_prompt="", image=None, more_images=None, max_pixels=0,
                max_tiles=0):
        with user_errors():
            check_vlm(pooler.config, vlm.encoder.identity, where=f"the UniFusion checkpoint {pooler.path}")
            feats = extract_features(vlm, instruction, system_prompt, image, make_detail(max_pixels, max_tiles),
                                     more_images, pooler.config.vlm.layers)
            return io.NodeOutput(pool_condition(pooler, feats))
