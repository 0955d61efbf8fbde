import types

import pytest
import torch
from torch import nn

from tiny import randomize_, tiny_config, tiny_modules
from unifusion_core.checkpoint import build_modules
from unifusion_core.errors import UniFusionError


@pytest.mark.parametrize("latent_format,channels", [("pixel", 3), ("flux16", 16)])
@pytest.mark.parametrize("h,w", [(16, 16), (16, 32), (32, 8)])
def test_output_shape_any_aspect_and_channels(latent_format, channels, h, w):
    cfg, pooler, dit = tiny_modules(tiny_config(latent_format))
    randomize_(dit)
    x = torch.randn(2, channels, h, w)
    ctx = torch.randn(2, 5, cfg.dit.cond_dim)
    out = dit(x, torch.tensor([0.3, 0.9]), ctx, torch.ones(2, 5))
    assert out.shape == x.shape
    assert torch.isfinite(out).all() and out.abs().sum() > 0


def test_padding_invariance():
    """Appending masked padding to a condition changes nothing (RoPE, refiner and joint attention)."""
    cfg, _, dit = tiny_modules()
    randomize_(dit)
    x, t = torch.randn(1, 3, 16, 16), torch.tensor([0.5])
    ctx = torch.randn(1, 6, cfg.dit.cond_dim)
    ref = dit(x, t, ctx, torch.ones(1, 6, dtype=torch.bool))
    padded = torch.cat([ctx, torch.randn(1, 9, cfg.dit.cond_dim) * 100], dim=1)
    mask = torch.tensor([[1] * 6 + [0] * 9], dtype=torch.bool)
    out = dit(x, t, padded, mask)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    # and the mask is honoured: without it the padding would change the output
    assert not torch.allclose(dit(x, t, padded, None), ref, atol=1e-3)


def test_float_mask_from_comfy_is_accepted():
    cfg, _, dit = tiny_modules()
    randomize_(dit)
    x, t, ctx = torch.randn(1, 3, 8, 8), torch.tensor([0.5]), torch.randn(1, 4, cfg.dit.cond_dim)
    m_bool = torch.tensor([[1, 1, 1, 0]], dtype=torch.bool)
    torch.testing.assert_close(dit(x, t, ctx, m_bool), dit(x, t, ctx, m_bool.float()))


def test_deterministic_per_seed():
    _, _, a = tiny_modules(seed=3)
    _, _, b = tiny_modules(seed=3)
    _, _, c = tiny_modules(seed=4)
    for (k, pa), pb, pc in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(pa, pb), k
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.state_dict().values(), c.state_dict().values()))


def test_zero_init_predicts_zero_velocity():
    """adaLN-zero + zero output layer: an untrained DiT starts as v = 0."""
    cfg, _, dit = tiny_modules()
    out = dit(torch.randn(1, 3, 8, 8), torch.tensor([0.5]), torch.randn(1, 3, cfg.dit.cond_dim))
    assert out.abs().max() == 0


def test_grad_reaches_every_parameter():
    cfg, pooler, dit = tiny_modules()
    randomize_(dit)
    randomize_(pooler)
    hidden = torch.randn(2, cfg.lap.num_layers, 5, cfg.lap.in_dim)
    mask = torch.ones(2, 5, dtype=torch.bool)
    out = dit(torch.randn(2, 3, 8, 8), torch.rand(2), pooler(hidden, mask), mask)
    out.square().mean().backward()
    for name, p in list(dit.named_parameters()) + list(pooler.named_parameters()):
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_operations_are_injected_everywhere():
    """Every Linear/norm comes from the injected namespace, and the output is unchanged by it."""
    built = []

    def counting(base):
        return type(base.__name__, (base,), {"__init__": lambda self, *a, **k: (built.append(base.__name__),
                                                                               base.__init__(self, *a, **k))[1]})

    ops = types.SimpleNamespace(Linear=counting(nn.Linear), RMSNorm=counting(nn.RMSNorm),
                                LayerNorm=counting(nn.LayerNorm))
    cfg = tiny_config()
    _, ref_pooler, ref = tiny_modules(cfg)
    randomize_(ref)
    pooler, dit = build_modules(cfg, operations=ops)
    dit.load_state_dict(ref.state_dict())
    layers = [m for m in list(dit.modules()) + list(pooler.modules())
              if isinstance(m, (nn.Linear, nn.RMSNorm, nn.LayerNorm))]
    assert layers and all(type(m) in (ops.Linear, ops.RMSNorm, ops.LayerNorm) for m in layers)
    assert len(built) == len(layers)
    x, t, ctx = torch.randn(1, 3, 8, 8), torch.tensor([0.4]), torch.randn(1, 3, cfg.dit.cond_dim)
    torch.testing.assert_close(dit(x, t, ctx), ref(x, t, ctx))


