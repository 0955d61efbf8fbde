"""The one test that runs (or skips, with the reason) whether or not a ComfyUI checkout is given."""
import os
from pathlib import Path

import pytest

COMFY = os.environ.get("COMFYUI_PATH")
SKIP = "COMFYUI_PATH is not set: ComfyUI integration tests need a ComfyUI checkout (DESIGN.md §6)"


def test_comfyui_checkout_configured():
    if not COMFY:
        pytest.skip(SKIP)
    assert (Path(COMFY) / "main.py").is_file(), f"COMFYUI_PATH={COMFY} has no main.py"
