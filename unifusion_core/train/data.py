"""Training data: the JSONL manifest, aspect-ratio buckets, and a resumable deterministic order.

Manifest: one JSON object per line (paths relative to the manifest's folder)::

    {"task": "t2i",  "target": "img/0001.png", "prompt": "a red fox", "rewrite": "A red fox sitting ..."}
    {"task": "edit", "target": "img/0002.png", "prompt": "make it winter", "refs": ["img/0001.png"]}
    {"task": "recon", "target": "img/0003.png"}

Optional per record: ``rewrite`` (precomputed VERIFI rewrite text), ``width``/``height`` (skips
reading the image header for bucketing). A malformed manifest is one error naming the line; a record
whose image files are missing or corrupt is skipped (counted, logged once) and replaced by the next
usable record, so every process still gets a full batch and a run never crashes on bad files.
"""
from __future__ import annotations

import json
import logging
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from ..errors import UniFusionError
from .config import TASKS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Record:
    task: str
    target: Path
    prompt: str = ""
    refs: tuple[Path, ...] = ()
    rewrite: str | None = None
    size: tuple[int, int] | None = None  # (width, height) when given in the manifest
    line: int = 0


def load_manifest(path) -> list[Record]:
    path = Path(path)
    if not path.is_file():
        raise UniFusionError(f"{path}: no such manifest file.")
    records = []
    for n, text in enumerate(path.read_text().splitlines(), start=1):
        if text.strip():
            records.append(_parse_line(path, n, text))
    if not records:
        raise UniFusionError(f"{path}: the manifest is empty; expected one JSON record per line.")
    return records


def _parse_line(path: Path, n: int, text: str) -> Record:
    where = f"{path} line {n}"
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise UniFusionError(f"{where}: not valid JSON ({err.msg}).") from err
    if not isinstance(raw, dict):
        raise UniFusionError(f"{where}: expected a JSON object, found {type(raw).__name__}.")
    task = raw.get("task", "t2i")
    if task not in TASKS:
        raise UniFusionError(f"{where}: task {task!r} is not one of {', '.join(TASKS)}.")
    if not isinstance(raw.get("target"), str):
        raise UniFusionError(f"{where}: missing 'target' (the path of the image to generate).")
    if task != "recon" and not isinstance(raw.get("prompt"), str):
        raise UniFusionError(f"{where}: a {task} record needs a 'prompt' string.")
    refs = raw.get("refs", [])
    if not isinstance(refs, list) or (task == "edit" and not refs):
        raise UniFusionError(f"{where}: an edit record needs 'refs', a non-empty list of image paths.")
    size = (int(raw["width"]), int(raw["height"])) if "width" in raw and "height" in raw else None
    base = path.parent
    return Record(task=task, target=base / raw["target"], prompt=raw.get("prompt", ""),
                  refs=tuple(base / r for r in refs), rewrite=raw.get("rewrite"), size=size, line=n)


# ---------------------------------------------------------------------------------------------
# images and buckets
# ---------------------------------------------------------------------------------------------

def load_rgb(path: Path) -> Image.Image:
    """Open and fully decode an image (so a truncated file fails here, not mid-step)."""
    with Image.open(path) as im:
        im.load()
        return im.convert("RGB")


def bucket_sizes(resolution: int, aspects: str, unit: int) -> list[tuple[int, int]]:
    """(width, height) per aspect 'w:h', area ~ resolution**2, sides multiples of ``unit``."""
    sizes = []
    for a in aspects.split(","):
        try:
            w, h = (float(v) for v in a.split(":"))
        except ValueError as err:
            raise UniFusionError(f"bucket aspect {a!r} is not of the form 'w:h'.") from err
        r = math.sqrt(w / h)
        size = (max(unit, round(resolution * r / unit) * unit), max(unit, round(resolution / r / unit) * unit))
        if size not in sizes:
            sizes.append(size)
    return sizes


def nearest_bucket(size: tuple[int, int], buckets: list[tuple[int, int]]) -> int:
    aspect = math.log(size[0] / size[1])
    return min(range(len(buckets)), key=lambda i: abs(math.log(buckets[i][0] / buckets[i][1]) - aspect))


