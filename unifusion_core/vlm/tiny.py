"""Tiny random-weight VLM folders, one per supported family, for tests, demos and benchmarks.

``build_tiny_vlm(family, out_dir)`` writes a complete Hugging Face folder (config.json,
model.safetensors, tokenizer files, preprocessor/processor config, chat template) that
``load_vlm`` reads exactly like a downloaded model. Nothing is downloaded: the tokenizer is a small
byte-level BPE trained here on a fixed corpus plus each family's special tokens, and the chat
templates are written here in each family's format (same structure and special tokens as the
released models, not their text). Vision towers are 2 blocks wide 32 on 32..112 px images.

Weights come from the project's own seeded generator (``seeded_weights_``), not from the order in
which a transformers version happens to initialise modules, so one seed gives the same weights on
every supported transformers version.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch

from ..errors import UniFusionError
from .families import FAMILIES
from .tiny_templates import FAMILY_TOKENS, build_tokenizer

log = logging.getLogger(__name__)

_MEAN_STD = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}


def build_tiny_vlm(family: str, out_dir, *, seed: int = 0, num_layers: int = 4,
                   hidden_size: int = 64) -> Path:
    """Write a tiny random-weight model folder of ``family`` to ``out_dir`` and return its path."""
    if family not in FAMILIES:
        raise UniFusionError(f"Unknown VLM family '{family}'; expected one of {', '.join(FAMILIES)}.")
    if hidden_size % 16 or hidden_size < 32 or num_layers < 1:
        raise UniFusionError(f"Tiny VLMs need hidden_size a multiple of 16 (>= 32) and num_layers >= 1, "
                             f"found hidden_size={hidden_size}, num_layers={num_layers}.")
    import transformers

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(family)
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in FAMILY_TOKENS[family].specials}
    text = _text_config(len(tokenizer), hidden_size, num_layers)
    config_dict, class_name, image_cfg, processor_cfg = _BUILDERS[family](text, ids)
    config = getattr(transformers, class_name).config_class(**config_dict)
    config.architectures = [class_name]
    torch.manual_seed(seed)  # only for what transformers draws; every saved tensor is replaced below
    model = getattr(transformers, class_name)(config).eval()
    seeded_weights_(model, seed)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    template = tokenizer.chat_template
    if image_cfg is not None:
        _write_json(out / "preprocessor_config.json", {**_MEAN_STD, **image_cfg})
        _write_json(out / "processor_config.json", processor_cfg)
        _write_json(out / "chat_template.json", {"chat_template": template})
        (out / "chat_template.jinja").write_text(template)
    log.debug("built tiny %s VLM (%d layers, width %d) in %s", family, num_layers, hidden_size, out)
    return out


WEIGHT_STD = 0.02  # transformers' initializer_range for these families


@torch.no_grad()
def seeded_weights_(model: torch.nn.Module, seed: int, std: float = WEIGHT_STD) -> torch.nn.Module:
    """Overwrite every floating tensor of ``model``'s state dict from a generator seeded by (seed, name).

    A tensor that transformers initialised to one constant (norm scales, biases: ones or zeros, as the
    architecture's formula expects) keeps that constant; every other tensor becomes N(0, std) drawn
    from its own generator, so the result depends on the seed and the tensor's name and shape only.
    Names are taken in a canonical form (``canonical_name``), so a transformers version that nests a
    module one level deeper draws the same values. Tied tensors (one storage under two names) take
    the value of the first name in sorted order.
    """
    done: set[int] = set()
    named = {canonical_name(k): v for k, v in model.state_dict(keep_vars=True).items()}
    for name, tensor in sorted(named.items()):
        if not tensor.is_floating_point() or tensor.data_ptr() in done:
            continue
        done.add(tensor.data_ptr())
        flat = tensor.detach().flatten()
        if flat.numel() and bool((flat == flat[0]).all()):
            continue  # a constant init (ones / zeros) is part of the architecture, not of the seed
        digest = hashlib.sha256(f"{seed}|{name}|{tuple(tensor.shape)}".encode()).digest()
        gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))
        u = torch.rand(tensor.shape, generator=gen, dtype=torch.float64)
        tensor.data.copy_((u * 2 - 1) * (std * 3 ** 0.5))
    return model


_WRAPPERS = {"model", "vision_model"}  # path segments some transformers versions add around the same module


def canonical_name(name: str) -> str:
    """A tensor name without the wrapper segments that differ between transformers versions
    (``vision_tower.vision_model.encoder...`` in 4.57 is ``vision_tower.encoder...`` in 5.x)."""
    return ".".join(part for part in name.split(".") if part not in _WRAPPERS)


def weights_digest(folder) -> str:
    """sha256 over a model folder's safetensors tensors (sorted canonical names, fp32 bytes)."""
    from safetensors.torch import load_file

    h = hashlib.sha256()
    for path in sorted(Path(folder).glob("*.safetensors")):
        tensors = {canonical_name(k): v for k, v in load_file(str(path)).items()}
        for name in sorted(tensors):
            h.update(name.encode())
            h.update(tensors[name].float().contiguous().numpy().tobytes())
    return h.hexdigest()


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2))


