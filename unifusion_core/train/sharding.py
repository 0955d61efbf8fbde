"""FSDP2 for LAP + refiner + DiT (``--strategy fsdp``): one shard unit per transformer block.

The trainer applies ``fully_shard`` itself, on every device: accelerate 1.x only turns on its own
FSDP for GPU process groups, so going through it would leave the CPU proof (2 gloo processes,
tests/test_train_fsdp.py) testing a different path from the GPU runs. The frozen VLM stays outside
FSDP (each process holds it, or the features are precomputed). State on disk: accelerate's state
(RNG, scheduler) plus a torch.distributed.checkpoint folder ``fsdp/`` with the model's, the
optimizer's and the EMA's shards, each process writing its own (no gather; DCP reshards on load, so
a run may resume on another process count). Exports gather once.
"""
from __future__ import annotations

import logging
import socket
from pathlib import Path

import torch
from torch import nn

from ..blocks import Block
from .ema import EMA, local

log = logging.getLogger(__name__)

STRATEGIES = ("ddp", "fsdp")
DCP_FOLDER = "fsdp"


def ensure_process_group(device: torch.device) -> None:
    """FSDP2 needs a process group even for one process (accelerate starts none then)."""
    import torch.distributed as dist

    if dist.is_initialized():
        return
    with socket.socket() as s:  # a free port for a group of one
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)


def shard(model: nn.Module, device: torch.device, mixed_precision: str) -> nn.Module:
    """``fully_shard`` every transformer ``Block`` (LAP, refiner, DiT), then the root (embeddings,
    LAP's layer weights, heads), over all processes. On CUDA with bf16 the parameters are gathered in
    bf16 and gradients reduced in fp32; on CPU (gloo) the parameters stay fp32 and autocast does
    the bf16 compute."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    ensure_process_group(device)
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    bf16 = mixed_precision == "bf16" and device.type == "cuda"
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16 if bf16 else None,
                                  reduce_dtype=torch.float32 if bf16 else None)
    model.to(device)
    blocks = [m for m in model.modules() if isinstance(m, Block)]
    for block in blocks:
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    log.info("FSDP2: %d blocks + root sharded over %d processes (%s)", len(blocks), dist.get_world_size(),
             "bf16 params, fp32 reduce" if bf16 else "fp32 params")
    return model


def is_sharded(model: nn.Module) -> bool:
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # a torch built without distributed support shards nothing
        return False
    return isinstance(model, FSDPModule)


def full_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole model state on CPU, gathered from the shards (a collective: every process calls
    it; every process gets it)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return {k: v.cpu() for k, v in get_model_state_dict(model, options=StateDictOptions(full_state_dict=True)).items()}


def clip_grad_norm_(params, max_norm: float) -> torch.Tensor:
    """``clip_grad_norm_`` over sharded gradients -> the global norm as a plain tensor."""
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm


def _ema_dtensors(model: nn.Module, ema: EMA) -> dict:
    """The EMA shards as DTensors shaped like the model's entries (what DCP saves and loads into)."""
    from torch.distributed.tensor import DTensor

    out = {}
    for k, v in model.state_dict().items():
        if k in ema.shadow:
            s = ema.shadow[k]
            out[k] = DTensor.from_local(s, v.device_mesh, v.placements, shape=v.shape, stride=v.stride()) \
                if isinstance(v, DTensor) else s
    return out


def save(folder: Path, model: nn.Module, opt, ema: EMA | None) -> None:
    """Each process writes its shards of the model, optimizer and EMA to ``folder/fsdp`` (collective)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, opt_sd = get_state_dict(model, opt)
    state = {"model": model_sd, "optim": opt_sd}
    if ema is not None:
        state["ema"] = _ema_dtensors(model, ema)
    dcp.save(state, checkpoint_id=str(Path(folder) / DCP_FOLDER))


def load(folder: Path, model: nn.Module, opt, ema: EMA | None) -> None:
    """Read ``folder/fsdp`` back into the sharded model, optimizer and EMA (collective)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    path = Path(folder) / DCP_FOLDER
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: this training state was not written by an FSDP run "
                                f"(resume it with the strategy that wrote it).")
    model_sd, opt_sd = get_state_dict(model, opt)
    state = {"model": model_sd, "optim": opt_sd}
    if ema is not None:
        state["ema"] = _ema_dtensors(model, ema)
    dcp.load(state, checkpoint_id=str(path))
    set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
    if ema is not None:
        ema.shadow = {k: local(v).float().clone() for k, v in state["ema"].items()}
