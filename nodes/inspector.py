"""Layer Inspector node: which VLM layers the checkpoint's pooler relies on (paper §6.7)."""
from __future__ import annotations

import os

import comfy.model_management as mm
from comfy_api.latest import io

from ..unifusion_core.condition import PLAIN_ROLES, kept_states
from .common import user_errors
from .layerviz import draw_inspector
from .types import FEATURES, POOLER


class UniFusionLayerInspector(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="UniFusionLayerInspector", display_name="Layer Inspector (UniFusion)", category="UniFusion/debug",
            description="Draws the pooler's learned weight per VLM layer and, given features of a prompt, LAP's "
                        "attention over the layer axis (mean over tokens and heads, one map per LAP block).",
            inputs=[POOLER.Input("pooler", tooltip="From Load UniFusion Checkpoint."),
                    FEATURES.Input("features", optional=True,
                                   tooltip="Optional VLM features of a prompt, to show LAP's attention over layers.")],
            outputs=[io.Image.Output(display_name="IMAGE", tooltip="The plot, for Preview Image or Save Image.")],
        )

    @classmethod
    def execute(cls, pooler, features=None):
        cfg, module = pooler.config, pooler.module
        layers = list(cfg.vlm.layers)
        maps = []
        with user_errors():
            if features is not None:
                hidden, mask = kept_states(cfg, features, PLAIN_ROLES, where=f"the UniFusion checkpoint {pooler.path}")
                mm.load_models_gpu([pooler.patcher], force_full_load=True)
                param = next(module.parameters())
                maps = module.layer_attention(hidden.to(param.device, param.dtype), mask.to(param.device))
        title = f"{os.path.basename(pooler.path)}: {cfg.lap.kind} pooling weight per VLM layer"
        return io.NodeOutput(draw_inspector(module.layer_weights().cpu(), layers, maps, title))
