"""Custom socket types of the pack (plain strings on the wire; the frontend draws any type name)."""
from comfy_api.latest import io

VLM = io.Custom("UNIFUSION_VLM")  # common.VLMHandle
POOLER = io.Custom("UNIFUSION_POOLER")  # common.PoolerHandle
FEATURES = io.Custom("UNIFUSION_FEATURES")  # unifusion_core.vlm.Features
IMAGES = io.Custom("UNIFUSION_IMAGES")  # tuple of common.ImageRef
