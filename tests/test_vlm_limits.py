"""Prompts longer than the VLM's positions: refused with both lengths named (encode, teacher forcing),
and a rewrite cut where the positions run out (VERIFI), on the shipped toy VLM (1,024 positions)."""
import logging

import pytest

from unifusion_core.errors import UniFusionError
from unifusion_core.toy.shipped import require_shipped
from unifusion_core.vlm import Prompt, load_vlm
from unifusion_core.vlm.sampling import Sampling


@pytest.fixture(scope="module")
def vlm():
    return load_vlm(require_shipped()[1])


def _length(vlm, prompt):
    return int(vlm.build_inputs(prompt)[0]["input_ids"].shape[1])


def test_too_long_prompt_is_refused_naming_both_lengths(vlm):
    assert vlm.max_positions == 1024
    prompt = Prompt("a red circle " * 700)
    with pytest.raises(UniFusionError, match=r"is \d+ tokens .* reads at most 1024 positions") as err:
        vlm.encode(prompt)
    assert str(err.value).count("\n") == 0 and "shorten the instruction" in str(err.value)
    with pytest.raises(UniFusionError, match="reads at most 1024 positions"):
        vlm.teacher_force(Prompt("a red circle"), "a red circle " * 700)


def test_rewrite_is_cut_where_the_positions_end(vlm, caplog):
    words = "a red circle "
    n = 1
    while _length(vlm, Prompt(words * (n + 1))) <= 1024 - 5:
        n += 1
    prompt = Prompt(words * n)
    room = 1024 - _length(vlm, prompt)
    assert 1 <= room < 20
    with caplog.at_level(logging.WARNING, logger="unifusion_core.vlm.generate"):
        feats = vlm.generate(prompt, sampling=Sampling(max_new_tokens=64, min_new_tokens=40))
    assert len(feats.generated_ids[0]) == room
    assert any("cut at" in r.getMessage() and "1024 positions" in r.getMessage() for r in caplog.records)


def test_damaged_folders_get_one_sentence_with_the_path(tmp_path):
    import shutil

    from unifusion_core.vlm import build_tiny_vlm

    src = build_tiny_vlm("gemma3", tmp_path / "g")
    no_tok = shutil.copytree(src, tmp_path / "no_tokenizer")
    for name in ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json"):
        (no_tok / name).unlink(missing_ok=True)
    with pytest.raises(UniFusionError, match="Expected tokenizer files") as err:
        load_vlm(no_tok)
    assert str(no_tok) in str(err.value)
    cut = shutil.copytree(src, tmp_path / "truncated")
    weights = next(cut.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(UniFusionError, match="not a readable safetensors file") as err:
        load_vlm(cut)
    assert str(weights) in str(err.value) and "download it again" in str(err.value)
    with pytest.raises(UniFusionError, match="'flash_attention_2' cannot be used") as err:
        load_vlm(src, attn_implementation="flash_attention_2")
    msg = str(err.value)
    assert "huggingface.co" not in msg and "sdpa" in msg and msg.count("\n") == 0


def test_an_interrupt_ends_the_vlm_forward_between_blocks(vlm):
    """should_stop is asked before every decoder block, so a long prefill stops within one block."""
    asked = []

    def stop():
        asked.append(1)
        return len(asked) >= 2

    with pytest.raises(InterruptedError, match="interrupted"):
        vlm.encode(Prompt("a red circle"), layers=(1, 2, 3, 4), should_stop=stop)
    assert len(asked) == 2  # once before the prompt, once before the first block: never after the forward
    asked.clear()
    with pytest.raises(InterruptedError):
        vlm.generate(Prompt("a red circle"), sampling=Sampling(max_new_tokens=8), should_stop=stop)
    assert len(asked) == 2


def test_too_many_references_are_refused_naming_the_image_count(vlm):
    from PIL import Image

    refs = [Image.new("RGB", (32, 32), (10 * k % 255, 40, 90)) for k in range(70)]
    with pytest.raises(UniFusionError, match=r"for 70 reference image\(s\).*reads at most 1024 positions"):
        vlm.encode(Prompt("put them together", images=refs))
    vlm.encode(Prompt("put them together", images=refs[:2]))  # a few are fine
