"""Run by test_host_inprocess.py with ComfyUI's interpreter: imports ComfyUI in-process (no server),
loads this repo as its pack package and calls the nodes' ``execute`` directly. Prints one JSON line.

    python inprocess_nodes.py COMFYUI_PATH REPO_ROOT EXTRA_MODEL_PATHS_YAML
"""
import importlib
import importlib.util
import json
import sys

comfy_path, root, yaml_path = sys.argv[1:4]
sys.path.insert(0, comfy_path)
from comfy.cli_args import args  # noqa: E402

args.cpu = True
import utils.extra_config  # noqa: E402  (before anything imports ComfyUI's nodes.py)

utils.extra_config.load_extra_path_config(yaml_path)
import torch  # noqa: E402

spec = importlib.util.spec_from_file_location("ufpack", f"{root}/__init__.py", submodule_search_locations=[root])
pack = importlib.util.module_from_spec(spec)
sys.modules["ufpack"] = pack
spec.loader.exec_module(pack)
nodes = importlib.import_module("ufpack.nodes")
encode = importlib.import_module("ufpack.nodes.encode")
loaders = importlib.import_module("ufpack.nodes.loaders")
inspector = importlib.import_module("ufpack.nodes.inspector")
nodes.register_folders()
out = {}


def first(node_output):
    return node_output.args[0] if hasattr(node_output, "args") else node_output.result[0]


with torch.inference_mode():
    vlm = first(loaders.UniFusionVLMLoader.execute("tiny-qwen2_5_vl"))
    model, pooler = loaders.UniFusionCheckpointLoader.execute("uf_tiny_pixel.safetensors").args
    # every learnable layer of the DiT (incl. refiner) and of the pooler is a comfy.ops layer
    plain = [type(m).__name__ for mod in (model.model.diffusion_model, pooler.module) for m in mod.modules()
             if isinstance(m, (torch.nn.Linear, torch.nn.LayerNorm, torch.nn.RMSNorm)) and not hasattr(m, "comfy_cast_weights")]
    out["non_comfy_ops_layers"] = plain

    img_a, img_b, img_c = torch.rand(2, 40, 48, 3), torch.rand(1, 56, 32, 3), torch.rand(1, 64, 64, 3)
    chain = first(encode.UniFusionImageList.execute(img_b, max_pixels=0, max_tiles=0))
    chain = first(encode.UniFusionImageList.execute(img_c, max_pixels=32 * 32, max_tiles=0, previous=chain))
    text_only = first(encode.UniFusionVLMFeatures.execute(vlm, "a red fox", pooler=pooler))
    with_refs = first(encode.UniFusionVLMFeatures.execute(vlm, "a red fox", image=img_a, more_images=chain,
                                                          pooler=pooler))
    out["image_tokens"] = {"text_only": int((text_only.roles == 3).sum()), "four_refs": int((with_refs.roles == 3).sum())}
    out["feature_layers"] = list(with_refs.layers)
    cond = first(encode.UniFusionLAPConditioning.execute(pooler, with_refs))
    tokens, extras = cond[0]
    out["cond_shape"] = list(tokens.shape)
    out["mask_sum"] = float(extras["attention_mask"].sum())
    out["cond_finite"] = bool(torch.isfinite(tokens).all())
    one_node = first(encode.UniFusionEncode.execute(vlm, pooler, "a red fox", image=img_a, more_images=chain))
    out["one_node_equals_two_nodes"] = bool(torch.allclose(one_node[0][0], tokens, atol=1e-6))
    for name, call in (("verifi_without_generated", lambda: encode.UniFusionLAPConditioning.execute(
                            pooler, with_refs, tokens="image + generated (VERIFI)")),
                       ("layer_override_missing", lambda: encode.UniFusionLAPConditioning.execute(
                            pooler, first(encode.UniFusionVLMFeatures.execute(vlm, "x", layers="2,4"))))):
        try:
            call()
            out[name] = None
        except ValueError as err:
            out[name] = str(err)
    plot = first(inspector.UniFusionLayerInspector.execute(pooler, with_refs))
    out["plot_shape"] = list(plot.shape)
print(json.dumps(out))
