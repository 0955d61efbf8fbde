"""``VLMEncoder``: prompts (text + images) -> per-layer hidden states with token roles.

Each prompt runs through the model on its own (batch 1) and the results are right-padded after,
so images of any size can be mixed and a prompt's features never depend on the rest of the batch.

Legend: B batch, Lv VLM layers tapped, T tokens, Dv VLM width.
"""
from __future__ import annotations

import logging
from typing import Callable, Sequence, Union

import torch

from ..errors import UniFusionError
from .families import TEXT_ONLY, decoder_layers, image_token_id, text_config, tiling_kwargs
from .features import Features, Role
from .layers import LayerSpec, default_layers, select_layers
from .prompts import (Prompt, chat_messages, check_no_special_tokens, fill_sentinels,
                      image_details, prompt_images, role_texts)
from .roles import align_roles, span_roles
from .taps import LayerTap

log = logging.getLogger(__name__)

PromptLike = Union[Prompt, str]


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
        self._specials = self._special_strings()

    @property
    def multimodal(self) -> bool:
        return self.processor is not None

    def default_layers(self) -> tuple[int, ...]:
        """See ``layers.default_layers``: every 3rd block down from num_layers - 1, not below 4."""
        return default_layers(self.identity["num_layers"])

    @torch.no_grad()
    def encode(self, prompts: Union[PromptLike, Sequence[PromptLike]], layers: LayerSpec = None, *,
               progress: Callable[[int, int], None] | None = None,
               should_stop: Callable[[], bool] | None = None) -> Features:
        """Hidden states of ``layers`` for each prompt, right-padded into one batch.

        progress(done, total) is called after each prompt; should_stop() is polled before each
        and, when it returns True, InterruptedError is raised.
        """
        prompts = [prompts] if isinstance(prompts, (Prompt, str)) else list(prompts)
        if not prompts:
            raise UniFusionError("encode() expected at least one prompt, found none.")
        chosen = select_layers(layers, self.identity["num_layers"])
        tap = LayerTap(self.blocks, chosen)
        results = []
        for i, prompt in enumerate(prompts):
            if should_stop is not None and should_stop():
                raise InterruptedError(f"VLM encoding was interrupted after {i} of {len(prompts)} "
                                       f"prompts.")
            results.append(self._encode_one(_as_prompt(prompt), tap))
            if progress is not None:
                progress(i + 1, len(prompts))
        return self._pad(results, chosen)

    # ----------------------------------------------------------------------------------------------

    def _encode_one(self, prompt: Prompt, tap: LayerTap) -> tuple:
        inputs, roles = self.build_inputs(prompt)
        device, dtype = self._device_dtype()
        inputs = {k: (v.to(device, dtype) if v.is_floating_point() else v.to(device))
                  for k, v in inputs.items()}
        hidden = tap.run(lambda: self.model(**inputs, use_cache=False))  # (Lv, 1, T, Dv)
        return hidden[:, 0], roles, inputs["input_ids"][0]  # (Lv, T, Dv), (T,), (T,)

    def build_inputs(self, prompt: Prompt) -> tuple[dict, torch.Tensor]:
        """The model inputs of one prompt (batch 1) and its roles (T,)."""
        texts = role_texts(prompt)
        images = prompt_images(prompt)
        if images and not self.multimodal:
            raise UniFusionError(f"The text-only {self.identity['architecture']} cannot take images, "
                                 f"found {len(images)} in the prompt.")
        check_no_special_tokens(texts, self._specials)
        owner = self.processor or self.tokenizer
        rendered = owner.apply_chat_template(chat_messages(texts, len(images), self.multimodal),
                                             tokenize=False,
                                             add_generation_prompt=Role.GENERATED not in texts)
        rendered = rendered[0] if isinstance(rendered, list) else rendered
        text, spans = fill_sentinels(rendered, texts, self.family)
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
        return {k: v for k, v in inputs.items() if isinstance(v, torch.Tensor)}, roles

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

    def _device_dtype(self) -> tuple[torch.device, torch.dtype]:
        param = next(self.model.parameters())
        return param.device, param.dtype

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


def _as_prompt(prompt: PromptLike) -> Prompt:
    if isinstance(prompt, Prompt):
        return prompt
    if isinstance(prompt, str):
        return Prompt(instruction=prompt)
    raise UniFusionError(f"Expected a Prompt or a str, found {type(prompt).__name__}.")