def fit_to(image: Image.Image, size: tuple[int, int]) -> torch.Tensor:
    """Center-crop to the bucket's aspect, resize -> (3, h, w) in [-1, 1]."""
    w, h = size
    iw, ih = image.size
    scale = max(w / iw, h / ih)
    cw, ch = round(w / scale), round(h / scale)
    left, top = (iw - cw) // 2, (ih - ch) // 2
    image = image.crop((left, top, left + cw, top + ch)).resize((w, h), Image.BICUBIC)
    t = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(h, w, 3)
    return t.permute(2, 0, 1).float() / 127.5 - 1


@dataclass
class Dataset:
    """Records grouped into aspect buckets, with skip-and-replace for unusable records."""

    records: list[Record]
    buckets: list[tuple[int, int]]
    assignment: list[int] = field(default_factory=list)  # bucket per record
    excluded: frozenset = frozenset()  # unreadable when the run started: never scheduled
    skipped: set = field(default_factory=set)  # every record found unusable (at start or later)

    @classmethod
    def build(cls, records, resolution, aspects, unit):
        buckets = bucket_sizes(resolution, aspects, unit)
        ds = cls(records, buckets)
        for i, rec in enumerate(records):
            size = rec.size
            if size is None:
                try:
                    with Image.open(rec.target) as im:
                        size = im.size
                except (OSError, ValueError):
                    ds.mark_bad(i, "cannot be opened")
                    size = buckets[0]
            ds.assignment.append(nearest_bucket(size, buckets))
        if len(ds.skipped) == len(records):
            raise UniFusionError("no usable training record: every target image is missing or unreadable.")
        ds.excluded = frozenset(ds.skipped)
        return ds

    def mark_bad(self, i: int, why: str):
        if i not in self.skipped:
            self.skipped.add(i)
            rec = self.records[i]
            log.warning("skipping manifest line %d (%s): %s (%d skipped so far)", rec.line, rec.target, why,
                        len(self.skipped))

    def load(self, i: int):
        """-> (record index actually used, target PIL, refs PIL list); skips bad records forward."""
        for k in range(len(self.records)):
            j = (i + k) % len(self.records)
            if j in self.skipped:
                continue
            rec = self.records[j]
            try:
                return j, load_rgb(rec.target), [load_rgb(r) for r in rec.refs]
            except (OSError, ValueError) as err:
                self.mark_bad(j, f"{type(err).__name__}: {err}")
        raise UniFusionError("no usable training record left: every image is missing or unreadable.")


def epoch_batches(ds: Dataset, epoch: int, seed: int, global_batch: int) -> list[list[int]]:
    """Deterministic batches of one epoch: shuffled within buckets, batch order shuffled."""
    rng = random.Random(seed * 1_000_003 + epoch)
    batches = []
    for b in range(len(ds.buckets)):
        members = [i for i, a in enumerate(ds.assignment) if a == b and i not in ds.excluded]
        rng.shuffle(members)
        if members and len(members) < global_batch:  # tiny datasets: repeat to fill one batch
            members = (members * math.ceil(global_batch / len(members)))[:global_batch]
        batches += [members[k:k + global_batch] for k in range(0, len(members) - global_batch + 1, global_batch)]
    rng.shuffle(batches)
    return batches


def micro_batch(ds: Dataset, micro_step: int, seed: int, batch_size: int, rank: int, world: int) -> list[int]:
    """Record indices of this process's share of global micro-batch ``micro_step`` (resumable:
    a pure function of its arguments, since every epoch has the same number of batches)."""
    per_epoch = len(epoch_batches(ds, 0, seed, batch_size * world))
    if per_epoch == 0:
        raise UniFusionError("no aspect bucket holds enough records for one batch.")
    batches = epoch_batches(ds, micro_step // per_epoch, seed, batch_size * world)
    return batches[micro_step % per_epoch][rank * batch_size:(rank + 1) * batch_size]
