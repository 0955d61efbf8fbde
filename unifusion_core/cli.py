"""Command line: ``python -m unifusion_core {generate,edit,init,info,presets,demo} ...``."""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from .errors import UniFusionError


def _save_images(images, out: Path) -> list[Path]:
    from PIL import Image

    out.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(images):
        p = out if len(images) == 1 else out.with_name(f"{out.stem}_{i}{out.suffix}")
        Image.fromarray((img.clamp(0, 1) * 255).round().byte().cpu().numpy()).save(p)
        paths.append(p)
    return paths


def _load_images(paths):
    from PIL import Image

    images = []
    for p in paths or []:
        try:
            images.append(Image.open(p).convert("RGB"))
        except OSError as err:
            raise UniFusionError(f"{p}: not a readable image ({err}).") from err
    return images


def cmd_generate(args) -> int:
    from .pipeline import Request, UniFusionPipeline
    from .vlm.sampling import Sampling

    if args.command == "edit" and not args.image:
        raise UniFusionError("edit needs at least one --image reference, found none.")
    if args.rewrite is not None and not args.rewrite.strip():
        raise UniFusionError("--rewrite needs the text to condition on, found an empty string.")
    pipe = UniFusionPipeline.from_files(args.checkpoint, args.vlm, args.vae, device=args.device)
    verifi = args.verifi or args.rewrite is not None
    req = Request(prompt=args.prompt, images=_load_images(args.image), system_prompt=args.system_prompt,
                  width=args.width, height=args.height, seed=args.seed, steps=args.steps, guidance=args.cfg,
                  batch=args.batch, verifi=verifi, rewrite=args.rewrite,
                  verifi_sampling=Sampling(max_new_tokens=args.max_rewrite_tokens) if verifi else None)
    t0 = time.perf_counter()
    result = pipe(req, callback=lambda i, n: print(f"\rstep {i}/{n}", end="", file=sys.stderr))
    print(file=sys.stderr)
    if verifi:
        print(f"rewrite ({'given' if args.rewrite is not None else 'VERIFI'}): {result.rewrite}")
    for p in _save_images(result.images, Path(args.out)):
        h, w = result.images.shape[1:3]
        print(f"wrote {p} ({w}x{h}, {time.perf_counter() - t0:.1f} s)")
    return 0


def cmd_init(args) -> int:
    """Write a randomly initialised checkpoint for a VLM folder (the start of training, or a smoke test)."""
    from .checkpoint import build_modules, save_checkpoint
    from .config import UniFusionConfig, VLMSpec
    from .vlm import load_vlm, select_layers

    import torch

    vlm = load_vlm(args.vlm)
    ident = vlm.identity
    layers = select_layers(args.layers, ident["num_layers"]) if args.layers else vlm.default_layers()
    spec = VLMSpec(architecture=ident["architecture"], num_layers=ident["num_layers"],
                   hidden_size=ident["hidden_size"], layers=layers, name=Path(args.vlm).name,
                   fingerprint=ident.get("fingerprint", ""))
    cfg = UniFusionConfig.preset(args.preset, spec)
    torch.manual_seed(args.seed)
    pooler, dit = build_modules(cfg)
    pooler.init_weights()
    dit.init_weights()
    save_checkpoint(args.out, cfg, pooler, dit)
    print(f"wrote untrained {args.preset} checkpoint {args.out} for {ident['architecture']} layers {list(layers)}")
    return 0


def cmd_info(args) -> int:
    from .checkpoint import describe

    print(describe(args.checkpoint))
    return 0


def cmd_presets(args) -> int:
    import torch

    from .checkpoint import build_modules
    from .config import PAPER_VLM, PRESETS, UniFusionConfig

    for name in PRESETS:
        cfg = UniFusionConfig.preset(name, PAPER_VLM)
        with torch.device("meta"):
            pooler, dit = build_modules(cfg)
        n = lambda m: sum(p.numel() for p in m.parameters()) / 1e6  # noqa: E731
        print(f"{name:6s} DiT {n(dit):9.1f} M  pooler {n(pooler):7.1f} M  ({cfg.dit.depth}x{cfg.dit.hidden_size}, "
              f"patch {cfg.dit.patch_size}, {cfg.sampling.latent_format}; pooler sized for an 8B VLM)")
    return 0


