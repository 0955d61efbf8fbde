"""Single-stream flow-matching DiT with an in-model bidirectional refiner (paper §2.4-2.6).

Legend: B batch, C latent channels, h/w latent height/width, p patch, N latent patches, Tc condition
tokens, S = Tc + N, D width.

The refined condition tokens are concatenated in front of the patchified latent tokens and every
block attends over both jointly; the timestep enters through adaLN-zero modulation. RoPE: condition
token i sits at (i, 0, 0); latent patch (r, c) sits at (n_c, r, c) with n_c the sample's count of
real condition tokens, so appending masked padding to a condition changes nothing.
Signature follows ComfyUI's model code: ``forward(x, timesteps, context, attention_mask, ...)``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

from .config import DiTConfig
from .errors import UniFusionError
from .blocks import Block, init_generic, key_padding_bias, rope_angles, sdpa_attention, timestep_embedding


class Refiner(nn.Module):
    """Bidirectional transformer blocks over the condition tokens, with key-padding masks."""

    def __init__(self, cfg: DiTConfig, *, dtype=None, device=None, operations=nn):
        super().__init__()
        kw = dict(dtype=dtype, device=device)
        self.in_proj = operations.Linear(cfg.cond_dim, cfg.hidden_size, **kw)
        self.blocks = nn.ModuleList(Block(cfg.hidden_size, cfg.num_heads, cfg.mlp_ratio, operations=operations, **kw)
                                    for _ in range(cfg.refiner_depth))
        self.norm = operations.RMSNorm(cfg.hidden_size, eps=1e-6, **kw)

    def forward(self, context, rope=None, bias=None, attn_fn=sdpa_attention):
        """context (B, Tc, cond_dim) -> (B, Tc, D)."""
        x = self.in_proj(context)
        for block in self.blocks:
            x = block(x, rope=rope, mask=bias, attn_fn=attn_fn)
        return self.norm(x)


def _version(t: torch.Tensor) -> int:
    """In-place modification counter; inference tensors (weights loaded under ComfyUI's inference mode)
    keep none, which is why the host also clears the cache around every sampling run."""
    try:
        return t._version
    except RuntimeError:
        return -1


class RefinerCache:
    """Refined condition tokens across the steps of one sampling run (the refiner does not depend on
    the timestep). An entry is reused only for a context and mask exactly equal to the stored ones
    (compared element by element), the same compute dtype and the same refiner weights (parameter
    storage and version: a LoRA patched in, or new weights loaded, misses). The host clears it at the
    start and end of every sampling run (weights patched on the fly are fixed within one run)."""

    def __init__(self, max_entries: int = 4):
        self.max_entries, self.entries, self.hits, self.enabled = max_entries, [], 0, True

    def clear(self) -> None:
        self.entries.clear()

    def get(self, refiner: nn.Module, context, mask, dtype, compute):
        if not self.enabled:
            return compute()
        weights = tuple((q.data_ptr(), _version(q)) for q in refiner.parameters())
        for ctx, m, dt, w, out in self.entries:
            if (dt == dtype and w == weights and ctx.shape == context.shape and ctx.device == context.device
                    and ctx.dtype == context.dtype and torch.equal(ctx, context) and torch.equal(m, mask)):
                self.hits += 1
                return out
        out = compute()
        self.entries.append((context.detach().clone(), mask.clone(), dtype, weights, out.detach()))
        del self.entries[:-self.max_entries]
        return out


class UniFusionDiT(nn.Module):
    def __init__(self, config: DiTConfig | dict | None = None, *, dtype=None, device=None, operations=nn,
                 attn_fn=None, **_ignored):
        super().__init__()
        cfg = config if isinstance(config, DiTConfig) else DiTConfig(**(config or {}))
        kw = dict(dtype=dtype, device=device)
        self.cfg, self.dtype = cfg, dtype  # ComfyUI's BaseModel.get_dtype() reads .dtype
        self.attn_fn = attn_fn or sdpa_attention
        self.gradient_checkpointing = False
        # set by a host (ComfyUI): ``should_stop()`` raises to abandon a step between blocks (an interrupt);
        # ``refine_cache`` reuses the refined condition across the steps of a sampling run
        self.should_stop = None
        self.refine_cache: RefinerCache | None = None
        D, p, C = cfg.hidden_size, cfg.patch_size, cfg.in_channels
        self.x_embed = operations.Linear(C * p * p, D, **kw)
        G = cfg.abs_pos_grid
        self.abs_pos = nn.Parameter(torch.zeros(G, G, D, **kw)) if G else None  # (G, G, D), zero = no-op
        self.t_embed = nn.Sequential(operations.Linear(cfg.time_freq_dim, D, **kw), nn.SiLU(),
                                     operations.Linear(D, D, **kw))
        self.refiner = Refiner(cfg, operations=operations, **kw)
        self.blocks = nn.ModuleList(Block(D, cfg.num_heads, cfg.mlp_ratio, modulated=True, operations=operations, **kw)
                                    for _ in range(cfg.depth))
        self.norm_out = operations.LayerNorm(D, elementwise_affine=False, eps=1e-6, **kw)
        self.adaLN_out = operations.Linear(D, 2 * D, **kw)
        self.proj_out = operations.Linear(D, C * p * p, **kw)

    @torch.no_grad()
    def init_weights(self):
        """DiT-style init: Xavier everywhere, then zero the adaLN gates and the output layer."""
        init_generic(self)
        nn.init.normal_(self.t_embed[0].weight, std=0.02)
        nn.init.normal_(self.t_embed[2].weight, std=0.02)
        for block in self.blocks:
            block.init_weights()
        for m in (self.adaLN_out, self.proj_out):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)
        if self.abs_pos is not None:
            nn.init.zeros_(self.abs_pos)

    # -- positions ------------------------------------------------------------------------------
    @staticmethod
    def _cond_positions(B, Tc, device):
        """Condition token i sits at (i, 0, 0): (B, Tc, 3)."""
        pos = torch.zeros(B, Tc, 3, device=device)
        pos[..., 0] = torch.arange(Tc, device=device)
        return pos

    @staticmethod
    def _latent_positions(cond_mask, gh, gw):
        """Patch (r, c) sits at (n_c, r, c), n_c = the sample's real condition tokens: (B, gh*gw, 3)."""
        dev = cond_mask.device
        rows, cols = torch.meshgrid(torch.arange(gh, device=dev), torch.arange(gw, device=dev), indexing="ij")
        pos = torch.stack([torch.zeros_like(rows), rows, cols], dim=-1).flatten(0, 1).float()  # (N, 3)
        pos = pos[None].repeat(cond_mask.shape[0], 1, 1)  # (B, N, 3)
        pos[..., 0] = cond_mask.sum(1, keepdim=True).float()
        return pos

    def _abs_pos(self, gh, gw, dtype):
        """The learned absolute position table at grid (gh, gw) -> (gh*gw, D); resized bilinearly when
        the grid differs from the trained G x G."""
        table = self.abs_pos.to(dtype)
        if table.shape[:2] != (gh, gw):
            table = F.interpolate(table.permute(2, 0, 1)[None].float(), size=(gh, gw), mode="bilinear",
                                  align_corners=False)[0].permute(1, 2, 0).to(dtype)
        return table.reshape(gh * gw, -1)

    def _keep_mask(self, attention_mask, context, B):
        """ComfyUI hands masks as bool, int or float (cast to the compute dtype): -> (B, Tc) bool."""
        if attention_mask is None:
            return torch.ones(B, context.shape[1], dtype=torch.bool, device=context.device)
        return (attention_mask.to(context.device) > 0.5).expand(B, -1)

    def _check_input(self, x, context, width):
        p, C = self.cfg.patch_size, self.cfg.in_channels
        if x.ndim != 4 or x.shape[1] != C or x.shape[2] % p or x.shape[3] % p:
            raise UniFusionError(f"the DiT expects latents (B, {C}, h, w) with h and w multiples of {p}, "
                                 f"found {tuple(x.shape)}.")
        if context is None or context.ndim != 3 or context.shape[-1] != width:
            found = None if context is None else tuple(context.shape)
            raise UniFusionError(f"the DiT expects conditioning (B, T, {width}) from a UniFusion "
                                 f"pooler, found {found}.")

    def _compute_dtype(self, x):
        return self.x_embed.weight.dtype if self.dtype is None else x.dtype  # in ComfyUI, x is cast already

    # attention over more than this many (query, key) pairs runs in query chunks, asking should_stop
    # between them, so an interrupt lands within seconds even while one block takes minutes (huge images)
    interrupt_chunk_pairs = 1 << 26  # unchunked up to 8,192 tokens (a 1024^2 image at patch 2 on FLUX latents)

    def _interruptible(self, attn_fn, seq_len: int):
        if seq_len * seq_len <= self.interrupt_chunk_pairs:
            return attn_fn
        chunk = max(1, self.interrupt_chunk_pairs // seq_len)

        def chunked(q, k, v, heads, mask=None, skip_reshape=True, **kw):  # q, k, v: (B, H, S, Dh)
            outs = []
            for start in range(0, q.shape[2], chunk):
                self.should_stop()
                outs.append(attn_fn(q[:, :, start:start + chunk], k, v, heads, mask=mask, skip_reshape=True, **kw))
            return torch.cat(outs, dim=1)  # (B, S, H*Dh)
        return chunked

    # -- forward --------------------------------------------------------------------------------
    def refine(self, context, attention_mask=None, dtype=None):
        """context (B, Tc, cond_dim) -> refined condition tokens (B, Tc, D).

        Independent of the timestep, so a sampler may run it once and pass ``refined_context``.
        """
        B, Tc = context.shape[:2]
        cond_mask = self._keep_mask(attention_mask, context, B)
        dtype = dtype or self.x_embed.weight.dtype
        rope = rope_angles(self._cond_positions(B, Tc, context.device), self.cfg.axes_dims, self.cfg.rope_theta)
        return self.refiner(context.to(dtype), rope, key_padding_bias(cond_mask, dtype), self.attn_fn)

    def forward(self, x, timesteps, context=None, attention_mask=None, transformer_options=None, control=None,
                refined_context=None, **kw):
        """x (B, C, h, w), timesteps (B,) = sigma * multiplier, context (B, Tc, cond_dim),
        attention_mask (B, Tc) (1 = real token) -> predicted velocity (B, C, h, w).
        ``refined_context`` (B, Tc, D), from ``refine``, skips the refiner."""
        ctx = context if refined_context is None else refined_context
        self._check_input(x, ctx, self.cfg.cond_dim if refined_context is None else self.cfg.hidden_size)
        B, C, h, w = x.shape
        p = self.cfg.patch_size
        gh, gw = h // p, w // p
        if ctx.shape[0] != B:  # one condition for a batch of latents
            ctx = ctx.expand(B, -1, -1)
        cond_mask = self._keep_mask(attention_mask, ctx, B)  # (B, Tc)
        Tc = ctx.shape[1]
        # 1. embed latent patches and the timestep
        img = rearrange(x, "b c (h p) (w q) -> b (h w) (c p q)", p=p, q=p)  # (B, N, C*p*p)
        img = self.x_embed(img.to(self._compute_dtype(x)))  # (B, N, D)
        if self.abs_pos is not None:
            img = img + self._abs_pos(gh, gw, img.dtype)
        c = self.t_embed(timestep_embedding(timesteps.expand(B), self.cfg.time_freq_dim).to(img.dtype))  # (B, D)
        # 2. refine the condition tokens (bidirectional, 1-D RoPE, padding masked), unless done already
        if refined_context is not None:
            cond = ctx.to(img.dtype)  # (B, Tc, D)
        elif self.refine_cache is not None and not torch.is_grad_enabled():
            cond = self.refine_cache.get(self.refiner, ctx, cond_mask, img.dtype,
                                         lambda: self.refine(ctx, cond_mask, img.dtype))
        else:
            cond = self.refine(ctx, cond_mask, img.dtype)
        # 3. joint single-stream blocks over [condition ; latent]
        pos = torch.cat([self._cond_positions(B, Tc, x.device), self._latent_positions(cond_mask, gh, gw)], dim=1)
        rope = rope_angles(pos, self.cfg.axes_dims, self.cfg.rope_theta)  # (B, 1, S, Dh/2, 2)
        seq = torch.cat([cond, img], dim=1)  # (B, S, D)
        full_mask = torch.cat([cond_mask, torch.ones(B, gh * gw, dtype=torch.bool, device=x.device)], dim=1)
        bias = key_padding_bias(full_mask, seq.dtype)  # (B, 1, 1, S) or None
        attn_fn = self.attn_fn if self.should_stop is None else self._interruptible(self.attn_fn, seq.shape[1])
        for block in self.blocks:
            if self.should_stop is not None:
                self.should_stop()
            if self.gradient_checkpointing and self.training:
                seq = checkpoint(block, seq, c, rope, bias, attn_fn, use_reentrant=False)
            else:
                seq = block(seq, c, rope, bias, attn_fn)
        # 4. modulated output layer on the latent tokens, then unpatchify
        shift, scale = self.adaLN_out(F.silu(c))[:, None].chunk(2, dim=-1)  # 2 x (B, 1, D)
        out = self.proj_out(self.norm_out(seq[:, Tc:]) * (1 + scale) + shift)  # (B, N, C*p*p)
        return rearrange(out, "b (h w) (c p q) -> b c (h p) (w q)", h=gh, w=gw, p=p, q=p)  # (B, C, h, w)
