"""VERIFI nodes (paper §3): the VLM rewrites the request in-context and the DiT is conditioned on the
generated tokens plus the image tokens of that pass; From Text conditions on a given (edited) rewrite.

Both output UNIFUSION_FEATURES for LAP Conditioning in its "image + generated (VERIFI)" mode.
"""
from __future__ import annotations

import comfy.model_management as mm
import comfy.utils
from comfy_api.latest import io, ui

from ..unifusion_core import verifi
from ..unifusion_core.checkpoint import check_vlm
from ..unifusion_core.errors import UniFusionError
from .common import (DECODING, SYSTEM_PRESETS, gather_images, make_detail, make_sampling, user_errors,
                     verifi_system)
from .encode import _detail_inputs, _should_stop, vlm_session
from .types import FEATURES, IMAGES, POOLER, VLM

MAX_NEW_TOKENS = 8192


def _request_inputs():
    return [
        VLM.Input("vlm", tooltip="From Load VLM (UniFusion)."),
        io.String.Input("instruction", multiline=True, default="",
                        tooltip="The user's request: a description to generate, or an edit of the reference images."),
        io.Image.Input("image", optional=True, tooltip="Reference image(s) for editing or composition (optional)."),
        IMAGES.Input("more_images", optional=True,
                     tooltip="Further references from a Reference Images chain, after 'image' (optional)."),
        *_detail_inputs(),
        io.Combo.Input("system_preset", options=list(SYSTEM_PRESETS), default="checkpoint default",
                       tooltip="The rewriter's system prompt. checkpoint default: the connected checkpoint's training "
                               "prompt for the task the image count implies (0 images t2i, 1 edit, more multi_ref), "
                               "else the pack's preset; t2i / edit / multi_ref: the pack's preset; custom: the text "
                               "below."),
        io.String.Input("custom_system", multiline=True, default="",
                        tooltip="The system prompt when the preset is 'custom' (ignored otherwise)."),
    ]


def _pooler_input():
    return POOLER.Input("pooler", optional=True,
                        tooltip="Optional checkpoint: its VLM layers are extracted and its training system prompt "
                                "is the 'checkpoint default'. Without it: the VLM's default layers and the pack's "
                                "presets.")


class _Request:
    """What both nodes resolve the same way: images, detail, system prompt, layers, config."""

    def __init__(self, vlm, pooler, image, more_images, max_pixels, max_tiles, system_preset, custom_system):
        self.images, details = gather_images(image, make_detail(max_pixels, max_tiles), more_images)
        self.detail, self.count = details or None, len(details)
        self.cfg = pooler.config if pooler is not None else None
        if pooler is not None:
            check_vlm(self.cfg, vlm.encoder.identity, where=f"the UniFusion checkpoint {pooler.path}")
        self.layers = tuple(self.cfg.vlm.layers) if self.cfg is not None else None
        self.system = verifi_system(system_preset, custom_system, self.count, self.cfg)

    def kwargs(self) -> dict:
        return dict(system=self.system, cfg=self.cfg, layers=self.layers, detail=self.detail)


class UniFusionVERIFIRewrite(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="UniFusionVERIFIRewrite", display_name="VERIFI Rewrite (UniFusion)", category="UniFusion/encode",
            description="VERIFI: the VLM reads [system prompt][reference images][instruction] and writes a detailed "
                        "description of the target image; the features of that same pass (image + generated "
                        "tokens) condition the DiT through LAP Conditioning in 'image + generated (VERIFI)' mode. "
                        "The rewrite is also output as text and shown on the node.",
            inputs=[*_request_inputs(),
                    io.Int.Input("max_new_tokens", default=256, min=1, max=MAX_NEW_TOKENS,
                                 tooltip="Most tokens the VLM may write; it stops earlier at its end-of-turn token."),
                    io.Combo.Input("decoding", options=list(DECODING), default="greedy",
                                   tooltip="greedy: always the most likely token (ignores temperature, top_p, seed); "
                                           "sample: temperature / top-p sampling with the seed."),
                    io.Float.Input("temperature", default=0.7, min=0.01, max=2.0, step=0.01,
                                   tooltip="Sampling temperature (sample only): lower is closer to greedy."),
                    io.Float.Input("top_p", default=0.9, min=0.01, max=1.0, step=0.01,
                                   tooltip="Nucleus sampling (sample only): keep the most likely tokens up to this "
                                           "probability mass."),
                    io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                                 tooltip="Sampling seed (sample only); the same seed gives the same rewrite."),
                    _pooler_input()],
            outputs=[FEATURES.Output(display_name="features",
                                     tooltip="Hidden states of the rewrite pass with roles, for LAP Conditioning "
                                             "(tokens: image + generated (VERIFI))."),
                     io.String.Output(display_name="rewrite",
                                      tooltip="The rewritten description, e.g. for VERIFI From Text after editing.")],
        )

    @classmethod
    def execute(cls, vlm, instruction, image=None, more_images=None, max_pixels=0, max_tiles=0,
                system_preset="checkpoint default", custom_system="", max_new_tokens=256, decoding="greedy",
                temperature=0.7, top_p=0.9, seed=0, pooler=None):
        with user_errors():
            req = _Request(vlm, pooler, image, more_images, max_pixels, max_tiles, system_preset, custom_system)
            sampling = make_sampling(decoding, max_new_tokens, temperature, top_p, seed)
            bar = comfy.utils.ProgressBar(sampling.max_new_tokens)
            with vlm_session(vlm, req.count):
                feats = verifi.rewrite(vlm.encoder, instruction, req.images, sampling=sampling,
                                       progress=lambda done, total: bar.update_absolute(done, total),
                                       should_stop=_should_stop, **req.kwargs())
        text = feats.texts[0]
        return io.NodeOutput(feats.to(mm.intermediate_device()), text, ui=ui.PreviewText(text))


class UniFusionVERIFIFromText(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="UniFusionVERIFIFromText", display_name="VERIFI From Text (UniFusion)",
            category="UniFusion/encode",
            description="Flexible inference: the features VERIFI Rewrite would give had the VLM written this text "
                        "(for example an edited rewrite), in one forward pass without decoding. With the same "
                        "instruction, images and system prompt, the Rewrite's own text gives its conditioning.",
            inputs=[*_request_inputs(),
                    io.String.Input("rewrite", multiline=True, default="",
                                    tooltip="The description to condition on: type it, or wire the Rewrite node's "
                                            "text (directly or through a text-editing node)."),
                    _pooler_input()],
            outputs=[FEATURES.Output(display_name="features",
                                     tooltip="Hidden states of [prompt][rewrite] with roles, for LAP Conditioning "
                                             "(tokens: image + generated (VERIFI)).")],
        )

    @classmethod
    def execute(cls, vlm, instruction, image=None, more_images=None, max_pixels=0, max_tiles=0,
                system_preset="checkpoint default", custom_system="", rewrite="", pooler=None):
        with user_errors():
            if not rewrite.strip():
                raise UniFusionError("VERIFI From Text needs a rewrite to condition on, but the rewrite text is "
                                     "empty.")
            req = _Request(vlm, pooler, image, more_images, max_pixels, max_tiles, system_preset, custom_system)
            bar = comfy.utils.ProgressBar(1)
            with vlm_session(vlm, req.count):
                feats = verifi.from_text(vlm.encoder, rewrite, instruction, req.images, **req.kwargs())
            bar.update_absolute(1, 1)
        return io.NodeOutput(feats.to(mm.intermediate_device()))
