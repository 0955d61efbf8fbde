"""VERIFI decoding with hidden-state capture and teacher forcing, on a tiny model of every family.

Tolerance: fp32 on CPU, the incremental (KV-cached) states equal one causal forward over the full
sequence within atol = rtol = 1e-5 (observed: ~3e-8 absolute; ~6e-6 on Gemma-3, whose states reach
~10 in magnitude).
"""
import numpy as np
import pytest
import torch
from PIL import Image

from unifusion_core.vlm import FAMILIES, VERIFI_ROLES, Prompt, Role, build_tiny_vlm, load_vlm
from unifusion_core.vlm.generate import extend_inputs
from unifusion_core.vlm.sampling import Sampling, TokenPicker

TOL = dict(atol=1e-5, rtol=1e-5)
ALL = (0, 1, 2, 3, 4)
SYSTEM = "You are a helpful assistant."
INSTRUCTION = "a red circle on a blue square"
REWRITE = "A picture of a red circle."
EOT = {"qwen2_5_vl": "<|im_end|>", "qwen3_vl": "<|im_end|>", "internvl": "<|im_end|>",
       "gemma3": "<end_of_turn>", "smolvlm": "<end_of_utterance>", "llm": "<|im_end|>"}


def _image(seed=0, size=(100, 80)):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8))


@pytest.fixture(scope="module", params=FAMILIES)
def encoder(request, tmp_path_factory):
    return load_vlm(build_tiny_vlm(request.param, tmp_path_factory.mktemp(f"gen-{request.param}")))


def _prompt(encoder, images=1):
    pics = [_image(i) for i in range(images)] if encoder.multimodal else []
    return Prompt(INSTRUCTION, system=SYSTEM, images=pics)


@pytest.fixture(scope="module")
def generated(encoder):
    prompt = _prompt(encoder)
    return prompt, encoder.generate(prompt, ALL, sampling=Sampling(max_new_tokens=10, min_new_tokens=6))


def _full_forward(encoder, prompt, ids):
    """Every layer's states of one plain HF forward over [prompt + ids] (the last before the norm)."""
    inputs = extend_inputs(encoder.build_inputs(prompt)[0], list(ids))
    last = {}
    handle = encoder.blocks[-1].register_forward_hook(
        lambda m, a, out: last.update(h=out[0] if isinstance(out, tuple) else out))
    try:
        with torch.no_grad():
            out = encoder.model(**inputs, output_hidden_states=True, use_cache=False)
    finally:
        handle.remove()
    return torch.stack(list(out.hidden_states[:-1]) + [last["h"]])[:, 0], inputs["input_ids"][0]


def _scripted(monkeypatch, ids):
    """Make decoding emit ``ids`` (the real KV-cached loop and capture still run)."""
    script = iter(ids)
    monkeypatch.setattr(TokenPicker, "pick", lambda self, logits, step: next(script))


# --------------------------------------------------------------------------------------------------
# generation == one causal forward over the full sequence
# --------------------------------------------------------------------------------------------------

def test_captured_states_equal_full_forward(encoder, generated):
    prompt, feats = generated
    ids = feats.generated_ids[0]
    assert 6 <= len(ids) <= 10
    reference, full_ids = _full_forward(encoder, prompt, ids)  # (L + 1, T, Dv)
    assert torch.equal(feats.input_ids[0], full_ids) and feats.mask.all()
    torch.testing.assert_close(feats.hidden[0], reference, **TOL)


@pytest.mark.parametrize("images", [0, 2])
def test_captured_states_equal_full_forward_other_image_counts(encoder, images):
    """Text only (mrope families then use plain positions) and two images (positions continue
    after two image grids); the text-only family takes no images, so it runs text only twice."""
    images = images if encoder.multimodal else 0
    prompt = _prompt(encoder, images)
    feats = encoder.generate(prompt, ALL, sampling=Sampling(max_new_tokens=5, min_new_tokens=5))
    reference, full_ids = _full_forward(encoder, prompt, feats.generated_ids[0])
    assert torch.equal(feats.input_ids[0], full_ids)
    torch.testing.assert_close(feats.hidden[0], reference, **TOL)


