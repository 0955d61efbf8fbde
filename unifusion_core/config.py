"""All hyper-parameters, as frozen dataclasses with named presets; the config travels in the file.

``UniFusionConfig`` is stored as JSON in the checkpoint's safetensors metadata (``checkpoint.py``),
so a checkpoint never needs key sniffing to be rebuilt.

Presets (DiT parameter counts are printed by ``python -m unifusion_core presets``):
  tiny  - unit tests (a few thousand parameters)
  toy   - the CPU demo world (32 px pixel space, patch 4)
  small - ~0.5B DiT, Flux VAE latents
  base  - ~2B DiT, Flux VAE latents
  paper - ~8B DiT paired with an 8B VLM (InternVL-2.5-8B: 32 layers x 4096, layers 4,7,...,31)
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace

from .errors import UniFusionError

FORMAT_VERSION = 1
LATENT_CHANNELS = {"flux16": 16, "pixel": 3}


def _check(cond: bool, msg: str):
    if not cond:
        raise UniFusionError(msg)


@dataclass(frozen=True)
class VLMSpec:
    """Identity of the frozen VLM a checkpoint was trained on, and the layers it taps."""

    architecture: str
    num_layers: int
    hidden_size: int
    layers: tuple[int, ...]
    name: str = ""  # informational, e.g. the HF folder name used in training
    fingerprint: str = ""  # vlm.encoder.weights_fingerprint of the VLM trained on ('' = not recorded)

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(int(i) for i in self.layers))
        _check(len(self.layers) > 0, "VLMSpec.layers must name at least one VLM layer, found none.")
        _check(all(0 <= i <= self.num_layers for i in self.layers),
               f"VLMSpec.layers must lie in 0..{self.num_layers}, found {list(self.layers)}.")


@dataclass(frozen=True)
class LAPConfig:
    """Layerwise Attention Pooling (paper §2.3) or the last-layer baseline pooler (§2.7)."""

    kind: str = "lap"  # "lap" | "last_layer"
    in_dim: int = 64  # VLM hidden size
    num_layers: int = 4  # layers tapped (Lv)
    width: int = 64  # width of the blocks over the layer axis (in_dim -> width if they differ)
    blocks: int = 2
    heads: int = 2
    mlp_ratio: float = 1.3  # Iris-3B's LAP ratio; the paper does not say
    out_dim: int = 64  # conditioning width handed to the DiT (its cond_dim)

    def __post_init__(self):
        _check(self.kind in ("lap", "last_layer"), f"LAPConfig.kind must be 'lap' or 'last_layer', found {self.kind!r}.")
        _check(self.width % self.heads == 0, f"LAP width {self.width} must be divisible by its {self.heads} heads.")
        _check(self.num_layers >= 1, f"LAP needs at least one tapped layer, found {self.num_layers}.")


@dataclass(frozen=True)
class DiTConfig:
    """Single-stream DiT with an in-model bidirectional refiner for the condition tokens."""

    in_channels: int = 3
    patch_size: int = 4
    hidden_size: int = 32
    depth: int = 2
    num_heads: int = 2
    mlp_ratio: float = 4.0
    cond_dim: int = 64
    refiner_depth: int = 1
    axes_dims: tuple[int, ...] = (4, 6, 6)  # RoPE dims per axis (token index, row, col); sums to head dim
    rope_theta: float = 10000.0
    time_freq_dim: int = 256
    # learned absolute position table (G x G x D, zero-initialised, resized bilinearly to other grids)
    # added to the latent tokens; 0 = none (the paper's choice: RoPE only). The toy model uses 8: at
    # toy scale RoPE alone gives absolute place ("top left") only through the condition tokens' offsets.
    abs_pos_grid: int = 0

    def __post_init__(self):
        object.__setattr__(self, "axes_dims", tuple(int(a) for a in self.axes_dims))
        _check(self.abs_pos_grid >= 0, f"DiT abs_pos_grid must be >= 0 (0 = none), found {self.abs_pos_grid}.")
        _check(self.hidden_size % self.num_heads == 0,
               f"DiT hidden_size {self.hidden_size} must be divisible by num_heads {self.num_heads}.")
        head_dim = self.hidden_size // self.num_heads
        _check(sum(self.axes_dims) == head_dim and all(a % 2 == 0 for a in self.axes_dims),
               f"DiT axes_dims {list(self.axes_dims)} must be even and sum to the head width {head_dim}.")
        _check(len(self.axes_dims) == 3, f"DiT axes_dims needs 3 axes (token, row, col), found {len(self.axes_dims)}.")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


@dataclass(frozen=True)
class SamplingConfig:
    """Flow-matching settings; see flow.py for the exact ComfyUI mapping."""

    latent_format: str = "pixel"  # "flux16" (FLUX.1 VAE latents) | "pixel" (RGB in [-1, 1])
    shift: float = 1.0  # sigma shift used at inference (ComfyUI ModelSamplingDiscreteFlow shift)
    multiplier: float = 1.0  # the DiT receives timestep = sigma * multiplier
    steps: int = 28
    cfg: float = 4.0  # the default guidance (CFG) scale
    resolution: int = 0  # the training resolution (side of the square bucket's pixel count); 0 = not recorded
    buckets: tuple[tuple[int, int], ...] = ()  # the (width, height) buckets it was trained on; () = not recorded

    def __post_init__(self):
        _check(self.latent_format in LATENT_CHANNELS,
               f"latent_format must be one of {sorted(LATENT_CHANNELS)}, found {self.latent_format!r}.")
        object.__setattr__(self, "buckets", tuple((int(w), int(h)) for w, h in self.buckets))
        _check(self.resolution >= 0, f"the training resolution must be >= 0 (0 = not recorded), found {self.resolution}.")


@dataclass(frozen=True)
class UniFusionConfig:
    vlm: VLMSpec
    lap: LAPConfig
    dit: DiTConfig
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    system_prompts: dict = field(default_factory=dict)  # task -> system prompt used in training
    package_version: str = ""
    format_version: int = FORMAT_VERSION

    def __post_init__(self):
        _check(self.lap.in_dim == self.vlm.hidden_size,
               f"LAP expects {self.lap.in_dim}-wide VLM states but the VLM spec says {self.vlm.hidden_size}.")
        _check(self.lap.num_layers == len(self.vlm.layers),
               f"LAP expects {self.lap.num_layers} tapped layers but the VLM spec lists {len(self.vlm.layers)}.")
        _check(self.lap.out_dim == self.dit.cond_dim,
               f"LAP outputs {self.lap.out_dim}-wide tokens but the DiT expects cond_dim {self.dit.cond_dim}.")
        channels = LATENT_CHANNELS[self.sampling.latent_format]
        _check(self.dit.in_channels == channels,
               f"latent format {self.sampling.latent_format} has {channels} channels but the DiT has {self.dit.in_channels}.")

    # --- serialisation -------------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "UniFusionConfig":
        try:
            raw = json.loads(text)
            return cls(vlm=_build(VLMSpec, raw["vlm"]), lap=_build(LAPConfig, raw["lap"]),
                       dit=_build(DiTConfig, raw["dit"]), sampling=_build(SamplingConfig, raw.get("sampling", {})),
                       system_prompts=dict(raw.get("system_prompts", {})),
                       package_version=str(raw.get("package_version", "")),
                       format_version=int(raw.get("format_version", FORMAT_VERSION)))
        except UniFusionError:
            raise
        except (KeyError, TypeError, ValueError) as err:
            raise UniFusionError(f"the UniFusion config JSON is malformed ({type(err).__name__}: {err}).") from err

    # --- presets ---------------------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str, vlm: VLMSpec, **overrides) -> "UniFusionConfig":
        """A named preset sized for ``vlm``; ``overrides`` replace top-level fields (lap=, dit=, ...)."""
        if name not in PRESETS:
            raise UniFusionError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}.")
        cfg = PRESETS[name].build(vlm, lap=overrides.pop("lap", None))
        return replace(cfg, **overrides) if overrides else cfg


def _build(klass, raw: dict):
    names = {f.name for f in fields(klass)}
    unknown = set(raw) - names
    if unknown:
        raise UniFusionError(f"{klass.__name__} got unknown fields {sorted(unknown)}; known: {sorted(names)}.")
    return klass(**raw)


@dataclass(frozen=True)
class Preset:
    """A model preset: everything but the VLM, which sizes the pooler's input when it is built.

    ``lap_width`` None = the VLM's width (the paper's LAP runs at h_E); the condition width is the
    DiT's, and the DiT's input channels follow the latent format.
    """

    name: str
    lap_heads: int
    dit: DiTConfig
    sampling: SamplingConfig
    lap_width: int | None = None
    lap_mlp_ratio: float = 1.3  # Iris-3B's LAP ratio; the paper does not say

    def build(self, vlm: VLMSpec, lap: LAPConfig | None = None) -> "UniFusionConfig":
        """The config for ``vlm``; ``lap`` replaces the preset's pooler (e.g. another head count)."""
        if lap is not None:
            return UniFusionConfig(vlm=vlm, lap=lap, dit=self.dit, sampling=self.sampling)
        width = self.lap_width or vlm.hidden_size
        if width % self.lap_heads:
            raise UniFusionError(
                f"the {self.name} preset runs LAP with {self.lap_heads} heads at width {width} (the VLM's hidden size"
                f" {vlm.hidden_size}), which they do not divide; pass a LAPConfig with a head count that divides "
                f"{width} (lap=...).")
        lap = LAPConfig(in_dim=vlm.hidden_size, num_layers=len(vlm.layers), width=width, heads=self.lap_heads,
                        mlp_ratio=self.lap_mlp_ratio, out_dim=self.dit.hidden_size)
        return UniFusionConfig(vlm=vlm, lap=lap, dit=self.dit, sampling=self.sampling)


