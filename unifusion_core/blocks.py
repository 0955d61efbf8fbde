"""Building blocks shared by LAP, the refiner and the DiT.

Legend: B batch, S sequence (tokens or layers), D width, H heads, Dh head width.

Every layer is built from an injected ``operations`` namespace (``torch.nn`` by default, ``comfy.ops``
inside ComfyUI) with explicit ``dtype``/``device``, and attention goes through an injectable function
with ComfyUI's ``optimized_attention`` signature: ``attn_fn(q, k, v, heads, mask=None,
skip_reshape=True) -> (B, S, H*Dh)`` where q, k, v are (B, H, S, Dh) and ``mask`` is additive,
broadcastable to (B, H, S, S).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def sdpa_attention(q, k, v, heads, mask=None, skip_reshape=True, **_):
    """Default attention: torch SDPA. q, k, v: (B, H, S, Dh) -> (B, S, H*Dh)."""
    if not skip_reshape:  # (B, S, H*Dh) inputs, as ComfyUI allows
        q, k, v = (t.unflatten(-1, (heads, -1)).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, S, Dh)
    return out.transpose(1, 2).flatten(2)  # (B, S, H*Dh)


def eager_attention(q, k, v, heads, mask=None, skip_reshape=True, **_):
    """softmax(q k^T / sqrt(Dh) + mask) v, written out: same signature and result as
    ``sdpa_attention``; its backward is ~1.5x faster than CPU SDPA's at toy sizes (~100 tokens)."""
    if not skip_reshape:
        q, k, v = (t.unflatten(-1, (heads, -1)).transpose(1, 2) for t in (q, k, v))
    scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5  # (B, H, S, S)
    if mask is not None:
        scores = scores + mask
    out = scores.softmax(-1).to(v.dtype) @ v  # (B, H, S, Dh)
    return out.transpose(1, 2).flatten(2)  # (B, S, H*Dh)


ATTENTION = {"sdpa": sdpa_attention, "eager": eager_attention}


def key_padding_bias(mask: torch.Tensor | None, dtype) -> torch.Tensor | None:
    """(B, S) bool keep-mask -> additive (B, 1, 1, S) bias: 0 where kept, a large negative where not."""
    if mask is None or bool(mask.all()):
        return None
    bias = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    bias.masked_fill_(~mask.bool(), torch.finfo(dtype).min)
    return bias[:, None, None, :]  # (B, 1, 1, S)


# ---------------------------------------------------------------------------------------------
# rotary position embedding over several axes (1-D for condition tokens, 2-D for latent patches)
# ---------------------------------------------------------------------------------------------

def rope_angles(pos: torch.Tensor, axes_dims: tuple[int, ...], theta: float) -> torch.Tensor:
    """pos: (B, S, n_axes) float -> cos/sin table (B, 1, S, Dh/2, 2)."""
    parts = []
    for i, dim in enumerate(axes_dims):
        freqs = theta ** (-torch.arange(0, dim, 2, dtype=torch.float64, device=pos.device) / dim)
        parts.append(pos[..., i : i + 1].double() * freqs)  # (B, S, dim/2)
    ang = torch.cat(parts, dim=-1)  # (B, S, Dh/2)
    return torch.stack([ang.cos(), ang.sin()], dim=-1).float()[:, None]  # (B, 1, S, Dh/2, 2)


def apply_rope(x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """x: (B, H, S, Dh); rotates consecutive pairs (x0, x1) by the table from ``rope_angles``."""
    xf = x.float().unflatten(-1, (-1, 2))  # (B, H, S, Dh/2, 2)
    cos, sin = rope[..., 0], rope[..., 1]  # (B, 1, S, Dh/2)
    x0, x1 = xf[..., 0], xf[..., 1]
    out = torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1)  # (B, H, S, Dh/2, 2)
    return out.flatten(-2).to(x.dtype)  # (B, H, S, Dh)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of t in [0, 1] (scaled by 1000, as DiT/Flux do). t: (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = (t.float() * 1000.0)[:, None] * freqs[None]  # (B, dim/2)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, dim)


# ---------------------------------------------------------------------------------------------
# attention, MLP and the transformer block
# ---------------------------------------------------------------------------------------------

