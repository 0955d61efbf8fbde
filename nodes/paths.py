"""Model folders of the pack: registered once, by the entry point, never by assignment (a user's
extra_model_paths.yaml entries for "LLM" are applied before custom nodes load and must survive).

The pack's own trained demo models (``unifusion_core/toy/models`` in the pack: the toy VLM folder and the toy
checkpoint) are listed after the user's files by our two loaders only, so the shipped workflows run
out of the box and ComfyUI's stock loaders never see a file they cannot load."""
from __future__ import annotations

import os

import folder_paths

from ..unifusion_core.toy.shipped import MODELS_DIR as PACK_MODELS

from .common import hf_model_dirs, resolve_model_dir

VLM_FOLDERS = ("LLM", "text_encoders")


def register_folders():
    """Idempotent: add models/LLM to the "LLM" folder list (creating the key if needed)."""
    folder_paths.add_model_folder_path("LLM", os.path.join(folder_paths.models_dir, "LLM"))


def vlm_bases() -> list[str]:
    bases = []
    for name in VLM_FOLDERS:
        if name in folder_paths.folder_names_and_paths:
            bases.extend(folder_paths.get_folder_paths(name))
    return bases + [str(PACK_MODELS)]


def vlm_folders() -> list[str]:
    return hf_model_dirs(vlm_bases())


def vlm_path(name: str) -> str:
    """A listed VLM folder name -> its path; never a path outside the model folders, never input/ or
    output/ (see common.resolve_model_dir)."""
    forbidden = [folder_paths.get_input_directory(), folder_paths.get_output_directory()]
    return resolve_model_dir(name, vlm_bases(), forbidden)


def _pack_checkpoints() -> list[str]:
    return sorted(p.name for p in PACK_MODELS.glob("*.safetensors")) if PACK_MODELS.is_dir() else []


def checkpoint_files() -> list[str]:
    user = [f for f in folder_paths.get_filename_list("diffusion_models") if f.endswith(".safetensors")]
    return user + [f for f in _pack_checkpoints() if f not in user]


def checkpoint_path(name: str) -> str:
    path = folder_paths.get_full_path("diffusion_models", name)
    if path is None and name in _pack_checkpoints():
        return str(PACK_MODELS / name)
    return folder_paths.get_full_path_or_raise("diffusion_models", name)
