"""Helpers of the node layer that need no ComfyUI: error translation, model-folder listing, the
handles passed between nodes, and reference-image lists. Unit-tested without a host."""
from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
from dataclasses import dataclass, field

import torch

from ..unifusion_core.errors import UniFusionError
from ..unifusion_core.vlm.prompts import ImageDetail

log = logging.getLogger(__name__)

TRANSFORMERS_MISSING = ("The UniFusion VLM nodes need the transformers package: install transformers>=4.57 "
                        "(pip install -r requirements.txt).")
WEIGHT_DTYPES = ("default", "bf16", "fp16", "fp8_e4m3fn", "fp8_e4m3fn_fast")
VLM_DTYPES = ("auto", "bf16", "fp16", "fp32")
VLM_DEVICES = ("default", "cpu")
ATTN_IMPLEMENTATIONS = ("auto", "sdpa", "eager", "flash_attention_2")
TOKEN_MODES = {"image + instruction": "plain", "image + generated (VERIFI)": "verifi"}


# A builtin, so ComfyUI shows ``exception_type: ValueError`` and the sentence as the message.
UserFacingError = ValueError


@contextlib.contextmanager
def user_errors():
    """Turn core errors into one-sentence node errors, without the chained core traceback."""
    try:
        yield
    except UniFusionError as err:
        raise UserFacingError(str(err)) from None


def choice(label: str, value, options):
    """``value`` if it is one of ``options``; else one sentence naming them. ComfyUI does not check a
    combo's value against its options for API clients, so every node checks its own."""
    if isinstance(value, str) and value in options:
        return value
    raise UserFacingError(f"{label} should be one of {', '.join(repr(o) for o in options)}, found {value!r}.")


def require_transformers():
    if importlib.util.find_spec("transformers") is None:
        raise UserFacingError(TRANSFORMERS_MISSING)


# ---------------------------------------------------------------------------------------------
# Hugging Face model folders (a folder with config.json) under ComfyUI's model paths
# ---------------------------------------------------------------------------------------------

def hf_model_dirs(bases) -> list[str]:
    """Relative paths (with "/") of every folder holding a config.json under any of ``bases``."""
    found = set()
    for base in bases:
        if not os.path.isdir(base):
            continue
        for dirpath, dirs, files in os.walk(base, followlinks=True):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            if "config.json" in files and os.path.abspath(dirpath) != os.path.abspath(base):
                found.add(os.path.relpath(dirpath, base).replace(os.sep, "/"))
    return sorted(found)


def resolve_model_dir(name, bases, forbidden=()) -> str:
    """``name`` (one of ``hf_model_dirs(bases)``) -> its folder; one-sentence error otherwise.

    A model input is only ever a name the loader lists: no absolute paths, backslashes, drive letters,
    ``.`` or ``..`` segments, resolved inside a registered base (symlinks inside a base are allowed,
    as users make them), and never inside ``forbidden`` folders (ComfyUI's input/ and output/, where
    HTTP clients can upload files). ComfyUI does not check combo values against their options, so
    this check is the only one between an HTTP client and ``from_pretrained``.
    """
    parts = name.split("/") if isinstance(name, str) else []
    if (not parts or "\\" in name or ":" in name or os.path.isabs(name)
            or any(p in ("", ".", "..") for p in parts)):
        raise UserFacingError(f"A VLM folder is a name from the loader's list (a folder under "
                              f"{', '.join(bases) or 'no model folders'}), found {name!r}: paths, '..' and "
                              f"backslashes are not accepted.")
    listed = hf_model_dirs(bases)
    if name not in listed:
        shown = ", ".join(listed[:8]) + (", ..." if len(listed) > 8 else "") if listed else "none"
        raise UserFacingError(f"No VLM folder named {name!r} was found under {', '.join(bases) or 'no model folders'}"
                              f" (listed: {shown}).")
    for base in bases:
        path = os.path.join(base, *parts)
        if os.path.isfile(os.path.join(path, "config.json")):
            real = os.path.realpath(path)
            for bad in forbidden:
                bad = os.path.realpath(bad)
                if real == bad or real.startswith(bad + os.sep):
                    raise UserFacingError(f"VLM folder {name!r} resolves into {bad}, which is never a model "
                                          f"folder (uploads land there); move the model under {base}.")
            return path
    raise UserFacingError(f"No VLM folder named {name!r} was found under {', '.join(bases) or 'no model folders'}.")


