"""VERIFI decoding controls: greedy/sampling determinism, stop rules, banned tokens, progress,
interrupts, settings validation, teacher-forcing input checks (tiny text-only and Qwen2.5-VL)."""
import pytest
import torch

from unifusion_core.errors import UniFusionError
from unifusion_core.vlm import Prompt, Role, build_tiny_vlm, load_vlm
from unifusion_core.vlm.sampling import Sampling, TokenPicker, top_p_filter

PROMPT = Prompt("a red circle on a blue square", system="Describe the image in detail.")


@pytest.fixture(scope="module")
def llm(tmp_path_factory):
    return load_vlm(build_tiny_vlm("llm", tmp_path_factory.mktemp("dec-llm")))


def _scripted(monkeypatch, ids):
    script = iter(ids)
    monkeypatch.setattr(TokenPicker, "pick", lambda self, logits, step: next(script))


def test_greedy_is_deterministic_and_sampling_follows_the_seed(llm):
    greedy = llm.generate(PROMPT, sampling=Sampling(max_new_tokens=8, min_new_tokens=8))
    assert greedy.generated_ids == llm.generate(PROMPT, sampling=Sampling(8, 8)).generated_ids
    sample = lambda seed: llm.generate(PROMPT, sampling=Sampling(8, 8, temperature=1.5, top_p=0.95,
                                                                 seed=seed)).generated_ids
    a, b, c = sample(1), sample(1), sample(2)
    assert a == b and a != c and len(a[0]) == 8


def test_batch_prompts_use_seed_plus_index(llm):
    settings = Sampling(6, 6, temperature=1.0, seed=3)
    both = llm.generate([PROMPT, PROMPT], sampling=settings)
    second = llm.generate(PROMPT, sampling=Sampling(6, 6, temperature=1.0, seed=4))
    assert both.generated_ids[1] == second.generated_ids[0] and len(both.texts) == 2


def test_stops_at_end_of_turn_and_at_max_new_tokens(llm, monkeypatch):
    a, b = llm.tokenizer("a red", add_special_tokens=False)["input_ids"][:2]
    eot = llm.tokenizer.convert_tokens_to_ids("<|im_end|>")
    _scripted(monkeypatch, [a, b, eot, a, a])
    feats = llm.generate(PROMPT, sampling=Sampling(max_new_tokens=10))
    assert feats.generated_ids == ((a, b, eot),)
    assert feats.roles[0, -3:].tolist() == [Role.GENERATED, Role.GENERATED, Role.TEMPLATE]
    _scripted(monkeypatch, [a, b, a, b])
    capped = llm.generate(PROMPT, sampling=Sampling(max_new_tokens=3))
    assert capped.generated_ids == ((a, b, a),) and capped.roles[0, -1] == Role.GENERATED


def test_picker_bans_specials_and_unknown_ids_and_holds_stops_until_min():
    stop, banned = frozenset({5}), frozenset({7, 8, 9})
    picker = TokenPicker(Sampling(max_new_tokens=4, min_new_tokens=2), stop, banned, seed=0)
    logits = torch.zeros(10)
    logits[[5, 7, 8, 9]] = 100.0
    logits[3] = 1.0
    assert picker.pick(logits, 0) == 3 and picker.pick(logits, 1) == 3
    assert picker.pick(logits, 2) == 5
    sampler = TokenPicker(Sampling(4, temperature=1.0), stop, banned, seed=0)
    assert all(sampler.pick(logits, 1) not in banned for _ in range(50))


def test_top_p_keeps_the_smallest_nucleus():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    assert top_p_filter(probs.clone(), 0.7).tolist() == pytest.approx([0.5, 0.3, 0.0, 0.0])
    assert top_p_filter(probs.clone(), 0.1).tolist() == pytest.approx([0.5, 0.0, 0.0, 0.0])
    assert torch.equal(top_p_filter(probs.clone(), 1.0), probs)


def test_progress_per_token_and_interrupt_within_one_token(llm):
    seen = []
    llm.generate([PROMPT, PROMPT], sampling=Sampling(5, 5), progress=lambda d, t: seen.append((d, t)))
    assert seen == [(i, 10) for i in range(1, 11)]
    fed = []  # the interrupt is raised once two tokens are out: the next poll (before token 3) ends it
    with pytest.raises(InterruptedError, match="after 2 generated tokens"):
        llm.generate(PROMPT, sampling=Sampling(8, 8), progress=lambda d, t: fed.append(d),
                     should_stop=lambda: len(fed) >= 2)
    assert fed == [1, 2]


@pytest.mark.parametrize("kwargs, message", [
    (dict(max_new_tokens=0), "max_new_tokens"), (dict(min_new_tokens=9, max_new_tokens=4), "min_new"),
    (dict(temperature=-1.0), "temperature"), (dict(top_p=0.0), "top_p")])
def test_sampling_validation(kwargs, message):
    with pytest.raises(UniFusionError, match=message):
        Sampling(**kwargs)


def test_teacher_forcing_checks_its_inputs(llm):
    eot = llm.tokenizer.convert_tokens_to_ids("<|im_end|>")
    start = llm.tokenizer.convert_tokens_to_ids("<|im_start|>")
    with pytest.raises(UniFusionError, match="special or unknown ids"):
        llm.teacher_force(PROMPT, [start, 40])
    with pytest.raises(UniFusionError, match="special token"):
        llm.teacher_force(PROMPT, "a <|im_start|> b")
    with pytest.raises(UniFusionError, match="one rewrite per prompt"):
        llm.teacher_force([PROMPT, PROMPT], ["a"])
    with pytest.raises(UniFusionError, match="no generated text"):
        llm.generate(Prompt("x", generated="y"))
    empty = llm.teacher_force(PROMPT, "  ")
    assert not (empty.roles == Role.GENERATED).any() and empty.texts == ("",)
    assert empty.input_ids.shape == llm.encode(PROMPT).input_ids.shape
    ended = llm.teacher_force(PROMPT, [40, 41, eot])
    assert ended.roles[0, -1] == Role.TEMPLATE and ended.generated_ids == ((40, 41, eot),)


@pytest.mark.parametrize("family", ["llm", "qwen2_5_vl", "gemma3", "smolvlm"])
def test_text_round_trip_on_tiny_tokenizers(tmp_path, family):
    """Natural text survives encode -> decode -> encode; that is what makes text teacher forcing
    equal generation for a model that emits the tokenizer's own tokenization."""
    from unifusion_core.vlm.tiny_templates import build_tokenizer

    tok = build_tokenizer(family)
    for text in ("A picture of a red circle.", "the small shapes: 1 2 3, left of a yellow star!",
                 "Draw a cat sitting on the mat, then\nrewrite the request."):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text
        assert tok(tok.decode(ids), add_special_tokens=False)["input_ids"] == ids
