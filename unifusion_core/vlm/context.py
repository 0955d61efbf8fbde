"""One VLM context (batch 1) fed in chunks over a KV cache while the tapped layers are captured.

A prompt is fed as [prefix | suffix] (the prefix may come from the ``PrefixCache``), then generated
tokens one per step. The pixel inputs go with the first chunk only, which therefore always holds
every image token. Positions: Qwen-VL families use 3-axis rotary positions (mrope); they are
computed once over the whole prompt with the model's own ``get_rope_index`` and passed explicitly
for every chunk, later tokens continuing as text positions (t + rope delta on all three axes). This
equals what the model computes for one forward over the full sequence, and never reads the
``rope_deltas`` the model keeps between calls (stale once a prefix is reused).

Legend: Lv VLM layers tapped, T tokens, Dv VLM width, V vocabulary.
"""
from __future__ import annotations

import functools

import inspect

import torch

from .families import text_config
from .prefix_cache import PrefixEntry
from .taps import LayerTap

SEQUENCE_KEYS = ("input_ids", "attention_mask", "token_type_ids", "mm_token_type_ids")


class Context:
    """Feeds ``inputs`` (the processor's output for one prompt, on the model's device) and then
    single tokens; ``hidden`` grows with the tapped states of every token fed."""

    def __init__(self, encoder, tap: LayerTap, inputs: dict):
        self.model, self.tap, self.inputs = encoder.model, tap, inputs
        self.prompt_len = int(inputs["input_ids"].shape[1])
        self.positions, self.delta = rope_positions(self.model, inputs)  # (3, 1, T) or None
        from transformers import DynamicCache

        self.cache = DynamicCache(config=text_config(encoder.config))
        self.length = 0  # tokens fed so far
        self.chunks: list[torch.Tensor] = []  # (Lv, t, Dv) per forward

    @property
    def hidden(self) -> torch.Tensor:
        return torch.cat(self.chunks, dim=1)  # (Lv, T, Dv)

    def resume(self, entry: PrefixEntry) -> None:
        """Continue after a cached prefix (a private copy: its cache is extended in place)."""
        self.cache, self.length, self.chunks = entry.cache, entry.length, [entry.hidden]

    def snapshot(self) -> PrefixEntry:
        """The state after the tokens fed so far (the ``PrefixCache`` stores a copy)."""
        return PrefixEntry(self.cache, self.hidden, self.length)

    def feed_prompt(self, end: int, *, logits: bool = False, stop_early: bool = False):
        """Feed prompt tokens [length, end); return the last position's logits (V,) if asked."""
        start = self.length
        chunk = {k: v[:, start:end] for k, v in self.inputs.items() if k in SEQUENCE_KEYS}
        if start == 0:  # pixel inputs (and their grids) belong to the chunk holding the images
            chunk.update({k: v for k, v in self.inputs.items() if k not in SEQUENCE_KEYS})
        else:
            chunk = {"input_ids": chunk["input_ids"]}
        return self._forward(chunk, end - start, logits, stop_early)

    def feed_token(self, token_id: int, *, logits: bool = True, stop_early: bool = False):
        """Feed one generated token; return the logits (V,) of the next one if asked."""
        device = self.inputs["input_ids"].device
        ids = torch.tensor([[token_id]], dtype=torch.int64, device=device)  # (1, 1)
        return self._forward({"input_ids": ids}, 1, logits, stop_early)

    def _forward(self, chunk: dict, n: int, logits: bool, stop_early: bool):
        if self.positions is not None:
            chunk["position_ids"] = self._positions(self.length, self.length + n)
        kwargs = dict(chunk, use_cache=True, logits_to_keep=1, **{cache_kwarg(self.model): self.cache})
        hidden, out = self.tap.call(lambda: self.model(**kwargs), stop_early=stop_early and not logits)
        self.chunks.append(hidden[:, 0])  # (Lv, n, Dv)
        self.length += n
        return out.logits[0, -1] if logits else None  # (V,)

    def _positions(self, start: int, end: int) -> torch.Tensor:
        """mrope positions (3, 1, end - start) of tokens [start, end)."""
        parts = []
        if start < self.prompt_len:
            parts.append(self.positions[:, :, start:min(end, self.prompt_len)])
        if end > self.prompt_len:
            first = max(start, self.prompt_len)
            text = torch.arange(first, end, device=self.positions.device) + self.delta
            parts.append(text.view(1, 1, -1).expand(3, 1, -1))
        return torch.cat(parts, dim=2) if len(parts) > 1 else parts[0]


def cache_kwarg(model) -> str:
    """The forward keyword of the KV cache: ``cache`` from transformers 5.24 (``past_key_values``
    warns there and goes in 5.40), ``past_key_values`` before."""
    return _cache_kwarg(type(model))


@functools.lru_cache(maxsize=None)
def _cache_kwarg(model_type) -> str:
    import inspect

    return "cache" if "cache" in inspect.signature(model_type.forward).parameters else "past_key_values"


def rope_positions(model, inputs: dict) -> tuple[torch.Tensor | None, int]:
    """The prompt's mrope positions (3, 1, T) and rope delta for Qwen-VL families, else (None, 0)."""
    get_rope_index = getattr(getattr(model, "model", None), "get_rope_index", None)
    if get_rope_index is None:
        return None, 0
    ids = inputs["input_ids"]
    if inputs.get("image_grid_thw") is None:  # text only: plain positions on all three axes
        return torch.arange(ids.shape[1], device=ids.device).view(1, 1, -1).expand(3, 1, -1), 0
    params = inspect.signature(get_rope_index).parameters
    kwargs = {k: inputs[k] for k in ("mm_token_type_ids", "image_grid_thw", "attention_mask")
              if k in params and k in inputs}
    positions, delta = get_rope_index(ids, **kwargs)  # (3, 1, T), (1, 1)
    return positions, int(delta.reshape(-1)[0])
