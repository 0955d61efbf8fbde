"""Training presets for real runs at the ``small`` / ``base`` / ``paper`` model shapes.

    python -m unifusion_core.train --train_preset paper --manifest data.jsonl --vlm /models/InternVL2_5-8B ...

A preset fills TrainConfig fields; a ``--config`` file overrides it and flags override both. Where the
paper states a setting it is used (shared/reference/paper.md): ~3% reconstruction batches, most
batches conditioned on VERIFI rewrites, ~11k steps of single-reference edit fine-tuning, 1024 px for
evaluation. Everything else is a documented choice (the paper does not publish it), after common
practice for flow-matching DiTs (SD3, Flux): AdamW at lr 1e-4 with a short warm-up, EMA 0.9999, bf16,
10% condition dropout, logit-normal timesteps with the resolution-dependent shift. Each preset is the
text-to-image stage at one resolution; a higher resolution or the edit fine-tune is a further run
with ``--init_from`` (``EDIT_STEPS`` is the paper's fine-tune length). The VLM features and VAE latents
go to the shared on-disk caches next to the manifest (``feature_cache``/``latent_cache`` "auto": at
these data sizes they never fit the RAM budget); ``python -m unifusion_core.train.precompute`` fills
the feature cache with the VLM alone beforehand.
"""
from __future__ import annotations

_COMMON = dict(lr=1e-4, weight_decay=0.01, warmup_steps=1000, decay="cosine", grad_clip=1.0, ema_decay=0.9999,
               mixed_precision="bf16", recon_share=0.03, verifi_share=0.9, cfg_dropout=0.1, attention="sdpa",
               save_every=1000, keep_states=2, snapshot_every=5000, sample_every=2000, log_every=50,
               buckets="1:1,4:3,3:4,16:9,9:16")

TRAIN_PRESETS: dict[str, dict] = {
    # ~0.5B DiT: fits a 24-80 GB GPU per process without checkpointing at 512 px
    "small": dict(_COMMON, preset="small", resolution=512, batch_size=32, grad_accum=1, max_steps=100_000,
                  grad_checkpointing=False),
    # ~2B DiT: 512 px first (then 1024 with --init_from), activation checkpointing
    "base": dict(_COMMON, preset="base", resolution=512, batch_size=16, grad_accum=2, max_steps=100_000,
                 grad_checkpointing=True),
    # ~8B DiT with an 8B VLM at 1024 px: FSDP2 over 8+ GPUs (accelerate_configs/fsdp.yaml), checkpointing,
    # VLM features precomputed (python -m unifusion_core.train.precompute) so VLM and DiT are never in
    # memory together
    "paper": dict(_COMMON, preset="paper", resolution=1024, batch_size=4, grad_accum=4, max_steps=100_000,
                  grad_checkpointing=True, strategy="fsdp"),
}

EDIT_STEPS = 11_000  # the paper's single-reference edit fine-tune ("roughly 11k steps")
