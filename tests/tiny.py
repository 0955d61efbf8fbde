"""Shared tiny configs for the core's unit tests (no VLM needed)."""
import torch

from unifusion_core.checkpoint import build_modules
from unifusion_core.config import UniFusionConfig, VLMSpec

TINY_VLM = VLMSpec(architecture="Qwen2ForCausalLM", num_layers=4, hidden_size=64, layers=(1, 2, 3, 4), name="tiny")


def tiny_config(latent_format="pixel", **dit_overrides) -> UniFusionConfig:
    from dataclasses import replace

    cfg = UniFusionConfig.preset("tiny", TINY_VLM)
    dit = cfg.dit
    if latent_format == "flux16":
        dit = replace(dit, in_channels=16, patch_size=2)
    dit = replace(dit, **dit_overrides)
    return replace(cfg, dit=dit, sampling=replace(cfg.sampling, latent_format=latent_format))


def tiny_modules(cfg=None, seed=0, **kw):
    cfg = cfg or tiny_config()
    torch.manual_seed(seed)
    pooler, dit = build_modules(cfg, **kw)
    pooler.init_weights()
    dit.init_weights()
    return cfg, pooler, dit


def randomize_(module, seed=1, std=0.2):
    """Overwrite every parameter with noise (zero-init gates would hide bugs in equivalence tests)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return module
