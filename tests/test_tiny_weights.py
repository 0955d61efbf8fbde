"""Tiny test VLMs take their weights from the project's seeded generator, not from transformers' module
initialisation order: the same seed gives the same bits on every supported transformers version.

The digests below were written by transformers 5.24.0 and equal what 4.57.6 writes (this file runs in
`make test` and in `make test-compat`). A change of the generator, of a family's config or of a
transformers version's module layout that changes any weight fails here.
"""
import pytest

from unifusion_core.vlm import FAMILIES, build_tiny_vlm
from unifusion_core.vlm.tiny import canonical_name, weights_digest

DIGESTS = {  # seed 0, default size
    "qwen2_5_vl": "46c183f006a1de157620aa6b95a7db210abdc27b646fe152c080552bcf087658",
    "qwen3_vl": "31320888e65e8f611232d0928144a5013f8069aed809b9240667a54bef66ac5c",
    "internvl": "8acd6285f8125f643db118dc88d7c6b60ccc08b10ca907c67f9e478fbd3ad278",
    "gemma3": "3d11b2a9b91dbeca434a4e6dd84dfd791529f818ec846ca18d7ab13c5187a0ab",
    "smolvlm": "08fb1f91a19f319274f4f3e8580263c343b4e2d9dbf5b791f1796a9ad113492b",
    "llm": "8a11fcc7b8d42674c1b3bdaaad115cb39c787f025ae51d8499bee482fc3ed285",
}


def test_every_family_has_a_recorded_digest():
    assert set(DIGESTS) == set(FAMILIES)


@pytest.mark.parametrize("family", sorted(DIGESTS))
def test_same_seed_same_weights_on_every_transformers_version(family, tmp_path):
    assert weights_digest(build_tiny_vlm(family, tmp_path / "a", seed=0)) == DIGESTS[family]


def test_the_seed_changes_the_weights_and_rebuilding_does_not(tmp_path):
    a = weights_digest(build_tiny_vlm("llm", tmp_path / "a", seed=0))
    b = weights_digest(build_tiny_vlm("llm", tmp_path / "b", seed=0))
    c = weights_digest(build_tiny_vlm("llm", tmp_path / "c", seed=1))
    assert a == b != c


def test_weights_are_random_where_transformers_draws_and_constant_where_it_sets():
    from safetensors.torch import load_file
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        tensors = load_file(str(build_tiny_vlm("llm", d, seed=0) / "model.safetensors"))
    emb = next(v for k, v in tensors.items() if "embed_tokens" in k)
    assert 0.015 < float(emb.std()) < 0.025 and float(emb.abs().max()) <= 0.02 * 3 ** 0.5 + 1e-7
    norm = next(v for k, v in tensors.items() if k.endswith("input_layernorm.weight"))
    assert bool((norm == 1).all())  # Qwen2 RMSNorm scales start at one


def test_canonical_names_drop_version_specific_wrappers():
    assert canonical_name("vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight") == \
        canonical_name("vision_tower.encoder.layers.0.mlp.fc1.weight")
    assert canonical_name("model.layers.1.self_attn.q_proj.weight") != canonical_name("model.layers.2.self_attn.q_proj.weight")
