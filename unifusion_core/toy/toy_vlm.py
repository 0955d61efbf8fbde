"""The toy VLM's folder: a Gemma3 (transformers-native) model with a word-level tokenizer over the
shapes-world language, a 32 px image processor and Gemma3's chat template.

Why Gemma3: its processor resizes every image to one fixed size with no tiling, so a 32 px render
is exactly ``(32 / patch) ** 2`` SigLIP patches, average-pooled to ``mm_tokens_per_image`` soft
tokens; with 8 px patches and 16 tokens that is 16 image tokens per image and no pooling. Idefics3
upsamples and tiles (5 crops for one 32 px image), Qwen2.5-VL needs >= 56 px and M-RoPE.

``build_toy_vlm(out_dir, ToyVLMConfig.preset("toy"))`` writes an untrained folder that
``unifusion_core.vlm.load_vlm`` reads like a downloaded model; ``vlm_train.py`` trains it.
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..errors import UniFusionError
from ..verifi import PRESETS
from ..vlm.tiny_templates import FAMILY_TOKENS
from .language import vocabulary

log = logging.getLogger(__name__)

SPECIALS = FAMILY_TOKENS["gemma3"].specials  # pad, eos, bos, unk first (ids 0..3), as in Gemma
_TEMPLATE_WORDS = "system user model assistant"  # role names the chat template writes
_MEAN_STD = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}


@dataclass(frozen=True)
class ToyVLMConfig:
    """Sizes of the toy VLM (decoder and SigLIP vision tower)."""

    hidden_size: int = 128
    num_layers: int = 4
    head_dim: int = 32
    intermediate_size: int = 512
    vision_hidden_size: int = 128
    vision_layers: int = 2
    image_size: int = 32
    patch_size: int = 8
    image_tokens: int = 16  # soft tokens per image: a square number dividing the patch grid

    def __post_init__(self):
        if self.hidden_size % self.head_dim or (self.hidden_size // self.head_dim) % 2:
            raise ValueError(f"hidden_size should be an even multiple of head_dim ({self.head_dim}), "
                             f"found {self.hidden_size}.")
        side, grid = round(self.image_tokens ** 0.5), self.image_size // self.patch_size
        if self.image_size % self.patch_size or side * side != self.image_tokens or grid % side:
            raise ValueError(f"image_size / patch_size ({self.image_size}/{self.patch_size}) should be a "
                             f"whole grid divisible by sqrt(image_tokens), found {self.image_tokens}.")

    @staticmethod
    def preset(name: str) -> "ToyVLMConfig":
        presets = {"toy": ToyVLMConfig(), "test": ToyVLMConfig(hidden_size=64, num_layers=2,
                                                                intermediate_size=128,
                                                                vision_hidden_size=32)}
        if name not in presets:
            raise ValueError(f"ToyVLMConfig preset should be one of {sorted(presets)}, found {name!r}.")
        return presets[name]


# --------------------------------------------------------------------------------------------------
# tokenizer
# --------------------------------------------------------------------------------------------------

def corpus_words() -> list[str]:
    """Every word the toy VLM reads or writes: the toy language, the VERIFI presets, role names."""
    pre = _pre_tokenizer()
    words = set(vocabulary())
    for text in (*PRESETS.values(), _TEMPLATE_WORDS):
        words.update(w for w, _ in pre.pre_tokenize_str(text.lower()))
    return sorted(words)


def _pre_tokenizer():
    from tokenizers import pre_tokenizers

    return pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])


def build_tokenizer():
    """A Gemma fast tokenizer over a WordLevel model: lower-cased words and single punctuation
    marks, unknown words -> <unk>; decoding joins words with spaces and glues punctuation back."""
    import transformers
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers

    tokens = list(SPECIALS) + corpus_words()
    word = Tokenizer(models.WordLevel(vocab={t: i for i, t in enumerate(tokens)}, unk_token="<unk>"))
    word.normalizer = normalizers.Lowercase()
    word.pre_tokenizer = _pre_tokenizer()
    word.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    word.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS])
    spec = FAMILY_TOKENS["gemma3"]
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=word, chat_template=spec.template, clean_up_tokenization_spaces=False,
        extra_special_tokens=dict(spec.named), **spec.roles)


# --------------------------------------------------------------------------------------------------
# model folder
# --------------------------------------------------------------------------------------------------

def model_config(cfg: ToyVLMConfig, tokenizer):
    """The transformers ``Gemma3Config`` of ``cfg`` (vocab padded to a multiple of 64)."""
    import transformers

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIALS}
    heads = cfg.hidden_size // cfg.head_dim
    text = dict(model_type="gemma3_text", vocab_size=(len(tokenizer) + 63) // 64 * 64,
                hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
                num_hidden_layers=cfg.num_layers, num_attention_heads=heads,
                num_key_value_heads=heads // 2, head_dim=cfg.head_dim, query_pre_attn_scalar=cfg.head_dim,
                max_position_embeddings=1024, sliding_window=1024, rms_norm_eps=1e-6,
                layer_types=["full_attention"] * cfg.num_layers, rope_theta=10000.0,
                rope_local_base_freq=10000.0, final_logit_softcapping=None,
                attn_logit_softcapping=None, tie_word_embeddings=True,
                bos_token_id=ids["<bos>"], eos_token_id=[ids["<eos>"], ids["<end_of_turn>"]],
                pad_token_id=ids["<pad>"])
    vision = dict(model_type="siglip_vision_model", hidden_size=cfg.vision_hidden_size,
                  intermediate_size=2 * cfg.vision_hidden_size, num_hidden_layers=cfg.vision_layers,
                  num_attention_heads=max(1, cfg.vision_hidden_size // 32), image_size=cfg.image_size,
                  patch_size=cfg.patch_size)
    config = transformers.Gemma3Config(
        text_config=text, vision_config=vision, mm_tokens_per_image=cfg.image_tokens,
        boi_token_index=ids["<start_of_image>"], eoi_token_index=ids["<end_of_image>"],
        image_token_index=ids["<image_soft_token>"], pad_token_id=ids["<pad>"],
        eos_token_id=[ids["<eos>"], ids["<end_of_turn>"]], bos_token_id=ids["<bos>"])
    config.architectures = ["Gemma3ForConditionalGeneration"]
    return config


def build_model(cfg: ToyVLMConfig, tokenizer, seed: int = 0):
    """A randomly initialised ``Gemma3ForConditionalGeneration`` (train mode)."""
    import transformers

    torch.manual_seed(seed)
    return transformers.Gemma3ForConditionalGeneration(model_config(cfg, tokenizer))


def save_folder(out_dir, model, tokenizer, cfg: ToyVLMConfig, extra: dict | None = None) -> Path:
    """Write ``model`` + tokenizer + processor files + chat template as an HF folder; the toy
    config (and ``extra``, e.g. training stats) go to ``toy_vlm.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    make_portable(out)
    image = dict(_MEAN_STD, image_processor_type="Gemma3ImageProcessor", processor_class="Gemma3Processor",
                 size={"height": cfg.image_size, "width": cfg.image_size}, do_pan_and_scan=False,
                 resample=2, do_convert_rgb=True)
    _write_json(out / "preprocessor_config.json", image)
    _write_json(out / "processor_config.json", {"processor_class": "Gemma3Processor",
                                                 "image_seq_length": cfg.image_tokens})
    _write_json(out / "chat_template.json", {"chat_template": tokenizer.chat_template})
    (out / "chat_template.jinja").write_text(tokenizer.chat_template)
    _write_json(out / "toy_vlm.json", {"config": asdict(cfg), **(extra or {})})
    return out


