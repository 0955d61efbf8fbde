"""Tokenizers and chat templates for the tiny test VLMs (see ``tiny.py``).

Each family gets a byte-level BPE (trained here on a fixed corpus, so offsets and decoding are
exact) plus that family's special tokens, wrapped in the tokenizer class its processor expects, and
a chat template with the same structure and special tokens as the released models.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

_CORPUS = (
    "You are a helpful assistant. system user assistant model System User Assistant",
    "a red circle on a blue square, a green triangle left of a yellow star",
    "Describe the image in detail. Draw a picture of a cat sitting on the mat.",
    "the small shapes are above, below, left or right of each other; 1 2 3 4 5 6 7 8 9 0",
    "Rewrite the request as a detailed description of the target image.",
)

_CHATML_IMAGES = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ IMAGE }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Qwen2.5-VL inserts a default system turn when the conversation has none.
_QWEN25 = _CHATML_IMAGES.replace(
    "{% for message in messages %}",
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}", 1)

_GEMMA3 = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}"
    "{% set first_prefix = messages[0]['content'][0]['text'] + '\\n\\n' %}"
    "{% set turns = messages[1:] %}"
    "{% else %}{% set first_prefix = '' %}{% set turns = messages %}{% endif %}"
    "{% for message in turns %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\\n' }}{% if loop.first %}{{ first_prefix }}{% endif %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<start_of_image>' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] | trim }}{% endif %}"
    "{% endfor %}{{ '<end_of_turn>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)

_SMOLVLM = (
    "<|im_start|>{% for message in messages %}"
    "{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% elif part['type'] == 'image' %}{{ '<image>' }}{% endif %}"
    "{% endfor %}{{ '<end_of_utterance>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

_QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
_QWEN_VISION = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
_QWEN_ROLES = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}


@dataclass(frozen=True)
class TinyTokens:
    """Special tokens, tokenizer class and chat template of one family's tiny tokenizer."""

    specials: tuple[str, ...]
    tokenizer_class: str
    template: str
    roles: dict = field(default_factory=dict)  # eos_token, pad_token, bos_token, ...
    named: dict = field(default_factory=dict)  # extra named special tokens the processor reads


FAMILY_TOKENS = {
    "qwen2_5_vl": TinyTokens(
        _QWEN_SPECIALS + _QWEN_VISION, "Qwen2TokenizerFast",
        _QWEN25.replace("{{ IMAGE }}", "{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"),
        _QWEN_ROLES),
    "qwen3_vl": TinyTokens(
        _QWEN_SPECIALS + _QWEN_VISION, "Qwen2TokenizerFast",
        _CHATML_IMAGES.replace("{{ IMAGE }}", "{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"),
        _QWEN_ROLES),
    "internvl": TinyTokens(
        _QWEN_SPECIALS + ("<img>", "</img>", "<IMG_CONTEXT>", "<video>"), "Qwen2TokenizerFast",
        _CHATML_IMAGES.replace("{{ IMAGE }}", "{{ '<IMG_CONTEXT>\\n' }}"), _QWEN_ROLES,
        {"start_image_token": "<img>", "end_image_token": "</img>",
         "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"}),
    "gemma3": TinyTokens(
        ("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>",
         "<start_of_image>", "<end_of_image>", "<image_soft_token>"), "GemmaTokenizerFast", _GEMMA3,
        {"pad_token": "<pad>", "eos_token": "<eos>", "bos_token": "<bos>", "unk_token": "<unk>"},
        {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
         "image_token": "<image_soft_token>"}),
    "smolvlm": TinyTokens(
        ("<|endoftext|>", "<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>",
         "<image>", "<global-img>")
        + tuple(f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)),
        "GPT2TokenizerFast", _SMOLVLM,
        {"bos_token": "<|im_start|>", "eos_token": "<end_of_utterance>",
         "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}),
    "llm": TinyTokens(_QWEN_SPECIALS, "Qwen2TokenizerFast",
                      _CHATML_IMAGES.replace("{{ IMAGE }}", "''"), _QWEN_ROLES),
}


def build_tokenizer(family: str):
    """A transformers fast tokenizer of ``family``'s class over a tiny trained BPE."""
    import transformers
    from tokenizers import AddedToken

    spec = FAMILY_TOKENS[family]
    bpe = _sentencepiece_bpe(spec.specials) if family == "gemma3" else _byte_level_bpe()
    bpe.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in spec.specials])
    cls = getattr(transformers, spec.tokenizer_class)
    kwargs = dict(spec.roles, extra_special_tokens=dict(spec.named)) if spec.named else dict(spec.roles)
    return cls(tokenizer_object=bpe, chat_template=spec.template, **kwargs)


def _byte_level_bpe():
    """GPT-2/Qwen style: byte-level pre-tokenizer and decoder, merges trained on the corpus."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=384, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(_CORPUS, trainer)
    return bpe


def _sentencepiece_bpe(specials: tuple[str, ...]):
    """Gemma style: spaces become "▁", BPE with byte fallback, no pre-tokenizer at run time.

    The special tokens take ids 0.. (pad, eos, bos, unk first, as in Gemma), then the 256 byte
    tokens, then the trained vocabulary.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    trained = Tokenizer(models.BPE(unk_token="<unk>"))
    trained.normalizer = normalizers.Replace(" ", "▁")
    trained.pre_tokenizer = pre_tokenizers.Split("▁", behavior="merged_with_next")
    alphabet = sorted(set("".join(_CORPUS).replace(" ", "▁")))
    trainer = trainers.BpeTrainer(vocab_size=384, show_progress=False, initial_alphabet=alphabet)
    trained.train_from_iterator(_CORPUS, trainer)
    model = json.loads(trained.to_str())["model"]
    tokens = list(specials) + [f"<0x{b:02X}>" for b in range(256)]
    tokens += [t for t, _ in sorted(model["vocab"].items(), key=lambda kv: kv[1]) if t not in tokens]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    bpe = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges,
                               unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    bpe.normalizer = normalizers.Replace(" ", "▁")
    bpe.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous")
    bpe.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse()])
    return bpe
