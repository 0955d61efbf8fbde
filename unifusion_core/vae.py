"""The FLUX.1 autoencoder (16-channel KL VAE, ``ae.safetensors``) in BFL's exact state-dict key layout.

Keys equal BFL's (``encoder.down.0.block.0.norm1.weight``, ``decoder.up.3.upsample.conv.weight``, no
``quant_conv``) and hence what ComfyUI's ``comfy.sd.VAE`` loads. Conventions follow ComfyUI, not BFL's
``AutoEncoder.encode``: ``encode``/``decode`` work on *raw* latents (what ``VAEEncode`` returns and
``VAEDecode`` consumes); the scale/shift lives in ``flux_process_in``/``flux_process_out``
(= ComfyUI's ``latent_formats.Flux``).

Shape legend: ``B`` batch, ``C`` channels, ``H``/``W`` pixel height/width, ``h``/``w`` latent
height/width, ``Z`` latent channels, ``N`` = h*w tokens of the mid-block attention.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from .errors import UniFusionError

logger = logging.getLogger(__name__)

GROUPNORM_GROUPS = 32  # fixed in BFL's and ComfyUI's autoencoders, so every width must divide by it
CONFIG_METADATA_KEY = "flux_ae_config"
FORMAT_VERSION = "1"
KEY_PREFIXES = ("vae.", "first_stage_model.")  # single-file checkpoints nest the AE under these


# ----------------------------------------------------------------------------- config


@dataclass(frozen=True)
class FluxAEConfig:
    """Hyper-parameters of BFL's ``AutoEncoderParams``; the defaults are the released FLUX.1 AE."""

    resolution: int = 256  # training resolution, kept for parity with BFL; no layer depends on it
    in_channels: int = 3
    ch: int = 128
    out_ch: int = 3
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    z_channels: int = 16
    scale_factor: float = 0.3611
    shift_factor: float = 0.1159

    def __post_init__(self) -> None:
        object.__setattr__(self, "ch_mult", tuple(self.ch_mult))  # JSON gives a list
        sizes = {n: getattr(self, n) for n in ("in_channels", "ch", "out_ch", "num_res_blocks", "z_channels")}
        if not self.ch_mult or min(self.ch_mult + tuple(sizes.values())) < 1:
            raise ValueError(f"ch_mult and every size must be >= 1, found {self.ch_mult} and {sizes}")
        bad = [self.ch * m for m in self.ch_mult if (self.ch * m) % GROUPNORM_GROUPS]
        if bad:
            raise ValueError(f"every width ch*ch_mult must divide by {GROUPNORM_GROUPS}, found {bad}")
        if self.scale_factor == 0:
            raise ValueError("scale_factor must be non-zero, found 0")

    @classmethod
    def tiny(cls) -> "FluxAEConfig":
        """A few-hundred-thousand-parameter AE (downscale 2) for tests; same key layout."""
        return cls(resolution=64, ch=32, ch_mult=(1, 2), num_res_blocks=1, z_channels=16)

    @property
    def downscale(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "FluxAEConfig":
        return cls(**json.loads(text))


FLUX1_AE = FluxAEConfig()


def flux_process_in(raw: torch.Tensor, cfg: FluxAEConfig = FLUX1_AE) -> torch.Tensor:
    """Raw VAE latent -> DiT/model space, exactly ComfyUI's ``latent_formats.Flux.process_in``."""
    return (raw - cfg.shift_factor) * cfg.scale_factor


def flux_process_out(z: torch.Tensor, cfg: FluxAEConfig = FLUX1_AE) -> torch.Tensor:
    """DiT/model space -> raw VAE latent, exactly ComfyUI's ``latent_formats.Flux.process_out``."""
    return z / cfg.scale_factor + cfg.shift_factor


# ----------------------------------------------------------------------------- blocks


def _group_norm(channels: int, *, dtype=None, device=None, operations=nn) -> nn.Module:
    return operations.GroupNorm(GROUPNORM_GROUPS, channels, eps=1e-6, affine=True, dtype=dtype, device=device)


def _conv(c_in: int, c_out: int, kernel: int, stride: int = 1, *, dtype=None, device=None, operations=nn) -> nn.Module:
    padding = kernel // 2 if stride == 1 else 0  # the stride-2 conv pads asymmetrically by hand
    return operations.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, dtype=dtype, device=device)


