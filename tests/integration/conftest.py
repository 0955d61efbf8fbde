"""Integration tests against a real ComfyUI: COMFYUI_PATH (a checkout) and COMFYUI_PYTHON (its
interpreter; default: this one). The pack is loaded through an extra custom_nodes path (a temp dir
holding a symlink to this repo), models come from fixtures made here; nothing is copied into the
ComfyUI checkout. Without COMFYUI_PATH the suite reports one skip with the reason."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

COMFY = os.environ.get("COMFYUI_PATH")
PYTHON = os.environ.get("COMFYUI_PYTHON") or sys.executable
SKIP = "COMFYUI_PATH is not set: ComfyUI integration tests need a ComfyUI checkout (DESIGN.md §6)"


# Without a host, the host tests are not even imported; test_comfyui_configured.py reports the one skip.
collect_ignore_glob = [] if COMFY else ["test_host_*.py"]


@pytest.fixture(scope="session")
def fx(tmp_path_factory):
    import fixtures

    return fixtures.build_all(tmp_path_factory.mktemp("unifusion_host"), os.environ.get("UNIFUSION_TEST_VAE") and
                              Path(os.environ["UNIFUSION_TEST_VAE"]))


@pytest.fixture(scope="session")
def host(fx):
    from unifusion_core.toy.comfy_host import ComfyHost

    h = ComfyHost(Path(COMFY), PYTHON, fx["base"], fx["yaml"]).wait_ready()
    yield h
    h.stop()