def test_injected_attention_function_is_used():
    calls = []

    def attn(q, k, v, heads, mask=None, skip_reshape=False, **_):
        calls.append(q.shape)
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).flatten(2)

    cfg = tiny_config()
    _, _, ref = tiny_modules(cfg)
    randomize_(ref)
    _, dit = build_modules(cfg, attn_fn=attn)
    dit.load_state_dict(ref.state_dict())
    x, t, ctx = torch.randn(1, 3, 8, 8), torch.tensor([0.4]), torch.randn(1, 3, cfg.dit.cond_dim)
    torch.testing.assert_close(dit(x, t, ctx), ref(x, t, ctx))
    assert len(calls) == cfg.dit.depth + cfg.dit.refiner_depth


def test_bf16_close_to_fp32():
    cfg, _, dit = tiny_modules()
    randomize_(dit, std=0.1)
    x, t, ctx = torch.randn(1, 3, 16, 16), torch.tensor([0.4]), torch.randn(1, 4, cfg.dit.cond_dim)
    ref = dit(x, t, ctx)
    low = dit.to(torch.bfloat16)(x.bfloat16(), t, ctx.bfloat16()).float()
    assert (low - ref).abs().mean() / ref.abs().mean() < 0.05


def test_bad_inputs_are_one_sentence():
    cfg, _, dit = tiny_modules()
    with pytest.raises(UniFusionError, match="multiples of 4"):
        dit(torch.randn(1, 3, 10, 16), torch.tensor([0.5]), torch.randn(1, 3, cfg.dit.cond_dim))
    with pytest.raises(UniFusionError, match=r"\(B, 3, h, w\)"):
        dit(torch.randn(1, 16, 16, 16), torch.tensor([0.5]), torch.randn(1, 3, cfg.dit.cond_dim))
    with pytest.raises(UniFusionError, match="conditioning"):
        dit(torch.randn(1, 3, 16, 16), torch.tensor([0.5]), torch.randn(1, 3, 7))


def test_refining_once_equals_refining_every_call():
    cfg, _, dit = tiny_modules()
    randomize_(dit)
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([0.2, 0.7])
    ctx, mask = torch.randn(2, 5, cfg.dit.cond_dim), torch.tensor([[1] * 5, [1] * 3 + [0] * 2], dtype=torch.bool)
    refined = dit.refine(ctx, mask)
    assert refined.shape == (2, 5, cfg.dit.hidden_size)
    torch.testing.assert_close(dit(x, t, attention_mask=mask, refined_context=refined), dit(x, t, ctx, mask))
    with pytest.raises(UniFusionError, match=f"\\(B, T, {cfg.dit.hidden_size}\\)"):
        dit(x, t, attention_mask=mask, refined_context=torch.randn(2, 5, 7))


def test_gradient_checkpointing_gives_the_same_gradients():
    cfg, _, dit = tiny_modules()
    randomize_(dit)
    x, t, ctx = torch.randn(2, 3, 8, 8), torch.tensor([0.3, 0.6]), torch.randn(2, 4, cfg.dit.cond_dim)
    dit.train()
    dit(x, t, ctx).square().mean().backward()
    ref = {n: p.grad.clone() for n, p in dit.named_parameters()}
    dit.zero_grad()
    dit.gradient_checkpointing = True
    dit(x, t, ctx).square().mean().backward()
    for n, p in dit.named_parameters():
        torch.testing.assert_close(p.grad, ref[n], msg=n)


