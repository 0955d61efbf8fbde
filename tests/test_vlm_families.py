"""Contract tests of the VLM backend on a tiny random model of every family (no downloads)."""
import numpy as np
import pytest
import torch
from PIL import Image

from unifusion_core.errors import UniFusionError
from unifusion_core.vlm import (FAMILIES, Features, ImageDetail, Prompt, Role, build_tiny_vlm,
                                load_vlm)

MULTIMODAL = [f for f in FAMILIES if f != "llm"]
SYSTEM = "You are a helpful assistant."
INSTRUCTION = "a red circle on a blue square"
GENERATED = "A picture of a red circle."


def _image(height=100, width=80, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.fixture(scope="module", params=FAMILIES)
def encoder(request, tmp_path_factory):
    family = request.param
    return load_vlm(build_tiny_vlm(family, tmp_path_factory.mktemp(family)))


@pytest.fixture(scope="module", params=MULTIMODAL)
def mm_encoder(request, tmp_path_factory):
    return load_vlm(build_tiny_vlm(request.param, tmp_path_factory.mktemp(f"mm-{request.param}")))


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    """Every multimodal family, loaded once, for the tests that name their family."""
    return {f: load_vlm(build_tiny_vlm(f, tmp_path_factory.mktemp(f"named-{f}"))) for f in
            ("qwen2_5_vl", "internvl", "smolvlm")}


def _full_prompt(encoder, images=1):
    pics = [_image(seed=i) for i in range(images)] if encoder.multimodal else []
    return Prompt(INSTRUCTION, system=SYSTEM, images=pics, generated=GENERATED)


def _processor_image_tokens(encoder, images):
    """What the family's processor inserts for ``images``, called directly with a plain chat."""
    messages = [{"role": "user", "content": [{"type": "image"}] * len(images)
                 + [{"type": "text", "text": "hi"}]}]
    text = encoder.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = encoder.processor(text=[text], images=images, return_tensors="pt")["input_ids"]
    return int((ids == encoder.image_token_id).sum())


# --------------------------------------------------------------------------------------------------
# shapes, roles, mask
# --------------------------------------------------------------------------------------------------

def test_identity_and_frozen(encoder):
    ident = encoder.identity
    assert ident["family"] == encoder.family and ident["num_layers"] == 4
    assert ident["hidden_size"] == 64 and ident["architecture"].endswith(("ForConditionalGeneration",
                                                                          "ForCausalLM"))
    assert not encoder.model.training
    assert not any(p.requires_grad for p in encoder.model.parameters())
    assert encoder.default_layers() == (1, 2, 3, 4)
    assert (encoder.processor is None) == (encoder.family == "llm")


def test_features_shapes_roles_and_mask(encoder):
    feats = encoder.encode([_full_prompt(encoder), "short"], layers=(0, 2, 4))
    assert isinstance(feats, Features)
    B, Lv, T, Dv = feats.hidden.shape
    assert (B, Lv, Dv) == (2, 3, 64) and feats.layers == (0, 2, 4)
    assert feats.hidden.dtype == torch.float32 and feats.identity == encoder.identity
    n0, n1 = feats.mask.sum(1).tolist()
    assert n0 == T > n1 and feats.mask[1, :n1].all() and not feats.mask[1, n1:].any()
    assert (feats.roles[1, n1:] == Role.TEMPLATE).all()
    assert (feats.hidden[1, :, n1:] == 0).all()
    decode = encoder.tokenizer.decode
    for row, role, text in ((0, Role.SYSTEM, SYSTEM), (0, Role.INSTRUCTION, INSTRUCTION),
                            (0, Role.GENERATED, GENERATED), (1, Role.INSTRUCTION, "short")):
        assert decode(feats.input_ids[row][feats.roles[row] == role]).strip() == text
    assert not (feats.roles[1] == Role.SYSTEM).any() and not (feats.roles[1] == Role.GENERATED).any()


def test_template_tokens_never_carry_text_roles(encoder):
    feats = encoder.encode(_full_prompt(encoder))
    specials = set(encoder.tokenizer.all_special_ids)
    for token, role in zip(feats.input_ids[0].tolist(), feats.roles[0].tolist()):
        if token in specials and token != encoder.image_token_id:
            assert role == Role.TEMPLATE


@pytest.mark.parametrize("count", [1, 3])
def test_image_tokens_match_processor(mm_encoder, count):
    encoder = mm_encoder
    images = [_image(seed=i) for i in range(count)]
    feats = encoder.encode(Prompt(INSTRUCTION, images=images))
    found = int((feats.roles[0] == Role.IMAGE).sum())
    assert found == _processor_image_tokens(encoder, images) > 0
    assert found == int((feats.input_ids[0] == encoder.image_token_id).sum())


def test_text_only_family_rejects_images(tmp_path):
    encoder = load_vlm(build_tiny_vlm("llm", tmp_path / "llm"))
    with pytest.raises(UniFusionError, match="cannot take images"):
        encoder.encode(Prompt(INSTRUCTION, images=[_image()]))


def test_batch_padding_invariance(encoder):
    a = _full_prompt(encoder)
    longer = Prompt(INSTRUCTION + " and a green triangle left of a yellow star " * 3,
                    system=SYSTEM, images=a.images * 2)
    alone = encoder.encode([a])
    batched = encoder.encode([a, longer])
    n = int(alone.mask[0].sum())
    assert batched.mask[1].sum() > n
    torch.testing.assert_close(batched.hidden[0, :, :n], alone.hidden[0, :, :n], atol=1e-5, rtol=0)
    assert torch.equal(batched.roles[0, :n], alone.roles[0])


def test_selected_layers_equal_hf_hidden_states(encoder):
    prompt = _full_prompt(encoder)
    num_layers = encoder.identity["num_layers"]
    feats = encoder.encode(prompt, layers=tuple(range(num_layers + 1)))
    inputs, _ = encoder.build_inputs(prompt)
    last = {}

    def keep_last(module, args, out):
        last["h"] = out[0] if isinstance(out, tuple) else out

    handle = encoder.blocks[-1].register_forward_hook(keep_last)
    try:
        with torch.no_grad():
            out = encoder.model(**inputs, output_hidden_states=True, use_cache=False)
    finally:
        handle.remove()
    for k in range(num_layers):  # HF's hidden_states[num_layers] is after the final norm
        torch.testing.assert_close(feats.hidden[0, k], out.hidden_states[k][0], atol=1e-5, rtol=0)
    torch.testing.assert_close(feats.hidden[0, num_layers], last["h"][0], atol=1e-5, rtol=0)


def test_forward_stops_after_deepest_layer(encoder):
    calls = []
    handles = [b.register_forward_hook(lambda m, a, o, i=i: calls.append(i))
               for i, b in enumerate(encoder.blocks)]
    try:
        encoder.encode(_full_prompt(encoder), layers=(0, 2))
        assert calls == [0, 1]
        calls.clear()
        encoder.encode(_full_prompt(encoder), layers=(0,))
        assert calls == []
    finally:
        for h in handles:
            h.remove()


def test_progress_and_interrupt(encoder):
    seen = []
    encoder.encode(["a", "b", "c"], progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 3), (2, 3), (3, 3)]
    polls = iter([False, True])
    with pytest.raises(InterruptedError):
        encoder.encode(["a", "b", "c"], should_stop=lambda: next(polls))


