"""Trainer configuration: one typed dataclass, a config file (JSON or YAML) plus CLI overrides.

    python -m unifusion_core.train --config run.yaml --max_steps 2000 --lr 3e-4

Every field is a CLI flag of the same name; the resolved config is written to run_dir/config.json.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..errors import UniFusionError

TASKS = ("t2i", "edit", "recon")


@dataclass
class TrainConfig:
    # --- what to train ---------------------------------------------------------------------------
    run_dir: str = "runs/unifusion"
    manifest: str = ""  # JSONL: one record per example (see data.py)
    vlm: str = ""  # HF folder of the frozen VLM
    preset: str = "tiny"  # model preset (config.PRESETS): tiny | toy | small | base | paper
    latent_format: str = ""  # "" = the preset's; "pixel" or "flux16"
    vae: str = ""  # FLUX.1 ae.safetensors (flux16 only)
    layers: str = ""  # VLM layers to tap ("" = the VLM's default: every 3rd)
    pooler: str = "lap"  # "lap" | "last_layer" (the ablation baseline)
    init_from: str = ""  # a UniFusion checkpoint to fine-tune (e.g. T2I -> edit fine-tune)
    abs_pos_grid: int = -1  # DiT learned absolute position table side; -1 = the preset's (or init_from's); a
    # table added to an init_from checkpoint that has none starts at zero (the loaded model is unchanged)
    # --- data ------------------------------------------------------------------------------------
    resolution: int = 32  # target area = resolution**2 px; buckets keep the area, vary the aspect
    buckets: str = "1:1,4:3,3:4,16:9,9:16"
    recon_share: float = 0.03  # share of batches that reconstruct a T2I target given to the VLM
    verifi_share: float = 0.9  # records with a rewrite use it (VERIFI conditioning) this often
    cfg_dropout: float = 0.1  # share of samples whose condition is zeroed (ConditioningZeroOut null)
    # "auto": in RAM when the data set's features fit ram_budget_gb (measured on a few records), else on
    # disk next to the manifest (.unifusion_cache/, shared by every run on it with the same VLM and layers)
    feature_cache: str = "auto"  # "auto" | "online" (encode every step) | "memory" | a folder of fp16 tensors
    latent_cache: str = "auto"  # VAE-encoded targets (flux16): "auto" | "online" | "memory" | a folder
    ram_budget_gb: float = 8.0  # what the in-memory caches may hold before "auto" goes to disk
    system_prompt_t2i: str = ""  # "" = the package preset
    system_prompt_edit: str = ""
    # --- optimisation ----------------------------------------------------------------------------
    batch_size: int = 8  # per process
    grad_accum: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 20
    decay: str = "cosine"  # "cosine" | "linear" | "constant" after warmup
    max_steps: int = 200
    grad_clip: float = 1.0
    ema_decay: float = 0.999  # 0 disables EMA (the export then holds the raw weights)
    mixed_precision: str = "no"  # "no" | "bf16" (autocast) | "auto" (bf16 where a probe shows it is faster)
    grad_checkpointing: bool = False
    attention: str = "sdpa"  # DiT attention in training: "sdpa" (torch SDPA) | "eager" (faster backward on CPU)
    compile: bool = False
    strategy: str = "ddp"  # several processes: "ddp" (replicated model) | "fsdp" (FSDP2, one shard unit per block)
    device: str = "auto"  # "auto" (CUDA when present, else CPU processes over gloo) | "cpu" (never a GPU)
    vlm_device: str = "auto"  # "auto": the training device | "cpu": the frozen VLM stays off the GPU (after
    # precompute it only runs for sample grids and features the cache lacks), so VLM and DiT never share it
    seed: int = 0
    logit_mean: float = 0.0
    logit_std: float = 1.0
    shift: float = 0.0  # 0 = resolution-dependent (SD3), else a fixed sigma shift
    # --- bookkeeping -----------------------------------------------------------------------------
    save_every: int = 100  # full training state (atomic); 0 = only at the end
    keep_states: int = 2
    sample_every: int = 0  # PNG sample grid every N steps; 0 = only at the end
    snapshot_every: int = 0  # keep an exported checkpoint run_dir/snapshots/step_N.safetensors every N steps (learning curves)
    sample_steps: int = 16
    log_every: int = 10
    resume: bool = True  # continue from run_dir/state/latest when present
    export: str = ""  # "" = run_dir/unifusion.safetensors
    pause_at_step: int = 0  # tests: the process stops itself (SIGSTOP) once this step is logged, so a kill lands at a known point
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.pooler not in ("lap", "last_layer"):
            raise UniFusionError(f"pooler must be 'lap' or 'last_layer', found {self.pooler!r}.")
        for name in ("feature_cache", "latent_cache"):
            if not getattr(self, name):
                raise UniFusionError(f"{name} must be 'auto', 'online', 'memory' or a folder, found an empty value.")
        if not self.ram_budget_gb > 0:
            raise UniFusionError(f"ram_budget_gb must be > 0, found {self.ram_budget_gb}.")
        for name in ("recon_share", "verifi_share", "cfg_dropout"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise UniFusionError(f"{name} must lie in [0, 1], found {value}.")
        if self.mixed_precision not in ("no", "bf16", "fp16", "auto"):
            raise UniFusionError(f"mixed_precision must be 'no', 'bf16', 'fp16' or 'auto', found {self.mixed_precision!r}.")
        if self.attention not in ("sdpa", "eager"):
            raise UniFusionError(f"attention must be 'sdpa' or 'eager', found {self.attention!r}.")
        if self.strategy not in ("ddp", "fsdp"):
            raise UniFusionError(f"strategy must be 'ddp' or 'fsdp', found {self.strategy!r}.")
        if self.device not in ("auto", "cpu"):
            raise UniFusionError(f"device must be 'auto' or 'cpu', found {self.device!r}.")
        if self.vlm_device not in ("auto", "cpu"):
            raise UniFusionError(f"vlm_device must be 'auto' or 'cpu', found {self.vlm_device!r}.")
        if self.decay not in ("cosine", "linear", "constant"):
            raise UniFusionError(f"decay must be 'cosine', 'linear' or 'constant', found {self.decay!r}.")

    def dump(self, path: Path):
        path.write_text(json.dumps(asdict(self), indent=2, sort_keys=True))


def _read_file(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise UniFusionError(f"{p}: no such training config file.")
    text = p.read_text()
    try:
        if p.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
    except Exception as err:  # yaml and json raise different types; both mean the same to the user
        raise UniFusionError(f"{p}: not valid {'YAML' if p.suffix in ('.yaml', '.yml') else 'JSON'} ({err}).") from err
    if not isinstance(data, dict):
        raise UniFusionError(f"{p}: expected a mapping of config fields, found {type(data).__name__}.")
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UniFusionError(f"{p}: unknown config fields {unknown}.")
    return data


def _flag_type(f):
    t = f.type if isinstance(f.type, str) else f.type.__name__
    return {"int": int, "float": float, "str": str}.get(t)


def parse_args(argv=None) -> TrainConfig:
    ap = argparse.ArgumentParser(prog="python -m unifusion_core.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="JSON or YAML file with TrainConfig fields")
    ap.add_argument("--train_preset", help="defaults for a real run: small | base | paper (train/presets.py); "
                                           "--config and flags override them")
    for f in fields(TrainConfig):
        if f.name == "extra":
            continue
        if (f.type if isinstance(f.type, str) else f.type.__name__) == "bool":
            ap.add_argument(f"--{f.name}", type=lambda s: s.lower() in ("1", "true", "yes"), default=None)
        else:
            ap.add_argument(f"--{f.name}", type=_flag_type(f), default=None)
    args = ap.parse_args(argv)
    values = {}
    if args.train_preset:
        from .presets import TRAIN_PRESETS

        if args.train_preset not in TRAIN_PRESETS:
            raise UniFusionError(f"--train_preset should be one of {', '.join(TRAIN_PRESETS)}, found {args.train_preset!r}.")
        values.update(TRAIN_PRESETS[args.train_preset])
    values.update(_read_file(args.config) if args.config else {})
    values.update({k: v for k, v in vars(args).items() if k not in ("config", "train_preset") and v is not None})
    return TrainConfig(**values)


def cli_main(argv, run, done: str) -> int:
    """A trainer-style command: logging, ``run(parse_args(argv))``, one sentence for a UniFusionError
    (exit 2), else ``done`` formatted with the result (exit 0)."""
    import logging
    import sys

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        out = run(parse_args(argv))
    except UniFusionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(done.format(out))
    return 0