# ---------------------------------------------------------------------------------------------
# values passed between nodes (custom socket types)
# ---------------------------------------------------------------------------------------------

@dataclass
class VLMHandle:
    """UNIFUSION_VLM: the core encoder and the ModelPatcher that moves its HF model."""

    encoder: object
    patcher: object
    path: str


@dataclass
class PoolerHandle:
    """UNIFUSION_POOLER: the checkpoint's pooler (LAP) module, its patcher and the full config."""

    module: torch.nn.Module
    patcher: object
    config: object
    path: str


@dataclass(frozen=True)
class ImageRef:
    """One entry of UNIFUSION_IMAGES: an IMAGE batch (B, H, W, 3) and how much detail the VLM sees."""

    image: torch.Tensor
    detail: ImageDetail = field(default_factory=ImageDetail)


def make_detail(max_pixels: int, max_tiles: int) -> ImageDetail:
    """Widget values (0 = the VLM processor's default) -> ImageDetail."""
    return ImageDetail(max_pixels=int(max_pixels) or None, max_tiles=int(max_tiles) or None)


def gather_images(image=None, detail: ImageDetail | None = None, more=()) -> tuple[list, list]:
    """The direct IMAGE batch first, then the chained list -> (images, one ImageDetail per image)."""
    refs = ([ImageRef(image, detail or ImageDetail())] if image is not None else []) + list(more or ())
    images, details = [], []
    for ref in refs:
        img = ref.image
        if img.ndim == 3:  # (H, W, 3) -> (1, H, W, 3)
            img = img[None]
        images.append(img)
        details.extend([ref.detail] * img.shape[0])
    return images, details


def layer_spec(text: str, default):
    """Layer override widget: empty -> ``default``; otherwise the core's spec string ("4,7,10", "every 3 from 4")."""
    text = (text or "").strip()
    return default if not text else text


# ---------------------------------------------------------------------------------------------
# VERIFI node settings
# ---------------------------------------------------------------------------------------------

SYSTEM_PRESETS = ("checkpoint default", "t2i", "edit", "multi_ref", "custom")
DECODING = ("greedy", "sample")


def verifi_system(preset: str, custom: str, num_images: int, cfg=None) -> str:
    """The VERIFI system prompt of the preset widget: 'checkpoint default' is the checkpoint's
    training prompt for the task the image count implies (else the pack's preset of that task),
    t2i / edit / multi_ref the pack's preset, 'custom' the custom text (which must not be empty)."""
    from ..unifusion_core import verifi

    if choice("The system prompt preset", preset, SYSTEM_PRESETS) == "custom":
        if not (custom or "").strip():
            raise UserFacingError("The system prompt preset is 'custom' but the custom system text is empty; "
                                  "write one or pick another preset.")
        return custom.strip()
    if (custom or "").strip():
        log.warning("The custom system text is ignored because the system prompt preset is '%s', not 'custom'.",
                    preset)
    if preset == "checkpoint default":
        return verifi.system_prompt(verifi.task_for(num_images), cfg)
    if verifi.task_for(num_images) != preset:
        log.warning("The system prompt preset is '%s' but the request has %d reference image(s), which is a "
                    "'%s' request; the rewrite may describe images that are not there. Pick 'checkpoint default' "
                    "to follow the image count.", preset, num_images, verifi.task_for(num_images))
    return verifi.PRESETS[preset]


def make_sampling(decoding: str, max_new_tokens: int, temperature: float, top_p: float, seed: int):
    """Widget values -> the core's Sampling: greedy ignores temperature, top_p and seed."""
    from ..unifusion_core.vlm.sampling import Sampling

    if choice("Decoding", decoding, DECODING) == "greedy":
        return Sampling(max_new_tokens=int(max_new_tokens))
    if not temperature > 0:
        raise UserFacingError(f"Sampling needs a temperature above 0 (use greedy decoding for 0), found {temperature}.")
    return Sampling(max_new_tokens=int(max_new_tokens), temperature=float(temperature), top_p=float(top_p),
                    seed=int(seed))