def _dit(latent: str, **kw) -> DiTConfig:
    return DiTConfig(in_channels=LATENT_CHANNELS[latent], cond_dim=kw["hidden_size"], **kw)


def tiny() -> Preset:
    """Unit tests: a few thousand parameters."""
    return Preset("tiny", lap_heads=2,
                  dit=_dit("pixel", patch_size=4, hidden_size=64, depth=3, num_heads=4, refiner_depth=1,
                           axes_dims=(4, 6, 6)),
                  sampling=SamplingConfig(latent_format="pixel", shift=1.0, steps=8, cfg=2.0))


def toy() -> Preset:
    """The CPU demo world: 32 px pixel space, patch 4; LAP narrower than the VLM (cheap next to a toy DiT)."""
    return Preset("toy", lap_heads=4, lap_width=128,
                  dit=_dit("pixel", patch_size=4, hidden_size=128, depth=6, num_heads=4, refiner_depth=2,
                           axes_dims=(8, 12, 12), abs_pos_grid=8),
                  sampling=SamplingConfig(latent_format="pixel", shift=1.0, steps=20, cfg=3.0))


def small() -> Preset:
    """~0.5B DiT on FLUX.1 VAE latents."""
    return Preset("small", lap_heads=16, lap_width=1024,
                  dit=_dit("flux16", patch_size=2, hidden_size=1024, depth=24, num_heads=16, refiner_depth=2,
                           axes_dims=(16, 24, 24)),
                  sampling=SamplingConfig(latent_format="flux16", shift=3.0, steps=28, cfg=4.0))


def base() -> Preset:
    """~2B DiT on FLUX.1 VAE latents."""
    return Preset("base", lap_heads=16, lap_width=2048,
                  dit=_dit("flux16", patch_size=2, hidden_size=2048, depth=28, num_heads=16, refiner_depth=2,
                           axes_dims=(32, 48, 48)),
                  sampling=SamplingConfig(latent_format="flux16", shift=3.0, steps=28, cfg=4.0))


def paper() -> Preset:
    """~8B DiT paired with an 8B VLM; LAP at the VLM width h_E (4096 for InternVL-2.5-8B)."""
    return Preset("paper", lap_heads=32,
                  dit=_dit("flux16", patch_size=2, hidden_size=4096, depth=26, num_heads=32, refiner_depth=2,
                           axes_dims=(32, 48, 48)),
                  sampling=SamplingConfig(latent_format="flux16", shift=3.0, steps=28, cfg=4.0))


PRESETS: dict[str, Preset] = {p.name: p for p in (tiny(), toy(), small(), base(), paper())}

PAPER_VLM = VLMSpec(architecture="InternVLForConditionalGeneration", num_layers=32, hidden_size=4096,
                    layers=tuple(range(4, 32, 3)), name="InternVL2_5-8B")
