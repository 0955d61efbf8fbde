"""Token choice for VERIFI decoding: greedy or temperature/top-p sampling with an explicit seed.

Sampling runs on CPU in float32 with a seeded ``torch.Generator``, so a fixed seed gives the same
tokens on any device. A rewrite is plain text: special tokens other than the stop tokens (image
placeholders, turn markers, padding) and ids past the tokenizer's vocabulary (padded LM heads) are
never chosen. The stop tokens are the tokenizer's EOS, the model's generation EOS ids and the chat
template's end-of-turn token.

Legend: V vocabulary (LM head width).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import UniFusionError


@dataclass(frozen=True)
class Sampling:
    """How VERIFI decodes. ``temperature`` 0 means greedy (the default); ``seed`` seeds a CPU
    generator per prompt (prompt i of a batch uses ``seed + i``). ``min_new_tokens`` suppresses the
    stop tokens until that many tokens were generated."""

    max_new_tokens: int = 256
    min_new_tokens: int = 0
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise UniFusionError(f"Sampling.max_new_tokens should be an int >= 1, found "
                                 f"{self.max_new_tokens!r}.")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise UniFusionError(f"Sampling.min_new_tokens should be in 0..max_new_tokens "
                                 f"({self.max_new_tokens}), found {self.min_new_tokens!r}.")
        if not self.temperature >= 0:
            raise UniFusionError(f"Sampling.temperature should be >= 0 (0 = greedy), found "
                                 f"{self.temperature!r}.")
        if not 0 < self.top_p <= 1:
            raise UniFusionError(f"Sampling.top_p should be in (0, 1], found {self.top_p!r}.")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


class TokenPicker:
    """Chooses each next token of one prompt: masks banned ids, then argmax or seeded sampling."""

    def __init__(self, sampling: Sampling, stop_ids: frozenset, banned_ids: frozenset, seed: int):
        self.sampling, self.stop_ids = sampling, stop_ids
        self.banned = torch.tensor(sorted(banned_ids), dtype=torch.int64)
        self.stops = torch.tensor(sorted(stop_ids), dtype=torch.int64)
        self.generator = torch.Generator("cpu").manual_seed(seed)

    def pick(self, logits: torch.Tensor, step: int) -> int:
        """The token id after ``logits`` (V,), the ``step``-th generated token (0-based)."""
        scores = logits.detach().float().cpu().clone()  # (V,)
        scores[self.banned[self.banned < scores.numel()]] = float("-inf")
        if step < self.sampling.min_new_tokens:
            scores[self.stops[self.stops < scores.numel()]] = float("-inf")
        if self.sampling.greedy:
            return int(scores.argmax())
        probs = top_p_filter(torch.softmax(scores / self.sampling.temperature, dim=-1),
                             self.sampling.top_p)
        return int(torch.multinomial(probs, 1, generator=self.generator))


def top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose mass reaches ``top_p`` (at least one)."""
    if top_p >= 1:
        return probs
    sorted_probs, order = torch.sort(probs, descending=True)  # (V,)
    before = torch.cumsum(sorted_probs, dim=0) - sorted_probs  # mass of the tokens ranked higher
    sorted_probs[before >= top_p] = 0
    return torch.zeros_like(probs).scatter(0, order, sorted_probs)


# --------------------------------------------------------------------------------------------------
# stop and banned ids
# --------------------------------------------------------------------------------------------------

def stop_token_ids(tokenizer, model, answer_tail: str) -> frozenset:
    """EOS of the tokenizer and of the model's generation config, plus the template's end-of-turn
    token: the first token of ``answer_tail``, the text the chat template writes right after an
    assistant answer, when that token is special."""
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(int(i) for i in (gen_eos if isinstance(gen_eos, (list, tuple)) else [gen_eos])
               if i is not None)
    tail_ids = tokenizer(answer_tail, add_special_tokens=False)["input_ids"] if answer_tail else []
    if tail_ids and tail_ids[0] in special_token_ids(tokenizer):
        ids.add(int(tail_ids[0]))
    if not ids:
        raise UniFusionError("The VLM's tokenizer, generation config and chat template name no "
                             "end-of-sequence token, so decoding could never stop.")
    return frozenset(ids)


def special_token_ids(tokenizer) -> set[int]:
    ids = set(int(i) for i in tokenizer.all_special_ids)
    ids.update(int(i) for i, t in tokenizer.added_tokens_decoder.items() if t.special)
    return ids


def banned_token_ids(tokenizer, vocab_size: int, stop_ids: frozenset) -> frozenset:
    """Special tokens that are not stop tokens, and LM-head ids the tokenizer does not know."""
    banned = special_token_ids(tokenizer) - set(stop_ids)
    banned.update(range(len(tokenizer), vocab_size))
    return frozenset(banned)
