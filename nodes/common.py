"""Helpers of the node layer that need no ComfyUI: error translation, model-folder listing, the
handles passed between nodes, and reference-image lists. Unit-tested without a host."""
from __future__ import annotations

import contextlib
import importlib.util
import os
from dataclasses import dataclass, field

import torch

from ..unifusion_core.errors import UniFusionError
from ..unifusion_core.vlm.prompts import ImageDetail

TRANSFORMERS_MISSING = ("The UniFusion VLM nodes need the transformers package: install transformers>=4.57 "
                        "(pip install -r requirements.txt).")
WEIGHT_DTYPES = ("default", "bf16", "fp16", "fp8_e4m3fn", "fp8_e4m3fn_fast")
VLM_DTYPES = ("auto", "bf16", "fp16", "fp32")
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


def resolve_model_dir(name: str, bases) -> str:
    """The first ``base/name`` folder that exists; one-sentence error otherwise."""
    for base in bases:
        path = os.path.join(base, *name.split("/"))
        if os.path.isdir(path):
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