def test_empty_instruction_and_string_layer_spec(encoder):
    feats = encoder.encode(Prompt(""), layers="every 2 from 1")
    assert feats.layers == (1, 3) and feats.hidden.shape[:2] == (1, 2)
    assert not (feats.roles == Role.INSTRUCTION).any() and feats.mask.all()


def test_special_token_in_text_is_rejected(encoder):
    with pytest.raises(UniFusionError, match="special token"):
        encoder.encode(Prompt(f"draw {encoder.tokenizer.eos_token} now"))


# --------------------------------------------------------------------------------------------------
# images: ComfyUI tensors, max_pixels, max_tiles
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", ["qwen2_5_vl", "smolvlm"])
def test_comfy_image_tensors(encoders, family):
    encoder = encoders[family]
    pil = _image(64, 48)
    one = torch.from_numpy(np.array(pil)).float()[None] / 255  # (1, H, W, 3)
    count = lambda images: int((encoder.encode(Prompt("x", images=images)).roles == Role.IMAGE).sum())
    assert count([one]) == count([pil]) > 0
    assert count([one.expand(3, -1, -1, -1)]) == 3 * count([pil])
    assert count([one[0]]) == count([pil])  # (H, W, C)
    with pytest.raises(UniFusionError, match="ComfyUI IMAGE"):
        encoder.encode(Prompt("x", images=[torch.zeros(2, 3, 8, 8, 5)]))


def test_max_pixels_reduces_qwen_image_tokens(encoders):
    encoder = encoders["qwen2_5_vl"]
    big = _image(112, 112)
    count = lambda detail: int((encoder.encode(Prompt("x", images=[big], detail=detail)).roles
                                == Role.IMAGE).sum())
    full, small = count(None), count(ImageDetail(max_pixels=56 * 56))
    assert small < full
    assert count([ImageDetail(max_pixels=56 * 56)]) == small
    with pytest.raises(UniFusionError, match="one per"):
        count([ImageDetail(), ImageDetail()])


@pytest.mark.parametrize("family", ["internvl", "smolvlm"])
def test_max_tiles_reduces_tiles(encoders, family):
    encoder = encoders[family]
    wide = _image(64, 128)
    count = lambda tiles: int((encoder.encode(Prompt("x", images=[wide],
                                                     detail=ImageDetail(max_tiles=tiles))).roles
                               == Role.IMAGE).sum())
    assert count(1) < count(2) <= count(None)
