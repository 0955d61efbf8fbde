"""The UniFusion checkpoint: ONE .safetensors file with LAP + refiner + DiT weights and the config.

Keys: ``lap.*`` (pooler) and ``dit.*`` (DiT incl. ``dit.refiner.*``). Metadata:
``unifusion_config`` (UniFusionConfig JSON), ``format_version``, ``package_version``.
Only safetensors are read; nothing is ever unpickled.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import replace
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from .config import FORMAT_VERSION, UniFusionConfig
from .dit import UniFusionDiT
from .errors import UniFusionError
from .lap import build_pooler

PARTS = ("lap", "dit")
log = logging.getLogger(__name__)
_WARNED_VLMS: set = set()


def build_modules(cfg: UniFusionConfig, *, dtype=None, device=None, operations=nn, attn_fn=None):
    """Uninitialised pooler and DiT for ``cfg`` (call init_weights() or load a state dict)."""
    pooler = build_pooler(cfg.lap, dtype=dtype, device=device, operations=operations)
    dit = UniFusionDiT(cfg.dit, dtype=dtype, device=device, operations=operations, attn_fn=attn_fn)
    return pooler, dit


def save_checkpoint(path, cfg: UniFusionConfig, pooler: nn.Module, dit: nn.Module, extra: dict | None = None):
    """Write atomically (temp file, then rename) so a crash never leaves a half file."""
    from . import __version__

    tensors = {f"{name}.{k}": v.detach().to("cpu").contiguous()
               for name, mod in (("lap", pooler), ("dit", dit)) for k, v in mod.state_dict().items()}
    meta = {"unifusion_config": cfg.to_json(), "format_version": str(FORMAT_VERSION),
            "package_version": __version__, **{k: str(v) for k, v in (extra or {}).items()}}
    _write(path, tensors, meta)


def _write(path, tensors: dict, meta: dict) -> None:
    """Atomically: a temp file beside ``path``, then renamed over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)


def retarget_vlm(path, identity: dict, name: str) -> None:
    """Name another VLM of the same shapes in a checkpoint's config (``identity``: that VLM's
    ``VLMEncoder.identity``), weights and other metadata unchanged; the old fingerprint is kept under
    ``vlm_retargeted_from``. For a VLM continued without retraining the DiT, measured with it first."""
    cfg, f = _open(path)
    check_vlm(cfg, {**identity, "fingerprint": ""})  # same shapes, or one sentence saying which
    meta = dict(f.metadata())
    tensors = {k: f.get_tensor(k) for k in f.keys()}
    old = cfg.vlm.fingerprint
    cfg = replace(cfg, vlm=replace(cfg.vlm, fingerprint=identity.get("fingerprint", ""), name=name))
    meta.update(unifusion_config=cfg.to_json(), vlm_retargeted_from=old)
    _write(path, tensors, meta)


def read_config(path) -> UniFusionConfig:
    """The config stored in a checkpoint, without reading any tensor."""
    return _open(path)[0]


def load_checkpoint(path, *, dtype=None, device="cpu") -> tuple[UniFusionConfig, dict[str, dict]]:
    """-> (config, {"lap": state_dict, "dit": state_dict}), validated against the config's modules."""
    cfg, f = _open(path)
    state = {p: {} for p in PARTS}
    for key in f.keys():
        part, _, rest = key.partition(".")
        if part not in state:
            raise UniFusionError(f"{path}: unexpected tensor {key!r}; a UniFusion checkpoint holds only lap.* and dit.*.")
        t = f.get_tensor(key)
        if t.is_floating_point() and not bool(torch.isfinite(t if t.element_size() > 1 else t.float()).all()):
            raise UniFusionError(f"{path}: tensor {key} holds NaN or infinite values, so every image would come out "
                                 f"black or noise; the file is damaged or was exported from a diverged training run "
                                 f"(export an earlier training state).")
        state[part][rest] = t.to(device=device, dtype=dtype) if dtype is not None and t.is_floating_point() else t.to(device)
    _validate(path, cfg, state)
    return cfg, state


