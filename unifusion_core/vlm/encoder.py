"""``VLMEncoder``: prompts (text + images) -> per-layer hidden states with token roles; VERIFI
decoding (``generate``) and teacher forcing of a given rewrite (``teacher_force``).

Each prompt runs through the model on its own (batch 1) and the results are right-padded after,
so images of any size can be mixed and a prompt's features never depend on the rest of the batch.
With a ``PrefixCache`` the work on a prompt's images is reused across calls (see prefix_cache.py).

Legend: B batch, Lv VLM layers tapped, T tokens, Dv VLM width.
"""
from __future__ import annotations

import logging
import uuid
from dataclasses import replace
from functools import cached_property
from typing import Callable, Sequence, Union

import torch

from ..errors import UniFusionError
from .families import TEXT_ONLY, decoder_layers, image_token_id, text_config, tiling_kwargs
from .features import Features, Role
from .generate import Rewrite, generate_one, run_prompt, teacher_force_one
from .layers import LayerSpec, default_layers, select_layers
from .prefix_cache import PrefixCache
from .prompts import (Prompt, chat_messages, check_no_special_tokens, fill_sentinels,
                      image_details, prompt_images, role_texts, text_after_answer)
from .roles import align_roles, span_roles
from .sampling import Sampling, banned_token_ids, stop_token_ids
from .taps import LayerTap

log = logging.getLogger(__name__)

PromptLike = Union[Prompt, str]


def weights_fingerprint(model, text_cfg) -> str:
    """A short digest that tells two VLMs of the same shapes apart: the text config's sizes and
    statistics (3 significant digits, so a bf16 / fp16 / fp32 load of the same weights agrees) of the
    first and last 256 rows of the input embeddings. '' when the model has no input embeddings."""
    import hashlib
    import json

    try:
        emb = model.get_input_embeddings().weight
    except (AttributeError, NotImplementedError):
        return ""
    if emb.is_meta:
        return ""
    stats = []
    with torch.no_grad():
        for rows in (emb[:256], emb[-256:]):
            rows = rows.detach().float()
            stats += [f"{float(rows.abs().mean()):.3g}", f"{float(rows.square().mean()):.3g}"]
    sizes = [getattr(text_cfg, k, None) for k in ("vocab_size", "num_hidden_layers", "hidden_size",
                                                  "intermediate_size", "num_attention_heads")]
    return hashlib.sha1(json.dumps([sizes, stats]).encode()).hexdigest()[:12]


