"""API graphs for the host tests: the shipped workflows with fixtures swapped in, and small graphs
built here around the tiny pixel checkpoint."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import fixtures

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
WORKFLOW_NAMES = ("t2i", "edit", "compose_two_refs", "chain_two_edits", "t2i_custom_sampler", "verifi_t2i",
                  "verifi_edit", "verifi_edit_the_rewrite")
# the pack's toy showcase workflows: they name the shipped toy models and run unchanged
TOY_WORKFLOW_NAMES = ("toy_t2i_verifi", "toy_t2i_raw", "toy_edit_chain", "toy_compose_two_refs")


def load_api(name: str, *, pixel: bool = False, size: int | None = None, steps: int = 3,
             rewrite_tokens: int = 24) -> dict:
    """An API workflow with placeholders replaced by fixtures, small sizes and few steps; with
    ``pixel`` the flux16 graph is switched to the pixel checkpoint, pixel-space latents and VAE; VERIFI
    rewrites are capped at ``rewrite_tokens`` tokens."""
    graph = json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())
    for node in graph.values():
        ins = node["inputs"]
        for k, v in ins.items():
            if isinstance(v, str) and v in fixtures.PLACEHOLDERS:
                ins[k] = fixtures.PLACEHOLDERS[v]
        if node["class_type"] == "EmptySD3LatentImage":
            ins.update(width=size or 64, height=size or 64)
            if pixel:
                node["class_type"] = "EmptyChromaRadianceLatentImage"
                ins.update(width=size or 32, height=size or 32)
        if node["class_type"] in ("KSampler", "BasicScheduler"):
            ins["steps"] = steps
        if node["class_type"] == "UniFusionVERIFIRewrite":
            ins["max_new_tokens"] = rewrite_tokens
        if pixel and node["class_type"] == "UniFusionCheckpointLoader":
            ins["checkpoint"] = fixtures.CKPT_PIXEL
        if pixel and node["class_type"] == "VAELoader":
            ins["vae_name"] = "pixel_space"
    return graph


def edited(graph: dict, **changes) -> dict:
    """A copy of ``graph`` with {node_id: {input: value}} applied."""
    g = copy.deepcopy(graph)
    for nid, ins in changes.items():
        g[nid]["inputs"].update(ins)
    return g


def n(cls, **inputs):
    return {"class_type": cls, "inputs": inputs}


def pixel_graph(prompt="a red square on blue", *, seed=1, sampler="euler", scheduler="simple", steps=3, cfg=3.0,
                size=32, batch=1, negative=None, out="latent", ckpt=fixtures.CKPT_PIXEL) -> dict:
    """VLM + checkpoint -> one-node encode -> KSampler -> SaveLatent (or pixel_space decode + preview).

    ``negative``: None = ConditioningZeroOut of the positive, or a prompt text for its own encode."""
    g = {"1": n("UniFusionVLMLoader", vlm_folder=fixtures.VLM_NAME, dtype="auto", device="default",
                attention="auto", trust_remote_code=False, prefix_cache_mb=1024),
         "2": n("UniFusionCheckpointLoader", checkpoint=ckpt, weight_dtype="default"),
         "3": n("UniFusionEncode", vlm=["1", 0], pooler=["2", 1], instruction=prompt, system_prompt="",
                max_pixels=0, max_tiles=0),
         "4": n("ConditioningZeroOut", conditioning=["3", 0]),
         "5": n("EmptyChromaRadianceLatentImage", width=size, height=size, batch_size=batch),
         "6": n("KSampler", model=["2", 0], seed=seed, steps=steps, cfg=cfg, sampler_name=sampler, scheduler=scheduler,
                positive=["3", 0], negative=["4", 0], latent_image=["5", 0], denoise=1.0)}
    if negative is not None:
        g["4"] = n("UniFusionEncode", vlm=["1", 0], pooler=["2", 1], instruction=negative, system_prompt="",
                   max_pixels=0, max_tiles=0)
    if out == "latent":
        g["7"] = n("SaveLatent", samples=["6", 0], filename_prefix="latents/uf")
    else:
        g["7"] = n("VAELoader", vae_name="pixel_space")
        g["8"] = n("VAEDecode", samples=["6", 0], vae=["7", 0])
        g["9"] = n("PreviewImage", images=["8", 0])
    return g