class Attention(nn.Module):
    """Bidirectional multi-head self-attention with QK RMS-norm and optional RoPE."""

    def __init__(self, dim, heads, *, dtype=None, device=None, operations=nn):
        super().__init__()
        self.heads = heads
        head_dim = dim // heads
        self.qkv = operations.Linear(dim, 3 * dim, bias=True, dtype=dtype, device=device)
        self.q_norm = operations.RMSNorm(head_dim, eps=1e-6, dtype=dtype, device=device)
        self.k_norm = operations.RMSNorm(head_dim, eps=1e-6, dtype=dtype, device=device)
        self.proj = operations.Linear(dim, dim, bias=True, dtype=dtype, device=device)

    def forward(self, x, rope=None, mask=None, attn_fn=sdpa_attention):
        qkv = self.qkv(x).unflatten(-1, (3, self.heads, -1))  # (B, S, 3, H, Dh)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # 3 x (B, H, S, Dh)
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        out = attn_fn(q, k, v.to(q.dtype), self.heads, mask=mask, skip_reshape=True)  # (B, S, D)
        return self.proj(out)


class SwiGLU(nn.Module):
    def __init__(self, dim, hidden, *, dtype=None, device=None, operations=nn):
        super().__init__()
        self.w1 = operations.Linear(dim, hidden, bias=False, dtype=dtype, device=device)
        self.w3 = operations.Linear(dim, hidden, bias=False, dtype=dtype, device=device)
        self.w2 = operations.Linear(hidden, dim, bias=False, dtype=dtype, device=device)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


def swiglu_hidden(dim: int, mlp_ratio: float, multiple: int = 16) -> int:
    """SwiGLU width with the parameter count of a plain MLP of ratio ``mlp_ratio`` (LLaMA rule)."""
    hidden = int(2 * dim * mlp_ratio / 3)
    return multiple * math.ceil(hidden / multiple)


class Block(nn.Module):
    """Pre-norm transformer block. With ``modulated`` it takes adaLN-zero shift/scale/gate from c."""

    def __init__(self, dim, heads, mlp_ratio, *, modulated=False, dtype=None, device=None, operations=nn):
        super().__init__()
        kw = dict(dtype=dtype, device=device)
        self.modulated = modulated
        if modulated:  # affine-free LayerNorm, as in DiT; scale/shift come from adaLN
            self.norm1 = operations.LayerNorm(dim, elementwise_affine=False, eps=1e-6, **kw)
            self.norm2 = operations.LayerNorm(dim, elementwise_affine=False, eps=1e-6, **kw)
            self.adaLN = operations.Linear(dim, 6 * dim, bias=True, **kw)
        else:
            self.norm1 = operations.RMSNorm(dim, eps=1e-6, **kw)
            self.norm2 = operations.RMSNorm(dim, eps=1e-6, **kw)
        self.attn = Attention(dim, heads, operations=operations, **kw)
        self.mlp = SwiGLU(dim, swiglu_hidden(dim, mlp_ratio), operations=operations, **kw)

    def forward(self, x, c=None, rope=None, mask=None, attn_fn=sdpa_attention):
        """x: (B, S, D); c: (B, D) conditioning vector when modulated."""
        if not self.modulated:
            x = x + self.attn(self.norm1(x), rope, mask, attn_fn)
            return x + self.mlp(self.norm2(x))
        mod = self.adaLN(F.silu(c))[:, None].chunk(6, dim=-1)  # 6 x (B, 1, D)
        shift1, scale1, gate1, shift2, scale2, gate2 = mod
        h = self.norm1(x) * (1 + scale1) + shift1
        x = x + gate1 * self.attn(h, rope, mask, attn_fn)
        h = self.norm2(x) * (1 + scale2) + shift2
        return x + gate2 * self.mlp(h)

    @torch.no_grad()
    def init_weights(self):
        init_generic(self)
        if self.modulated:  # adaLN-zero: the block starts as the identity
            nn.init.zeros_(self.adaLN.weight)
            nn.init.zeros_(self.adaLN.bias)


@torch.no_grad()
def init_generic(module: nn.Module):
    """Xavier-uniform Linears with zero bias, unit norm weights. Specific zero-inits come after."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.RMSNorm, nn.LayerNorm)) and m.weight is not None:
            nn.init.ones_(m.weight)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
