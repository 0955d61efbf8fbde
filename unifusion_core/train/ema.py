"""Exponential moving average of the trainable weights, correct under every strategy.

Under DDP (or one process) every process holds the whole model and the whole average. Under FSDP2
the model's state dict holds DTensor shards; each process averages its own shards only (no gather
while training) and ``full_shadow`` gathers the average once, for an export. The average covers
exactly the model's floating-point state-dict entries: a key that appears or disappears between
construction and an update is an error, never a silently raw weight in the export.
"""
from __future__ import annotations

import torch
from torch import nn


def _dtensor_type():
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # a torch without distributed support: nothing is ever sharded
        return None
    return DTensor


def local(v: torch.Tensor) -> torch.Tensor:
    """This process's part of ``v``: its shard for a DTensor, else ``v`` itself."""
    dtensor = _dtensor_type()
    return v.to_local() if dtensor is not None and isinstance(v, dtensor) else v


def _floating(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if v.dtype.is_floating_point}


class EMA:
    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: local(v).detach().float().clone() for k, v in _floating(model).items()}  # fp32, local

    @torch.no_grad()
    def update(self, model: nn.Module):
        state = _floating(model)
        if state.keys() != self.shadow.keys():
            raise RuntimeError(f"EMA keys changed: missing {sorted(self.shadow.keys() - state.keys())[:5]}, "
                               f"new {sorted(state.keys() - self.shadow.keys())[:5]}")
        for k, v in state.items():
            self.shadow[k].lerp_(local(v).detach().float(), 1.0 - self.decay)

    def full_shadow(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The whole average: the shards of a sharded ``model``'s entries gathered (a collective:
        every process calls it), the others as they are."""
        dtensor = _dtensor_type()
        out = {}
        for k, v in _floating(model).items():
            s = self.shadow[k]
            if dtensor is not None and isinstance(v, dtensor):
                s = dtensor.from_local(s, v.device_mesh, v.placements, shape=v.shape, stride=v.stride()).full_tensor()
            out[k] = s
        return out

    def copy_to(self, model: nn.Module, shadow: dict[str, torch.Tensor] | None = None):
        """Load the averaged weights (``shadow``, default this process's own) into an unsharded
        ``model`` (e.g. an export copy)."""
        shadow = self.shadow if shadow is None else shadow
        state = model.state_dict()
        model.load_state_dict({k: (shadow[k].to(v.dtype) if k in shadow else v) for k, v in state.items()})

    # accelerate's register_for_checkpointing protocol (unsharded runs; FSDP2 runs save it with the model)
    def state_dict(self) -> dict:
        return {"decay": self.decay, "shadow": self.shadow}

    def load_state_dict(self, state: dict):
        self.decay = state["decay"]
        self.shadow = {k: v.float() for k, v in state["shadow"].items()}
