"""VERIFI decoding and teacher forcing for one prompt, with hidden-state capture and prefix reuse.

``generate_one`` decodes with a KV cache and captures the tapped layers of every prompt token (at
prefill) and of every generated token (at the step that feeds it back), so the result equals one
causal forward over [prompt + generated tokens]. The last generated token is fed once more with the
forward stopped after the deepest tapped layer: its states are needed, its logits are not.

Roles of the sequence: the prompt's own roles (SYSTEM / IMAGE / INSTRUCTION / TEMPLATE), GENERATED
for every generated text token, TEMPLATE for the stop token that ended decoding. Decoding never
chooses other special tokens (see ``sampling``), so the text is exactly the decoded GENERATED ids.

``teacher_force_one`` builds the same sequence for a given rewrite in one forward: from token ids
(exact replay of a generation) or from text, tokenized as a model would emit it after the
generation prompt (see ``answer_ids``). Text -> ids is exact when the ids are the tokenizer's own
tokenization of the text, which trained models emit; a random model's arbitrary ids may decode to a
text that re-tokenizes differently, hence ``Features.generated_ids`` for exact replay.

Legend: Lv VLM layers tapped, T tokens, Dv VLM width.
"""
from __future__ import annotations

import logging
from typing import Callable, Sequence, Union

import torch

from ..errors import UniFusionError
from .context import SEQUENCE_KEYS, Context
from .features import Role
from .prefix_cache import PrefixCache, prefix_key
from .prompts import Prompt, image_details
from .sampling import Sampling, TokenPicker
from .taps import LayerTap

log = logging.getLogger(__name__)

Rewrite = Union[str, Sequence[int]]
Result = tuple  # (hidden (Lv, T, Dv), roles (T,), input_ids (T,), text, generated ids)


def _token_budget(encoder, length: int, wanted: int) -> int:
    """How many tokens may be generated after a ``length``-token prompt: ``wanted``, or fewer (with
    one warning naming both lengths) where the VLM's positions run out first."""
    room = encoder.max_positions - length if encoder.max_positions else wanted
    if room < 1:
        raise UniFusionError(f"The VLM prompt is {length} tokens, which fills all {encoder.max_positions} positions "
                             f"of {encoder.identity['architecture']}, so no rewrite fits; shorten the instruction.")
    if room < wanted:
        log.warning("The VLM prompt is %d tokens and %s reads at most %d positions, so the rewrite is cut at %d "
                    "tokens instead of %d.", length, encoder.identity["architecture"], encoder.max_positions,
                    room, wanted)
    return min(wanted, room)


def generate_one(encoder, prompt: Prompt, tap: LayerTap, sampling: Sampling, seed: int, *,
                 prefix_cache: PrefixCache | None, tick: Callable[[], None],
                 should_stop: Callable[[], bool] | None) -> Result:
    """Decode ``prompt``'s answer; ``tick()`` after each token, ``should_stop()`` before each."""
    if prompt.generated is not None:
        raise UniFusionError("A prompt to generate from should have no generated text, found "
                             f"{prompt.generated[:40]!r}; use teacher forcing to condition on it.")
    _check_stop(should_stop, 0)
    ctx, roles, logits = run_prompt(encoder, prompt, tap, prefix_cache, logits=True)
    picker = TokenPicker(sampling, encoder.stop_ids, encoder.banned_ids, seed)
    limit = _token_budget(encoder, int(ctx.inputs["input_ids"].shape[1]), sampling.max_new_tokens)
    ids: list[int] = []
    asked, tap.should_stop = tap.should_stop, None  # one token at a time: asked between tokens instead
    try:
        for step in range(limit):
            _check_stop(should_stop, step)
            token = picker.pick(logits, step)
            ids.append(token)
            last = token in encoder.stop_ids or step + 1 == limit
            logits = ctx.feed_token(token, logits=not last, stop_early=last)
            tick()
            if last:
                break
    finally:
        tap.should_stop = asked
    return _result(encoder, ctx.hidden, roles, ctx.inputs["input_ids"][0], ids)


def teacher_force_one(encoder, prompt: Prompt, rewrite: Rewrite, tap: LayerTap, *,
                      prefix_cache: PrefixCache | None) -> Result:
    """The features ``generate_one`` would return had it produced ``rewrite``, in one forward."""
    if prompt.generated is not None:
        raise UniFusionError("Teacher forcing takes the rewrite separately; the prompt should have "
                             f"no generated text, found {prompt.generated[:40]!r}.")
    inputs, roles, images = encoder.prepare(prompt)
    if isinstance(rewrite, str):
        ids = answer_ids(encoder, prompt, rewrite, len(images))
    else:
        ids = [int(i) for i in rewrite]
    _check_rewrite_ids(encoder, ids)
    total = int(inputs["input_ids"].shape[1]) + len(ids)
    if encoder.max_positions and total > encoder.max_positions:
        raise UniFusionError(f"The VLM prompt ({int(inputs['input_ids'].shape[1])} tokens) and the rewrite ({len(ids)} "
                             f"tokens) are {total} tokens, but {encoder.identity['architecture']} reads at most "
                             f"{encoder.max_positions} positions; shorten the rewrite or the instruction.")
    inputs = extend_inputs(inputs, ids)
    ctx, _, _ = run_prompt(encoder, prompt, tap, prefix_cache, logits=False,
                           prepared=(inputs, roles, images))
    return _result(encoder, ctx.hidden, roles, inputs["input_ids"][0, :roles.numel()], ids)


