"""VERIFI (paper §3): the VLM rewrites the request in-context and the DiT is conditioned on the
generated tokens plus the image tokens of that same pass; system and instruction tokens are masked.

- ``rewrite``: decode the rewrite; the Features come from the generation pass itself (no
  re-encoding of the rewritten text), see ``vlm/generate.py``.
- ``from_text``: flexible inference: the Features the VLM would have produced had it written the
  given text (edited by the user, or saved in a workflow), in one forward. Passing a generation's
  ``Features.generated_ids`` instead of its text replays it exactly.
- ``system_prompt``: the rewriter instruction: free text, else the checkpoint's training prompt for
  the task (``UniFusionConfig.system_prompts``), else this module's preset.
- Conditioning: ``condition.pool(..., VERIFI_ROLES)`` (image + generated tokens).

Reuse of the image prefix across calls: pass a ``PrefixCache`` (or set ``vlm.prefix_cache``).
"""
from __future__ import annotations

import logging
from typing import Callable, Sequence

from .errors import UniFusionError
from .vlm.features import Features
from .vlm.prefix_cache import PrefixCache
from .vlm.prompts import Prompt
from .vlm.sampling import Sampling

log = logging.getLogger(__name__)

TASKS = ("t2i", "edit", "multi_ref")

# The paper's prompt is unpublished (§8): rewriter instructions in its spirit, one per task.
PRESETS = {
    "t2i": (
        "You rewrite image requests for an image generator. Rewrite the user's request as one "
        "detailed description of the image to create: the subjects and their attributes and "
        "colours, how they are placed relative to each other, any text to show (quoted exactly), "
        "the setting, the lighting and the style. Keep everything the user asked for and add "
        "nothing that contradicts it. Answer with the description only."),
    "edit": (
        "You rewrite image-editing requests for an image generator. Given the reference image and "
        "the user's edit instruction, describe in detail the image that results from the edit: "
        "keep what the instruction does not change (subjects, layout, colours, style) and describe "
        "the changed parts precisely. Answer with the description of the edited image only."),
    "multi_ref": (
        "You rewrite multi-image requests for an image generator. Given several reference images "
        "and the user's instruction, describe in detail the single image to create: which subject "
        "or element comes from which reference image, their attributes and colours, how they are "
        "arranged, the setting and the style. Answer with the description only."),
}


_WARNED: set = set()


def task_for(num_images: int) -> str:
    """The task a request with ``num_images`` reference images is: t2i, edit or multi_ref."""
    return "t2i" if num_images == 0 else "edit" if num_images == 1 else "multi_ref"


def system_prompt(task: str, cfg=None, override: str | None = None) -> str:
    """The VERIFI system prompt: ``override`` when it holds text, else the checkpoint's training
    prompt for ``task`` (``cfg.system_prompts``), else the preset of ``task``."""
    if task not in TASKS:
        raise UniFusionError(f"VERIFI task should be one of {', '.join(TASKS)}, found {task!r}.")
    if override is not None and override.strip():
        return override.strip()
    trained = dict(getattr(cfg, "system_prompts", None) or {})
    if trained.get(task, "").strip():
        return trained[task].strip()
    if trained and (tuple(sorted(trained)), task) not in _WARNED:  # once per kind of checkpoint and task
        _WARNED.add((tuple(sorted(trained)), task))
        log.warning("The checkpoint names training system prompts for %s but not for '%s'; using "
                    "the '%s' preset.", ", ".join(sorted(trained)), task, task)
    return PRESETS[task]


def verifi_prompt(instruction: str, images: Sequence = (), *, task: str | None = None,
                  system: str | None = None, cfg=None, detail=None) -> Prompt:
    """The VLM conversation of a VERIFI request: [system][images][instruction]."""
    images = list(images)
    task = task or task_for(len(images))
    return Prompt(instruction, system_prompt(task, cfg, system), images, detail)


def rewrite(vlm, instruction: str, images: Sequence = (), *, task: str | None = None,
            system: str | None = None, cfg=None, layers=None, detail=None,
            sampling: Sampling | None = None, prefix_cache: PrefixCache | None = None,
            progress: Callable[[int, int], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> Features:
    """Let the VLM rewrite ``instruction`` (with ``images``); Features (batch 1) of that pass,
    ``texts[0]`` the rewrite. ``layers`` default to the checkpoint's (``cfg``), else the VLM's."""
    prompt = verifi_prompt(instruction, images, task=task, system=system, cfg=cfg, detail=detail)
    return vlm.generate(prompt, _layers(layers, cfg), sampling=sampling, prefix_cache=prefix_cache,
                        progress=progress, should_stop=should_stop)


def from_text(vlm, text, instruction: str = "", images: Sequence = (), *, task: str | None = None,
              system: str | None = None, cfg=None, layers=None, detail=None,
              prefix_cache: PrefixCache | None = None) -> Features:
    """Flexible inference: the Features of ``rewrite`` had the VLM written ``text`` (a str, or the
    ``generated_ids`` of an earlier rewrite for an exact replay) for the same request."""
    prompt = verifi_prompt(instruction, images, task=task, system=system, cfg=cfg, detail=detail)
    return vlm.teacher_force(prompt, text, _layers(layers, cfg), prefix_cache=prefix_cache)


def _layers(layers, cfg):
    if layers is not None:
        return layers
    return tuple(cfg.vlm.layers) if cfg is not None else None