def test_roles_of_prompt_generated_and_stop(encoder, generated):
    prompt, feats = generated
    plain = encoder.encode(prompt, ALL)
    P = plain.input_ids.shape[1]
    assert torch.equal(feats.input_ids[0, :P], plain.input_ids[0])
    assert torch.equal(feats.roles[0, :P], plain.roles[0])
    torch.testing.assert_close(feats.hidden[0, :, :P], plain.hidden[0], **TOL)
    ids = feats.generated_ids[0]
    stopped = ids[-1] in encoder.stop_ids
    text_ids = ids[:-1] if stopped else ids
    tail = feats.roles[0, P:].tolist()
    assert tail == [Role.GENERATED] * len(text_ids) + [Role.TEMPLATE] * stopped
    assert not set(text_ids) & (encoder.stop_ids | encoder.banned_ids)
    assert feats.texts[0] == encoder.tokenizer.decode(list(text_ids)).strip()


def test_teacher_forcing_ids_replays_generation(encoder, generated):
    prompt, feats = generated
    forced = encoder.teacher_force(prompt, list(feats.generated_ids[0]), ALL)
    assert torch.equal(forced.input_ids, feats.input_ids) and torch.equal(forced.roles, feats.roles)
    torch.testing.assert_close(forced.hidden, feats.hidden, **TOL)
    assert forced.texts == feats.texts and forced.generated_ids == feats.generated_ids


def test_same_text_same_conditioning(encoder, monkeypatch):
    """A generation that emits REWRITE's tokens (as the chat template tokenizes the answer) and
    then the end of turn has the Features of teacher forcing from the text REWRITE."""
    prompt = _prompt(encoder)
    rendered = encoder.encode(Prompt(prompt.instruction, prompt.system, prompt.images,
                                     generated=REWRITE), ALL)
    P = encoder.encode(prompt, ALL).input_ids.shape[1]  # the prompt with its generation prompt
    end = int((rendered.roles[0] == Role.GENERATED).nonzero()[-1]) + 1
    answer = rendered.input_ids[0, P:end].tolist()  # smolvlm: the template's " " separator first
    eot = int(rendered.input_ids[0, end])
    assert encoder.tokenizer.convert_ids_to_tokens(eot) == EOT[encoder.family]
    _scripted(monkeypatch, answer + [eot])
    feats = encoder.generate(prompt, ALL, sampling=Sampling(max_new_tokens=40))
    forced = encoder.teacher_force(prompt, REWRITE, ALL)
    assert feats.texts == forced.texts == (REWRITE,)
    assert feats.generated_ids == forced.generated_ids == (tuple(answer + [eot]),)
    assert torch.equal(forced.input_ids, feats.input_ids) and torch.equal(forced.roles, feats.roles)
    torch.testing.assert_close(forced.hidden, feats.hidden, **TOL)
    kept_gen, kept_forced = feats.keep(VERIFI_ROLES), forced.keep(VERIFI_ROLES)
    torch.testing.assert_close(kept_gen[0], kept_forced[0], **TOL)
    # the template rendering agrees with teacher forcing up to its end-of-turn token
    n = forced.input_ids.shape[1]
    assert torch.equal(rendered.input_ids[0, :n], forced.input_ids[0])
    torch.testing.assert_close(rendered.hidden[0, :, :n], forced.hidden[0], **TOL)


def test_verifi_conditioning_holds_exactly_image_and_generated_tokens(encoder, generated):
    prompt, feats = generated
    roles, ids = feats.roles[0], feats.input_ids[0]
    n_image = int((ids == encoder.image_token_id).sum()) if encoder.multimodal else 0
    ids_gen = feats.generated_ids[0]
    n_gen = len(ids_gen) - (ids_gen[-1] in encoder.stop_ids)
    assert int((roles == Role.IMAGE).sum()) == n_image and (n_image > 0) == encoder.multimodal
    assert int((roles == Role.GENERATED).sum()) == n_gen > 0
    for role in (Role.SYSTEM, Role.INSTRUCTION, Role.TEMPLATE):
        assert (roles == role).any()  # present in the context, so their absence below means masked
    hidden, mask = feats.keep(VERIFI_ROLES)
    assert int(mask.sum()) == n_image + n_gen == hidden.shape[2]
    positions = ((roles == Role.IMAGE) | (roles == Role.GENERATED)).nonzero()[:, 0]
    assert torch.equal(hidden[0], feats.hidden[0, :, positions])


def test_stop_token_ids_hold_the_end_of_turn(encoder):
    names = set(encoder.tokenizer.convert_ids_to_tokens(sorted(encoder.stop_ids)))
    assert EOT[encoder.family] in names
    if encoder.multimodal:
        assert encoder.image_token_id in encoder.banned_ids
    assert set(range(len(encoder.tokenizer), encoder.model.config.get_text_config().vocab_size)) \
        <= encoder.banned_ids