class ResnetBlock(nn.Module):
    """GroupNorm-SiLU-conv twice plus a (1x1 ``nin_shortcut`` when widths differ) residual."""

    def __init__(self, c_in: int, c_out: int, *, dtype=None, device=None, operations=nn):
        super().__init__()
        factory = {"dtype": dtype, "device": device, "operations": operations}
        self.norm1 = _group_norm(c_in, **factory)
        self.conv1 = _conv(c_in, c_out, 3, **factory)
        self.norm2 = _group_norm(c_out, **factory)
        self.conv2 = _conv(c_out, c_out, 3, **factory)
        if c_in != c_out:
            self.nin_shortcut = _conv(c_in, c_out, 1, **factory)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, C_out, H, W)
        h = self.conv2(F.silu(self.norm2(h)))
        if hasattr(self, "nin_shortcut"):
            x = self.nin_shortcut(x)  # (B, C_in, H, W) -> (B, C_out, H, W)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all positions, with q/k/v/proj_out as 1x1 convs (BFL keys)."""

    def __init__(self, channels: int, *, dtype=None, device=None, operations=nn):
        super().__init__()
        factory = {"dtype": dtype, "device": device, "operations": operations}
        self.norm = _group_norm(channels, **factory)
        self.q = _conv(channels, channels, 1, **factory)
        self.k = _conv(channels, channels, 1, **factory)
        self.v = _conv(channels, channels, 1, **factory)
        self.proj_out = _conv(channels, channels, 1, **factory)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.norm(x)
        # (B, C, h, w) -> (B, 1, N, C): one head of width C, as BFL and ComfyUI do
        q, k, v = (p(y).view(b, 1, c, h * w).transpose(2, 3).contiguous() for p in (self.q, self.k, self.v))
        y = F.scaled_dot_product_attention(q, k, v)  # (B, 1, N, C)
        y = y.transpose(2, 3).reshape(b, c, h, w)  # (B, 1, N, C) -> (B, C, h, w)
        return x + self.proj_out(y)


class Resample(nn.Module):
    """``conv`` after 2x nearest upsampling, or a stride-2 ``conv`` after right/bottom padding (BFL)."""

    def __init__(self, channels: int, down: bool, *, dtype=None, device=None, operations=nn):
        super().__init__()
        self.down = down
        self.conv = _conv(channels, channels, 3, stride=2 if down else 1, dtype=dtype, device=device,
                          operations=operations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.down:
            return self.conv(F.pad(x, (0, 1, 0, 1)))  # (B, C, H, W) -> (B, C, H+1, W+1) -> (B, C, H/2, W/2)
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))  # -> (B, C, 2H, 2W)


class MidBlock(nn.Module):
    """``mid.block_1`` -> ``mid.attn_1`` -> ``mid.block_2``: the only quadratic op of the AE."""

    def __init__(self, channels: int, **factory):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, **factory)
        self.attn_1 = AttnBlock(channels, **factory)
        self.block_2 = ResnetBlock(channels, channels, **factory)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Level(nn.Module):
    """One resolution: ``block.{j}`` ResnetBlocks and an optional ``downsample``/``upsample``."""

    def __init__(self, widths: list[int], resample: str | None, **factory):
        super().__init__()
        self.block = nn.ModuleList(ResnetBlock(a, b, **factory) for a, b in zip(widths[:-1], widths[1:]))
        if resample == "downsample":
            self.downsample = Resample(widths[-1], True, **factory)
        elif resample == "upsample":
            self.upsample = Resample(widths[-1], False, **factory)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for block in self.block:
            h = block(h)  # (B, C_in, H, W) -> (B, C_out, H, W)
        resample = getattr(self, "downsample", None) or getattr(self, "upsample", None)
        return h if resample is None else resample(h)  # (B, C, H, W) -> (B, C, H/2 or 2H, W/2 or 2W)


# ----------------------------------------------------------------------------- encoder / decoder


class Encoder(nn.Module):
    """(B, C_in, H, W) -> (B, 2Z, h, w): the mean and log-variance of the posterior."""

    def __init__(self, cfg: FluxAEConfig, **factory):
        super().__init__()
        ch, mult = cfg.ch, cfg.ch_mult
        self.conv_in = _conv(cfg.in_channels, ch, 3, **factory)
        self.down = nn.ModuleList()
        for i, m in enumerate(mult):
            c_in = ch * (mult[i - 1] if i > 0 else 1)
            widths = [c_in] + [ch * m] * cfg.num_res_blocks
            resample = "downsample" if i < len(mult) - 1 else None
            self.down.append(Level(widths, resample, **factory))
        self.mid = MidBlock(ch * mult[-1], **factory)
        self.norm_out = _group_norm(ch * mult[-1], **factory)
        self.conv_out = _conv(ch * mult[-1], 2 * cfg.z_channels, 3, **factory)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)  # (B, C_in, H, W) -> (B, ch, H, W)
        for level in self.down:  # no skip connections, so only the current activation is kept
            h = level(h)  # halves H and W at every level but the last
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, 2Z, h, w)


