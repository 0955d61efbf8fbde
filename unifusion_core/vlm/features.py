"""What a VLM backend returns: per-token hidden states of the selected layers, with roles.

Legend: B batch, Lv VLM layers tapped, T tokens, Dv VLM width.

Layer indexing (one convention for the whole package): index k names the output of decoder block
k (1-based), and 0 names the embedding output, i.e. exactly HF's ``hidden_states[k]`` except that
index ``num_layers`` is taken BEFORE the final norm. Valid indices are 0..num_layers.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

import torch


class Role(enum.IntEnum):
    """Why a token is in the VLM context. Only IMAGE, INSTRUCTION and GENERATED ever condition."""

    TEMPLATE = 0  # chat-template scaffolding, special tokens and padding: never conditioning
    SYSTEM = 1
    INSTRUCTION = 2
    IMAGE = 3
    GENERATED = 4


PLAIN_ROLES = (Role.IMAGE, Role.INSTRUCTION)  # plain mode: image + instruction tokens
VERIFI_ROLES = (Role.IMAGE, Role.GENERATED)  # VERIFI: image + generated tokens


@dataclass
class Features:
    """Hidden states of the selected VLM layers for a padded batch.

    hidden:    (B, Lv, T, Dv) states of ``layers`` (in that order)
    roles:     (B, T) int64, a ``Role`` per token (padding is TEMPLATE)
    mask:      (B, T) bool, True for real tokens, False for padding
    input_ids: (B, T) int64
    layers:    the layer indices held, len Lv
    identity:  the VLM that produced them (architecture, num_layers, hidden_size), for validation
    texts, generated_ids: VERIFI only: per sample the decoded answer and the generated token ids
               (ending with the stop token when decoding stopped on one), for exact teacher forcing
    """

    hidden: torch.Tensor
    roles: torch.Tensor
    mask: torch.Tensor
    input_ids: torch.Tensor
    layers: tuple[int, ...]
    identity: dict = field(default_factory=dict)
    texts: tuple[str, ...] = ()  # generated text per sample (VERIFI), empty otherwise
    generated_ids: tuple[tuple[int, ...], ...] = ()  # VERIFI: generated ids per sample (+ stop token)

    def __post_init__(self):
        B, Lv, T, _ = self.hidden.shape
        if Lv != len(self.layers):
            raise ValueError(f"Features hold {Lv} layers but name {len(self.layers)} layer indices.")
        for name in ("roles", "mask", "input_ids"):
            shape = tuple(getattr(self, name).shape)
            if shape != (B, T):
                raise ValueError(f"Features.{name} should have shape {(B, T)}, found {shape}.")

    def keep(self, roles=PLAIN_ROLES) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-compact the tokens whose role is in ``roles``; pad the rest at the end.

        Returns hidden (B, Lv, T', Dv) and mask (B, T') with T' the longest kept count (min 1).
        """
        wanted = torch.zeros_like(self.mask)
        for r in roles:
            wanted |= self.roles == int(r)
        wanted &= self.mask
        counts = wanted.sum(1)  # (B,)
        Tk = max(int(counts.max()) if counts.numel() else 0, 1)
        B, Lv, T, Dv = self.hidden.shape
        # stable sort puts kept tokens first, in their original order
        order = torch.sort((~wanted).to(torch.int8), dim=1, stable=True).indices[:, :Tk]  # (B, T')
        idx = order[:, None, :, None].expand(B, Lv, Tk, Dv)
        hidden = torch.gather(self.hidden, 2, idx)  # (B, Lv, T', Dv)
        mask = torch.arange(Tk, device=counts.device)[None, :] < counts[:, None]  # (B, T')
        hidden = hidden * mask[:, None, :, None].to(hidden.dtype)  # zero the padding
        return hidden, mask

    def select(self, layers) -> "Features":
        """The same tokens restricted to ``layers`` (each must be held), in that order."""
        layers = tuple(int(k) for k in layers)
        if layers == self.layers:
            return self
        missing = [k for k in layers if k not in self.layers]
        if missing:
            from ..errors import UniFusionError

            raise UniFusionError(f"layers {list(layers)} were requested but the features hold layers "
                                 f"{list(self.layers)} (missing {missing}).")
        idx = torch.tensor([self.layers.index(k) for k in layers], device=self.hidden.device)
        return Features(self.hidden.index_select(1, idx), self.roles, self.mask, self.input_ids, layers,
                        dict(self.identity), self.texts, self.generated_ids)

    def to(self, device=None, dtype=None) -> "Features":
        return Features(self.hidden.to(device=device, dtype=dtype), self.roles.to(device),
                        self.mask.to(device), self.input_ids.to(device), self.layers,
                        dict(self.identity), self.texts, self.generated_ids)
