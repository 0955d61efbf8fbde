"""Model folders of the pack: registered once, by the entry point, never by assignment (a user's
extra_model_paths.yaml entries for "LLM" are applied before custom nodes load and must survive)."""
from __future__ import annotations

import os

import folder_paths

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
    return bases


def vlm_folders() -> list[str]:
    return hf_model_dirs(vlm_bases())


def vlm_path(name: str) -> str:
    return resolve_model_dir(name, vlm_bases())


def checkpoint_files() -> list[str]:
    return [f for f in folder_paths.get_filename_list("diffusion_models") if f.endswith(".safetensors")]


def checkpoint_path(name: str) -> str:
    return folder_paths.get_full_path_or_raise("diffusion_models", name)