def cmd_tiny_vlm(args) -> int:
    from .vlm import build_tiny_vlm

    path = build_tiny_vlm(args.family, args.out, seed=args.seed, num_layers=args.layers, hidden_size=args.hidden)
    print(f"wrote a tiny RANDOM {args.family} VLM folder (for smoke tests, not for real use): {path}")
    return 0


def cmd_demo(args) -> int:
    try:
        from .toy.demo import run_demo
    except ImportError as err:  # a registry package leaves the demo out (.comfyignore)
        raise UniFusionError(f"the demo is not part of this installation ({err}); run it from a clone of the "
                             f"repository (make demo).") from None

    return run_demo(Path(args.out))


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m unifusion_core", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    for name in ("generate", "edit"):
        g = sub.add_parser(name, help="text-to-image" if name == "generate" else "edit / multi-reference")
        g.add_argument("--checkpoint", required=True, help="UniFusion .safetensors checkpoint")
        g.add_argument("--vlm", required=True, help="HF folder of the VLM the checkpoint was trained with")
        g.add_argument("--vae", help="FLUX.1 ae.safetensors (flux16 checkpoints only)")
        g.add_argument("--prompt", required=True)
        g.add_argument("--image", action="append", help="reference image (repeat for several)")
        g.add_argument("--system-prompt", "--system", dest="system_prompt",
                       help="system turn of the VLM conversation (VERIFI: the rewriter instruction; default: "
                            "the checkpoint's training prompt for the task)")
        g.add_argument("--verifi", action="store_true",
                       help="VERIFI: the VLM rewrites the request in the same pass and the DiT conditions on the "
                            "generated tokens (printed)")
        g.add_argument("--rewrite", help="condition on this rewrite instead of generating one (teacher forcing; "
                                         "implies --verifi)")
        g.add_argument("--max-rewrite-tokens", type=int, default=256, help="VERIFI: longest rewrite (tokens)")
        g.add_argument("--width", type=int, help="default: the checkpoint's training resolution")
        g.add_argument("--height", type=int, help="default: the checkpoint's training resolution")
        g.add_argument("--seed", type=int, default=0)
        g.add_argument("--steps", type=int, help="default: the checkpoint's")
        g.add_argument("--cfg", "--guidance", dest="cfg", type=float, help="guidance (CFG) scale; default: the checkpoint's")
        g.add_argument("--batch", type=int, default=1)
        g.add_argument("--device", default="cpu")
        g.add_argument("--out", default="unifusion.png")
        g.set_defaults(func=cmd_generate)
    i = sub.add_parser("init", help="write a randomly initialised checkpoint for a VLM")
    i.add_argument("--vlm", required=True)
    i.add_argument("--preset", default="tiny")
    i.add_argument("--layers", help="VLM layers to tap, e.g. '4,7,10' or 'every 3 from 4'")
    i.add_argument("--seed", type=int, default=0)
    i.add_argument("--out", required=True)
    i.set_defaults(func=cmd_init)
    sub.add_parser("info", help="print a checkpoint's config").add_argument("checkpoint")
    sub.choices["info"].set_defaults(func=cmd_info)
    sub.add_parser("presets", help="list model presets and sizes").set_defaults(func=cmd_presets)
    v = sub.add_parser("tiny-vlm", help="write a tiny random HF VLM folder (smoke tests of the loader/trainer)")
    v.add_argument("--family", default="qwen2_5_vl", help="qwen2_5_vl | qwen3_vl | internvl | gemma3 | smolvlm | llm")
    v.add_argument("--out", required=True)
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--layers", type=int, default=4)
    v.add_argument("--hidden", type=int, default=64)
    v.set_defaults(func=cmd_tiny_vlm)
    d = sub.add_parser("demo", help="the shipped trained toy models: T2I with and without VERIFI, an edit chain, a two-reference composition, a contact sheet")
    d.add_argument("--out", default="demo_out")
    d.set_defaults(func=cmd_demo)
    return ap


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UniFusionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
