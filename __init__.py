"""ComfyUI entry point of the UniFusion node pack.

Importing this must never crash ComfyUI: without ComfyUI (tests, CLI) it exposes nothing, and a
missing optional dependency only disables the nodes that need it (they say what to install). Inside
ComfyUI, nodes that cannot be imported are named in one log line instead of failing silently.
"""
import logging
import sys

try:
    from .nodes import comfy_entrypoint  # noqa: F401  (ComfyUI's V3 loader looks for this name)
except ImportError as _err:  # imported outside a package, or without ComfyUI: nothing to register
    if "comfy_api" in sys.modules or "comfy" in sys.modules:  # inside ComfyUI the nodes should have loaded
        logging.getLogger("unifusion").error(
            "UniFusion: the nodes could not be imported (%s: %s); the pack registers no nodes. Reinstall its "
            "requirements (pip install -r requirements.txt in ComfyUI's Python).", type(_err).__name__, _err)

WEB_DIRECTORY = "./nodes/web"  # frontend extension: shows the VERIFI rewrite on its node
