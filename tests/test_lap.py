import pytest
import torch
from dataclasses import replace

from tiny import randomize_, tiny_config
from unifusion_core.lap import LastLayerPooler, LayerwiseAttentionPooling, build_pooler


def _lap(kind="lap", width=None):
    cfg = tiny_config().lap
    cfg = replace(cfg, kind=kind, width=width or cfg.width)
    torch.manual_seed(0)
    m = build_pooler(cfg)
    m.init_weights()
    return cfg, randomize_(m)


@pytest.mark.parametrize("kind,klass", [("lap", LayerwiseAttentionPooling), ("last_layer", LastLayerPooler)])
def test_shapes_and_padding_is_zero(kind, klass):
    cfg, m = _lap(kind)
    assert isinstance(m, klass)
    hidden = torch.randn(2, cfg.num_layers, 7, cfg.in_dim)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, 4:] = False
    out = m(hidden, mask)
    assert out.shape == (2, 7, cfg.out_dim)
    assert out[1, 4:].abs().max() == 0 and out[1, :4].abs().min() > 0


def test_lap_is_per_token_and_ignores_padding():
    cfg, m = _lap()
    hidden = torch.randn(1, cfg.num_layers, 5, cfg.in_dim)
    ref = m(hidden, torch.ones(1, 5, dtype=torch.bool))
    padded = torch.cat([hidden, 50 * torch.randn(1, cfg.num_layers, 3, cfg.in_dim)], dim=2)
    out = m(padded, torch.tensor([[1] * 5 + [0] * 3], dtype=torch.bool))
    torch.testing.assert_close(out[:, :5], ref)
    # a token's output depends only on that token's own layer states
    single = m(hidden[:, :, 2:3], torch.ones(1, 1, dtype=torch.bool))
    torch.testing.assert_close(single[:, 0], ref[:, 2])


def test_layer_dropout_equals_zeroed_pool_weights():
    """Dropping layers through layer_keep is exactly zeroing their FC pooling weights (paper §6.7)."""
    cfg, m = _lap()
    hidden = torch.randn(2, cfg.num_layers, 6, cfg.in_dim)
    mask = torch.ones(2, 6, dtype=torch.bool)
    keep = torch.tensor([True, False, True, False])
    dropped = m(hidden, mask, layer_keep=keep)
    assert not torch.allclose(dropped, m(hidden, mask, layer_keep=torch.tensor([True, True, True, False])))
    with torch.no_grad():
        m.pool_weight[~keep] = 0
    torch.testing.assert_close(dropped, m(hidden, mask))


def test_layer_dropout_of_all_but_one_layer_still_sees_others_through_attention():
    """The blocks mix layers before pooling: keeping only layer 0 still depends on layer 3's states."""
    cfg, m = _lap()
    hidden = torch.randn(1, cfg.num_layers, 4, cfg.in_dim)
    mask = torch.ones(1, 4, dtype=torch.bool)
    keep = torch.tensor([True, False, False, False])
    a = m(hidden, mask, layer_keep=keep)
    hidden2 = hidden.clone()
    hidden2[:, 3] += 1.0
    assert not torch.allclose(a, m(hidden2, mask, layer_keep=keep))


def test_width_projection_and_layer_weights():
    cfg, m = _lap(width=32)
    assert m.in_proj is not None
    out = m(torch.randn(1, cfg.num_layers, 3, cfg.in_dim), torch.ones(1, 3, dtype=torch.bool))
    assert out.shape == (1, 3, cfg.out_dim)
    fresh = build_pooler(cfg)
    fresh.init_weights()
    torch.testing.assert_close(fresh.layer_weights(), torch.full((cfg.num_layers,), 1 / cfg.num_layers))


def test_last_layer_pooler_uses_only_the_last_layer():
    cfg, m = _lap("last_layer")
    hidden = torch.randn(1, cfg.num_layers, 3, cfg.in_dim)
    mask = torch.ones(1, 3, dtype=torch.bool)
    changed = hidden.clone()
    changed[:, :-1] = torch.randn_like(changed[:, :-1])
    torch.testing.assert_close(m(hidden, mask), m(changed, mask))


def test_layer_attention_maps_for_the_inspector():
    cfg, m = _lap()
    hidden = torch.randn(2, cfg.num_layers, 5, cfg.in_dim)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1] * 5], dtype=torch.bool)
    before = m(hidden, mask)
    maps = m.layer_attention(hidden, mask)
    assert len(maps) == cfg.blocks and all(a.shape == (cfg.num_layers, cfg.num_layers) for a in maps)
    torch.testing.assert_close(maps[0].sum(-1), torch.ones(cfg.num_layers))
    torch.testing.assert_close(m(hidden, mask), before)
    assert _lap("last_layer")[1].layer_attention(hidden, mask) == []
