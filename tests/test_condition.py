"""The condition module: kept roles, the VERIFI check, the null condition and condition dropout."""
import pytest
import torch

from unifusion_core.condition import PLAIN_ROLES, VERIFI_ROLES, kept_states, null_condition, pool, roles_for
from unifusion_core.checkpoint import build_modules
from unifusion_core.config import UniFusionConfig, VLMSpec
from unifusion_core.errors import UniFusionError
from unifusion_core.vlm import Prompt, build_tiny_vlm, load_vlm


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    vlm = load_vlm(build_tiny_vlm("qwen2_5_vl", tmp_path_factory.mktemp("c") / "vlm"))
    ident = vlm.identity
    cfg = UniFusionConfig.preset("tiny", VLMSpec(ident["architecture"], ident["num_layers"], ident["hidden_size"], (1, 3)))
    torch.manual_seed(0)
    pooler, _ = build_modules(cfg)
    pooler.init_weights()
    return cfg, pooler.eval(), vlm


def test_kept_states_take_the_checkpoint_layers_and_roles(setup):
    cfg, pooler, vlm = setup
    feats = vlm.encode([Prompt("a red circle", system="be brief")], layers=(0, 1, 2, 3))
    hidden, mask = kept_states(cfg, feats, PLAIN_ROLES)
    assert hidden.shape[1] == 2  # layers (1, 3) of the four extracted
    assert 0 < int(mask.sum()) < feats.hidden.shape[2]  # the system turn and template tokens are dropped
    torch.testing.assert_close(hidden[0, 0], feats.select((1,)).keep(PLAIN_ROLES)[0][0, 0])
    tokens, m = pool(pooler, cfg, feats)
    assert tokens.shape[:2] == mask.shape and torch.equal(m, mask)
    with pytest.raises(UniFusionError, match="pools VLM layers"):
        kept_states(cfg, vlm.encode([Prompt("x")], layers=(0, 2)))
    with pytest.raises(UniFusionError, match="needs generated tokens"):
        kept_states(cfg, feats, VERIFI_ROLES)


def test_null_condition_and_dropout():
    cond = torch.randn(3, 4, 8)
    assert torch.equal(null_condition(cond), torch.zeros_like(cond))
    drop = torch.tensor([True, False, True])
    out = null_condition(cond, drop)
    assert torch.equal(out[1], cond[1]) and not out[0].any() and not out[2].any()


def test_roles_for():
    assert roles_for("plain") == PLAIN_ROLES and roles_for("verifi") == VERIFI_ROLES
    with pytest.raises(UniFusionError, match="'plain' or 'verifi'"):
        roles_for("bogus")
