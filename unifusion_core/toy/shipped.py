"""Where the pack's own trained demo models live (``unifusion_core/toy/models`` in the repository), so the CLI demo,
the quality report, the tests and the ComfyUI loaders all find the same files."""
from __future__ import annotations

from pathlib import Path

from ..errors import UniFusionError

MODELS_DIR = Path(__file__).resolve().parent / "models"
VLM_NAME = "unifusion-toy-vlm"  # the toy VLM folder (as ComfyUI's VLM loader lists it)
CHECKPOINT_NAME = "unifusion-toy.safetensors"  # the toy UniFusion checkpoint (edit fine-tuned)
VLM_DIR = MODELS_DIR / VLM_NAME
CHECKPOINT = MODELS_DIR / CHECKPOINT_NAME


def require_shipped() -> tuple[Path, Path]:
    """(checkpoint, VLM folder) of the shipped toy models; one sentence when they are missing."""
    for path, what in ((VLM_DIR / "config.json", "toy VLM"), (CHECKPOINT, "toy UniFusion checkpoint")):
        if not path.is_file():
            raise UniFusionError(f"the shipped {what} should be at {path}, found nothing there "
                                 f"(a full clone of the repository has it; `make toy-train` rebuilds it).")
    return CHECKPOINT, VLM_DIR