def load_modules(path, *, dtype=None, device="cpu", operations=nn, attn_fn=None):
    """-> (config, pooler, dit) ready for inference (eval mode)."""
    cfg, state = load_checkpoint(path, dtype=dtype, device=device)
    pooler, dit = build_modules(cfg, dtype=dtype, device=device, operations=operations, attn_fn=attn_fn)
    pooler.load_state_dict(state["lap"])
    dit.load_state_dict(state["dit"])
    return cfg, pooler.eval(), dit.eval()


def check_vlm(cfg: UniFusionConfig, identity: dict, where: str = "the checkpoint"):
    """Fail with one sentence when the given VLM is not the one the checkpoint was trained on."""
    exp = cfg.vlm
    same = (identity.get("num_layers") == exp.num_layers and identity.get("hidden_size") == exp.hidden_size
            and identity.get("architecture") == exp.architecture)
    if not same:
        raise UniFusionError(
            f"{where} expects a {exp.num_layers}-layer x {exp.hidden_size} VLM ({exp.architecture}"
            f"{', ' + exp.name if exp.name else ''}), but the given one is {identity.get('num_layers')} x "
            f"{identity.get('hidden_size')} ({identity.get('architecture')}).")
    got = identity.get("fingerprint") or ""
    if exp.fingerprint and got and got != exp.fingerprint and (exp.fingerprint, got) not in _WARNED_VLMS:
        _WARNED_VLMS.add((exp.fingerprint, got))
        log.warning("%s was trained with another VLM of the same shapes (%s, weights fingerprint %s; the given "
                    "VLM's is %s): expect grey or unrelated images; load the VLM it was trained with.",
                    where[0].upper() + where[1:], exp.name or exp.architecture, exp.fingerprint, got)


def _open(path):
    path = Path(path)
    if path.suffix != ".safetensors":
        raise UniFusionError(f"{path}: only .safetensors UniFusion checkpoints are loaded (no pickle), found {path.suffix or 'no extension'}.")
    if not path.is_file():
        raise UniFusionError(f"{path}: no such checkpoint file.")
    try:
        f = safe_open(str(path), framework="pt")
    except (SafetensorError, OSError, ValueError) as err:
        raise UniFusionError(f"{path}: not a readable safetensors file ({err}).") from err
    meta = f.metadata() or {}
    if "unifusion_config" not in meta:
        raise UniFusionError(f"{path}: not a UniFusion checkpoint (its metadata has no 'unifusion_config').")
    version = int(meta.get("format_version", "0") or 0)
    if version > FORMAT_VERSION:
        raise UniFusionError(f"{path}: checkpoint format {version} is newer than this package supports "
                             f"({FORMAT_VERSION}); update the UniFusion nodes.")
    try:
        cfg = UniFusionConfig.from_json(meta["unifusion_config"])
    except UniFusionError as err:
        raise UniFusionError(f"{path}: {err}") from err
    return cfg, f


def _validate(path, cfg, state):
    with torch.device("meta"):
        pooler, dit = build_modules(cfg)
    for part, mod in (("lap", pooler), ("dit", dit)):
        want = {k: tuple(v.shape) for k, v in mod.state_dict().items()}
        got = {k: tuple(v.shape) for k, v in state[part].items()}
        missing, unexpected = sorted(set(want) - set(got)), sorted(set(got) - set(want))
        if missing or unexpected:
            detail = (f"missing {len(missing)} tensors such as {part}.{missing[0]}" if missing
                      else f"{len(unexpected)} unexpected tensors such as {part}.{unexpected[0]}")
            raise UniFusionError(f"{path}: weights do not match the config in its metadata: {detail}.")
        for k, shape in want.items():
            if got[k] != shape:
                raise UniFusionError(f"{path}: tensor {part}.{k} has shape {got[k]} but the config expects {shape}.")


def describe(path) -> str:
    """A one-line human summary of a checkpoint's config (used by the CLI and node tooltips)."""
    cfg = read_config(path)
    return json.dumps({"vlm": cfg.vlm.architecture, "vlm_layers": list(cfg.vlm.layers), "pooler": cfg.lap.kind,
                       "dit": f"{cfg.dit.depth}x{cfg.dit.hidden_size}", "latent": cfg.sampling.latent_format})