def answer_ids(encoder, prompt: Prompt, text: str, count: int) -> list[int]:
    """The ids a model emits after the generation prompt to answer ``text``: the chat template's
    rendering of the assistant turn past the generation prompt (so a separator the template puts
    before the answer is included), tokenized, cut after the end-of-turn token. Empty text: [].
    ``count``: the prompt's number of images."""
    if not text.strip():
        return []
    asked, _ = encoder.render(prompt, count)
    answered, spans = encoder.render(Prompt(prompt.instruction, prompt.system, prompt.images,
                                            prompt.detail, text), count)
    if not answered.startswith(asked):
        raise UniFusionError(f"The {encoder.family} chat template renders an answered turn that does "
                             f"not continue its generation prompt; pass the rewrite as token ids.")
    end = next(e for s, e, r in spans if r == Role.GENERATED) - len(asked)
    tail = encoder.tokenizer(answered[len(asked):], add_special_tokens=False,
                             return_offsets_mapping=True)
    ids = [i for i, (s, _) in zip(tail["input_ids"], tail["offset_mapping"]) if s < end]
    after = tail["input_ids"][len(ids)] if len(ids) < len(tail["input_ids"]) else None
    return ids + ([after] if after in encoder.stop_ids else [])


def run_prompt(encoder, prompt: Prompt, tap: LayerTap, prefix_cache: PrefixCache | None, *,
               logits: bool, prepared: tuple | None = None) -> tuple:
    """Feed the whole prompt (reusing a cached image prefix); return (Context, roles (T,), the
    last position's logits (V,) or None). ``prepared``: (inputs, roles, images) already built, the
    inputs possibly longer than the prompt (teacher forcing)."""
    inputs, roles, images = prepared or encoder.prepare(prompt)
    device, dtype = encoder.device_dtype()
    inputs = {k: (v.to(device, dtype) if v.is_floating_point() else v.to(device))
              for k, v in inputs.items()}
    ctx = Context(encoder, tap, inputs)
    total = int(inputs["input_ids"].shape[1])
    split = _prefix_end(roles, total)
    if prefix_cache is not None and split:
        key = prefix_key(encoder.uid, dtype, tap.layers, inputs["input_ids"][0, :split], images,
                         image_details(prompt, len(images)))
        entry = prefix_cache.get(key, device)
        if entry is not None:
            ctx.resume(entry)
        else:
            ctx.feed_prompt(split)
            prefix_cache.put(key, ctx.snapshot())
    out = ctx.feed_prompt(total, logits=logits, stop_early=not logits)
    return ctx, roles, out


def extend_inputs(inputs: dict, ids: list[int]) -> dict:
    """The prompt's inputs with ``ids`` appended as text tokens (sequence tensors grow)."""
    if not ids:
        return inputs
    out = dict(inputs)
    new = torch.tensor([ids], dtype=torch.int64)  # (1, n)
    for key in SEQUENCE_KEYS:
        if key in inputs:
            value = inputs[key]
            fill = new if key == "input_ids" else torch.full_like(new, int(key == "attention_mask"))
            out[key] = torch.cat([value, fill.to(value.device, value.dtype)], dim=1)  # (1, T + n)
    return out


# --------------------------------------------------------------------------------------------------

def _prefix_end(roles: torch.Tensor, total: int) -> int:
    """Tokens up to and including the last image token (0 without images), leaving >= 1 token."""
    image = (roles == int(Role.IMAGE)).nonzero()
    return min(int(image[-1]) + 1, total - 1) if image.numel() else 0


def _answer_end(encoder, ids: torch.Tensor, roles: torch.Tensor) -> int:
    """End of the assistant answer in a template rendering: after the last GENERATED token and the
    stop token that follows it (the template's end of turn), if one does."""
    generated = (roles == int(Role.GENERATED)).nonzero()
    end = int(generated[-1]) + 1 if generated.numel() else int((roles != int(Role.GENERATED))
                                                               .cumprod(0).sum())
    return end + 1 if end < ids.numel() and int(ids[end]) in encoder.stop_ids else end


def _check_rewrite_ids(encoder, ids: list[int]) -> None:
    body = ids[:-1] if ids and ids[-1] in encoder.stop_ids else ids
    bad = [i for i in body if i in encoder.banned_ids or i in encoder.stop_ids]
    if bad:
        raise UniFusionError(f"A rewrite's token ids should be text tokens (optionally ending with a "
                             f"stop token), found special or unknown ids {bad[:5]}.")


def _result(encoder, hidden, prompt_roles, prompt_ids, ids: list[int]) -> Result:
    stopped = bool(ids) and ids[-1] in encoder.stop_ids
    text_ids = ids[:-1] if stopped else ids
    gen_roles = [int(Role.GENERATED)] * len(text_ids) + [int(Role.TEMPLATE)] * stopped
    roles = torch.cat([prompt_roles, torch.tensor(gen_roles, dtype=torch.int64)])  # (T,)
    input_ids = torch.cat([prompt_ids.cpu(), torch.tensor(ids, dtype=torch.int64)])  # (T,)
    text = encoder.tokenizer.decode(text_ids, skip_special_tokens=False).strip()
    assert hidden.shape[1] == roles.numel() == input_ids.numel(), "feature/role length mismatch"
    return hidden, roles, input_ids, text, tuple(ids)


def _check_stop(should_stop, step: int) -> None:
    if should_stop is not None and should_stop():
        raise InterruptedError(f"VERIFI decoding was interrupted after {step} generated tokens.")
