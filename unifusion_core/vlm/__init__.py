"""VLM backends: load a local HF folder, build chat inputs (text + images), tap selected layers,
return per-layer hidden states with token roles (``Features``); VERIFI decoding with capture,
teacher forcing, and the image-prefix cache."""
from .encoder import VLMEncoder
from .families import FAMILIES
from .features import PLAIN_ROLES, VERIFI_ROLES, Features, Role
from .layers import LayerStride, default_layers, select_layers
from .loader import load_vlm
from .prefix_cache import PrefixCache
from .prompts import ImageDetail, Prompt
from .sampling import Sampling
from .tiny import build_tiny_vlm

__all__ = ["FAMILIES", "Features", "ImageDetail", "LayerStride", "PLAIN_ROLES", "PrefixCache",
           "Prompt", "Role", "Sampling", "VERIFI_ROLES", "VLMEncoder", "build_tiny_vlm",
           "default_layers", "load_vlm", "select_layers"]
