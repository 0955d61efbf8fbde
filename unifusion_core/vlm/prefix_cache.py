"""Image-prefix cache: reuse the VLM's work on the reference images when only later text changes.

A prompt's token sequence is ``[template/system][images][instruction][generation prompt]...``. The
prefix is every token up to and including the last image token; it holds the system prompt and all
images, so a cached prefix is reused whenever the instruction (or the rewrite being teacher-forced,
or the sampling settings) change, and recomputed when anything before or in the images changes.
Most chat templates put the system prompt before the images, so a changed system prompt is a miss.

An entry holds the prefix's KV cache of every decoder layer (``DynamicCache``) and the captured
states of the tapped layers; a hit runs only the suffix on a copy of that cache. The key is
(encoder instance, model dtype, tapped layers, the prefix token ids, a content hash of every image
after ``ImageDetail.max_pixels`` resizing, and the ``ImageDetail`` settings): the prefix ids pin the
system text, the template and each image's token count, the hashes pin the pixels. Entries are
evicted least-recently-used first to keep the total tensor bytes within ``max_bytes``.

Legend: Lv VLM layers tapped, T tokens, Dv VLM width.
"""
from __future__ import annotations

import copy
import hashlib
import logging
from collections import OrderedDict
from dataclasses import dataclass

import torch

from ..errors import UniFusionError

log = logging.getLogger(__name__)


@dataclass
class PrefixEntry:
    """The prefix of one prompt: KV cache (every layer), tapped states (Lv, T, Dv), its length."""

    cache: object
    hidden: torch.Tensor
    length: int

    @property
    def nbytes(self) -> int:
        return self.hidden.numel() * self.hidden.element_size() + cache_nbytes(self.cache)

    def copy_to(self, device: torch.device) -> "PrefixEntry":
        """A copy whose KV cache the caller may extend (the stored one is never mutated)."""
        cache = copy.deepcopy(self.cache)
        for layer in getattr(cache, "layers", []):
            for name, value in vars(layer).items():
                if isinstance(value, torch.Tensor) and value.device != device:
                    setattr(layer, name, value.to(device))
        return PrefixEntry(cache, self.hidden.to(device), self.length)


class PrefixCache:
    """LRU store of ``PrefixEntry`` bounded by ``max_bytes`` (default 1 GiB). ``device``: where
    entries are kept (None: where they were computed; "cpu" keeps accelerator memory free and
    moves entries back on a hit)."""

    def __init__(self, max_bytes: int = 1 << 30, device=None):
        if not isinstance(max_bytes, int) or max_bytes < 0:
            raise UniFusionError(f"PrefixCache.max_bytes should be an int >= 0, found {max_bytes!r}.")
        self.max_bytes = max_bytes
        self.device = None if device is None else torch.device(device)
        self._entries: OrderedDict = OrderedDict()
        self.nbytes = 0
        self.hits = self.misses = self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key) -> bool:
        return key in self._entries

    def get(self, key, device: torch.device) -> PrefixEntry | None:
        """A private copy of the entry on ``device``, or None (a miss)."""
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry.copy_to(device)

    def put(self, key, entry: PrefixEntry) -> None:
        """Store a copy of ``entry``; evict the least recently used until within the budget."""
        stored = entry.copy_to(self.device) if self.device is not None else PrefixEntry(
            copy.deepcopy(entry.cache), entry.hidden, entry.length)
        size = stored.nbytes
        if size > self.max_bytes:
            log.debug("prefix of %d bytes exceeds the cache budget of %d bytes; not cached", size,
                      self.max_bytes)
            return
        if key in self._entries:
            self.nbytes -= self._entries.pop(key).nbytes
        self._entries[key] = stored
        self.nbytes += size
        while self.nbytes > self.max_bytes:
            _, old = self._entries.popitem(last=False)
            self.nbytes -= old.nbytes
            self.evictions += 1

    def clear(self) -> None:
        self._entries.clear()
        self.nbytes = 0


def cache_nbytes(cache) -> int:
    """Bytes of the tensors held by a transformers cache (its ``layers``)."""
    total = 0
    for layer in getattr(cache, "layers", []):
        for value in vars(layer).values():
            if isinstance(value, torch.Tensor):
                total += value.numel() * value.element_size()
    return total


def image_digest(images: list) -> tuple[str, ...]:
    """A content hash per PIL image (mode, size and pixel bytes)."""
    digests = []
    for image in images:
        h = hashlib.blake2b(digest_size=16)
        h.update(f"{image.mode}:{image.size}".encode())
        h.update(image.tobytes())
        digests.append(h.hexdigest())
    return tuple(digests)


def prefix_key(owner: str, dtype: torch.dtype, layers: tuple, prefix_ids: torch.Tensor,
               images: list, details: list) -> tuple:
    """The cache key of a prefix (see the module docstring)."""
    ids = hashlib.blake2b(prefix_ids.detach().cpu().to(torch.int64).numpy().tobytes(),
                          digest_size=16).hexdigest()
    return (owner, str(dtype), tuple(layers), int(prefix_ids.numel()), ids, image_digest(images),
            tuple((d.max_pixels, d.max_tiles) for d in details))
