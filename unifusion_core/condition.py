"""The one place VLM features become a DiT condition (paper §2.3): checkpoint checks, layers, kept
roles, pooling, and the null condition.

Legend: B batch, Lv tapped VLM layers, T kept condition tokens, Dv VLM width, D condition width.

    features --(check the VLM, take the checkpoint's layers, keep image + instruction/generated tokens)-->
    states (B, Lv, T, Dv) + mask (B, T) --pooler (LAP)--> condition (B, T, D) + mask

The null condition (CFG's negative, and the trainer's condition dropout) is zeros with the same mask:
ComfyUI's ``ConditioningZeroOut`` of the positive. The standalone pipeline, the trainer, the ComfyUI
encode nodes and the Layer Inspector all go through these functions.
"""
from __future__ import annotations

import torch

from .checkpoint import check_vlm
from .config import UniFusionConfig
from .errors import UniFusionError
from .vlm.features import PLAIN_ROLES, VERIFI_ROLES, Features, Role

__all__ = ["PLAIN_ROLES", "VERIFI_ROLES", "kept_states", "null_condition", "pool", "roles_for"]


def roles_for(mode: str) -> tuple[Role, ...]:
    """``"plain"`` (image + instruction tokens) or ``"verifi"`` (image + generated tokens) -> roles."""
    if mode not in ("plain", "verifi"):
        raise UniFusionError(f"the condition mode should be 'plain' or 'verifi', found {mode!r}.")
    return PLAIN_ROLES if mode == "plain" else VERIFI_ROLES


def kept_states(cfg: UniFusionConfig, feats: Features, roles=PLAIN_ROLES, where: str = "the checkpoint"):
    """Features -> the pooler's input: hidden states (B, Lv, T, Dv) of the kept tokens and mask (B, T).

    Checks that the features come from the checkpoint's VLM and hold its layers, and, for VERIFI roles,
    that there are generated tokens to condition on.
    """
    if feats.identity:
        check_vlm(cfg, feats.identity, where=where)
    try:
        feats = feats.select(cfg.vlm.layers)
    except UniFusionError as err:
        raise UniFusionError(f"{where} pools VLM layers {list(cfg.vlm.layers)}, but the features hold layers "
                             f"{list(feats.layers)}; extract them with the checkpoint's layers.") from err
    if Role.GENERATED in roles and not bool((feats.roles == int(Role.GENERATED)).any()):
        raise UniFusionError("VERIFI conditioning needs generated tokens (a VERIFI rewrite of the prompt), but these "
                             "features hold none; use plain (image + instruction) conditioning.")
    return feats.keep(roles)


def pool(pooler, cfg: UniFusionConfig, feats: Features, roles=PLAIN_ROLES, where: str = "the checkpoint"):
    """Features -> condition tokens (B, T, D) and mask (B, T) on the pooler's device and dtype (no grad)."""
    hidden, mask = kept_states(cfg, feats, roles, where)
    param = next(pooler.parameters())
    with torch.no_grad():
        tokens = pooler(hidden.to(param.device, param.dtype), mask.to(param.device))  # (B, T, D)
    return tokens, mask.to(param.device)


def null_condition(cond: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
    """The null condition (zeros, the mask unchanged); with ``drop`` (B,) bool only those rows are nulled
    (the trainer's condition dropout, which teaches the model the negative that CFG samples with)."""
    if drop is None:
        return torch.zeros_like(cond)
    return cond * (~drop).to(cond.dtype)[:, None, None]