def _text_config(vocab: int, hidden: int, layers: int) -> dict:
    """Decoder settings shared by every family: head_dim 16, kv heads = heads // 2, vocab padded to 64."""
    heads = hidden // 16
    return dict(vocab_size=(vocab + 63) // 64 * 64, hidden_size=hidden, intermediate_size=2 * hidden,
                num_hidden_layers=layers, num_attention_heads=heads,
                num_key_value_heads=max(1, heads // 2), head_dim=16, max_position_embeddings=2048,
                rms_norm_eps=1e-6, rope_theta=10000.0)


def _mrope(text: dict, **extra) -> dict:
    """Qwen's multimodal RoPE: the 8 rotary pairs of a 16-wide head split over (t, h, w)."""
    half = text["head_dim"] // 2
    section = [half - 2 * (half // 4), half // 4, half // 4]
    return {**text, "rope_scaling": {"rope_type": "default", "type": "mrope", "mrope_section": section,
                                     **extra}}


def _vision(**extra) -> dict:
    return dict(hidden_size=32, intermediate_size=64, num_attention_heads=2, **extra)


def _qwen2_5_vl(text, ids):
    cfg = dict(text_config={**_mrope(text), **_chatml_ids(ids), "model_type": "qwen2_5_vl_text"},
               vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2,
                                  out_hidden_size=text["hidden_size"], patch_size=14,
                                  spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                                  fullatt_block_indexes=[1]),
               **_qwen_ids(ids))
    image = dict(image_processor_type="Qwen2VLImageProcessor", processor_class="Qwen2_5_VLProcessor",
                 patch_size=14, merge_size=2, temporal_patch_size=2,
                 min_pixels=56 * 56, max_pixels=112 * 112)
    return cfg, "Qwen2_5_VLForConditionalGeneration", image, {"processor_class": "Qwen2_5_VLProcessor"}


def _qwen3_vl(text, ids):
    cfg = dict(text_config={**_mrope(text, mrope_interleaved=True), **_chatml_ids(ids),
                            "model_type": "qwen3_vl_text"},
               vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2,
                                  out_hidden_size=text["hidden_size"], patch_size=16,
                                  spatial_merge_size=2, temporal_patch_size=2,
                                  num_position_embeddings=64, deepstack_visual_indexes=[0]),
               **_qwen_ids(ids))
    image = dict(image_processor_type="Qwen2VLImageProcessor", processor_class="Qwen3VLProcessor",
                 patch_size=16, merge_size=2, temporal_patch_size=2,
                 min_pixels=64 * 64, max_pixels=128 * 128)
    return cfg, "Qwen3VLForConditionalGeneration", image, {"processor_class": "Qwen3VLProcessor"}


def _qwen_ids(ids: dict) -> dict:
    return dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                vision_start_token_id=ids["<|vision_start|>"],
                vision_end_token_id=ids["<|vision_end|>"])


