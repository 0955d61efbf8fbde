"""Numbers, not just shapes: ComfyUI's KSampler euler/simple equals the core's reference Euler sampler
for the same noise (torch.manual_seed(seed) CPU randn), sigmas and CFG; ComfyUI's VAE decode of a
FLUX-architecture file equals the core's decode of the same file."""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import fixtures
from graphs import edited, n, pixel_graph
from unifusion_core import flow, latent
from unifusion_core.pipeline import UniFusionPipeline

PARITY_TOL = 1e-4  # fp32 on CPU; ComfyUI's sub-quadratic attention vs torch SDPA in the core


@pytest.mark.parametrize("fmt", ["pixel", "flux16"])
@pytest.mark.parametrize("cfg", [1.0, 3.0])
def test_ksampler_euler_matches_core(host, fx, fmt, cfg):
    prompt, seed, steps = "a red square on blue", 7, 4
    graph = pixel_graph(prompt, seed=seed, steps=steps, cfg=cfg)
    if fmt == "flux16":
        graph = edited(graph, **{"2": {"checkpoint": fixtures.CKPT_FLUX}})
        graph["5"] = n("EmptySD3LatentImage", width=64, height=64, batch_size=1)
    (got,) = host.latents(host.run_ok(graph))

    pipe = UniFusionPipeline.from_files(fx["ckpt"][fmt], fx["vlm_dir"], fx["vae"])
    s = pipe.config.sampling
    cond, mask = pipe.encode([prompt])
    noise = torch.randn(got.shape, generator=torch.Generator().manual_seed(seed))
    sigmas = flow.comfy_simple_sigmas(steps, s.shift, s.multiplier)
    z = flow.euler_sample(pipe.dit, noise, sigmas, cond, mask, torch.zeros_like(cond), mask, cfg=cfg,
                          multiplier=s.multiplier)
    want = latent.process_out(z, fmt)
    err = (got - want).abs().max().item()
    assert err < PARITY_TOL, f"KSampler vs core Euler: max abs error {err:.2e}"


VAE_SCRIPT = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {comfy!r})
    from comfy.cli_args import args; args.cpu = True
    import torch, comfy.sd, comfy.utils
    sys.path.append({root!r})
    from unifusion_core.vae import load_flux_vae
    path = {vae!r}
    vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(path))
    raw = torch.randn(2, 16, 8, 8, generator=torch.Generator().manual_seed(0))
    theirs = vae.decode(raw).float()
    ours = load_flux_vae(path).decode_to_image(raw)
    print(json.dumps({{"shape": list(theirs.shape), "err": (theirs - ours).abs().max().item(),
                       "std": ours.std().item()}}))
""")


def test_core_vae_decode_matches_comfyui(fx):
    comfy, python = os.environ["COMFYUI_PATH"], os.environ.get("COMFYUI_PYTHON") or sys.executable
    code = VAE_SCRIPT.format(comfy=comfy, root=str(fixtures.ROOT), vae=str(fx["vae"]))
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=300, cwd=comfy)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["shape"] == [2, 64, 64, 3] and res["std"] > 1e-3
    assert res["err"] < 1e-4, f"core vs ComfyUI VAE decode: max abs error {res['err']:.2e}"
