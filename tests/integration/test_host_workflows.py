"""Every shipped workflow through a real ComfyUI (flux16 with a FLUX-architecture VAE file, and the
same graph switched to a pixel checkpoint + pixel_space VAE), plus the UI/API twin check."""
import json

import numpy as np
import pytest

from graphs import TOY_WORKFLOW_NAMES, WORKFLOWS, WORKFLOW_NAMES, edited, load_api
from workflow_format import TEMPLATE_TITLES, ui_to_api

SAVE_COUNT = {"chain_two_edits": 2}  # SaveImage nodes per workflow (others: 1)


@pytest.mark.parametrize("pixel", [False, True], ids=["flux16", "pixel"])
@pytest.mark.parametrize("name", WORKFLOW_NAMES)
def test_workflow_runs(host, name, pixel):
    graph = load_api(name, pixel=pixel)
    entry = host.run_ok(graph)
    saved = [im for nid, node in graph.items() if node["class_type"] == "SaveImage" for im in host.images(entry, nid)]
    size = 32 if pixel else 64
    assert len(saved) == SAVE_COUNT.get(name, 1)
    for im in saved:
        assert im.shape == (size, size, 3)
        assert im.std() > 1.0, "decoded image is constant"
    if name == "t2i":  # the Layer Inspector plot reached its PreviewImage
        (plot,) = host.images(entry, "12")
        assert plot.shape[0] > 100 and plot.std() > 1.0


def _seeded(graph, seed):
    sampler = next(nid for nid, n in graph.items() if n["class_type"] in ("KSampler", "RandomNoise"))
    key = "seed" if graph[sampler]["class_type"] == "KSampler" else "noise_seed"
    return edited(graph, **{sampler: {key: seed}})


@pytest.mark.parametrize("name", ["t2i", "t2i_custom_sampler", "verifi_t2i"])
def test_seeds(host, name):
    graph = load_api(name, pixel=True)
    save = next(nid for nid, n in graph.items() if n["class_type"] == "SaveImage")
    a1 = host.images(host.run_ok(_seeded(graph, 1)), save)[0]
    b = host.images(host.run_ok(_seeded(graph, 2)), save)[0]
    a2 = host.images(host.run_ok(_seeded(graph, 1)), save)[0]  # recomputed: seed 2 evicted seed 1 from the cache
    assert np.abs(a1.astype(int) - b.astype(int)).mean() > 1.0, "different seeds gave the same image"
    assert np.array_equal(a1, a2), "the same seed gave different images"


@pytest.mark.parametrize("name", WORKFLOW_NAMES + TOY_WORKFLOW_NAMES)
def test_ui_twin_matches_api(host, name):
    """The UI file converts (the frontend's way, with the host's /object_info) to exactly its API twin."""
    object_info = host.get("/object_info")
    ui = json.loads((WORKFLOWS / f"{TEMPLATE_TITLES[name]}.json").read_text())
    api = json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())
    assert ui_to_api(ui, object_info) == {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in api.items()}


def test_template_browser_lists_workflows(host):
    listed = host.get("/workflow_templates")
    names = next(v for k, v in listed.items() if k == "unifusion")
    assert sorted(names) == sorted(TEMPLATE_TITLES[n] for n in WORKFLOW_NAMES + TOY_WORKFLOW_NAMES)


@pytest.fixture(scope="module")
def standalone_showcase():
    """The `make demo` jobs through the standalone pipeline on the shipped toy models."""
    import torch

    from unifusion_core.pipeline import UniFusionPipeline
    from unifusion_core.toy.shipped import require_shipped
    from unifusion_core.toy.showcase import run_standalone

    with torch.no_grad():
        return {r.job.name: r for r in run_standalone(UniFusionPipeline.from_files(*require_shipped()),
                                                       progress=lambda _: None)}


@pytest.mark.parametrize("name", TOY_WORKFLOW_NAMES)
def test_toy_workflow_runs_out_of_the_box(host, name, standalone_showcase):
    """The toy workflows run exactly as shipped (the loaders list the pack's own models) and save the
    showcase jobs; each image equals the standalone pipeline's up to 8-bit rounding."""
    from unifusion_core.toy.showcase import OUTPUT_PREFIX

    graph = json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())
    entry = host.run_ok(graph)
    saves = {n["inputs"]["filename_prefix"].split("/", 1)[1]: nid for nid, n in graph.items()
             if n["class_type"] == "SaveImage" and n["inputs"]["filename_prefix"].startswith(OUTPUT_PREFIX)}
    assert saves, f"{name} saves no showcase job"
    for job, nid in saves.items():
        (img,) = host.images(entry, nid)
        ref = (standalone_showcase[job].image.clamp(0, 1) * 255).numpy()
        assert np.abs(img.astype(np.float32) - ref).max() <= 2.0, f"{name}: {job} differs from the standalone run"


def test_make_demo_runs_the_comfyui_half_with_a_relative_out_folder(tmp_path):
    """`make demo` passes ``--out demo_out`` (relative); the ComfyUI server runs inside the ComfyUI
    checkout, so the demo must hand it absolute paths. Every job gets its ComfyUI twin."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from conftest import COMFY, PYTHON
    from unifusion_core.toy.showcase import JOBS

    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, COMFYUI_PATH=COMFY, COMFYUI_PYTHON=PYTHON, PYTHONPATH=str(root))
    r = subprocess.run([sys.executable, "-m", "unifusion_core", "demo", "--out", "rel_out"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    for job in JOBS:
        assert (tmp_path / "rel_out" / f"comfyui_{job.name}.png").is_file(), job.name
