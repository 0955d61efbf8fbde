"""What goes into the VLM: prompts, images, image detail, and the chat text with role spans.

A ``Prompt`` becomes one conversation in the family's own chat template: [system turn] -> user turn
(images first, then the instruction) -> [assistant turn holding ``generated``]. The template is
rendered with unique sentinels in place of the three texts, which are then substituted back while
their character spans are recorded, so roles are exact whatever the template adds around them.
Surrounding whitespace of the texts is stripped (several families' templates trim it anyway).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Union

import numpy as np
import torch

from ..errors import UniFusionError
from .features import Role

log = logging.getLogger(__name__)

_SENTINELS = {Role.SYSTEM: "\ue000UFSYS\ue001", Role.INSTRUCTION: "\ue000UFINS\ue001",
              Role.GENERATED: "\ue000UFGEN\ue001"}


@dataclass(frozen=True)
class ImageDetail:
    """How much of an image the VLM sees.

    max_pixels: images with more pixels are resized down (keeping aspect) before the processor.
    max_tiles:  cap on local tiles for tiling families (InternVL, SmolVLM); ignored elsewhere.
    """

    max_pixels: int | None = None
    max_tiles: int | None = None

    def __post_init__(self):
        for name in ("max_pixels", "max_tiles"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise UniFusionError(f"ImageDetail.{name} should be a positive int or None, "
                                     f"found {value!r}.")


@dataclass
class Prompt:
    """One VLM conversation. ``images``: PIL images or ComfyUI IMAGE tensors, float 0..1, (H, W, C)
    or (B, H, W, C) (a batch contributes B images). ``detail``: one ImageDetail for all images, or a
    list with one per image. ``generated``: the assistant's answer (role GENERATED, for VERIFI)."""

    instruction: str
    system: str | None = None
    images: list = field(default_factory=list)
    detail: Union[ImageDetail, list, None] = None
    generated: str | None = None


# --------------------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------------------

def prompt_images(prompt: Prompt) -> list:
    """The prompt's images as RGB PIL images, each resized to its ImageDetail.max_pixels."""
    images = [im for item in prompt.images for im in _to_pil(item)]
    details = image_details(prompt, len(images))
    return [_limit_pixels(im, d.max_pixels) for im, d in zip(images, details)]


def image_details(prompt: Prompt, count: int) -> list[ImageDetail]:
    """One ImageDetail per image (defaults where the prompt gives none)."""
    detail = prompt.detail
    if detail is None or isinstance(detail, ImageDetail):
        return [detail or ImageDetail()] * count
    details = list(detail)
    if len(details) != count or not all(isinstance(d, ImageDetail) for d in details):
        raise UniFusionError(f"Prompt.detail should be one ImageDetail or a list of {count} (one per "
                             f"image), found a list of {len(details)}.")
    return details


def _to_pil(item) -> list:
    from PIL import Image

    if isinstance(item, Image.Image):
        return [item.convert("RGB")]
    if not isinstance(item, torch.Tensor):
        raise UniFusionError(f"Images should be PIL images or (H, W, C)/(B, H, W, C) tensors, "
                             f"found {type(item).__name__}.")
    if item.dim() == 3:
        item = item[None]
    if item.dim() != 4 or item.shape[-1] not in (1, 3, 4):
        raise UniFusionError(f"Image tensors should be (H, W, C) or (B, H, W, C) with C in 1/3/4 "
                             f"(ComfyUI IMAGE), found shape {tuple(item.shape)}.")
    pixels = (item.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    if pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)  # (B, H, W, 3)
    return [Image.fromarray(np.ascontiguousarray(p[..., :3])) for p in pixels]


def _limit_pixels(image, max_pixels: int | None):
    width, height = image.size
    if max_pixels is None or width * height <= max_pixels:
        return image
    scale = math.sqrt(max_pixels / (width * height))
    size = (max(1, math.floor(width * scale)), max(1, math.floor(height * scale)))
    from PIL import Image

    return image.resize(size, Image.Resampling.BICUBIC)


# --------------------------------------------------------------------------------------------------
# chat text with role spans
# --------------------------------------------------------------------------------------------------

def role_texts(prompt: Prompt) -> dict:
    """The stripped texts per role; an empty or missing system prompt means no system turn."""
    if not isinstance(prompt.instruction, str):
        raise UniFusionError(f"Prompt.instruction should be a str, found "
                             f"{type(prompt.instruction).__name__}.")
    texts = {Role.INSTRUCTION: prompt.instruction.strip()}
    if prompt.system and prompt.system.strip():
        texts[Role.SYSTEM] = prompt.system.strip()
    if prompt.generated is not None:
        texts[Role.GENERATED] = prompt.generated.strip()
    return texts


def chat_messages(texts: dict, num_images: int, multimodal: bool) -> list[dict]:
    """The conversation with sentinels in place of the texts (list content for VLM processors,
    string content for text-only chat templates)."""
    def content(role, images=0):
        if not multimodal:
            return _SENTINELS[role]
        return [{"type": "image"}] * images + [{"type": "text", "text": _SENTINELS[role]}]

    messages = []
    if Role.SYSTEM in texts:
        messages.append({"role": "system", "content": content(Role.SYSTEM)})
    messages.append({"role": "user", "content": content(Role.INSTRUCTION, num_images)})
    if Role.GENERATED in texts:
        messages.append({"role": "assistant", "content": content(Role.GENERATED)})
    return messages


def text_after_answer(owner, multimodal: bool) -> str:
    """What ``owner``'s chat template writes right after an assistant answer (its end of turn)."""
    texts = {Role.INSTRUCTION: "", Role.GENERATED: ""}
    rendered = owner.apply_chat_template(chat_messages(texts, 0, multimodal), tokenize=False)
    rendered = rendered[0] if isinstance(rendered, list) else rendered
    marker = _SENTINELS[Role.GENERATED]
    return rendered[rendered.index(marker) + len(marker):] if marker in rendered else ""


def fill_sentinels(rendered: str, texts: dict, family: str) -> tuple[str, list]:
    """Substitute the texts for the sentinels; return the text and its (start, end, Role) spans."""
    pieces, spans, pos = [], [], 0
    for role, text in texts.items():
        if rendered.count(_SENTINELS[role]) != 1:
            raise UniFusionError(f"The {family} chat template should place the {role.name.lower()} "
                                 f"text once, found it {rendered.count(_SENTINELS[role])} times.")
    order = sorted(texts, key=lambda r: rendered.index(_SENTINELS[r]))
    out_len = 0
    for role in order:
        at = rendered.index(_SENTINELS[role])
        pieces.append(rendered[pos:at])
        out_len += at - pos
        spans.append((out_len, out_len + len(texts[role]), role))
        pieces.append(texts[role])
        out_len += len(texts[role])
        pos = at + len(_SENTINELS[role])
    pieces.append(rendered[pos:])
    return "".join(pieces), spans


def check_no_special_tokens(texts: dict, specials: list[str]) -> None:
    """Reject texts that spell a special token: the processor would treat it as markup."""
    for role, text in texts.items():
        for token in specials:
            if token and token in text:
                raise UniFusionError(f"The {role.name.lower()} text should not contain the special "
                                     f"token '{token}', found it in {text[:60]!r}.")
