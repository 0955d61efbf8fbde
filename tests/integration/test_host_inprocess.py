"""The nodes' ``execute`` called directly inside an in-process ComfyUI (no server), in ComfyUI's
interpreter: multi-reference features, chained image lists, LAP conditioning, the one-node encode,
node errors, the inspector, and that every DiT/pooler layer is a comfy.ops layer."""
import json
import os
import subprocess
import sys
from pathlib import Path

import fixtures

SCRIPT = Path(__file__).with_name("inprocess_nodes.py")


def test_execute_in_process(fx):
    comfy, python = os.environ["COMFYUI_PATH"], os.environ.get("COMFYUI_PYTHON") or sys.executable
    proc = subprocess.run([python, str(SCRIPT), comfy, str(fixtures.ROOT), str(fx["yaml"])], cwd=comfy,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["non_comfy_ops_layers"] == []
    assert out["image_tokens"]["text_only"] == 0 and out["image_tokens"]["four_refs"] > 0
    assert out["feature_layers"] == [1, 2, 3, 4]
    assert out["cond_shape"][0] == 1 and out["cond_shape"][2] == 32 and out["cond_finite"]
    assert out["mask_sum"] > out["image_tokens"]["four_refs"]  # image + instruction tokens are kept
    assert out["one_node_equals_two_nodes"]
    assert "needs generated tokens" in out["verifi_without_generated"]
    assert "layers [1, 2, 3, 4]" in out["layer_override_missing"]
    assert out["plot_shape"][0] == 1 and out["plot_shape"][3] == 3
