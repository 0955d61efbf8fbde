"""The nodes' ``execute`` called directly inside an in-process ComfyUI (no server), in ComfyUI's
interpreter: multi-reference features, chained image lists, LAP conditioning, the one-node encode,
node errors, the inspector, that every DiT/pooler layer is a comfy.ops layer, and the VERIFI nodes
(From Text of the Rewrite's text = the Rewrite's conditioning, seeds, prefix reuse, errors)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import fixtures

SCRIPT = Path(__file__).with_name("inprocess_nodes.py")


@pytest.fixture(scope="module")
def inprocess(fx):
    comfy, python = os.environ["COMFYUI_PATH"], os.environ.get("COMFYUI_PYTHON") or sys.executable
    proc = subprocess.run([python, str(SCRIPT), comfy, str(fixtures.ROOT), str(fx["yaml"])], cwd=comfy,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_execute_in_process(inprocess):
    out = inprocess
    assert out["non_comfy_ops_layers"] == []
    assert out["image_tokens"]["text_only"] == 0 and out["image_tokens"]["four_refs"] > 0
    assert out["feature_layers"] == [1, 2, 3, 4]
    assert out["cond_shape"][0] == 1 and out["cond_shape"][2] == out["cond_width"] and out["cond_finite"]
    assert out["mask_sum"] > out["image_tokens"]["four_refs"]  # image + instruction tokens are kept
    assert out["one_node_equals_two_nodes"]
    assert "needs generated tokens" in out["verifi_without_generated"]
    assert "layers [1, 2, 3, 4]" in out["layer_override_missing"]
    assert out["plot_shape"][0] == 1 and out["plot_shape"][3] == 3


def test_verifi_nodes_in_process(inprocess):
    out = inprocess
    assert out["verifi_forced_ids_match"] and out["verifi_text"] == "a snowy field under a grey sky with a red fox"
    assert out["verifi_masks_equal"] and out["verifi_from_text_err"] is not None
    assert out["verifi_from_text_err"] < 1e-4, f"From Text vs Rewrite conditioning: {out['verifi_from_text_err']:.2e}"
    # the conditioning holds exactly the image tokens and the generated tokens
    assert out["verifi_mask_sum"] == out["verifi_image_tokens"] + out["verifi_generated_tokens"]
    assert out["verifi_generated_tokens"] > 0 and out["verifi_image_tokens"] > 0
    assert out["prefix_cache_hits"] >= 1, "From Text did not reuse the Rewrite's image prefix"
    assert out["verifi_same_seed_equal"] and out["verifi_other_seed_differs"]
    assert out["verifi_t2i_image_tokens"] == 0
    assert out["verifi_progress"] == [[i, 12] for i in range(1, 13)], out["verifi_progress"]
    assert "custom system text is empty" in out["custom_empty"]
    assert "rewrite text is empty" in out["from_text_empty"]


def test_bad_combo_values_get_one_sentence(inprocess):
    """Values outside a combo's options (HTTP clients can send any string) are refused by the node."""
    found = {"weight_dtype": "'fp64'", "tokens": "'bogus'", "dtype": "'int8'", "device": "'cuda:7'",
             "attention": "'xformers'", "decoding": "'beam'", "system_preset": "'poem'"}
    for name, value in found.items():
        msg = inprocess["bad_combos"][name]
        assert msg is not None, f"{name} {value} was accepted"
        assert msg.startswith("ValueError: ") and "should be one of" in msg and f"found {value}" in msg, msg


def test_size_far_from_training_warns_once_and_a_tiny_latent_is_refused(inprocess):
    warnings = inprocess["size_warnings"]
    assert len(warnings) == 1 and "256x256 is far from the 32 px" in warnings[0], warnings
    assert "EmptyChromaRadianceLatentImage" in (inprocess["tiny_latent_error"] or "")
