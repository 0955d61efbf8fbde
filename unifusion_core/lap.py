"""Layerwise Attention Pooling (paper §2.3) and the last-layer baseline pooler (§2.7, ablation 1).

Legend: B batch, Lv VLM layers tapped, T tokens, Dv VLM width, W LAP width, D output width,
N real (unmasked) tokens in the batch.

LAP: every token's states from the tapped layers form a length-Lv sequence; two pre-norm
bidirectional transformer blocks run over that layer axis (with a learned layer-position
embedding), then an FC over the layer axis (one weight per layer, so chosen layers can be zeroed:
"layer dropout", §6.7) pools them, and a projection maps to the DiT's condition width.
Padding tokens are never computed and come out as zeros.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import LAPConfig
from .blocks import Block, init_generic, sdpa_attention


class LayerwiseAttentionPooling(nn.Module):
    def __init__(self, cfg: LAPConfig, *, dtype=None, device=None, operations=nn):
        super().__init__()
        kw = dict(dtype=dtype, device=device)
        self.cfg = cfg
        self.in_proj = (operations.Linear(cfg.in_dim, cfg.width, **kw) if cfg.width != cfg.in_dim else None)
        self.layer_pos = nn.Parameter(torch.empty(cfg.num_layers, cfg.width, **kw))
        self.blocks = nn.ModuleList(Block(cfg.width, cfg.heads, cfg.mlp_ratio, operations=operations, **kw)
                                    for _ in range(cfg.blocks))
        self.pool_weight = nn.Parameter(torch.empty(cfg.num_layers, **kw))  # FC over the layer axis
        self.pool_bias = nn.Parameter(torch.empty(cfg.width, **kw))
        self.norm = operations.RMSNorm(cfg.width, eps=1e-6, **kw)
        self.proj = operations.Linear(cfg.width, cfg.out_dim, **kw)

    @torch.no_grad()
    def init_weights(self):
        init_generic(self)
        nn.init.normal_(self.layer_pos, std=0.02)
        nn.init.constant_(self.pool_weight, 1.0 / self.cfg.num_layers)  # start as the layer mean
        nn.init.zeros_(self.pool_bias)

    def layer_weights(self) -> torch.Tensor:
        """The per-layer pooling weights (Lv,), as the layer inspector shows them."""
        return self.pool_weight.detach().float()

    @torch.no_grad()
    def layer_attention(self, hidden, mask) -> list[torch.Tensor]:
        """Per LAP block, its attention over the layer axis (Lv, Lv), mean over real tokens and heads."""
        maps: list[torch.Tensor] = []

        def recording(q, k, v, heads, mask=None, skip_reshape=True, **kw):
            scores = (q.float() @ k.float().transpose(-1, -2)) * q.shape[-1] ** -0.5  # (N, H, Lv, Lv)
            maps.append(scores.softmax(-1).mean(dim=(0, 1)).cpu())  # (Lv, Lv)
            return sdpa_attention(q, k, v, heads, mask=mask, skip_reshape=skip_reshape)

        self.forward(hidden, mask, attn_fn=recording)
        return maps

    def forward(self, hidden, mask, layer_keep=None, attn_fn=sdpa_attention):
        """hidden (B, Lv, T, Dv), mask (B, T) bool -> tokens (B, T, D), zero where mask is False.

        ``layer_keep`` (Lv,) bool zeroes the pooling weights of dropped layers (layer dropout).
        """
        B, Lv, T, Dv = hidden.shape
        out = hidden.new_zeros(B, T, self.cfg.out_dim, dtype=self.pool_weight.dtype)
        x = hidden.permute(0, 2, 1, 3)[mask.bool()].to(out.dtype)  # (N, Lv, Dv): only real tokens
        if x.shape[0] == 0:
            return out
        if self.in_proj is not None:
            x = self.in_proj(x)  # (N, Lv, W)
        x = x + self.layer_pos.to(x.dtype)  # (N, Lv, W)
        for block in self.blocks:
            x = block(x, attn_fn=attn_fn)  # (N, Lv, W): attention over the layer axis
        w = self.pool_weight.to(x.dtype)
        if layer_keep is not None:
            w = w * layer_keep.to(device=w.device, dtype=w.dtype)
        pooled = torch.einsum("nlw,l->nw", x, w) + self.pool_bias.to(x.dtype)  # (N, W)
        out[mask.bool()] = self.proj(self.norm(pooled)).to(out.dtype)  # (B, T, D)
        return out


class LastLayerPooler(nn.Module):
    """Baseline: the deepest tapped layer + an MLP adaptor, with LAP's interface."""

    def __init__(self, cfg: LAPConfig, *, dtype=None, device=None, operations=nn):
        super().__init__()
        kw = dict(dtype=dtype, device=device)
        self.cfg = cfg
        self.norm = operations.RMSNorm(cfg.in_dim, eps=1e-6, **kw)
        self.fc1 = operations.Linear(cfg.in_dim, cfg.width, **kw)
        self.fc2 = operations.Linear(cfg.width, cfg.out_dim, **kw)

    @torch.no_grad()
    def init_weights(self):
        init_generic(self)

    def layer_attention(self, hidden, mask) -> list[torch.Tensor]:
        return []  # no attention over layers in the baseline

    def layer_weights(self) -> torch.Tensor:
        w = torch.zeros(self.cfg.num_layers)
        w[-1] = 1.0
        return w

    def forward(self, hidden, mask, layer_keep=None):
        """hidden (B, Lv, T, Dv), mask (B, T) -> (B, T, D); only the last tapped layer is used."""
        x = hidden[:, -1].to(self.fc1.weight.dtype)  # (B, T, Dv)
        if layer_keep is not None and not bool(layer_keep[-1]):
            x = torch.zeros_like(x)
        out = self.fc2(F.gelu(self.fc1(self.norm(x))))  # (B, T, D)
        return out * mask[..., None].to(out.dtype)


def build_pooler(cfg: LAPConfig, *, dtype=None, device=None, operations=nn) -> nn.Module:
    klass = LayerwiseAttentionPooling if cfg.kind == "lap" else LastLayerPooler
    return klass(cfg, dtype=dtype, device=device, operations=operations)