class Decoder(nn.Module):
    """(B, Z, h, w) -> (B, C_out, H, W); ``up.{i}`` is indexed by level, run from deepest to 0."""

    def __init__(self, cfg: FluxAEConfig, **factory):
        super().__init__()
        ch, mult = cfg.ch, cfg.ch_mult
        c = ch * mult[-1]
        self.conv_in = _conv(cfg.z_channels, c, 3, **factory)
        self.mid = MidBlock(c, **factory)
        levels: list[Level] = []
        for i in reversed(range(len(mult))):
            widths = [c] + [ch * mult[i]] * (cfg.num_res_blocks + 1)
            levels.insert(0, Level(widths, "upsample" if i > 0 else None, **factory))
            c = ch * mult[i]
        self.up = nn.ModuleList(levels)
        self.norm_out = _group_norm(c, **factory)
        self.conv_out = _conv(c, cfg.out_ch, 3, **factory)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))  # (B, Z, h, w) -> (B, ch*mult[-1], h, w)
        for level in reversed(self.up):
            h = level(h)  # doubles H and W at every level but 0
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, C_out, H, W)


# ----------------------------------------------------------------------------- autoencoder


class FluxAutoEncoder(nn.Module):
    """FLUX.1's AE: ``encode`` (B,3,H,W) in [-1,1] -> raw (B,Z,H/f,W/f); ``decode`` the reverse."""

    def __init__(self, cfg: FluxAEConfig, *, dtype=None, device=None, operations=nn):
        super().__init__()
        self.cfg = cfg
        factory = {"dtype": dtype, "device": device, "operations": operations}
        self.encoder = Encoder(cfg, **factory)
        self.decoder = Decoder(cfg, **factory)

    @property
    def downscale(self) -> int:
        return self.cfg.downscale

    def init_weights(self, generator: torch.Generator | None = None) -> None:
        """PyTorch's default conv init, U(+-1/sqrt(fan_in)) for weight and bias, and identity norms."""
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, nn.Conv2d):
                    bound = module.weight[0].numel() ** -0.5  # 1/sqrt(fan_in)
                    module.weight.uniform_(-bound, bound, generator=generator)
                    module.bias.uniform_(-bound, bound, generator=generator)
                elif isinstance(module, nn.GroupNorm):
                    module.weight.fill_(1.0)
                    module.bias.zero_()

    def encode(self, pixels: torch.Tensor, *, sample: bool = False, generator=None) -> torch.Tensor:
        """(B, C_in, H, W) in [-1, 1] -> raw latent (B, Z, H/f, W/f): the posterior mean, or a sample."""
        _check_input("pixels", pixels, self.cfg.in_channels, self.downscale)
        moments = self.encoder(pixels)  # (B, 2Z, h, w)
        mean, logvar = moments.chunk(2, dim=1)  # 2 x (B, Z, h, w)
        if not sample:
            return mean
        std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))  # ComfyUI's DiagonalGaussianDistribution clamp
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + std * noise

    def decode(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw latent (B, Z, h, w) -> pixels (B, C_out, h*f, w*f), nominally in [-1, 1]."""
        _check_input("raw latent", raw, self.cfg.z_channels, 1)
        return self.decoder(raw)

    def encode_image(self, image: torch.Tensor, *, dtype: torch.dtype | None = None) -> torch.Tensor:
        """ComfyUI IMAGE (B, H, W, C) in [0, 1] -> float32 raw latent (B, Z, h, w) on image's device."""
        weight = self.encoder.conv_in.weight
        pixels = image.movedim(-1, 1) * 2.0 - 1.0  # (B, H, W, C) -> (B, C, H, W) in [-1, 1]
        raw = self.encode(pixels.to(device=weight.device, dtype=dtype or weight.dtype))
        return raw.to(device=image.device, dtype=torch.float32)

    def decode_to_image(self, raw: torch.Tensor, *, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Raw latent (B, Z, h, w) -> ComfyUI IMAGE (B, H, W, C) float32 in [0, 1] on raw's device."""
        weight = self.decoder.conv_in.weight
        pixels = self.decode(raw.to(device=weight.device, dtype=dtype or weight.dtype))  # (B, C, H, W)
        image = ((pixels.float() + 1.0) / 2.0).clamp(0.0, 1.0)  # ComfyUI's VAE.process_output
        return image.movedim(1, -1).to(raw.device)  # (B, C, H, W) -> (B, H, W, C)


def _check_input(what: str, x: torch.Tensor, channels: int, multiple: int) -> None:
    if x.ndim != 4 or x.shape[1] != channels:
        raise UniFusionError(f"{what} must be (B, {channels}, H, W), found shape {tuple(x.shape)}")
    if x.shape[2] % multiple or x.shape[3] % multiple:
        raise UniFusionError(f"{what} height and width must be multiples of {multiple}, found {tuple(x.shape[2:])}")


def expected_state_dict_shapes(cfg: FluxAEConfig) -> dict[str, tuple[int, ...]]:
    """Every key of the AE's state dict and its shape, built on ``meta`` (allocates nothing)."""
    model = FluxAutoEncoder(cfg, device="meta")
    return {key: tuple(t.shape) for key, t in model.state_dict().items()}


# ----------------------------------------------------------------------------- files


def save_flux_vae(model: FluxAutoEncoder, path: str | os.PathLike) -> None:
    """Write the state dict in BFL's key layout, with the config in the safetensors metadata."""
    path = os.fspath(path)
    _require_safetensors(path)
    state = {key: t.detach().contiguous() for key, t in model.state_dict().items()}
    metadata = {CONFIG_METADATA_KEY: model.cfg.to_json(), "format_version": FORMAT_VERSION}
    save_file(state, path, metadata=metadata)


def load_flux_vae(
    path: str | os.PathLike, *, dtype: torch.dtype | None = None, device="cpu", operations=nn
) -> FluxAutoEncoder:
    """Load an ``ae.safetensors`` (bare keys or under ``vae.``/``first_stage_model.``) after validation.

    The config comes from the ``flux_ae_config`` metadata entry when present, else the FLUX.1 default.
    """
    path = os.fspath(path)
    _require_safetensors(path)
    if not os.path.isfile(path):
        raise UniFusionError(f"expected a FLUX.1 autoencoder file at {path}, found no such file")
    cfg, tensors = _read_checked(path)
    model = FluxAutoEncoder(cfg, dtype=dtype, device=device, operations=operations)
    model.load_state_dict(tensors, strict=True)
    logger.info("loaded FLUX.1 autoencoder from %s (ch=%d, ch_mult=%s)", path, cfg.ch, cfg.ch_mult)
    return model


def _require_safetensors(path: str) -> None:
    if not path.endswith(".safetensors"):
        ext = os.path.splitext(path)[1] or "no extension"
        raise UniFusionError(f"{path} must be a .safetensors file, found {ext} (pickle formats are never loaded)")


def _read_checked(path: str) -> tuple[FluxAEConfig, dict[str, torch.Tensor]]:
    """Read config and tensors, raising one-sentence errors for corrupt files and key/shape mismatch."""
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            cfg = _config_from_metadata(path, f.metadata() or {})
            prefix = _key_prefix(list(f.keys()))
            names = {k[len(prefix):]: k for k in f.keys() if k.startswith(prefix)}
            shapes = {key: tuple(f.get_slice(name).get_shape()) for key, name in names.items()}
            _check_keys(path, expected_state_dict_shapes(cfg), shapes)
            return cfg, {key: f.get_tensor(name) for key, name in names.items()}
    except (SafetensorError, OSError, RuntimeError) as err:
        raise UniFusionError(f"{path} is not a readable safetensors file (corrupt or truncated): {err}") from err


def _config_from_metadata(path: str, metadata: dict[str, str]) -> FluxAEConfig:
    version = metadata.get("format_version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise UniFusionError(f"{path} has format_version {version!r}, but this code reads {FORMAT_VERSION!r}")
    if CONFIG_METADATA_KEY not in metadata:
        return FluxAEConfig()
    try:
        return FluxAEConfig.from_json(metadata[CONFIG_METADATA_KEY])
    except (ValueError, TypeError) as err:  # json.JSONDecodeError is a ValueError
        raise UniFusionError(f"{path} has an invalid '{CONFIG_METADATA_KEY}' metadata entry: {err}") from err


def _key_prefix(keys: list[str]) -> str:
    """``""`` for bare keys, else the first of ``KEY_PREFIXES`` that holds encoder/decoder keys."""
    for prefix in ("",) + KEY_PREFIXES:
        if any(k.startswith((prefix + "encoder.", prefix + "decoder.")) for k in keys):
            return prefix
    return ""


def _check_keys(path: str, expected: dict[str, tuple], found: dict[str, tuple]) -> None:
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    for what, keys in (("missing", missing), ("unexpected", unexpected)):
        if keys:
            raise UniFusionError(f"{path} is not a FLUX.1 autoencoder: {len(keys)} {what} keys such as {keys[0]}")
    for key, shape in expected.items():
        if found[key] != shape:
            raise UniFusionError(f"{path}: tensor {key} has shape {found[key]} but the config expects {shape}")
