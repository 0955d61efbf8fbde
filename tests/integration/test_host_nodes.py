"""The pack as ComfyUI sees it: node registration and docs in /object_info, folder registration,
one-sentence errors on the node, and fp8 / bf16 weight options."""
import pytest
import torch

import fixtures
from graphs import edited, n, pixel_graph
from unifusion_core.toy.comfy_host import error_of

NODE_IDS = ["UniFusionVLMLoader", "UniFusionCheckpointLoader", "UniFusionVLMFeatures", "UniFusionImageList",
            "UniFusionLAPConditioning", "UniFusionEncode", "UniFusionVERIFIRewrite", "UniFusionVERIFIFromText",
            "UniFusionLayerInspector"]


def test_object_info_lists_every_node_with_docs(host):
    info = host.get("/object_info")
    for node_id in NODE_IDS:
        node = info[node_id]
        assert node["description"].strip(), node_id
        assert node["category"].startswith("UniFusion/"), node_id
        for group in ("required", "optional"):
            for name, spec in node["input"].get(group, {}).items():
                assert len(spec) > 1 and spec[1].get("tooltip", "").strip(), f"{node_id}.{name} has no tooltip"
        assert len(node["output_tooltips"]) == len(node["output"]) and all(node["output_tooltips"]), node_id
    assert "IMPORT FAILED" not in "".join(l for l in host.log().splitlines() if "unifusion" in l.lower())


def test_folders_listed(host):
    spec = host.get("/object_info/UniFusionVLMLoader")["UniFusionVLMLoader"]["input"]["required"]
    assert fixtures.VLM_NAME in spec["vlm_folder"][1]["options"]
    ckpts = host.get("/object_info/UniFusionCheckpointLoader")["UniFusionCheckpointLoader"]["input"]["required"]
    assert fixtures.CKPT_FLUX in ckpts["checkpoint"][1]["options"]


def _one_sentence_error(host, graph, node_type, *words):
    entry = host.run(graph)
    assert entry["status"]["status_str"] == "error"
    err = error_of(entry)
    msg = err["exception_message"].strip()
    assert err["node_type"] == node_type and err["exception_type"] == "ValueError", err
    assert "\n" not in msg and "Traceback" not in msg, msg
    for w in words:
        assert w in msg, msg
    return msg


def test_error_wrong_vlm_for_checkpoint(host):
    g = pixel_graph(ckpt=fixtures.CKPT_OTHER)
    msg = _one_sentence_error(host, g, "UniFusionEncode", "expects a 3-layer x 48 VLM", "4 x 64")
    assert fixtures.CKPT_OTHER in msg


def test_error_wrong_vlm_in_lap_conditioning(host):
    g = pixel_graph(ckpt=fixtures.CKPT_OTHER)
    g["3"] = n("UniFusionVLMFeatures", vlm=["1", 0], instruction="x", system_prompt="", max_pixels=0, max_tiles=0,
               layers="")
    g["40"] = n("UniFusionLAPConditioning", pooler=["2", 1], features=["3", 0], tokens="image + instruction")
    g = edited(g, **{"6": {"positive": ["40", 0]}, "4": {"conditioning": ["40", 0]}})
    _one_sentence_error(host, g, "UniFusionLAPConditioning", "expects a 3-layer x 48 VLM")


def test_error_folder_is_not_a_vlm(host):
    g = edited(pixel_graph(), **{"1": {"vlm_folder": fixtures.NOT_VLM_NAME}})
    _one_sentence_error(host, g, "UniFusionVLMLoader", fixtures.NOT_VLM_NAME)


def test_error_corrupt_checkpoint(host):
    g = edited(pixel_graph(), **{"2": {"checkpoint": fixtures.CKPT_CORRUPT}})
    _one_sentence_error(host, g, "UniFusionCheckpointLoader", fixtures.CKPT_CORRUPT)


def test_error_bad_layer_override(host):
    g = pixel_graph()
    g["3"] = n("UniFusionVLMFeatures", vlm=["1", 0], instruction="x", system_prompt="", max_pixels=0, max_tiles=0,
               layers="1,2")
    g["40"] = n("UniFusionLAPConditioning", pooler=["2", 1], features=["3", 0], tokens="image + instruction")
    g = edited(g, **{"6": {"positive": ["40", 0]}, "4": {"conditioning": ["40", 0]}})
    _one_sentence_error(host, g, "UniFusionLAPConditioning", "layers [1, 2, 3, 4]")


@pytest.mark.parametrize("weight_dtype", ["bf16", "fp8_e4m3fn"])
def test_weight_dtype_options(host, weight_dtype):
    g = edited(pixel_graph(), **{"2": {"weight_dtype": weight_dtype}})
    (lat,) = host.latents(host.run_ok(g))
    assert torch.isfinite(lat).all() and lat.std() > 1e-3


def test_interrupt_stops_sampling_and_frees_nothing_stuck(host):
    """POST /interrupt mid-sampling ends the prompt as interrupted; the next prompt runs normally."""
    entry, _ = host.run_and_interrupt(pixel_graph(steps=4000, seed=99), after=1.0, timeout=60)
    assert entry["status"]["status_str"] == "error"
    assert any(ev == "execution_interrupted" for ev, _ in entry["status"]["messages"])
    (lat,) = host.latents(host.run_ok(pixel_graph(seed=100)))
    assert torch.isfinite(lat).all()


def test_error_stock_empty_latent_into_the_pixel_model(host):
    """Empty Latent Image (4 channels, 1/8 size) into a pixel-space checkpoint: ComfyUI refits the
    channels silently, so the node must say which latent node to use instead of drawing 4x4 px."""
    g = pixel_graph()
    g["5"] = n("EmptyLatentImage", width=32, height=32, batch_size=1)
    _one_sentence_error(host, g, "KSampler", "4x4 latent", "EmptyChromaRadianceLatentImage")


def test_interrupt_at_a_huge_size_lands_within_seconds(host):
    """2048 x 2048 on the pixel model (262,144 latent tokens: one DiT block runs long): /interrupt ends the
    prompt within seconds (attention runs in query chunks with an interrupt check between them)."""
    # 8 s: well into sampling (the VLM and LAP take a fraction of a second)
    entry, waited = host.run_and_interrupt(pixel_graph(steps=20, seed=7, size=2048), after=8.0, timeout=120)
    assert any(ev == "execution_interrupted" for ev, _ in entry["status"]["messages"]), entry["status"]
    assert waited < 10, f"the interrupt took {waited:.1f} s"
    (lat,) = host.latents(host.run_ok(pixel_graph(seed=101)))  # the host is fine afterwards
    assert torch.isfinite(lat).all()
