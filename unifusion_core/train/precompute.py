"""Fill a feature cache folder ahead of (or beside) a training run, with the VLM alone.

    python -m unifusion_core.train.precompute --manifest data/manifest.jsonl --vlm VLM \
        --feature_cache cache/features [--preset toy ...]   (the same flags as the training run)

Writes the kept VLM states of every record in every conditioning mode training draws (raw prompt,
VERIFI rewrite where the record has one, reconstruction for recon records) under the keys the trainer
uses, so a run (or several: a model and its ablations) pointed at the same folder never runs the VLM
for them (and, for a flux16 model with a latent cache folder, the targets' VAE latents), then packs
everything loose in the folders into shards (``TensorCache.pack``: safetensors
files of about 512 MiB, read memory-mapped). Safe to run while a training run fills or reads the same
folder (writes are atomic, a packed value is found in its shard).
"""
from __future__ import annotations

import logging
import sys
import time

from ..errors import UniFusionError
from .config import cli_main

log = logging.getLogger(__name__)


def precompute(t, batch: int = 64) -> int:
    import torch
    from accelerate import Accelerator

    from .batches import BatchMaker
    from .trainer import _setup

    from dataclasses import replace

    from .batches import feature_cache_dir

    if t.feature_cache in ("online", "memory"):
        raise UniFusionError(f"precompute needs --feature_cache pointing at a folder (or 'auto': the shared "
                             f"cache next to the manifest), found {t.feature_cache!r}.")
    acc = Accelerator(cpu=not torch.cuda.is_available())  # the VLM on a GPU when there is one
    vlm, vae, ucfg, ds = _setup(replace(t, vlm_device="auto"), acc)  # --vlm_device is the training run's
    if t.feature_cache == "auto":  # the folder an 'auto' training run on this manifest and VLM uses on disk
        t = replace(t, feature_cache=str(feature_cache_dir(t, ucfg, vlm)))
    maker = BatchMaker(t, ucfg, ds, vlm, vae, acc.device)
    todo = []
    for i, rec in enumerate(ds.records):
        if i in ds.skipped:
            continue
        modes = ["recon"] if rec.task == "recon" else ["raw"] + (["verifi"] if rec.rewrite is not None else [])
        todo += [(i, m) for m in modes if not maker.feature_cache.has(maker._cache_key(i, m))]
    log.info("%d features to compute (%d records)", len(todo), len(ds.records))
    t0 = time.perf_counter()
    for start in range(0, len(todo), batch):
        items = []
        for i, mode in todo[start:start + batch]:
            j, target, refs = ds.load(i)
            if not maker.feature_cache.has(maker._cache_key(j, mode)):  # a training run may have done it
                items.append((j, mode, target, refs))
        if items:
            maker.features(items)
        if (start // batch) % 20 == 0:
            log.info("%d / %d features (%.0f s)", start + len(items), len(todo), time.perf_counter() - t0)
    shards = maker.feature_cache.pack()
    log.info("packed the loose features into %d new shard(s) under %s (%d features stored)", shards,
             maker.feature_cache.shard_dir, len(maker.feature_cache))
    if vae is not None and maker.latent_cache.folder:  # flux16: the target latents too, with the VAE
        for i in range(len(ds.records)):
            if i not in ds.skipped:
                j, target, _ = ds.load(i)
                maker.to_model_space(j, target, ds.buckets[ds.assignment[j]])
        shards = maker.latent_cache.pack()
        log.info("packed the loose latents into %d new shard(s) under %s (%d latents stored)", shards,
                 maker.latent_cache.shard_dir, len(maker.latent_cache))
    return len(todo)


def main(argv=None) -> int:
    return cli_main(argv, precompute, "computed {} features")


if __name__ == "__main__":
    sys.exit(main())
