"""The standalone pipeline and CLI end to end on tiny random models (VLM folder -> PNG)."""
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image

from tiny import randomize_
from unifusion_core.checkpoint import build_modules, save_checkpoint
from unifusion_core.config import UniFusionConfig, VLMSpec
from unifusion_core.errors import UniFusionError
from unifusion_core.pipeline import Request, UniFusionPipeline
from unifusion_core.vae import FluxAEConfig, FluxAutoEncoder, save_flux_vae
from unifusion_core.vlm import build_tiny_vlm, load_vlm

ROOT = Path(__file__).resolve().parents[1]


def _checkpoint(vlm, path, latent_format="pixel"):
    ident = vlm.identity
    spec = VLMSpec(ident["architecture"], ident["num_layers"], ident["hidden_size"], vlm.default_layers())
    cfg = UniFusionConfig.preset("tiny", spec)
    if latent_format == "flux16":
        cfg = replace(cfg, dit=replace(cfg.dit, in_channels=16, patch_size=2),
                      sampling=replace(cfg.sampling, latent_format="flux16", steps=4))
    torch.manual_seed(0)
    pooler, dit = build_modules(cfg)
    pooler.init_weights()
    dit.init_weights()
    randomize_(dit, std=0.1)  # un-zero the output layer so conditioning matters
    save_checkpoint(path, cfg, pooler, dit)
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pipe")
    vlm_dir = build_tiny_vlm("qwen2_5_vl", tmp / "vlm")
    vlm = load_vlm(vlm_dir)
    return tmp, vlm_dir, vlm, _checkpoint(vlm, tmp / "pixel.safetensors")


def test_t2i_shape_range_and_seed_determinism(setup):
    _, _, vlm, ckpt = setup
    pipe = UniFusionPipeline.from_files(ckpt, vlm)
    a = pipe(Request("a red circle", width=32, height=16, seed=1, steps=3)).images
    b = pipe(Request("a red circle", width=32, height=16, seed=1, steps=3)).images
    c = pipe(Request("a red circle", width=32, height=16, seed=2, steps=3)).images
    d = pipe(Request("a blue square", width=32, height=16, seed=1, steps=3)).images
    assert a.shape == (1, 16, 32, 3) and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, d)
    assert pipe(Request("x", width=16, height=16, batch=2, steps=2)).images.shape == (2, 16, 16, 3)


def test_edit_and_multi_reference_change_the_condition(setup):
    _, _, vlm, ckpt = setup
    pipe = UniFusionPipeline.from_files(ckpt, vlm)
    ref1 = torch.rand(1, 40, 48, 3)
    ref2 = Image.new("RGB", (56, 56), (200, 30, 30))
    cond0, _ = pipe.encode(["make it blue"])
    cond1, m1 = pipe.encode(["make it blue"], [[ref1]])
    cond2, m2 = pipe.encode(["make it blue"], [[ref1, ref2]])
    assert cond0.shape[1] < cond1.shape[1] < cond2.shape[1]  # image tokens are kept as conditioning
    assert m2.all()
    out = pipe(Request("make it blue", images=[ref1, ref2], width=16, height=16, steps=2)).images
    assert out.shape == (1, 16, 16, 3)


def test_flux16_checkpoint_decodes_through_the_flux_vae(setup):
    tmp, _, vlm, _ = setup
    ckpt = _checkpoint(vlm, tmp / "flux.safetensors", "flux16")
    torch.manual_seed(0)
    vae = FluxAutoEncoder(FluxAEConfig.tiny())
    vae.init_weights()
    save_flux_vae(vae, tmp / "ae.safetensors")
    with pytest.raises(UniFusionError, match="FLUX.1 VAE"):
        UniFusionPipeline.from_files(ckpt, vlm)
    pipe = UniFusionPipeline.from_files(ckpt, vlm, tmp / "ae.safetensors")
    out = pipe(Request("a tree", width=16, height=8, seed=0)).images
    assert out.shape == (1, 8, 16, 3) and out.std() > 0
    with pytest.raises(UniFusionError, match="multiples of 4"):
        pipe(Request("a tree", width=18, height=8))


def test_wrong_vlm_is_refused(setup):
    tmp, _, _, ckpt = setup
    other = load_vlm(build_tiny_vlm("llm", tmp / "other", hidden_size=32))
    with pytest.raises(UniFusionError, match="expects a 4-layer x 64 VLM"):
        UniFusionPipeline.from_files(ckpt, other)


def test_cli_generate_and_edit_write_pngs(setup, tmp_path):
    _, vlm_dir, _, ckpt = setup
    run = lambda *a: subprocess.run([sys.executable, "-m", "unifusion_core", *map(str, a)], cwd=ROOT,  # noqa: E731
                                    capture_output=True, text=True)
    out = tmp_path / "gen.png"
    r = run("generate", "--checkpoint", ckpt, "--vlm", vlm_dir, "--prompt", "a cat", "--width", 24, "--height", 16,
            "--steps", 2, "--out", out)
    assert r.returncode == 0, r.stderr
    assert Image.open(out).size == (24, 16)
    r = run("edit", "--checkpoint", ckpt, "--vlm", vlm_dir, "--prompt", "make it red", "--image", out,
            "--width", 16, "--height", 16, "--steps", 2, "--out", tmp_path / "edit.png")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "edit.png").exists()
    r = run("edit", "--checkpoint", ckpt, "--vlm", vlm_dir, "--prompt", "x", "--out", tmp_path / "e.png")
    assert r.returncode == 2 and "needs at least one --image" in r.stderr and "Traceback" not in r.stderr
    r = run("generate", "--checkpoint", tmp_path / "missing.safetensors", "--vlm", vlm_dir, "--prompt", "x")
    assert r.returncode == 2 and "no such checkpoint" in r.stderr and "Traceback" not in r.stderr


def test_make_demo_entry_writes_images(tmp_path):
    """`make demo` on the shipped toy models: every showcase job's PNG, the contact sheet and the scores
    (their quality thresholds live in test_toy_quality.py)."""
    import json
    import os

    from unifusion_core.toy.showcase import JOBS, SIZE

    env = {k: v for k, v in os.environ.items() if k != "COMFYUI_PATH"}  # the standalone half only
    r = subprocess.run([sys.executable, "-m", "unifusion_core", "demo", "--out", str(tmp_path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=900, env=env)
    assert r.returncode == 0, r.stderr
    assert "COMFYUI_PATH is not set" in r.stdout
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert sorted(scores) == sorted(j.name for j in JOBS)
    for job in JOBS:
        assert Image.open(tmp_path / f"{job.name}.png").size == (SIZE, SIZE)
        assert scores[job.name]["exact"] in (0.0, 1.0) and 0.0 <= scores[job.name]["object_f1"] <= 1.0
        assert len(scores[job.name]["verdict"]) >= 1 + len(job.target.objects) or \
            scores[job.name]["verdict"][0].startswith("unreadable")
        assert bool(scores[job.name]["rewrite"]) == job.verifi
    sheet = Image.open(tmp_path / "contact_sheet.png")
    assert sheet.size[0] > 600 and sheet.size[1] > len(JOBS) * 4 * SIZE