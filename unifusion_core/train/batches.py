"""Turns record indices into model inputs: kept VLM features, model-space latents, sigma and noise.

Legend: B batch, Lv tapped layers, T kept tokens, Dv VLM width, C latent channels, h/w latent size.

Everything random is a pure function of (seed, micro-step, position in the global batch): one
generator per global micro-batch decides whether it is a reconstruction batch, and one per sample
draws VERIFI or raw prompt, CFG dropout, sigma and noise. So a resumed run replays exactly what an
uninterrupted one would have done, and N processes of batch B train on what one process of batch
N x B would (the DDP/FSDP equality tests rely on it).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .. import flow, latent
from ..condition import PLAIN_ROLES, VERIFI_ROLES, kept_states
from ..vlm import Prompt
from .data import Dataset, fit_to

log = logging.getLogger(__name__)

RECON_INSTRUCTION = "Reconstruct this image."


def training_shift(t, tokens: int) -> float:
    """The sigma shift for ``tokens`` latent patches: fixed when configured, else SD3's
    resolution-dependent one, never below 1 (less noise than the plain schedule)."""
    return t.shift or max(1.0, flow.resolution_shift(tokens))


def step_generator(seed: int, micro_step: int, index: int = -1) -> torch.Generator:
    """The generator of global micro-batch ``micro_step`` (``index`` -1) or of its sample ``index``."""
    digest = hashlib.blake2b(f"{seed}/{micro_step}/{index}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)


class TensorCache:
    """Tensors by key: "online" keeps nothing, "memory" a dict, any other value is a folder on disk,
    shareable between runs and processes.

    On disk a value is first a loose safetensors file ``<key>.safetensors`` (written atomically, so
    runs filling the same folder can read each other's); ``pack`` then moves the loose files into
    shards ``shards/shard-*.safetensors`` of many keys each (written once, never changed, read
    memory-mapped), which is what ``precompute`` leaves behind: a data set of millions of records is a
    few hundred files, not millions. Readers find both; a value packed between a reader's check and its
    read is looked up again in the shards."""

    SHARD_BYTES = 512 * 1024 ** 2

    def __init__(self, mode: str):
        self.mode, self.memory = mode, {}
        self.folder = Path(mode) if mode not in ("online", "memory") else None
        self.index: dict[str, Path] = {}  # key -> shard holding it
        self._handles: dict[Path, object] = {}  # open (memory-mapped) shards
        self._listed: set[str] = set()  # shard file names indexed
        if self.folder:
            self.folder.mkdir(parents=True, exist_ok=True)

    @property
    def shard_dir(self) -> Path:
        return self.folder / "shards"

    def _refresh(self) -> None:
        """Index the shards written since the last look (one directory listing)."""
        from safetensors import safe_open

        try:
            names = os.listdir(self.shard_dir)
        except FileNotFoundError:
            return
        for name in sorted(set(names) - self._listed):
            if name.startswith("shard-") and name.endswith(".safetensors"):
                with safe_open(str(self.shard_dir / name), "pt") as f:
                    self.index.update(dict.fromkeys(f.keys(), self.shard_dir / name))
                self._listed.add(name)

    def _loose(self, key) -> Path:
        return self.folder / f"{key}.safetensors"

    def has(self, key) -> bool:
        """Whether ``key`` is stored, without reading it."""
        if key in self.memory or not self.folder:
            return key in self.memory
        if key in self.index or self._loose(key).exists():
            return True
        self._refresh()
        return key in self.index

    def _from_shard(self, key):
        from safetensors import safe_open

        path = self.index[key]
        if path not in self._handles:
            if len(self._handles) >= 64:  # keep few files open
                self._handles.pop(next(iter(self._handles)))
            self._handles[path] = safe_open(str(path), "pt")
        return self._handles[path].get_tensor(key)

    def get(self, key):
        if key in self.memory:
            return self.memory[key]
        if not self.folder:
            return None
        if key not in self.index:
            try:
                return load_file(str(self._loose(key)))["t"]
            except FileNotFoundError:  # not stored, or packed meanwhile
                self._refresh()
        return self._from_shard(key) if key in self.index else None

    def put(self, key, value: torch.Tensor):
        if self.mode == "memory":
            self.memory[key] = value
        elif self.folder:
            tmp = self.folder / f".{key}.tmp"
            save_file({"t": value.contiguous()}, str(tmp))
            tmp.replace(self._loose(key))  # atomic: other processes may read it

    def __len__(self) -> int:
        if not self.folder:
            return len(self.memory)
        self._refresh()
        return len(self.index.keys() | {p.stem for p in self.folder.glob("*.safetensors")})

    def pack(self, shard_bytes: int | None = None) -> int:
        """Move the loose files into new shards of about ``shard_bytes`` each (default SHARD_BYTES; a shard
        closes at the value that reaches it) -> the number of shards written. Safe while other processes
        read or add loose files."""
        if not self.folder:
            return 0
        limit, written = shard_bytes or self.SHARD_BYTES, 0
        self.shard_dir.mkdir(exist_ok=True)
        loose = sorted(self.folder.glob("*.safetensors"))

        def flush(batch):
            tmp = self.shard_dir / f".shard-{os.getpid()}.tmp"
            save_file({k: v for k, (v, _) in batch.items()}, str(tmp))
            tmp.replace(self.shard_dir / f"shard-{time.time_ns()}-{os.getpid()}.safetensors")
            for _, path in batch.values():  # only now: every value is readable at every moment
                path.unlink(missing_ok=True)

        batch, size = {}, 0
        for path in loose:
            try:
                value = load_file(str(path))["t"]
            except FileNotFoundError:  # another packer took it
                continue
            batch[path.stem] = (value, path)
            size += value.numel() * value.element_size()
            if size >= limit:
                flush(batch)
                batch, size, written = {}, 0, written + 1
        if batch:
            flush(batch)
            written += 1
        self._refresh()
        return written


def shared_cache_dir(manifest, kind: str, identity: dict) -> Path:
    """The on-disk cache next to a manifest that every run on it with the same VLM / VAE shares (a model
    and its ablations): ``<manifest folder>/.unifusion_cache/<kind>-<digest>``."""
    digest = hashlib.sha1(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return Path(manifest).resolve().parent / ".unifusion_cache" / f"{kind}-{digest}"


def feature_cache_dir(tcfg, ucfg, vlm) -> Path:
    """Where ``feature_cache: auto`` keeps a data set's VLM features on disk (the run and ``precompute``)."""
    return shared_cache_dir(tcfg.manifest, "features", {"vlm": vlm.identity, "layers": list(ucfg.vlm.layers)})


class BatchMaker:
    def __init__(self, tcfg, ucfg, ds: Dataset, vlm, vae=None, device="cpu"):
        self.tcfg, self.ucfg, self.ds, self.vlm, self.vae, self.device = tcfg, ucfg, ds, vlm, vae, device
        self.feature_cache = self._feature_cache()  # kept VLM states, fp16, selected layers
        self.latent_cache = TensorCache(self._latent_mode())  # target latents (VAE encodes) per bucket

    # -- caches ---------------------------------------------------------------------------------------
    def _budget(self) -> float:
        return self.tcfg.ram_budget_gb * 1024 ** 3

    def _feature_cache(self) -> TensorCache:
        """``auto``: in memory when the whole data set's features fit the RAM budget, else on disk next to
        the manifest. The size is measured on a few records' real features (they stay cached)."""
        if self.tcfg.feature_cache != "auto":
            return TensorCache(self.tcfg.feature_cache)
        self.feature_cache = memory = TensorCache("memory")  # self.features() fills it with the probe
        probe = [i for i in range(len(self.ds.records)) if i not in self.ds.skipped][:4]
        per_record = 0.0
        for i in probe:
            j, target, refs = self.ds.load(i)
            kept = self.features([(j, "verifi" if self.ds.records[j].rewrite is not None else "raw", target, refs)])[0]
            per_record += kept.numel() * kept.element_size() / len(probe)
        modes = 2 if any(r.rewrite is not None for r in self.ds.records) else 1  # VERIFI and raw prompts
        estimate = per_record * modes * len(self.ds.records)
        if estimate <= self._budget():
            log.info("feature cache: memory (%.2f GiB estimated for %d records, RAM budget %.1f GiB)",
                     estimate / 1024 ** 3, len(self.ds.records), self.tcfg.ram_budget_gb)
            return memory
        folder = feature_cache_dir(self.tcfg, self.ucfg, self.vlm)
        disk = TensorCache(str(folder))
        stored = len(disk)
        log.info("feature cache: disk at %s (%.2f GiB estimated for %d records > RAM budget %.1f GiB; %d stored "
                 "already)", folder, estimate / 1024 ** 3, len(self.ds.records), self.tcfg.ram_budget_gb, stored)
        for key, value in memory.memory.items():  # the probe's features
            if not disk.has(key):
                disk.put(key, value)
        return disk

    def _latent_mode(self) -> str:
        """``auto`` for VAE latents: memory when every target's latent at its bucket fits the budget."""
        if self.tcfg.latent_cache != "auto":
            return self.tcfg.latent_cache
        if self.ucfg.sampling.latent_format == "pixel":
            return "online"  # pixels need no encoding
        down = self.vae.downscale if self.vae is not None else 8
        area = max(w * h for w, h in self.ds.buckets)
        estimate = len(self.ds.records) * self.ucfg.dit.in_channels * area / down ** 2 * 4
        if estimate <= self._budget():
            return "memory"
        folder = shared_cache_dir(self.tcfg.manifest, "latents", {"vae": "flux16", "buckets": self.ds.buckets})
        log.info("latent cache: disk at %s (%.2f GiB estimated > RAM budget %.1f GiB)", folder,
                 estimate / 1024 ** 3, self.tcfg.ram_budget_gb)
        return str(folder)

    # -- conditioning -------------------------------------------------------------------------------
    def prompt_for(self, rec, mode, target, refs) -> tuple[Prompt, tuple]:
        """The VLM conversation and the kept roles of a record in ``mode`` (raw | verifi | recon)."""
        if mode == "recon":
            return Prompt(RECON_INSTRUCTION, images=[target]), PLAIN_ROLES
        if mode == "verifi":
            system = self.ucfg.system_prompts.get(rec.task) or self.ucfg.system_prompts.get("t2i")
            return Prompt(rec.prompt, system=system, images=refs, generated=rec.rewrite), VERIFI_ROLES
        return Prompt(rec.prompt, images=refs), PLAIN_ROLES

    def _cache_key(self, idx, mode):
        rec = self.ds.records[idx]
        text = f"{rec.target}|{rec.prompt}|{rec.rewrite}|{mode}|{self.ucfg.vlm.layers}|{self.vlm.identity}"
        return hashlib.sha1(text.encode()).hexdigest()

    def features(self, items) -> list[torch.Tensor]:
        """items: [(record index, mode, target PIL, refs)] -> kept hidden states, each (Lv, T, Dv)."""
        out, todo = [None] * len(items), []
        for n, (idx, mode, target, refs) in enumerate(items):
            key = self._cache_key(idx, mode)
            cached = self.feature_cache.get(key)
            if cached is None:
                todo.append((n, key, *self.prompt_for(self.ds.records[idx], mode, target, refs)))
            else:
                out[n] = cached
        for roles in {t[3] for t in todo}:
            group = [t for t in todo if t[3] == roles]
            with torch.no_grad():
                feats = self.vlm.encode([t[2] for t in group], layers=self.ucfg.vlm.layers)
            hidden, mask = kept_states(self.ucfg, feats, roles, where="the trained checkpoint")  # (b, Lv, T, Dv), (b, T)
            for row, (n, key, *_rest) in enumerate(group):
                kept = hidden[row, :, : int(mask[row].sum())].to("cpu", torch.float16)  # (Lv, T, Dv)
                self.feature_cache.put(key, kept)
                out[n] = kept
        return out

    # -- targets --------------------------------------------------------------------------------
    def to_model_space(self, idx, target, size) -> torch.Tensor:
        """Record ``idx``'s target at bucket ``size`` in the DiT's space (C, h, w); VAE encodes are cached."""
        pixels = fit_to(target, size)  # (3, H, W) in [-1, 1]
        if self.ucfg.sampling.latent_format == "pixel":
            return pixels
        key = hashlib.sha1(f"{self.ds.records[idx].target}|{size}|flux16".encode()).hexdigest()
        raw = self.latent_cache.get(key)
        if raw is None:
            vparam = next(self.vae.parameters())
            with torch.no_grad():
                raw = self.vae.encode(pixels[None].to(vparam.device, vparam.dtype))[0].float().cpu()
            self.latent_cache.put(key, raw)
        return latent.process_in(raw.float(), "flux16")

    # -- the batch ------------------------------------------------------------------------------
    def make(self, indices, micro_step: int, rank: int) -> dict:
        """Model inputs of this process's share ``indices`` (process ``rank``, equal shares) of global
        micro-batch ``micro_step``."""
        t = self.tcfg
        recon_batch = float(torch.rand((), generator=step_generator(t.seed, micro_step))) < t.recon_share
        size = self.ds.buckets[self.ds.assignment[indices[0]]]
        first = rank * len(indices)  # this share's position in the global batch
        gens = [step_generator(t.seed, micro_step, first + n) for n in range(len(indices))]
        items, x0 = [], []
        for i, g in zip(indices, gens):
            j, target, refs = self.ds.load(i)
            rec = self.ds.records[j]
            verifi = float(torch.rand((), generator=g)) < t.verifi_share and rec.rewrite is not None
            mode = "recon" if recon_batch or rec.task == "recon" else ("verifi" if verifi else "raw")
            items.append((j, mode, target, refs))
            x0.append(self.to_model_space(j, target, size))
        kept = self.features(items)
        T = max(k.shape[1] for k in kept)
        Lv, Dv = kept[0].shape[0], kept[0].shape[2]
        hidden = torch.zeros(len(kept), Lv, T, Dv)
        mask = torch.zeros(len(kept), T, dtype=torch.bool)
        for n, k in enumerate(kept):
            hidden[n, :, : k.shape[1]] = k.float()
            mask[n, : k.shape[1]] = True
        x0 = torch.stack(x0)  # (B, C, h, w)
        shift = training_shift(t, x0.shape[-2] * x0.shape[-1] // self.ucfg.dit.patch_size ** 2)
        sigma = torch.cat([flow.sample_sigmas(1, shift=shift, mean=t.logit_mean, std=t.logit_std, generator=g)
                           for g in gens])
        noise = torch.stack([torch.randn(x0.shape[1:], generator=g) for g in gens])
        drop = torch.cat([torch.rand(1, generator=g) for g in gens]) < t.cfg_dropout
        return {k: v.to(self.device) for k, v in dict(hidden=hidden, mask=mask, x0=x0, sigma=sigma, noise=noise,
                                                       drop=drop).items()} | {"modes": [m for _, m, _, _ in items]}
