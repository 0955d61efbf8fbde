"""Which VLM layers to tap (paper: "every N-th layer, e.g. N=3"; layers 4, 7, ..., 31 of 32).

Index convention (see ``features.py``): k is the output of decoder block k (1..num_layers) and 0 the
embedding output.

Accepted layer specs, everywhere a ``layers`` argument is taken:

- ``None`` or ``"default"``: ``default_layers(num_layers)`` (below);
- a sequence of ints, e.g. ``(4, 7, 10)``: strictly increasing, each in 0..num_layers;
- ``LayerStride(step, start)``: start, start + step, ... up to num_layers;
- a string: a comma list ``"4,7,10"`` or a stride ``"every 3 from 4"``.
"""
from __future__ import annotations

import numbers
import re
from dataclasses import dataclass
from typing import Sequence, Union

from ..errors import UniFusionError

DEFAULT_STEP = 3
DEFAULT_LOWEST = 4  # blocks below this carry little prompt semantics (paper layer-dropout study)
ALL_LAYERS_BELOW = 12  # VLMs this shallow (tiny test models) tap every block


@dataclass(frozen=True)
class LayerStride:
    """Every ``step``-th layer starting at ``start``: start, start + step, ... <= num_layers."""

    step: int
    start: int = 1

    def __post_init__(self):
        if self.step < 1 or self.start < 0:
            raise UniFusionError(f"LayerStride needs step >= 1 and start >= 0, found step={self.step}, "
                                 f"start={self.start}.")

    def indices(self, num_layers: int) -> tuple[int, ...]:
        return tuple(range(self.start, num_layers + 1, self.step))


LayerSpec = Union[None, str, Sequence[int], LayerStride]

_STRIDE = re.compile(r"^every\s+(\d+)\s+from\s+(\d+)$")


def default_layers(num_layers: int) -> tuple[int, ...]:
    """Every 3rd block counting down from block ``num_layers - 1``, not below block 4.

    32 blocks -> 4, 7, ..., 31 (the paper's 10 layers); 28 -> 6, 9, ..., 27; 36 -> 5, 8, ..., 35.
    The last block's own output is left out (as in the paper, it is the most next-token specific).
    VLMs with fewer than 12 blocks (tiny test models) tap every block: 4 blocks -> 1, 2, 3, 4.
    """
    if num_layers < ALL_LAYERS_BELOW:
        return tuple(range(1, num_layers + 1))
    top = num_layers - 1
    lowest = top - DEFAULT_STEP * ((top - DEFAULT_LOWEST) // DEFAULT_STEP)
    return tuple(range(lowest, top + 1, DEFAULT_STEP))


def select_layers(spec: LayerSpec, num_layers: int) -> tuple[int, ...]:
    """Resolve a layer spec (see the module docstring) to validated layer indices."""
    if spec is None:
        return default_layers(num_layers)
    if isinstance(spec, LayerStride):
        return _validate(spec.indices(num_layers), num_layers, spec)
    if isinstance(spec, str):
        return _validate(_parse(spec, num_layers), num_layers, spec)
    try:
        indices = tuple(spec)
    except TypeError:
        raise UniFusionError(f"Layer selection should be None, a list of ints, a LayerStride or a "
                             f"string, found {type(spec).__name__}.") from None
    return _validate(indices, num_layers, spec)


def _parse(text: str, num_layers: int) -> tuple:
    text = text.strip().lower()
    if text in ("", "default"):
        return default_layers(num_layers)
    stride = _STRIDE.match(text)
    if stride:
        return LayerStride(int(stride.group(1)), int(stride.group(2))).indices(num_layers)
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise UniFusionError(f"Layer selection '{text}' should be a comma list like '4,7,10' or a "
                             f"stride like 'every 3 from 4'.") from None


def _validate(indices: tuple, num_layers: int, spec) -> tuple[int, ...]:
    if not indices:
        raise UniFusionError(f"Layer selection {spec!r} selects no layer of this VLM's "
                             f"{num_layers} decoder layers (valid: 0..{num_layers}).")
    for k in indices:
        if isinstance(k, bool) or not isinstance(k, numbers.Integral):
            raise UniFusionError(f"Layer indices should be ints, found {k!r} in {spec!r}.")
        if not 0 <= k <= num_layers:
            raise UniFusionError(f"layer {k} was requested but this VLM has {num_layers} decoder "
                                 f"layers (valid: 0..{num_layers}).")
    if any(a >= b for a, b in zip(indices, indices[1:])):
        raise UniFusionError(f"Layer indices should be unique and increasing, found {list(indices)}.")
    return tuple(int(k) for k in indices)
