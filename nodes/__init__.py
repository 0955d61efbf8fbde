"""ComfyUI adapter layer (V3 API). Only this package imports ComfyUI; no model math lives here.

The node list is empty until the node suite lands; ``comfy_entrypoint`` exists whenever ComfyUI's
``comfy_api.latest`` can be imported, and importing this package never fails without ComfyUI.
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

    class UniFusionExtension(ComfyExtension):
        async def get_node_list(self):
            return list(NODE_CLASSES)

    async def comfy_entrypoint() -> "UniFusionExtension":
        return UniFusionExtension()
