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
verifi_nodes = importlib.import_module("ufpack.nodes.verifi")
core_verifi = importlib.import_module("ufpack.unifusion_core.verifi")
core_generate = importlib.import_module("ufpack.unifusion_core.vlm.generate")
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
    out["cond_width"] = int(pooler.config.lap.out_dim)
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
    # combo values an API client may send that are not among the options: one sentence each, never a KeyError
    # and never a silent replacement
    bad_combos = {
        "weight_dtype": lambda: loaders.UniFusionCheckpointLoader.execute("uf_tiny_pixel.safetensors", "fp64"),
        "tokens": lambda: encode.UniFusionLAPConditioning.execute(pooler, with_refs, tokens="bogus"),
        "dtype": lambda: loaders.UniFusionVLMLoader.execute("tiny-qwen2_5_vl", dtype="int8"),
        "device": lambda: loaders.UniFusionVLMLoader.execute("tiny-qwen2_5_vl", device="cuda:7"),
        "attention": lambda: loaders.UniFusionVLMLoader.execute("tiny-qwen2_5_vl", attention="xformers"),
        "decoding": lambda: verifi_nodes.UniFusionVERIFIRewrite.execute(vlm, "x", decoding="beam", pooler=pooler),
        "system_preset": lambda: verifi_nodes.UniFusionVERIFIRewrite.execute(vlm, "x", system_preset="poem",
                                                                             pooler=pooler),
    }
    out["bad_combos"] = {}
    for name, call in bad_combos.items():
        try:
            call()
            out["bad_combos"][name] = None
        except Exception as err:  # noqa: BLE001  (the type is part of what is checked)
            out["bad_combos"][name] = f"{type(err).__name__}: {err}"
    # the size check of the MODEL: far from the training size -> one warning per size; a 1/8-size latent
    # into a pixel checkpoint -> one sentence naming the latent node to use
    import dataclasses
    import logging

    comfy_model = importlib.import_module("ufpack.nodes.comfy_model")
    trained = dataclasses.replace(pooler.config, sampling=dataclasses.replace(pooler.config.sampling, resolution=32))
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("ufpack.nodes.comfy_model").addHandler(handler)
    warned = set()
    for hw in ((256, 256), (256, 256), (32, 32), (48, 32)):
        comfy_model.check_latent_size(trained, hw, warned)
    out["size_warnings"] = [r.getMessage() for r in records]
    try:
        comfy_model.check_latent_size(trained, (4, 4), set())
        out["tiny_latent_error"] = None
    except ValueError as err:
        out["tiny_latent_error"] = str(err)
    plot = first(inspector.UniFusionLayerInspector.execute(pooler, with_refs))
    out["plot_shape"] = list(plot.shape)

    # VERIFI: the random tiny VLM writes byte soup that does not re-tokenize to the same ids, so the decoder is
    # made to write a clean text (token choice only; the pass and its capture are the real ones). From Text with
    # the Rewrite's text must then give the Rewrite's conditioning.
    instruction, clean = "make it winter", "a snowy field under a grey sky with a red fox"
    system = core_verifi.system_prompt("edit", pooler.config)
    forced = core_generate.answer_ids(vlm.encoder, core_verifi.verifi_prompt(instruction, [img_c], system=system),
                                      clean, 1)

    class ForcedPicker:
        def __init__(self, sampling, stop_ids, banned_ids, seed):
            self.stop = min(stop_ids)

        def pick(self, logits, step):
            return forced[step] if step < len(forced) else self.stop

    real_picker, core_generate.TokenPicker = core_generate.TokenPicker, ForcedPicker
    cache = vlm.encoder.prefix_cache
    hits = cache.hits
    try:
        feats, text = verifi_nodes.UniFusionVERIFIRewrite.execute(vlm, instruction, image=img_c, max_new_tokens=64,
                                                                  pooler=pooler).args
    finally:
        core_generate.TokenPicker = real_picker
    taught = first(verifi_nodes.UniFusionVERIFIFromText.execute(vlm, instruction, image=img_c, rewrite=text,
                                                                pooler=pooler))
    verifi_mode = "image + generated (VERIFI)"
    c_gen = first(encode.UniFusionLAPConditioning.execute(pooler, feats, tokens=verifi_mode))[0]
    c_tf = first(encode.UniFusionLAPConditioning.execute(pooler, taught, tokens=verifi_mode))[0]
    out["verifi_text"] = text
    out["verifi_forced_ids_match"] = list(feats.generated_ids[0]) == list(forced)
    out["verifi_from_text_err"] = float((c_gen[0] - c_tf[0]).abs().max()) if c_gen[0].shape == c_tf[0].shape else None
    out["verifi_masks_equal"] = bool(torch.equal(c_gen[1]["attention_mask"], c_tf[1]["attention_mask"]))
    out["verifi_generated_tokens"] = int((feats.roles == 4).sum())
    out["verifi_image_tokens"] = int((feats.roles == 3).sum())
    out["verifi_mask_sum"] = float(c_gen[1]["attention_mask"].sum())
    out["prefix_cache_hits"] = cache.hits - hits
    # the real decoder, sampled: the same seed gives the same rewrite and features, another seed another rewrite
    runs = [verifi_nodes.UniFusionVERIFIRewrite.execute(vlm, "a red fox", max_new_tokens=16, decoding="sample",
                                                        temperature=1.0, seed=s, pooler=pooler).args
            for s in (5, 5, 6)]
    out["verifi_same_seed_equal"] = runs[0][1] == runs[1][1] and bool(torch.equal(runs[0][0].hidden, runs[1][0].hidden))
    out["verifi_other_seed_differs"] = runs[0][1] != runs[2][1]
    out["verifi_t2i_image_tokens"] = int((runs[0][0].roles == 3).sum())
    # progress: one update per generated token (greedy on the random VLM never stops early)
    import comfy.utils

    ticks = []
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: ticks.append((value, total)))
    try:
        verifi_nodes.UniFusionVERIFIRewrite.execute(vlm, "count my tokens", max_new_tokens=12, pooler=pooler)
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
    out["verifi_progress"] = ticks
    errors = {"custom_empty": lambda: verifi_nodes.UniFusionVERIFIRewrite.execute(vlm, "x", system_preset="custom"),
              "from_text_empty": lambda: verifi_nodes.UniFusionVERIFIFromText.execute(vlm, "x", rewrite="  ")}
    for name, call in errors.items():
        try:
            call()
            out[name] = None
        except ValueError as err:
            out[name] = str(err)
print(json.dumps(out))
