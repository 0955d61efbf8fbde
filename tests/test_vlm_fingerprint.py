"""A VLM of the checkpoint's shapes but other weights is told apart by its weights fingerprint: the
same weights in another dtype agree, other weights differ, and the checkpoint check warns once."""
import logging
from dataclasses import replace

import torch

from unifusion_core.checkpoint import check_vlm
from unifusion_core.config import UniFusionConfig, VLMSpec
from unifusion_core.vlm import build_tiny_vlm, load_vlm


def test_fingerprint_tells_weights_apart_but_not_dtypes(tmp_path, caplog):
    a_dir = build_tiny_vlm("qwen2_5_vl", tmp_path / "a", seed=0)
    b_dir = build_tiny_vlm("qwen2_5_vl", tmp_path / "b", seed=1)
    a, a16, b = load_vlm(a_dir), load_vlm(a_dir, dtype=torch.bfloat16), load_vlm(b_dir)
    fa, fb = a.identity["fingerprint"], b.identity["fingerprint"]
    assert len(fa) == 12 and fa == a16.identity["fingerprint"] and fa != fb
    ident = a.identity
    spec = VLMSpec(ident["architecture"], ident["num_layers"], ident["hidden_size"], (1, 2), name="a", fingerprint=fa)
    cfg = UniFusionConfig.preset("tiny", spec)
    with caplog.at_level(logging.WARNING, logger="unifusion_core.checkpoint"):
        check_vlm(cfg, a.identity)  # the VLM it was trained with: quiet
        check_vlm(replace(cfg, vlm=replace(spec, fingerprint="")), b.identity)  # not recorded: quiet
        assert not [r for r in caplog.records if r.name == "unifusion_core.checkpoint"]
        check_vlm(cfg, b.identity, where="the checkpoint x.safetensors")
        check_vlm(cfg, b.identity, where="the checkpoint x.safetensors")  # once per pair
    msgs = [r.getMessage() for r in caplog.records if r.name == "unifusion_core.checkpoint"]
    assert len(msgs) == 1 and fa in msgs[0] and fb in msgs[0] and "x.safetensors" in msgs[0]
    assert UniFusionConfig.from_json(cfg.to_json()).vlm.fingerprint == fa  # travels in the checkpoint
