"""``make demo``: the standalone pipeline end to end on a tiny, randomly initialised (UNTRAINED) model.

It builds a tiny Qwen2.5-VL-architecture VLM folder and an untrained checkpoint through the same
loaders a user's files go through, then runs text-to-image, an edit of that image and a
two-reference composition, and writes the PNGs. The pictures are noise-like: the model is untrained.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

log = logging.getLogger(__name__)


def _untrained_checkpoint(ident: dict, out: Path, seed: int = 0) -> Path:
    from .checkpoint import build_modules, save_checkpoint
    from .config import UniFusionConfig, VLMSpec

    spec = VLMSpec(architecture=ident["architecture"], num_layers=ident["num_layers"],
                   hidden_size=ident["hidden_size"], layers=tuple(range(1, ident["num_layers"] + 1)), name="tiny-demo")
    cfg = UniFusionConfig.preset("toy", spec)
    torch.manual_seed(seed)
    pooler, dit = build_modules(cfg)
    pooler.init_weights()
    dit.init_weights()
    with torch.no_grad():  # un-zero the adaLN gates and output layer so the condition visibly matters
        for p in dit.parameters():
            if p.abs().max() == 0:
                p.normal_(std=0.05)
    save_checkpoint(out, cfg, pooler, dit)
    return out


def run_demo(out: Path, size: int = 64) -> int:
    from .cli import _save_images
    from .pipeline import Request, UniFusionPipeline
    from .vlm import build_tiny_vlm, load_vlm

    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    vlm_dir = build_tiny_vlm("qwen2_5_vl", out / "tiny_vlm", seed=0)
    vlm = load_vlm(vlm_dir)
    ckpt = _untrained_checkpoint(vlm.identity, out / "untrained_toy.safetensors")
    pipe = UniFusionPipeline.from_files(ckpt, vlm)
    print("NOTE: this demo model is UNTRAINED (random weights); it shows the pipeline runs end to end, "
          "not image quality. A trained demo model replaces it in a later release.")
    jobs = [("t2i", Request("a red circle on a blue background", width=size, height=size, seed=1), []),
            ("t2i_b", Request("a green square in the top left", width=size, height=size, seed=2), [])]
    written = {}
    for name, req, refs in jobs:
        written[name] = pipe(req)
    edit = Request("make the circle yellow", images=[written["t2i"][0]], width=size, height=size, seed=3)
    written["edit"] = pipe(edit)
    compose = Request("the object of the first image on the background of the second",
                      images=[written["t2i"][0], written["t2i_b"][0]], width=size, height=size, seed=4)
    written["compose_2ref"] = pipe(compose)
    for name, images in written.items():
        for p in _save_images(images, out / f"{name}.png"):
            print(f"wrote {p}")
    print(f"demo finished in {time.perf_counter() - t0:.1f} s (checkpoint {ckpt}, VLM {vlm_dir})")
    return 0
