"""Loading errors and options of ``load_vlm`` (no downloads: folders are made here)."""
import importlib.util
import json
import logging
import sys

import pytest
import torch

from unifusion_core.errors import UniFusionError
from unifusion_core.vlm import ImageDetail, Prompt, build_tiny_vlm, load_vlm
from unifusion_core.vlm.loader import resolve_dtype


@pytest.fixture(scope="module")
def llm_dir(tmp_path_factory):
    return build_tiny_vlm("llm", tmp_path_factory.mktemp("llm"))


def test_missing_folder_and_config(tmp_path):
    with pytest.raises(UniFusionError, match="no such folder"):
        load_vlm(tmp_path / "nope")
    with pytest.raises(UniFusionError, match=f"config.json.*{tmp_path}"):
        load_vlm(tmp_path)


def test_pickle_only_weights_are_refused(tmp_path, llm_dir):
    (tmp_path / "config.json").write_text((llm_dir / "config.json").read_text())
    (tmp_path / "pytorch_model.bin").write_bytes(b"\0")
    with pytest.raises(UniFusionError, match=f"{tmp_path}.*pytorch_model.bin"):
        load_vlm(tmp_path)
    (tmp_path / "pytorch_model.bin").unlink()
    with pytest.raises(UniFusionError, match="found none"):
        load_vlm(tmp_path)


@pytest.mark.parametrize("config, message", [
    ({"model_type": "llava", "architectures": ["LlavaForConditionalGeneration"]}, "'Llava"),
    ({"model_type": "bert", "architectures": ["BertModel"]}, "not a supported VLM family"),
    ({"model_type": "internvl_chat", "architectures": ["InternVLChatModel"]}, "-hf"),
    ({"model_type": "mystery", "architectures": ["MysteryForCausalLM"]}, "'mystery'"),
])
def test_unsupported_architecture(tmp_path, config, message):
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(UniFusionError, match=message) as err:
        load_vlm(tmp_path)
    assert str(tmp_path) in str(err.value)


def test_dtype_options(llm_dir):
    assert resolve_dtype(None, "cpu", None) is torch.float32
    assert resolve_dtype("auto", "cpu", None) is torch.float32
    assert resolve_dtype("bf16", "cpu", None) is torch.bfloat16
    assert resolve_dtype(torch.float16, "cpu", None) is torch.float16
    with pytest.raises(UniFusionError, match="dtype should be"):
        resolve_dtype("int8", "cpu", None)
    encoder = load_vlm(llm_dir, dtype="bf16")
    feats = encoder.encode("a red circle", layers=(2,))
    assert feats.hidden.dtype == torch.bfloat16 and feats.hidden.shape[:2] == (1, 1)


def test_image_detail_validation():
    with pytest.raises(UniFusionError, match="positive int"):
        ImageDetail(max_pixels=0)
    with pytest.raises(UniFusionError, match="positive int"):
        ImageDetail(max_tiles=1.5)


def test_prompt_type_errors(llm_dir):
    encoder = load_vlm(llm_dir)
    with pytest.raises(UniFusionError, match="Prompt or a str"):
        encoder.encode([3])
    with pytest.raises(UniFusionError, match="at least one prompt"):
        encoder.encode([])
    with pytest.raises(UniFusionError, match="Prompt.instruction"):
        encoder.encode(Prompt(None))


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is not None,
                    reason="the image-only processor fallback only runs without torchvision")
def test_processor_without_torchvision_warns(tmp_path, caplog):
    path = build_tiny_vlm("qwen2_5_vl", tmp_path)
    with caplog.at_level(logging.WARNING, logger="unifusion_core.vlm.loader"):
        encoder = load_vlm(path)
    assert "torchvision is not installed" in caplog.text
    assert encoder.processor.video_processor is None


def test_build_tiny_is_deterministic(tmp_path, llm_dir):
    again = build_tiny_vlm("llm", tmp_path)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (again / name).read_bytes() == (llm_dir / name).read_bytes()


def test_build_tiny_rejects_unknown_family(tmp_path):
    with pytest.raises(UniFusionError, match="Unknown VLM family 'nope'"):
        build_tiny_vlm("nope", tmp_path)


def test_import_does_not_pull_comfy():
    import unifusion_core.vlm  # noqa: F401
    assert not [m for m in sys.modules if m == "comfy" or m.startswith(("comfy.", "folder_paths"))]