def _chatml_ids(ids: dict) -> dict:
    return dict(bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                pad_token_id=ids["<|endoftext|>"])


def _internvl(text, ids):
    # 56 px tiles of 14 px patches -> 4x4 patches -> pixel shuffle 0.5 -> 4 tokens per tile
    # untied head on every transformers version (4.57 and 5.x default differently)
    cfg = dict(text_config={**text, **_chatml_ids(ids), "model_type": "qwen2", "tie_word_embeddings": False},
               tie_word_embeddings=False,
               vision_config=_vision(num_hidden_layers=2, image_size=[56, 56], patch_size=[14, 14]),
               image_token_id=ids["<IMG_CONTEXT>"], image_seq_length=4, downsample_ratio=0.5)
    image = dict(image_processor_type="GotOcr2ImageProcessor", processor_class="InternVLProcessor",
                 size={"height": 56, "width": 56}, crop_to_patches=True, min_patches=1,
                 max_patches=4)
    return cfg, "InternVLForConditionalGeneration", image, {"processor_class": "InternVLProcessor",
                                                             "image_seq_length": 4}


def _gemma3(text, ids):
    layer_types = ["sliding_attention"] * (text["num_hidden_layers"] - 1) + ["full_attention"]
    gemma = dict(text, model_type="gemma3_text", query_pre_attn_scalar=16, sliding_window=32,
                 layer_types=layer_types, rope_local_base_freq=10000.0,
                 bos_token_id=ids["<bos>"], eos_token_id=ids["<eos>"], pad_token_id=ids["<pad>"])
    # 32 px images of 8 px patches -> 4x4 patches -> avg-pooled to 2x2 = 4 soft tokens per image
    cfg = dict(text_config=gemma,
               vision_config=_vision(num_hidden_layers=2, image_size=32, patch_size=8,
                                     model_type="siglip_vision_model"),
               mm_tokens_per_image=4, boi_token_index=ids["<start_of_image>"],
               eoi_token_index=ids["<end_of_image>"], image_token_index=ids["<image_soft_token>"])
    image = dict(image_processor_type="Gemma3ImageProcessor", processor_class="Gemma3Processor",
                 size={"height": 32, "width": 32}, do_pan_and_scan=False, resample=2)
    return cfg, "Gemma3ForConditionalGeneration", image, {"processor_class": "Gemma3Processor",
                                                           "image_seq_length": 4}


def _smolvlm(text, ids):
    # SmolVLM (v1) is the Idefics3 architecture: 32 px tiles of 8 px patches -> 4x4 -> shuffle 2 -> 4
    cfg = dict(text_config={**text, "model_type": "llama", "bos_token_id": ids["<|im_start|>"],
                            "eos_token_id": ids["<end_of_utterance>"]},
               vision_config=_vision(num_hidden_layers=2, image_size=32, patch_size=8),
               image_token_id=ids["<image>"], scale_factor=2, pad_token_id=ids["<|endoftext|>"])
    image = dict(image_processor_type="Idefics3ImageProcessor", processor_class="Idefics3Processor",
                 size={"longest_edge": 64}, max_image_size={"longest_edge": 32},
                 do_image_splitting=True, resample=1)
    return cfg, "Idefics3ForConditionalGeneration", image, {"processor_class": "Idefics3Processor",
                                                             "image_seq_len": 4}


def _llm(text, ids):
    cfg = dict(text, **_chatml_ids(ids), tie_word_embeddings=True)
    return cfg, "Qwen2ForCausalLM", None, None


_BUILDERS = {"qwen2_5_vl": _qwen2_5_vl, "qwen3_vl": _qwen3_vl, "internvl": _internvl,
             "gemma3": _gemma3, "smolvlm": _smolvlm, "llm": _llm}