def read_toy_json(folder) -> dict:
    """``toy_vlm.json`` of a toy VLM folder: its sizes (``config``) and training stats."""
    path = Path(folder) / "toy_vlm.json"
    if not path.is_file():
        raise UniFusionError(f"a toy VLM folder should hold toy_vlm.json, found none in {folder}.")
    return json.loads(path.read_text())


def build_toy_vlm(out_dir, cfg: ToyVLMConfig | None = None, *, seed: int = 0) -> Path:
    """Write an untrained toy VLM folder to ``out_dir`` and return its path."""
    cfg = cfg or ToyVLMConfig.preset("toy")
    tokenizer = build_tokenizer()
    return save_folder(out_dir, build_model(cfg, tokenizer, seed).eval(), tokenizer, cfg)


def load_processor(path):
    """The folder's AutoProcessor (Gemma3Processor with the word-level tokenizer)."""
    import transformers

    path = Path(path)
    if not (path / "preprocessor_config.json").is_file():
        raise UniFusionError(f"Expected a toy VLM folder with preprocessor_config.json, found none in {path}.")
    return transformers.AutoProcessor.from_pretrained(path)


def make_portable(out: Path) -> None:
    """Rewrite what transformers 5 saved so that 4.57 loads the same model (same logits)."""
    _released_vision_keys(out / "model.safetensors")
    _legacy_rope_keys(out / "config.json")
    _portable_tokenizer_config(out / "tokenizer_config.json")


def _released_vision_keys(path: Path) -> None:
    """transformers 5 saves the SigLIP tower as ``vision_tower.*``; released Gemma3 checkpoints
    (and transformers 4.57's loader) use ``vision_tower.vision_model.*``, which both versions read."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(path)
    renamed = {("vision_tower.vision_model." + k[len("vision_tower."):]
                if k.startswith("vision_tower.") and not k.startswith("vision_tower.vision_model.") else k): v
               for k, v in tensors.items()}
    if renamed.keys() != tensors.keys():
        save_file(renamed, path, metadata={"format": "pt"})


def _legacy_rope_keys(path: Path) -> None:
    """transformers 5 writes RoPE bases only under ``rope_parameters``; 4.57 reads ``rope_theta`` /
    ``rope_local_base_freq`` (else Gemma3's default base 1e6): write both."""
    data = json.loads(path.read_text())
    text, rope = data["text_config"], data["text_config"].get("rope_parameters") or {}
    for key, layer_type in (("rope_theta", "full_attention"), ("rope_local_base_freq", "sliding_attention")):
        if layer_type in rope:
            text[key] = rope[layer_type]["rope_theta"]
    _write_json(path, data)


def _portable_tokenizer_config(path: Path) -> None:
    """transformers 5 names the class ``TokenizersBackend`` and lists named specials flat; write
    the class and ``extra_special_tokens`` as 4.57 reads them too (both load tokenizer.json)."""
    data = json.loads(path.read_text())
    data["tokenizer_class"] = "PreTrainedTokenizerFast"
    data["extra_special_tokens"] = dict(FAMILY_TOKENS["gemma3"].named)
    _write_json(path, data)


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2))
