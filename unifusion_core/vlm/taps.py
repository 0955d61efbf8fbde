"""Capture the selected decoder layers with forward hooks and stop the forward after the deepest.

Only the tapped layers are kept (no ``output_hidden_states``), and the blocks above the deepest tap,
the final norm and the LM head never run, so extraction costs at most one plain forward. Generation
keeps the hooks registered over many forwards (``hooked`` + ``call``) and runs them to the end.

Legend: Lv VLM layers tapped, T tokens, Dv VLM width.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable

import torch


class _StopForward(Exception):
    """Raised by the deepest tap to end the forward early; never escapes ``LayerTap.run``."""


class LayerTap:
    """Hooks on ``blocks`` (the decoder ModuleList) capturing layer indices ``layers``.

    Index 0 is the input of block 1 (the embedding output); index k the output of block k.
    """

    def __init__(self, blocks: torch.nn.ModuleList, layers: tuple[int, ...],
                 should_stop: Callable[[], bool] | None = None):
        self.blocks, self.layers = blocks, tuple(layers)
        self.deepest = max(self.layers)
        self.captured: dict[int, torch.Tensor] = {}
        self.stop_early = True
        self.should_stop = should_stop  # asked before every block: True (or raising) abandons the forward

    def run(self, forward: Callable[[], object]) -> torch.Tensor:
        """Call ``forward`` with the hooks in place; return (Lv, B, T, Dv) in ``layers`` order."""
        with self.hooked():
            return self.call(forward)[0]

    @contextmanager
    def hooked(self):
        """Keep the hooks registered for several ``call``s (one per chunk or decode step)."""
        handles = self._register()
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def call(self, forward: Callable[[], object], stop_early: bool = True) -> tuple:
        """Inside ``hooked()``: run ``forward`` once; return ((Lv, B, T, Dv), its output).

        With ``stop_early`` the forward ends after the deepest tapped block (output None); without,
        it runs to the end (needed for logits and for a KV cache of every layer).
        """
        self.captured, self.stop_early, output = {}, stop_early, None
        try:
            output = forward()
        except _StopForward:
            pass
        missing = [k for k in self.layers if k not in self.captured]
        if missing:
            raise RuntimeError(f"The forward never reached layers {missing}.")
        return torch.stack([self.captured[k] for k in self.layers]), output  # (Lv, B, T, Dv)

    def _register(self) -> list:
        handles = []
        if self.should_stop is not None:  # an interrupt ends a long forward between blocks, not after it
            for block in self.blocks:
                handles.append(block.register_forward_pre_hook(self._stop_hook))
        if 0 in self.layers:
            handles.append(self.blocks[0].register_forward_pre_hook(self._embedding_hook,
                                                                    with_kwargs=True))
        for k in self.layers:
            if k > 0:
                handles.append(self.blocks[k - 1].register_forward_hook(self._block_hook(k)))
        return handles

    def _keep(self, k: int, hidden: torch.Tensor) -> None:
        self.captured[k] = hidden
        if k == self.deepest and self.stop_early:
            raise _StopForward

    def _stop_hook(self, module, args):
        if self.should_stop is not None and self.should_stop():
            raise InterruptedError("The VLM forward was interrupted.")

    def _embedding_hook(self, module, args, kwargs):
        self._keep(0, args[0] if args else kwargs["hidden_states"])

    def _block_hook(self, k: int):
        def hook(module, args, output):
            self._keep(k, output[0] if isinstance(output, (tuple, list)) else output)
        return hook
