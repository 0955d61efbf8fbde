"""``make demo``: the shipped, trained toy models end to end (unifusion_core/toy/showcase.py).

Text-to-image with and without VERIFI, an edit chain and a zero-shot two-reference composition through
the standalone pipeline; every output PNG plus one contact sheet (prompts, VLM rewrites, evaluator
scores). With ``COMFYUI_PATH`` set (and ``COMFYUI_PYTHON``, ComfyUI's interpreter), the same jobs also
run through the shipped ``workflows/api/toy_*.json`` in a real ComfyUI server, with a second sheet.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]  # the node pack
TOY_WORKFLOWS = ("toy_t2i_verifi", "toy_t2i_raw", "toy_edit_chain", "toy_compose_two_refs")


def _save_png(image, path: Path) -> None:
    from PIL import Image

    from .showcase import to_uint8

    Image.fromarray(to_uint8(image)).save(path)


def _write(results, out: Path, stem: str, header: str) -> None:
    from .showcase import contact_sheet

    for r in results:
        _save_png(r.image, out / f"{stem}{r.job.name}.png")
    contact_sheet(results, header).save(out / f"{stem}contact_sheet.png")
    (out / f"{stem}scores.json").write_text(json.dumps(
        {r.job.name: {"prompt": r.job.prompt, "rewrite": r.rewrite, **r.scores} for r in results}, indent=2))
    print(f"wrote {len(results)} PNGs, {out / f'{stem}contact_sheet.png'} and {out / f'{stem}scores.json'}")


def upstream(graph: dict, node_id: str):
    """The nodes an API-format graph's node depends on, nearest first (breadth-first over its links;
    a link is an input value ``[source node id, output index]``)."""
    seen, queue = {str(node_id)}, [str(node_id)]
    while queue:
        nid = queue.pop(0)
        for value in graph.get(nid, {}).get("inputs", {}).values():
            if isinstance(value, list) and len(value) == 2 and str(value[0]) in graph and str(value[0]) not in seen:
                seen.add(str(value[0]))
                queue.append(str(value[0]))
                yield str(value[0])


def rewrite_of(graph: dict, entry: dict, node_id: str) -> str:
    """The VERIFI rewrite an output node's image was conditioned on: on the positive conditioning of
    the nearest upstream sampler, the text shown by the nearest node that displays one (the VERIFI
    node's UI output); "" when there is none (a plain-conditioned image)."""
    sampler = next((n for n in (str(node_id), *upstream(graph, node_id))
                    if isinstance(graph.get(n, {}).get("inputs", {}).get("positive"), list)), None)
    if sampler is None:
        return ""
    source = str(graph[sampler]["inputs"]["positive"][0])
    for nid in (source, *upstream(graph, source)):
        text = entry["outputs"].get(nid, {}).get("text")
        if text:
            return text[0] if isinstance(text, list) else text
    return ""


def run_comfy(comfy: Path, python: str, work: Path) -> list:
    """The showcase through the shipped toy workflows in a real ComfyUI (``main.py --cpu``)."""
    from .comfy_host import ComfyHost
    from .showcase import JOBS, OUTPUT_PREFIX, Result, score_job

    base = work.resolve() / "comfyui_base"  # the server runs in the ComfyUI checkout: a relative --out would miss
    for sub in ("custom_nodes", "input", "output", "temp"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    link = base / "custom_nodes" / "unifusion"
    if not link.exists():
        os.symlink(ROOT, link)
    yaml = base / "extra_model_paths.yaml"
    yaml.write_text(f"unifusion_demo:\n    base_path: {base}\n    custom_nodes: custom_nodes\n")
    host = ComfyHost(comfy, python, base, yaml)
    images, rewrites = {}, {}
    try:
        host.wait_ready()
        for name in TOY_WORKFLOWS:
            graph = json.loads((ROOT / "workflows" / "api" / f"{name}.json").read_text())
            entry = host.run_ok(graph)
            for nid, node in graph.items():
                prefix = node["inputs"].get("filename_prefix", "")
                if node["class_type"] == "SaveImage" and prefix.startswith(f"{OUTPUT_PREFIX}/"):
                    job = prefix.split("/", 1)[1]
                    images.setdefault(job, host.images(entry, nid)[0].astype(np.float32) / 255)
                    text = rewrite_of(graph, entry, nid)
                    if text:
                        rewrites.setdefault(job, text)
            print(f"ComfyUI ran workflows/api/{name}.json")
    finally:
        host.stop()
    missing = [j.name for j in JOBS if j.name not in images]
    if missing:
        raise RuntimeError(f"the toy workflows should save every showcase job, found none for {missing}; "
                           f"see {host.log_path}.")
    return [Result(j, images[j.name], rewrites.get(j.name, "").strip(), score_job(j, images[j.name])) for j in JOBS]


def run_demo(out: Path) -> int:
    import torch

    from ..pipeline import UniFusionPipeline
    from .shipped import require_shipped
    from .showcase import CFG, STEPS, run_standalone

    t0 = time.perf_counter()
    torch.manual_seed(0)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint, vlm = require_shipped()
    pipe = UniFusionPipeline.from_files(checkpoint, vlm)
    with torch.no_grad():
        results = run_standalone(pipe)
    header = (f"UniFusion toy demo, standalone pipeline: {checkpoint.name} + {vlm.name}, "
              f"{STEPS} Euler steps, CFG {CFG}, 32 px (x4), train-split phrasing")
    _write(results, out, "", header)
    print(f"standalone showcase finished in {time.perf_counter() - t0:.1f} s")
    comfy = os.environ.get("COMFYUI_PATH")
    if comfy:
        t1 = time.perf_counter()
        python = os.environ.get("COMFYUI_PYTHON") or sys.executable
        comfy_results = run_comfy(Path(comfy), python, out)
        _write(comfy_results, out, "comfyui_", header.replace("standalone pipeline", "ComfyUI workflows"))
        diff = max(float(np.abs(np.asarray(a.image, np.float32) - b.image).max())
                   for a, b in zip(results, comfy_results))
        print(f"ComfyUI showcase finished in {time.perf_counter() - t1:.1f} s; "
              f"largest pixel difference to the standalone run: {diff:.3f}")
    else:
        print("COMFYUI_PATH is not set: skipped the same showcase through the shipped ComfyUI workflows.")
    print(f"demo finished in {time.perf_counter() - t0:.1f} s; open {out / 'contact_sheet.png'}")
    return 0
