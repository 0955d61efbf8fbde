"""ComfyUI adapter layer (V3 API). Only this package imports ComfyUI; no model math lives here.

``comfy_entrypoint`` exists whenever ComfyUI's ``comfy_api.latest`` can be imported; without ComfyUI
``NODE_CLASSES`` stays empty and importing this package never fails. A missing ``transformers`` only
makes the VLM nodes say what to install when they run.
"""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)

NODE_CLASSES: list = []

try:
    from comfy_api.latest import ComfyExtension
except ImportError:  # no ComfyUI (tests, CLI): nothing to register
    ComfyExtension = None

if ComfyExtension is not None:
    from .encode import UniFusionEncode, UniFusionImageList, UniFusionLAPConditioning, UniFusionVLMFeatures
    from .inspector import UniFusionLayerInspector
    from .loaders import UniFusionCheckpointLoader, UniFusionVLMLoader
    from .paths import register_folders
    from .verifi import UniFusionVERIFIFromText, UniFusionVERIFIRewrite

    NODE_CLASSES.extend([UniFusionVLMLoader, UniFusionCheckpointLoader, UniFusionVLMFeatures, UniFusionImageList,
                         UniFusionLAPConditioning, UniFusionEncode, UniFusionVERIFIRewrite, UniFusionVERIFIFromText,
                         UniFusionLayerInspector])

    class UniFusionExtension(ComfyExtension):
        async def get_node_list(self):
            return list(NODE_CLASSES)

    async def comfy_entrypoint() -> "UniFusionExtension":
        register_folders()
        return UniFusionExtension()
