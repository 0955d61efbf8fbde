"""The planner: its FLOP formulas against torch.utils.flop_counter on real small models, its
parameter counts against the built modules, and the CLI on the paper shapes."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from unifusion_core.blocks import eager_attention
from unifusion_core.checkpoint import build_modules
from unifusion_core.config import UniFusionConfig, VLMSpec
from unifusion_core.train.plan import count_params, forward_flops, latent_tokens

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("preset,kind", [("tiny", "lap"), ("toy", "lap"), ("toy", "last_layer")])
def test_flop_formulas_match_the_flop_counter(preset, kind):
    from dataclasses import replace

    cfg = UniFusionConfig.preset(preset, VLMSpec("X", 6, 96, (2, 4, 6)))
    cfg = replace(cfg, lap=replace(cfg.lap, kind=kind))
    torch.manual_seed(0)
    pooler, dit = build_modules(cfg, attn_fn=eager_attention)
    pooler.init_weights()
    dit.init_weights()
    res, n_cond = 32, 12
    n_lat = latent_tokens(cfg, res)
    hidden = torch.randn(1, 3, n_cond, 96)
    mask = torch.ones(1, n_cond, dtype=torch.bool)
    x = torch.randn(1, cfg.dit.in_channels, res, res)
    with FlopCounterMode(display=False) as fwd_counter:
        cond = pooler(hidden, mask) if kind == "last_layer" else pooler(hidden, mask, attn_fn=eager_attention)
        out = dit(x, torch.tensor([0.5]), cond, mask)
    with FlopCounterMode(display=False) as bwd_counter:
        out.square().mean().backward()
    want = forward_flops(cfg, n_lat, n_cond)
    measured, predicted = fwd_counter.get_total_flops(), sum(want.values())
    assert abs(measured - predicted) / measured < 0.03, (measured, predicted, want)
    # backward ~ 2x forward (the pooler's input needs no gradient: a little less)
    ratio = bwd_counter.get_total_flops() / measured
    assert 1.7 < ratio < 2.05, ratio


def test_parameter_counts_are_the_modules():
    cfg = UniFusionConfig.preset("toy", VLMSpec("X", 6, 96, (2, 4, 6)))
    pooler, dit = build_modules(cfg)
    assert count_params(cfg) == (sum(p.numel() for p in dit.parameters()), sum(p.numel() for p in pooler.parameters()))


def test_plan_cli_paper_shapes():
    cmd = [sys.executable, "-m", "unifusion_core.train", "plan", "--preset", "paper", "--resolution", "1024",
           "--gpus", "8", "--strategy", "fsdp"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "4096 latent + 256 condition" in out.stdout and "DiT 8.3" in out.stdout
    ckpt = subprocess.run(cmd + ["--grad-checkpointing"], cwd=ROOT, capture_output=True, text=True, timeout=300).stdout

    def total(text):
        return float(next(ln for ln in text.splitlines() if ln.strip().startswith("total")).split()[1])

    assert total(ckpt) < total(out.stdout) / 2  # checkpointing keeps a fraction of the activations
    bad = subprocess.run(cmd[:-1] + ["tp"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "'fsdp' or 'ddp'" in bad.stdout


def test_training_presets_layer_under_config_and_flags(tmp_path):
    import json

    from unifusion_core.errors import UniFusionError
    from unifusion_core.train.config import TrainConfig, parse_args
    from unifusion_core.train.presets import TRAIN_PRESETS

    for name, values in TRAIN_PRESETS.items():
        t = parse_args(["--train_preset", name])
        assert t.preset == name and t.recon_share == 0.03 and t.verifi_share == 0.9 and t.mixed_precision == "bf16"
        assert set(values) <= {f for f in TrainConfig.__dataclass_fields__}
    paper = parse_args(["--train_preset", "paper"])
    assert (paper.resolution, paper.strategy) == (1024, "fsdp") and parse_args(["--train_preset", "base"]).strategy == "ddp"
    cfg = tmp_path / "run.json"
    cfg.write_text(json.dumps({"lr": 3e-4, "batch_size": 2}))
    t = parse_args(["--train_preset", "paper", "--config", str(cfg), "--batch_size", "1"])
    assert (t.lr, t.batch_size, t.grad_checkpointing) == (3e-4, 1, True)  # flag > file > preset
    with pytest.raises(UniFusionError, match="--train_preset should be one of small, base, paper"):
        parse_args(["--train_preset", "huge"])


@pytest.mark.parametrize("preset,res,n_cond", [("toy", 32, 12), ("toy", 64, 40), ("tiny", 64, 20)])
def test_activation_estimate_matches_what_autograd_saves(preset, res, n_cond):
    """The planner's activation bytes per block against the tensors autograd keeps for the backward of a
    real DiT forward (weights excluded), in fp32 on the CPU: within 10%."""
    from unifusion_core.train.plan import activation_bytes_per_block

    cfg = UniFusionConfig.preset(preset, VLMSpec("X", 6, 96, (2, 4, 6)))
    torch.manual_seed(0)
    _, dit = build_modules(cfg)
    dit.init_weights()
    weights = {q.untyped_storage().data_ptr() for q in dit.parameters()}
    saved = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in weights:
            saved[ptr] = t.untyped_storage().nbytes()
        return t

    x = torch.randn(1, cfg.dit.in_channels, res, res)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        dit(x, torch.tensor([0.5]), torch.randn(1, n_cond, cfg.dit.cond_dim), torch.ones(1, n_cond))
    seq = latent_tokens(cfg, res) + n_cond
    predicted = cfg.dit.depth * activation_bytes_per_block(cfg, seq, bytes_per_value=4)
    assert 0.9 < sum(saved.values()) / predicted < 1.1, (sum(saved.values()), predicted)
