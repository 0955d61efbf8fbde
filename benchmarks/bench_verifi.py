"""VERIFI performance ratios on tiny Qwen2.5-VL models, measured side by side in one run.

    python benchmarks/bench_verifi.py [--device cuda] [--threads N] [--tokens 48]

Prints the machine first, then one line per figure: `name = value  (goal OP threshold)`.
1. VERIFI decoding with hidden-state capture of the tapped layers (our KV-cached loop, plus the
   forward that captures the last token) / HF `generate` of the same number of greedy tokens
2. decoded tokens per second with capture
3. 4 reference images, instruction-only change: plain encode without / with the image-prefix cache
   (speedup; the cache holds the prefix from an earlier instruction), and the same for a VERIFI
   rewrite of 16 tokens
Times are the best of interleaved repeats after a warm-up. Exits 0 even when a goal is missed.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import machine  # noqa: E402

NUM_LAYERS, HIDDEN = 12, 256
SYSTEM = "Rewrite the request as a detailed description of the target image."
INSTRUCTIONS = [f"place the {c} shape from image {i % 4 + 1} on the left of the others"
                for i, c in enumerate(("red", "blue", "green", "yellow", "grey", "small"))]


def build(tmp: Path, max_side: int, device: torch.device):
    """A tiny Qwen2.5-VL (NUM_LAYERS x HIDDEN) whose processor keeps images up to max_side^2."""
    from unifusion_core.vlm import build_tiny_vlm, load_vlm

    path = build_tiny_vlm("qwen2_5_vl", tmp / "qwen", num_layers=NUM_LAYERS, hidden_size=HIDDEN)
    config = json.loads((path / "preprocessor_config.json").read_text())
    config["max_pixels"] = max_side * max_side
    (path / "preprocessor_config.json").write_text(json.dumps(config))
    return load_vlm(path, device=device)


def images(count: int, side: int):
    from PIL import Image

    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)) for _ in range(count)]


def timed(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def side_by_side(fns: dict, device, repeat: int) -> dict:
    """Best time of each fn over ``repeat`` interleaved rounds (after one warm-up round)."""
    best = {name: float("inf") for name in fns}
    for round_ in range(repeat + 1):
        for name, fn in fns.items():
            t = timed(fn, device)
            if round_:
                best[name] = min(best[name], t)
    return best


def bench_decode(vlm, device, tokens: int, repeat: int):
    from unifusion_core.vlm import Prompt
    from unifusion_core.vlm.sampling import Sampling

    prompt = Prompt(INSTRUCTIONS[0], system=SYSTEM, images=images(1, 224))
    inputs = {k: v.to(device) for k, v in vlm.build_inputs(prompt)[0].items()}
    sampling = Sampling(max_new_tokens=tokens, min_new_tokens=tokens)
    layers = vlm.default_layers()

    def plain():
        out = vlm.model.generate(**inputs, max_new_tokens=tokens, min_new_tokens=tokens,
                                 do_sample=False)
        assert out.shape[1] - inputs["input_ids"].shape[1] == tokens

    def capture():
        feats = vlm.generate(prompt, layers, sampling=sampling)
        assert len(feats.generated_ids[0]) == tokens

    with torch.no_grad():
        best = side_by_side({"plain": plain, "capture": capture}, device, repeat)
    ratio = best["capture"] / best["plain"]
    print(f"decode_capture_vs_plain_generate = {ratio:.3f}x  (goal <= 1.10x)  [{tokens} greedy tokens, "
          f"layers {list(layers)} of {NUM_LAYERS}, capture {best['capture'] * 1e3:.0f} ms, "
          f"generate {best['plain'] * 1e3:.0f} ms]")
    print(f"decode_tokens_per_s = {tokens / best['capture']:.1f}  (goal > 0, reported)  "
          f"[with capture, prefill of {inputs['input_ids'].shape[1]} tokens included]")


def bench_prefix_cache(vlm, device, side: int, repeat: int):
    from unifusion_core.vlm import Prompt, Role
    from unifusion_core.vlm.prefix_cache import PrefixCache
    from unifusion_core.vlm.sampling import Sampling

    refs = images(4, side)
    cache = PrefixCache(max_bytes=1 << 31)
    vlm.encode(Prompt(INSTRUCTIONS[-1], system=SYSTEM, images=refs), prefix_cache=cache)  # fills it
    turn = iter(range(10 ** 6))
    prompt = lambda: Prompt(INSTRUCTIONS[next(turn) % (len(INSTRUCTIONS) - 1)], system=SYSTEM, images=refs)
    feats = vlm.encode(prompt())
    n_image, n_all = int((feats.roles == Role.IMAGE).sum()), feats.roles.shape[1]
    with torch.no_grad():
        best = side_by_side({"without": lambda: vlm.encode(prompt()),
                             "with": lambda: vlm.encode(prompt(), prefix_cache=cache)}, device, repeat)
    print(f"prefix_cache_instruction_change_speedup = {best['without'] / best['with']:.2f}x  "
          f"(goal >= 3x)  [plain encode, 4 images of {side}px = {n_image} of {n_all} tokens, "
          f"without {best['without'] * 1e3:.0f} ms, with {best['with'] * 1e3:.0f} ms, "
          f"{cache.hits} hits / {cache.misses} miss, {cache.nbytes / 2 ** 20:.1f} MiB cached]")
    sampling = Sampling(max_new_tokens=16, min_new_tokens=16)
    with torch.no_grad():
        best = side_by_side({"without": lambda: vlm.generate(prompt(), sampling=sampling),
                             "with": lambda: vlm.generate(prompt(), sampling=sampling,
                                                          prefix_cache=cache)}, device, repeat)
    print(f"prefix_cache_verifi_rewrite_speedup = {best['without'] / best['with']:.2f}x  "
          f"(goal >= 1x, reported)  [16 generated tokens, without {best['without'] * 1e3:.0f} ms, "
          f"with {best['with'] * 1e3:.0f} ms]")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--tokens", type=int, default=48, help="decoded tokens in figure 1")
    parser.add_argument("--image-side", type=int, default=448, help="reference image side in figure 3")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        vlm = build(Path(tmp), args.image_side, device)
        bench_decode(vlm, device, args.tokens, args.repeat)
        bench_prefix_cache(vlm, device, args.image_side, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
