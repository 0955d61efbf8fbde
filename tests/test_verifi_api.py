"""verifi.py: system prompts (presets, checkpoint prompt, free text), rewrite / from_text, and the
standalone pipeline's VERIFI entry point."""
import logging
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from tiny import randomize_
from unifusion_core import verifi
from unifusion_core.checkpoint import build_modules
from unifusion_core.config import UniFusionConfig, VLMSpec
from unifusion_core.errors import UniFusionError
from unifusion_core.pipeline import UniFusionPipeline
from unifusion_core.vlm import VERIFI_ROLES, Role, build_tiny_vlm, load_vlm
from unifusion_core.vlm.prefix_cache import PrefixCache
from unifusion_core.vlm.sampling import Sampling


@pytest.fixture(scope="module")
def vlm(tmp_path_factory):
    return load_vlm(build_tiny_vlm("qwen2_5_vl", tmp_path_factory.mktemp("api-qwen")))


@pytest.fixture(scope="module")
def cfg(vlm):
    ident = vlm.identity
    spec = VLMSpec(ident["architecture"], ident["num_layers"], ident["hidden_size"], (2, 4))
    return replace(UniFusionConfig.preset("tiny", spec), system_prompts={"t2i": "Trained T2I prompt."})


def _image(seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8))


def test_system_prompt_precedence(cfg, caplog):
    assert set(verifi.PRESETS) == set(verifi.TASKS) == {"t2i", "edit", "multi_ref"}
    assert verifi.system_prompt("edit") == verifi.PRESETS["edit"]
    assert verifi.system_prompt("t2i", cfg) == "Trained T2I prompt."
    assert verifi.system_prompt("t2i", cfg, override="  Be brief. ") == "Be brief."
    assert verifi.system_prompt("t2i", cfg, override="   ") == "Trained T2I prompt."
    with caplog.at_level(logging.WARNING, logger="unifusion_core.verifi"):
        assert verifi.system_prompt("multi_ref", cfg) == verifi.PRESETS["multi_ref"]
    assert "not for 'multi_ref'" in caplog.text
    with pytest.raises(UniFusionError, match="one of t2i, edit, multi_ref"):
        verifi.system_prompt("inpaint")
    assert [verifi.task_for(n) for n in (0, 1, 3)] == ["t2i", "edit", "multi_ref"]


def test_rewrite_uses_task_prompt_and_checkpoint_layers(vlm, cfg):
    feats = verifi.rewrite(vlm, "a red circle", [_image()], cfg=cfg,
                           sampling=Sampling(max_new_tokens=5, min_new_tokens=5))
    assert feats.layers == (2, 4) and len(feats.texts) == 1
    system_ids = feats.input_ids[0][feats.roles[0] == Role.SYSTEM]
    assert vlm.tokenizer.decode(system_ids).strip() == verifi.PRESETS["edit"]
    same = verifi.from_text(vlm, list(feats.generated_ids[0]), "a red circle", [_image()], cfg=cfg)
    assert torch.equal(same.input_ids, feats.input_ids)
    torch.testing.assert_close(same.keep(VERIFI_ROLES)[0], feats.keep(VERIFI_ROLES)[0],
                               atol=1e-5, rtol=1e-5)
    edited = verifi.from_text(vlm, "A red circle on a blue square.", "a red circle", [_image()],
                              cfg=cfg, system="Be brief.", prefix_cache=PrefixCache())
    assert edited.texts == ("A red circle on a blue square.",)
    assert vlm.tokenizer.decode(edited.input_ids[0][edited.roles[0] == Role.SYSTEM]) == "Be brief."


def test_pipeline_encode_verifi(vlm, cfg):
    torch.manual_seed(0)
    pooler, dit = build_modules(cfg)
    pooler.init_weights()
    dit.init_weights()
    randomize_(pooler, std=0.1)
    pipe = UniFusionPipeline(cfg, pooler, dit, vlm)
    sampling = Sampling(max_new_tokens=4, min_new_tokens=4)
    cond, mask, texts = pipe.encode_verifi(["a red circle", "a cat"], [[_image()], []],
                                           sampling=sampling)
    n_image = int((vlm.encode(verifi.verifi_prompt("a red circle", [_image()])).roles
                   == Role.IMAGE).sum())
    assert mask.sum(1).tolist() == [n_image + 4, 4] and cond.shape[:2] == mask.shape
    assert len(texts) == 2
    forced, forced_mask, forced_texts = pipe.encode_verifi(["a red circle", "a cat"],
                                                           [[_image()], []], rewrites=texts)
    assert forced_texts == texts and forced_mask.shape[0] == 2
