"""A Role per token of the processor's output.

Two tokenizations of the same chat text are compared:
- plain: the tokenizer on the rendered text (one placeholder per image), with character offsets,
  so each token gets the role of the text span it overlaps (SYSTEM / INSTRUCTION / GENERATED) or
  TEMPLATE;
- expanded: the processor's ``input_ids``, where each placeholder became the image's tokens.
The processor only rewrites placeholders, so aligning the two (difflib, longest common blocks)
carries every text token's role over; tokens only in the expanded ids are TEMPLATE, and positions
holding the model's image token id are IMAGE.
"""
from __future__ import annotations

import difflib
import logging

import torch

from .features import Role

log = logging.getLogger(__name__)


def span_roles(offsets, spans) -> list[int]:
    """Role per token from its (start, end) character offsets and the (start, end, Role) spans."""
    roles = []
    for start, end in offsets:
        role = Role.TEMPLATE
        for s, e, r in spans:
            if s < e and start < e and s < end:  # the token overlaps the (non-empty) span
                role = r
                break
        roles.append(int(role))
    return roles


def align_roles(expanded_ids: list[int], plain_ids: list[int], plain_roles: list[int],
                image_token_id: int | None) -> torch.Tensor:
    """Roles (T,) int64 for ``expanded_ids`` given the roles of ``plain_ids``."""
    roles = [int(Role.TEMPLATE)] * len(expanded_ids)
    if expanded_ids == plain_ids:
        roles = list(plain_roles)
    else:
        matcher = difflib.SequenceMatcher(None, expanded_ids, plain_ids, autojunk=False)
        for a, b, size in matcher.get_matching_blocks():
            roles[a:a + size] = plain_roles[b:b + size]
    out = torch.tensor(roles, dtype=torch.int64)  # (T,)
    if image_token_id is not None:
        out[torch.tensor(expanded_ids) == image_token_id] = int(Role.IMAGE)
    _check_counts(out, plain_roles)
    return out


def _check_counts(roles: torch.Tensor, plain_roles: list[int]) -> None:
    plain = torch.tensor(plain_roles, dtype=torch.int64)
    for role in (Role.SYSTEM, Role.INSTRUCTION, Role.GENERATED):
        found, expected = int((roles == role).sum()), int((plain == role).sum())
        if found != expected:
            log.warning("Only %d of the %d %s tokens could be located after the processor expanded "
                        "the image placeholders; the others are marked TEMPLATE.", found, expected,
                        role.name)