class VLMEncoder:
    """A frozen VLM with its tokenizer and processor (None for the text-only ``llm`` family)."""

    def __init__(self, model, tokenizer, processor, family: str, config):
        self.model, self.tokenizer, self.processor = model, tokenizer, processor
        self.family, self.config = family, config
        text = text_config(config)
        self.identity = dict(architecture=(config.architectures or [type(model).__name__])[0],
                             num_layers=int(text.num_hidden_layers),
                             hidden_size=int(text.hidden_size), family=family)
        self.blocks = decoder_layers(model, self.identity["num_layers"])
        self.image_token_id = None if family in TEXT_ONLY else image_token_id(config)
        self.max_positions = int(getattr(text, "max_position_embeddings", 0) or 0)  # 0: not stated
        self.identity["fingerprint"] = weights_fingerprint(model, text)
        self._specials = self._special_strings()
        self.uid = uuid.uuid4().hex  # names this instance in PrefixCache keys
        self.prefix_cache: PrefixCache | None = None  # used when a call passes no prefix_cache

    @property
    def multimodal(self) -> bool:
        return self.processor is not None

    def default_layers(self) -> tuple[int, ...]:
        """See ``layers.default_layers``: every 3rd block down from num_layers - 1, not below 4."""
        return default_layers(self.identity["num_layers"])

    @torch.no_grad()
    def encode(self, prompts: Union[PromptLike, Sequence[PromptLike]], layers: LayerSpec = None, *,
               progress: Callable[[int, int], None] | None = None,
               should_stop: Callable[[], bool] | None = None,
               prefix_cache: PrefixCache | None = None) -> Features:
        """Hidden states of ``layers`` for each prompt, right-padded into one batch.

        progress(done, total) is called after each prompt; should_stop() is polled before each
        and, when it returns True, InterruptedError is raised. ``prefix_cache`` (default: the
        encoder's ``prefix_cache``) reuses the image prefix of prompts with images.
        """
        prompts = [prompts] if isinstance(prompts, (Prompt, str)) else list(prompts)
        if not prompts:
            raise UniFusionError("encode() expected at least one prompt, found none.")
        chosen = select_layers(layers, self.identity["num_layers"])
        tap = LayerTap(self.blocks, chosen, should_stop)
        cache = self._cache(prefix_cache)
        results = []
        for i, prompt in enumerate(prompts):
            if should_stop is not None and should_stop():
                raise InterruptedError(f"VLM encoding was interrupted after {i} of {len(prompts)} "
                                       f"prompts.")
            prompt = _as_prompt(prompt)
            if cache is not None and prompt.images:
                with tap.hooked():
                    ctx, roles, _ = run_prompt(self, prompt, tap, cache, logits=False)
                results.append((ctx.hidden, roles, ctx.inputs["input_ids"][0]))
            else:
                results.append(self._encode_one(prompt, tap))
            if progress is not None:
                progress(i + 1, len(prompts))
        return self._pad(results, chosen)

    @torch.no_grad()
    def generate(self, prompts: Union[PromptLike, Sequence[PromptLike]], layers: LayerSpec = None,
                 *, sampling: Sampling | None = None, prefix_cache: PrefixCache | None = None,
                 progress: Callable[[int, int], None] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> Features:
        """VERIFI: decode each prompt's answer, capturing ``layers`` of every token on the way.

        Features hold [prompt][generated][stop token], ``texts`` the decoded answers and
        ``generated_ids`` the generated ids (with the stop token, if decoding stopped on one).
        progress(done, total) after each token (total = prompts x max_new_tokens; a prompt that
        stops early jumps ahead); should_stop() before each token raises InterruptedError.
        """
        sampling = sampling or Sampling()
        prompts, chosen = self._prompts(prompts), select_layers(layers, self.identity["num_layers"])
        tap, cache = LayerTap(self.blocks, chosen, should_stop), self._cache(prefix_cache)
        total, done, results = len(prompts) * sampling.max_new_tokens, [0], []

        def tick():
            done[0] += 1
            if progress is not None:
                progress(done[0], total)

        with tap.hooked():
            for i, prompt in enumerate(prompts):
                results.append(generate_one(self, prompt, tap, sampling, sampling.seed + i,
                                            prefix_cache=cache, tick=tick, should_stop=should_stop))
                if done[0] != (i + 1) * sampling.max_new_tokens:
                    done[0] = (i + 1) * sampling.max_new_tokens - 1
                    tick()
        return self._pad_results(results, chosen)

    @torch.no_grad()
    def teacher_force(self, prompts: Union[PromptLike, Sequence[PromptLike]],
                      rewrites: Union[Rewrite, Sequence[Rewrite]], layers: LayerSpec = None, *,
                      prefix_cache: PrefixCache | None = None) -> Features:
        """Flexible inference: the Features ``generate`` returns had it produced ``rewrites``.

        A rewrite is text (tokenized by the chat template's rendering of the assistant turn) or the
        token ids of a generation (``Features.generated_ids``: replayed exactly).
        """
        prompts, chosen = self._prompts(prompts), select_layers(layers, self.identity["num_layers"])
        single = isinstance(rewrites, str) or (len(prompts) == 1 and _is_ids(rewrites))
        rewrites = [rewrites] if single else list(rewrites)
        if len(rewrites) != len(prompts):
            raise UniFusionError(f"teacher_force() expected one rewrite per prompt ({len(prompts)}), "
                                 f"found {len(rewrites)}.")
        tap, cache = LayerTap(self.blocks, chosen), self._cache(prefix_cache)
        with tap.hooked():
            results = [teacher_force_one(self, p, r, tap, prefix_cache=cache)
                       for p, r in zip(prompts, rewrites)]
        return self._pad_results(results, chosen)

    # ----------------------------------------------------------------------------------------------

    @cached_property
    def stop_ids(self) -> frozenset:
        """Token ids that end a VERIFI answer (EOS ids and the template's end-of-turn token)."""
        tail = text_after_answer(self.processor or self.tokenizer, self.multimodal)
        return stop_token_ids(self.tokenizer, self.model, tail)

    @cached_property
    def banned_ids(self) -> frozenset:
        """Token ids VERIFI never generates (other special tokens, ids the tokenizer lacks)."""
        return banned_token_ids(self.tokenizer, int(text_config(self.config).vocab_size),
                                self.stop_ids)

    def device_dtype(self) -> tuple[torch.device, torch.dtype]:
        param = next(self.model.parameters())
        return param.device, param.dtype

    def _prompts(self, prompts) -> list[Prompt]:
        prompts = [prompts] if isinstance(prompts, (Prompt, str)) else list(prompts)
        if not prompts:
            raise UniFusionError("Expected at least one prompt, found none.")
        return [_as_prompt(p) for p in prompts]

    def _cache(self, prefix_cache: PrefixCache | None) -> PrefixCache | None:
        return prefix_cache if prefix_cache is not None else self.prefix_cache

    def _pad_results(self, results: list, layers: tuple[int, ...]) -> Features:
        feats = self._pad([r[:3] for r in results], layers)
        return replace(feats, texts=tuple(r[3] for r in results),
                       generated_ids=tuple(r[4] for r in results))

    def _encode_one(self, prompt: Prompt, tap: LayerTap) -> tuple:
        inputs, roles = self.build_inputs(prompt)
        device, dtype = self.device_dtype()
        inputs = {k: (v.to(device, dtype) if v.is_floating_point() else v.to(device))
                  for k, v in inputs.items()}
        hidden = tap.run(lambda: self.model(**inputs, use_cache=False))  # (Lv, 1, T, Dv)
        return hidden[:, 0], roles, inputs["input_ids"][0]  # (Lv, T, Dv), (T,), (T,)

    def build_inputs(self, prompt: Prompt) -> tuple[dict, torch.Tensor]:
        """The model inputs of one prompt (batch 1) and its roles (T,)."""
        return self.prepare(prompt)[:2]

    def prepare(self, prompt: Prompt) -> tuple[dict, torch.Tensor, list]:
        """``build_inputs`` plus the prompt's images (PIL, after ``max_pixels``)."""
        images = prompt_images(prompt)
        if images and not self.multimodal:
            raise UniFusionError(f"The text-only {self.identity['architecture']} cannot take images, "
                                 f"found {len(images)} in the prompt.")
        text, spans = self.render(prompt, len(images))
        add_special = self._add_special_tokens(text)
        if self.multimodal:
            extra = self._image_kwargs(prompt, images)
            inputs = self.processor(text=[text], images=images or None, return_tensors="pt",
                                    add_special_tokens=add_special, **extra)
        else:
            inputs = self.tokenizer([text], return_tensors="pt", add_special_tokens=add_special)
            inputs = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}
        plain = self.tokenizer(text, add_special_tokens=add_special, return_offsets_mapping=True)
        roles = align_roles(inputs["input_ids"][0].tolist(), list(plain["input_ids"]),
                            span_roles(plain["offset_mapping"], spans), self.image_token_id)
        length = int(inputs["input_ids"].shape[1])
        if self.max_positions and length > self.max_positions:
            n_img = int((roles == int(Role.IMAGE)).sum())
            raise UniFusionError(
                f"The VLM conversation is {length} tokens ({n_img} of them for {len(images)} reference image(s)), "
                f"but {self.identity['architecture']} reads at most {self.max_positions} positions; shorten the "
                f"instruction or use fewer or smaller reference images (max_pixels).")
        return {k: v for k, v in inputs.items() if isinstance(v, torch.Tensor)}, roles, images

    def render(self, prompt: Prompt, num_images: int) -> tuple[str, list]:
        """The chat text of ``prompt`` (with the generation prompt when it has no answer) and the
        (start, end, Role) character spans of its texts."""
        texts = role_texts(prompt)
        check_no_special_tokens(texts, self._specials)
        owner = self.processor or self.tokenizer
        rendered = owner.apply_chat_template(chat_messages(texts, num_images, self.multimodal),
                                             tokenize=False,
                                             add_generation_prompt=Role.GENERATED not in texts)
        rendered = rendered[0] if isinstance(rendered, list) else rendered
        return fill_sentinels(rendered, texts, self.family)

    def _image_kwargs(self, prompt: Prompt, images: list) -> dict:
        tiles = {d.max_tiles for d in image_details(prompt, len(images))}
        if len(tiles) > 1:
            raise UniFusionError(f"ImageDetail.max_tiles should be the same for all images of one "
                                 f"prompt, found {sorted(tiles, key=str)}.")
        max_tiles = tiles.pop() if tiles else None
        sizes = [(im.height, im.width) for im in images]
        return tiling_kwargs(self.family, self.processor.image_processor, max_tiles, sizes)

    def _add_special_tokens(self, text: str) -> bool:
        """As transformers' own chat path: never for text-only tokenizers; for processors unless the
        template already starts with the BOS token."""
        if not self.multimodal:
            return False
        bos = self.tokenizer.bos_token
        return not (bos and text.startswith(bos))

    def _special_strings(self) -> list[str]:
        specials = set(self.tokenizer.all_special_tokens)
        specials.update(t.content for t in self.tokenizer.added_tokens_decoder.values() if t.special)
        image_token = getattr(self.processor, "image_token", None)
        if isinstance(image_token, str):
            specials.add(image_token)
        return sorted(specials)

    def _pad(self, results: list, layers: tuple[int, ...]) -> Features:
        B, T = len(results), max(r[1].numel() for r in results)
        Lv, _, Dv = results[0][0].shape
        device, dtype = results[0][0].device, results[0][0].dtype
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        hidden = torch.zeros(B, Lv, T, Dv, device=device, dtype=dtype)  # (B, Lv, T, Dv)
        roles = torch.full((B, T), int(Role.TEMPLATE), dtype=torch.int64, device=device)
        mask = torch.zeros(B, T, dtype=torch.bool, device=device)
        input_ids = torch.full((B, T), pad_id, dtype=torch.int64, device=device)
        for b, (h, r, ids) in enumerate(results):
            n = r.numel()
            hidden[b, :, :n] = h
            roles[b, :n], mask[b, :n], input_ids[b, :n] = r.to(device), True, ids.to(device)
        return Features(hidden, roles, mask, input_ids, layers, dict(self.identity))


def _is_ids(value) -> bool:
    return not isinstance(value, str) and all(isinstance(v, int) for v in value)


def _as_prompt(prompt: PromptLike) -> Prompt:
    if isinstance(prompt, Prompt):
        return prompt
    if isinstance(prompt, str):
        return Prompt(instruction=prompt)
    raise UniFusionError(f"Expected a Prompt or a str, found {type(prompt).__name__}.")
