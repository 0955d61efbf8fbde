"""The supported VLM families: how to recognise them and where their language model lives.

A family is picked from ``config.json``'s ``model_type``; any other text-only causal LM that
transformers knows (Qwen2, Llama, Gemma3-text, ...) is the ``llm`` family (text-to-image only).
Image tokens (Role.IMAGE) are exactly the positions holding the model's ``image_token_id``, i.e. the
positions the vision features are written into; image start/end, tile row/column and separator
tokens are TEMPLATE. Layer k is the output of decoder block k as HF's ``hidden_states[k]`` reports
it; for Qwen3-VL that is before the DeepStack visual features are added to the residual stream.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import torch

from ..errors import UniFusionError

log = logging.getLogger(__name__)

FAMILIES = ("qwen2_5_vl", "qwen3_vl", "internvl", "gemma3", "smolvlm", "llm")
TEXT_ONLY = ("llm",)

MODEL_TYPE_FAMILY = {
    "qwen2_5_vl": "qwen2_5_vl",
    "qwen3_vl": "qwen3_vl",
    "qwen3_vl_moe": "qwen3_vl",
    "internvl": "internvl",
    "gemma3": "gemma3",
    "idefics3": "smolvlm",
    "smolvlm": "smolvlm",
}

# attribute paths from the top model to its language model's decoder blocks, most specific first
_DECODER_PATHS = ("model.language_model.layers", "model.text_model.layers",
                  "language_model.model.layers", "model.layers", "transformer.h")


def detect_family(config: dict, path: Path, trust_remote_code: bool) -> str:
    """The family of a model from its raw ``config.json`` dict; UniFusionError if unsupported."""
    model_type = config.get("model_type")
    arch = (config.get("architectures") or ["?"])[0]
    if model_type in MODEL_TYPE_FAMILY:
        return MODEL_TYPE_FAMILY[model_type]
    if model_type == "internvl_chat":
        raise UniFusionError(f"{path} holds the remote-code InternVL ('{arch}'); use the "
                             f"transformers-native '-hf' release (InternVLForConditionalGeneration).")
    if arch.endswith("ForCausalLM") and _known_causal_lm(config, trust_remote_code):
        return "llm"
    supported = ", ".join(sorted(MODEL_TYPE_FAMILY)) + " or a text-only *ForCausalLM"
    raise UniFusionError(f"{path} holds a '{arch}' model (model_type '{model_type}'), which is not a "
                         f"supported VLM family (supported: {supported}).")


def _known_causal_lm(config: dict, trust_remote_code: bool) -> bool:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if config.get("model_type") in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return True
    return trust_remote_code and "AutoModelForCausalLM" in (config.get("auto_map") or {})


def text_config(config):
    """The language model's config of a (possibly composite) transformers config."""
    try:
        return config.get_text_config(decoder=True)
    except TypeError:  # transformers without the `decoder` argument
        return config.get_text_config()


def decoder_layers(model: torch.nn.Module, num_layers: int) -> torch.nn.ModuleList:
    """The language model's decoder blocks (a ModuleList of length ``num_layers``)."""
    for dotted in _DECODER_PATHS:
        module = model
        for name in dotted.split("."):
            module = getattr(module, name, None)
            if module is None:
                break
        if isinstance(module, torch.nn.ModuleList) and len(module) == num_layers:
            return module
    raise UniFusionError(f"Could not find the {num_layers} decoder layers of "
                         f"{type(model).__name__} (looked at {', '.join(_DECODER_PATHS)}).")


def image_token_id(config) -> int:
    """The id of the token whose positions receive vision features."""
    for name in ("image_token_id", "image_token_index"):
        value = getattr(config, name, None)
        if value is not None:
            return int(value)
    raise UniFusionError(f"The {type(config).__name__} config names no image_token_id.")


# --------------------------------------------------------------------------------------------------
# tiling (ImageDetail.max_tiles)
# --------------------------------------------------------------------------------------------------

def tiling_kwargs(family: str, image_processor, max_tiles: int | None, sizes: list) -> dict:
    """Processor kwargs that cap the local tiles per image at ``max_tiles`` (a global/thumbnail view
    is added by the processor whenever an image is split). ``sizes`` are the (height, width) of the
    images of one prompt."""
    if max_tiles is None:
        return {}
    if family == "internvl":
        low = min(int(getattr(image_processor, "min_patches", 1) or 1), max_tiles)
        return {"crop_to_patches": max_tiles > 1, "max_patches": max_tiles, "min_patches": low}
    if family == "smolvlm":
        return _idefics3_tiling(image_processor, max_tiles, sizes)
    log.debug("ImageDetail.max_tiles is ignored for %s, which does not tile images", family)
    return {}


def _idefics3_tiling(image_processor, max_tiles: int, sizes: list) -> dict:
    """Idefics3/SmolVLM resize the longest edge to ``size`` and cut tile-sized crops: shrink that
    target (a multiple of the tile) until each image of the prompt needs at most ``max_tiles``
    crops; one tile's size means no split (``do_image_splitting`` is not a per-call argument in
    transformers 4.x)."""
    tile = int(image_processor.max_image_size["longest_edge"])
    longest = int(image_processor.size["longest_edge"])
    for steps in range(max(1, math.ceil(longest / tile)), 1, -1):
        size = {"longest_edge": min(longest, steps * tile)}
        if max((_idefics3_tiles(image_processor, h, w, size) for h, w in sizes), default=0) <= max_tiles:
            return {"size": size}
    return {"size": {"longest_edge": tile}}


def _idefics3_tiles(image_processor, height: int, width: int, size: dict) -> int:
    _, rows, cols = image_processor.get_number_of_image_patches(height, width, {"size": size})
    return rows * cols
