"""ComfyUI entry point of the UniFusion node pack.

Importing this must never crash ComfyUI: without ComfyUI (tests, CLI) it exposes nothing, and a
missing optional dependency only disables the nodes that need it (they say what to install).
"""
try:
    from .nodes import comfy_entrypoint  # noqa: F401  (ComfyUI's V3 loader looks for this name)
except ImportError:  # imported outside a package or without ComfyUI: nothing to register
    pass

WEB_DIRECTORY = "./nodes/web"  # frontend extension: shows the VERIFI rewrite on its node