def test_eager_attention_matches_sdpa_in_value_and_gradient():
    """The trainer's `--attention eager` (faster CPU backward) trains the same function as SDPA."""
    from unifusion_core.blocks import eager_attention

    cfg = tiny_config()
    _, _, ref = tiny_modules(cfg)
    randomize_(ref)
    _, dit = build_modules(cfg, attn_fn=eager_attention)
    dit.load_state_dict(ref.state_dict())
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([0.4, 0.7])
    ctx, mask = torch.randn(2, 5, cfg.dit.cond_dim), torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    outs = []
    for model in (ref, dit):
        model.zero_grad()
        out = model(x, t, ctx, mask)
        out.square().sum().backward()
        outs.append((out, [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(outs[1][0], outs[0][0], atol=1e-5, rtol=1e-4)
    for g_eager, g_sdpa in zip(outs[1][1], outs[0][1]):
        # float sums in another order: differences ~1e-5 of the largest gradient entry
        torch.testing.assert_close(g_eager, g_sdpa, atol=1e-4 * float(g_sdpa.abs().max()) + 1e-7, rtol=1e-3)


def test_absolute_position_table_starts_as_a_no_op_and_then_moves_the_output():
    """abs_pos_grid adds a learned (G, G, D) table to the latent tokens: zero at init (so adding it to a
    trained checkpoint changes nothing), position-dependent once trained, resized for other grids."""
    import torch
    from dataclasses import replace as dc_replace

    from tiny import randomize_, tiny_modules

    cfg, _, plain = tiny_modules()
    cfg_pos = dc_replace(cfg, dit=dc_replace(cfg.dit, abs_pos_grid=4))
    _, _, dit = tiny_modules(cfg_pos)
    randomize_(plain, seed=3)
    missing, unexpected = dit.load_state_dict(plain.state_dict(), strict=False)
    assert missing == ["abs_pos"] and not unexpected
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([0.3, 0.7])
    ctx, mask = torch.randn(2, 5, cfg.dit.cond_dim), torch.ones(2, 5)
    with torch.no_grad():
        assert torch.equal(dit(x, t, ctx, mask), plain(x, t, ctx, mask))
        dit.abs_pos.normal_()
        moved = dit(x, t, ctx, mask)
        assert (moved - plain(x, t, ctx, mask)).abs().max() > 1e-3
        bigger = dit(torch.randn(1, 3, 32, 24), t[:1], ctx[:1], mask[:1])  # 8 x 6 grid from the 4 x 4 table
    assert bigger.shape == (1, 3, 32, 24) and torch.isfinite(bigger).all()


def _small_dit(depth: int, randomize: bool = True):
    from unifusion_core.config import DiTConfig
    from unifusion_core.dit import UniFusionDiT

    torch.manual_seed(0)
    dit = UniFusionDiT(DiTConfig(hidden_size=32, num_heads=2, axes_dims=(4, 6, 6), cond_dim=16, depth=depth))
    dit.init_weights()
    if randomize:  # past adaLN-zero's identity start, so every block changes the output
        for q in dit.parameters():
            q.data.normal_(0, 0.2)
    return dit


def test_refiner_cache_reuses_only_an_equal_condition_with_the_same_weights():
    from unifusion_core.dit import RefinerCache

    dit = _small_dit(depth=1)
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([0.5, 0.5])
    ctx, mask = torch.randn(2, 5, 16), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]).float()
    with torch.no_grad():
        want, want_t = dit(x, t, ctx, mask), dit(x, t * 0.3, ctx, mask)
        dit.refine_cache = cache = RefinerCache()
        assert torch.equal(dit(x, t, ctx, mask), want) and cache.hits == 0
        assert torch.equal(dit(x, t * 0.3, ctx.clone(), mask), want_t)
        assert cache.hits == 1  # an equal condition (another tensor) hits, whatever the timestep
        other = ctx.clone()
        other[0, 0, 0] += 1e-3
        dit.refine_cache = None
        want_other = dit(x, t, other, mask)
        dit.refine_cache = cache
        assert torch.equal(dit(x, t, other, mask), want_other) and cache.hits == 1  # a changed value misses
        dit.refine_cache = None
        want_mask = dit(x, t, ctx, torch.ones(2, 5))
        dit.refine_cache = cache
        assert torch.equal(dit(x, t, ctx, torch.ones(2, 5)), want_mask)  # another mask misses
        before = cache.hits
        dit.refiner.in_proj.weight.add_(0.1)  # new weights (in place: the version moves)
        dit.refine_cache = None
        want_new = dit(x, t, ctx, mask)
        dit.refine_cache = cache
        assert torch.equal(dit(x, t, ctx, mask), want_new) and cache.hits == before
        cache.enabled = False
        dit(x, t, ctx, mask)
        assert cache.hits == before


def test_should_stop_is_asked_between_blocks():
    dit = _small_dit(depth=3, randomize=False)
    calls = []

    def stop():
        calls.append(1)
        if len(calls) == 2:
            raise InterruptedError("stop")

    dit.should_stop = stop
    with pytest.raises(InterruptedError):
        dit(torch.randn(1, 3, 8, 8), torch.tensor([0.5]), torch.randn(1, 4, 16))
    assert len(calls) == 2  # the first block ran, the second was never started


def test_long_attention_runs_in_query_chunks_that_an_interrupt_can_split():
    dit = _small_dit(depth=2)
    x, t = torch.randn(1, 3, 32, 32), torch.tensor([0.5])  # 64 latent tokens + 6 condition tokens
    ctx, mask = torch.randn(1, 6, 16), torch.tensor([[1, 1, 1, 1, 0, 0]]).float()
    with torch.no_grad():
        want = dit(x, t, ctx, mask)
        calls = []
        dit.should_stop = lambda: calls.append(1)
        dit.interrupt_chunk_pairs = 70 * 16  # 16 queries per chunk: 5 chunks per block
        got = dit(x, t, ctx, mask)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert len(calls) == 2 * (1 + 5)  # per block: once before it, once per query chunk
