"""Maintainer tool: writes the UI-format workflows/*.json (listed by ComfyUI's template browser, titled by
their file names: workflow_format.TEMPLATE_TITLES) and their API-format twins workflows/api/<name>.json (not listed: the browser globs only workflows/*.json) from the
graphs below, using a running ComfyUI's /object_info for widget order and socket types.

    python tests/integration/build_workflows.py http://127.0.0.1:8188 [demo_out]

With a ``make demo`` output folder it also draws the template browser's thumbnails (workflows/*.jpg).

Model file names in the general workflows are placeholders (see README "Workflows"); the integration
tests swap in fixtures. The toy_* workflows name the pack's shipped toy models and run as they are;
they are the `make demo` showcase (unifusion_core/toy/showcase.py) as ComfyUI graphs.
"""
from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from workflow_format import TEMPLATE_TITLES, has_control, is_widget  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from unifusion_core.toy import shipped, showcase  # noqa: E402

OUT = Path(__file__).resolve().parents[2] / "workflows"
VLM, CKPT, VAE = "Qwen2.5-VL-7B-Instruct", "unifusion_flux16.safetensors", "ae.safetensors"
REF1, REF2 = "unifusion_ref1.png", "unifusion_ref2.png"


def n(cls, title=None, **inputs):
    return {"class_type": cls, "inputs": inputs, "_meta": {"title": title or cls}}


def loaders():
    return {"1": n("UniFusionVLMLoader", vlm_folder=VLM, dtype="auto", device="default", attention="auto",
                   trust_remote_code=False, prefix_cache_mb=1024),
            "2": n("UniFusionCheckpointLoader", checkpoint=CKPT, weight_dtype="default"),
            "8": n("VAELoader", vae_name=VAE)}


def encode(fid, cid, zid, text, image=None, more=None):
    feats = dict(vlm=["1", 0], instruction=text, system_prompt="")
    if image:
        feats["image"] = image
    if more:
        feats["more_images"] = more
    feats.update(max_pixels=0, max_tiles=0, layers="", pooler=["2", 1])
    return {fid: n("UniFusionVLMFeatures", **feats),
            cid: n("UniFusionLAPConditioning", pooler=["2", 1], features=[fid, 0], tokens="image + instruction"),
            zid: n("ConditioningZeroOut", "Negative (null condition)", conditioning=[cid, 0])}


def sample(kid, lid, did, sid, pos, neg, seed, prefix):
    return {lid: n("EmptySD3LatentImage", width=1024, height=1024, batch_size=1),
            kid: n("KSampler", model=["2", 0], seed=seed, steps=28, cfg=4.0, sampler_name="euler",
                   scheduler="simple", positive=pos, negative=neg, latent_image=[lid, 0], denoise=1.0),
            did: n("VAEDecode", samples=[kid, 0], vae=["8", 0]),
            sid: n("SaveImage", images=[did, 0], filename_prefix=prefix)}


def t2i():
    g = {**loaders(), **encode("3", "4", "5", "a red fox sitting in fresh snow, golden hour, photo")}
    g.update(sample("7", "6", "9", "10", ["4", 0], ["5", 0], 42, "UniFusion/t2i"))
    g["11"] = n("UniFusionLayerInspector", pooler=["2", 1], features=["3", 0])
    g["12"] = n("PreviewImage", images=["11", 0])
    return g


def edit():
    g = {**loaders(), "11": n("LoadImage", image=REF1)}
    g.update(encode("3", "4", "5", "make it winter: snow on the ground, overcast sky", image=["11", 0]))
    g.update(sample("7", "6", "9", "10", ["4", 0], ["5", 0], 42, "UniFusion/edit"))
    return g


def compose():
    g = {**loaders(), "11": n("LoadImage", image=REF1), "12": n("LoadImage", image=REF2),
         "13": n("UniFusionImageList", "Second reference", image=["12", 0], max_pixels=0, max_tiles=0)}
    g.update(encode("3", "4", "5", "put the animal from picture 1 into the landscape of picture 2",
                    image=["11", 0], more=["13", 0]))
    g.update(sample("7", "6", "9", "10", ["4", 0], ["5", 0], 42, "UniFusion/compose"))
    return g


def chain():
    g = {**loaders(), "11": n("LoadImage", image=REF1)}
    g.update(encode("3", "4", "5", "make it winter: snow on the ground", image=["11", 0]))
    g.update(sample("7", "6", "9", "10", ["4", 0], ["5", 0], 42, "UniFusion/chain_step1"))
    g.update(encode("13", "14", "15", "now add a small wooden cabin on the left", image=["9", 0]))
    g.update(sample("17", "16", "19", "20", ["14", 0], ["15", 0], 43, "UniFusion/chain_step2"))
    return g


def t2i_custom_sampler():
    g = {**loaders(), **encode("3", "4", "5", "a red fox sitting in fresh snow, golden hour, photo")}
    g.update({
        "6": n("EmptySD3LatentImage", width=1024, height=1024, batch_size=1),
        "21": n("ModelSamplingAuraFlow", model=["2", 0], shift=3.0),
        "22": n("CFGGuider", model=["21", 0], positive=["4", 0], negative=["5", 0], cfg=4.0),
        "23": n("BasicScheduler", model=["21", 0], scheduler="simple", steps=28, denoise=1.0),
        "24": n("KSamplerSelect", sampler_name="euler"),
        "25": n("RandomNoise", noise_seed=42),
        "7": n("SamplerCustomAdvanced", noise=["25", 0], guider=["22", 0], sampler=["24", 0], sigmas=["23", 0],
               latent_image=["6", 0]),
        "9": n("VAEDecode", samples=["7", 0], vae=["8", 0]),
        "10": n("SaveImage", images=["9", 0], filename_prefix="UniFusion/t2i_custom_sampler"),
    })
    return g


VERIFI = "image + generated (VERIFI)"


def rewrite_node(instruction, image=None):
    ins = dict(vlm=["1", 0], instruction=instruction)
    if image:
        ins["image"] = image
    ins.update(max_pixels=0, max_tiles=0, system_preset="checkpoint default", custom_system="", max_new_tokens=256,
               decoding="greedy", temperature=0.7, top_p=0.9, seed=0, pooler=["2", 1])
    return n("UniFusionVERIFIRewrite", "VERIFI Rewrite (the VLM describes the target image)", **ins)


def verifi_condition(features):
    return {"4": n("UniFusionLAPConditioning", pooler=["2", 1], features=features, tokens=VERIFI),
            "5": n("ConditioningZeroOut", "Negative (null condition)", conditioning=["4", 0])}


def verifi_t2i():
    g = {**loaders(), "3": rewrite_node("a red fox sitting in fresh snow, golden hour, photo"),
         **verifi_condition(["3", 0]), "11": n("PreviewAny", "Rewritten prompt", source=["3", 1])}
    g.update(sample("7", "6", "9", "10", ["4", 0], ["5", 0], 42, "UniFusion/verifi_t2i"))
    return g


def verifi_edit():
    g = {**loaders(), "11": n("LoadImage", image=REF1),
         "3": rewrite_node("make it winter: snow on the ground, overcast sky", image=["11", 0]),
         **verifi_condition(["3", 0]), "12": n("PreviewAny", "Rewritten prompt", source=["3", 1])}
    g.update(sample("7", "6", "9", "10", ["4", 0], ["5", 0], 42, "UniFusion/verifi_edit"))
    return g


def verifi_edit_the_rewrite():
    """Rewrite -> its text -> editable text nodes -> VERIFI From Text re-conditions on the edited text."""
    g = {**loaders(),
         "16": n("PrimitiveStringMultiline", "Instruction (shared by both VERIFI nodes)",
                 value="a red fox sitting in fresh snow, golden hour, photo"),
         "3": rewrite_node(["16", 0]),
         "11": n("PreviewAny", "Original rewrite", source=["3", 1]),
         "12": n("StringReplace", "Edit the rewrite: replace words", string=["3", 1], find="", replace=""),
         "13": n("StringConcatenate", "Edit the rewrite: add text", string_a=["12", 0],
                 string_b="The fox wears a small red scarf.", delimiter=" "),
         "14": n("PreviewAny", "Edited rewrite (conditions the image)", source=["13", 0]),
         "15": n("UniFusionVERIFIFromText", "VERIFI From Text (conditions on the edited rewrite)", vlm=["1", 0],
                 instruction=["16", 0], max_pixels=0, max_tiles=0, system_preset="checkpoint default",
                 custom_system="", rewrite=["13", 0], pooler=["2", 1]),
         **verifi_condition(["15", 0])}
    g.update(sample("7", "6", "9", "10", ["4", 0], ["5", 0], 42, "UniFusion/verifi_edit_the_rewrite"))
    return g


# -- the toy showcase (shipped models, runs out of the box) -----------------------------------------

def toy_loaders():
    return {"1": n("UniFusionVLMLoader", vlm_folder=shipped.VLM_NAME, dtype="auto", device="default",
                   attention="auto", trust_remote_code=False, prefix_cache_mb=64),
            "2": n("UniFusionCheckpointLoader", checkpoint=shipped.CHECKPOINT_NAME, weight_dtype="default"),
            "8": n("VAELoader", "Pixel space (the toy model makes RGB pixels)", vae_name="pixel_space")}


def toy_job(g: dict, k: int, job, decoded: dict) -> None:
    """Nodes of one showcase job (ids k*10 .. k*10+9); ``decoded`` maps earlier job names to their
    VAEDecode output sockets (the references of edits and compositions)."""
    i = lambda j: str(10 * k + j)  # noqa: E731
    refs = [decoded[r] for r in job.refs]
    images = {}
    if refs:
        images["image"] = refs[0]
    if len(refs) > 1:
        g[i(9)] = n("UniFusionImageList", "Second reference", image=refs[1], max_pixels=0, max_tiles=0)
        images["more_images"] = [i(9), 0]
    if job.verifi:
        ins = dict(vlm=["1", 0], instruction=job.prompt, **images, max_pixels=0, max_tiles=0,
                   system_preset="checkpoint default", custom_system="", max_new_tokens=96, decoding="greedy",
                   temperature=0.7, top_p=0.9, seed=0, pooler=["2", 1])
        g[i(0)] = n("UniFusionVERIFIRewrite", f"{job.title}: VERIFI rewrite", **ins)
        g[i(8)] = n("PreviewAny", f"{job.title}: rewritten prompt", source=[i(0), 1])
        tokens = VERIFI
    else:
        g[i(0)] = n("UniFusionVLMFeatures", f"{job.title}: VLM features of the raw prompt", vlm=["1", 0],
                    instruction=job.prompt, system_prompt="", **images, max_pixels=0, max_tiles=0, layers="",
                    pooler=["2", 1])
        tokens = "image + instruction"
    g[i(1)] = n("UniFusionLAPConditioning", pooler=["2", 1], features=[i(0), 0], tokens=tokens)
    g[i(2)] = n("ConditioningZeroOut", "Negative (null condition)", conditioning=[i(1), 0])
    g[i(3)] = n("EmptyChromaRadianceLatentImage", width=showcase.SIZE, height=showcase.SIZE, batch_size=1)
    g[i(4)] = n("KSampler", job.title, model=["2", 0], seed=job.seed, steps=showcase.STEPS, cfg=showcase.CFG,
                sampler_name="euler", scheduler="simple", positive=[i(1), 0], negative=[i(2), 0],
                latent_image=[i(3), 0], denoise=1.0)
    g[i(5)] = n("VAEDecode", samples=[i(4), 0], vae=["8", 0])
    g[i(6)] = n("SaveImage", images=[i(5), 0], filename_prefix=f"{showcase.OUTPUT_PREFIX}/{job.name}")
    decoded[job.name] = [i(5), 0]


def toy_graph(*names):
    """The showcase jobs ``names`` and every job they take references from, in one graph."""
    by_name, needed = {j.name: j for j in showcase.JOBS}, []

    def need(name):
        for r in by_name[name].refs:
            need(r)
        if name not in needed:
            needed.append(name)

    for name in names:
        need(name)
    g, decoded = toy_loaders(), {}
    for k, name in enumerate(needed, 1):
        toy_job(g, k, by_name[name], decoded)
    return g


TOY_GRAPHS = {"toy_t2i_verifi": lambda: toy_graph("t2i_verifi"), "toy_t2i_raw": lambda: toy_graph("t2i_raw"),
              "toy_edit_chain": lambda: toy_graph("edit_3"), "toy_compose_two_refs": lambda: toy_graph("compose")}

GRAPHS = {"t2i": t2i, "edit": edit, "compose_two_refs": compose, "chain_two_edits": chain,
          "t2i_custom_sampler": t2i_custom_sampler, "verifi_t2i": verifi_t2i, "verifi_edit": verifi_edit,
          "verifi_edit_the_rewrite": verifi_edit_the_rewrite, **TOY_GRAPHS}


def ordered(api: dict, object_info: dict) -> dict:
    """Inputs re-ordered to /object_info input order (the twin test relies on it)."""
    out = {}
    for nid, node in api.items():
        info = object_info[node["class_type"]]
        order = info["input_order"].get("required", []) + info["input_order"].get("optional", [])
        node = dict(node, inputs={k: node["inputs"][k] for k in order if k in node["inputs"]})
        out[nid] = node
    return out


# room the frontend needs: title bar, one row per socket pair, a widget row, a multiline text box
_TITLE, _ROW, _WIDGET, _TEXT, _GAP = 30, 22, 26, 90, 40
# what nodes show after a run: the rewrite text of the pack's web extension, Preview Any's text
_GROWS = {"UniFusionVERIFIRewrite": 230, "PreviewAny": 60}


def node_size(node: dict, specs: dict, n_inputs: int, n_outputs: int) -> list[int]:
    """[width, height] that fits the node's sockets and widgets (and what it shows after a run)."""
    widgets = [specs[k] for k, v in node["inputs"].items() if not isinstance(v, list) and is_widget(specs[k])]
    multiline = sum(1 for spec in widgets if len(spec) > 1 and spec[1].get("multiline"))
    height = (_TITLE + _ROW * max(n_inputs, n_outputs) + _WIDGET * (len(widgets) - multiline) + _TEXT * multiline
              + _GROWS.get(node["class_type"], 0) + 10)
    if node["class_type"] in ("PreviewImage", "SaveImage"):
        height = max(height, 300)  # the image preview
    width = 480 if multiline or node["class_type"] == "UniFusionVERIFIRewrite" else 340  # as the frontend draws them
    return [width, height]


def place(nodes: list, links: list) -> None:
    """Left to right by depth in the graph (a node one column right of everything it reads), top to
    bottom within a column: no two nodes overlap."""
    by_id = {nd["id"]: nd for nd in nodes}
    parents: dict = {nd["id"]: set() for nd in nodes}
    for _, src, _, dst, _, _ in links:
        parents[dst].add(src)
    depth: dict = {}

    def rank(i):
        if i not in depth:
            depth[i] = 0  # guards a cycle (there are none in these graphs)
            depth[i] = 1 + max((rank(j) for j in parents[i]), default=-1)
        return depth[i]

    columns: dict = {}
    for nd in sorted(nodes, key=lambda nd: nd["id"]):
        columns.setdefault(rank(nd["id"]), []).append(nd)
    x = 60
    for r in sorted(columns):
        y = 60
        for nd in columns[r]:
            by_id[nd["id"]]["pos"] = [x, y]
            y += nd["size"][1] + _GAP
        x += max(nd["size"][0] for nd in columns[r]) + _GAP


def to_ui(api: dict, object_info: dict) -> dict:
    nodes, links, link_id = [], [], 0
    out_links: dict = {}
    ids = sorted(api, key=int)
    for col, nid in enumerate(ids):
        node, info = api[nid], object_info[api[nid]["class_type"]]
        specs = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
        inputs, widgets = [], []
        for name, value in node["inputs"].items():
            spec = specs[name]
            if isinstance(value, list):
                link_id += 1
                links.append([link_id, int(value[0]), value[1], int(nid), len(inputs), spec[0]])
                out_links.setdefault((value[0], value[1]), []).append(link_id)
                socket = {"name": name, "type": spec[0], "link": link_id}
                if is_widget(spec):  # a widget fed by a link keeps its value slot, as the frontend saves it
                    socket["widget"] = {"name": name}
                    widgets.append(spec[1].get("default", "") if len(spec) > 1 else "")
                    if has_control(spec):
                        widgets.append("fixed")
                inputs.append(socket)
            else:
                widgets.append(value)
                if has_control(spec):
                    widgets.append("fixed")
        for name, spec in specs.items():  # unconnected optional sockets still show
            if not is_widget(spec) and name not in node["inputs"]:
                inputs.append({"name": name, "type": spec[0], "link": None})
        outputs = [{"name": oname, "type": otype, "slot_index": i, "links": None}
                   for i, (oname, otype) in enumerate(zip(info["output_name"], info["output"]))]
        title = node["_meta"]["title"]
        if title == node["class_type"]:  # no title of its own: the display name, as the frontend shows new nodes
            title = info.get("display_name") or title
        nodes.append({"id": int(nid), "type": node["class_type"], "pos": [0, 0],
                      "size": node_size(node, specs, len(inputs), len(outputs)), "flags": {}, "order": col,
                      "mode": 0, "inputs": inputs, "outputs": outputs, "title": title,
                      "properties": {"Node name for S&R": node["class_type"]}, "widgets_values": widgets})
    place(nodes, links)
    for node in nodes:
        for o in node["outputs"]:
            o["links"] = out_links.get((str(node["id"]), o["slot_index"]), [])
    return {"id": "00000000-0000-4000-8000-000000000000", "revision": 0, "last_node_id": max(map(int, ids)),
            "last_link_id": link_id, "nodes": nodes, "links": links, "groups": [], "config": {},
            "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}}, "version": 0.4}


NOTE = ("Files this workflow expects (placeholders: re-pick your own in the loaders)\n"
        f"- VLM folder: ComfyUI/models/LLM/{VLM}/ (a Hugging Face folder: config.json, *.safetensors, "
        "tokenizer and processor files; the VLM your checkpoint was trained with)\n"
        f"- UniFusion checkpoint: ComfyUI/models/diffusion_models/{CKPT} (train one: README 'Train your own')\n"
        f"- FLUX.1 VAE: ComfyUI/models/vae/{VAE}\n"
        f"- reference images (edit / composition): ComfyUI/input/{REF1}, {REF2}\n"
        "The toy_* workflows run as they are, on the pack's own trained toy models.")


def note_node(node_id: int, nodes: list) -> dict:
    """A frontend-only Note (no API twin) above the graph, saying which files go where."""
    top = min(nd["pos"][1] for nd in nodes)
    for nd in nodes:  # make room above the graph
        nd["pos"][1] += 230
    return {"id": node_id, "type": "Note", "pos": [60, top], "size": [620, 190], "flags": {}, "order": len(nodes),
            "mode": 0, "inputs": [], "outputs": [], "title": "Which files go where", "properties": {},
            "widgets_values": [NOTE], "color": "#432", "bgcolor": "#653"}


TOY_JOBS = {"toy_t2i_verifi": ("t2i_verifi",), "toy_t2i_raw": ("t2i_raw",),
            "toy_edit_chain": ("t2i_verifi", "edit_1", "edit_2", "edit_3"), "toy_compose_two_refs": ("ref_1", "ref_2", "compose")}


def thumbnail(name: str, ui: dict, demo_dir: Path) -> "Image.Image":
    """The template browser's picture of a workflow (workflows/<name>.jpg, 512 x 384): a toy workflow
    shows what it makes (its jobs' outputs from ``make demo``, last one largest); the others a card with
    their title and node chain."""
    from PIL import Image, ImageDraw, ImageFont

    card = Image.new("RGB", (512, 384), (32, 34, 40))
    draw = ImageDraw.Draw(card)
    font = ImageFont.load_default(size=26)
    small = ImageFont.load_default(size=17)
    caption = TEMPLATE_TITLES[name].removeprefix("UniFusion-toy-").removeprefix("UniFusion-").replace("-", " ")
    draw.text((20, 16), caption, fill=(235, 235, 235), font=font)
    if name in TOY_JOBS:
        jobs = [Image.open(demo_dir / f"{j}.png").convert("RGB") for j in TOY_JOBS[name]]
        main = jobs[-1].resize((288, 288), Image.NEAREST)
        card.paste(main, (20, 72))
        for k, img in enumerate(jobs[:-1][-3:]):
            card.paste(img.resize((88, 88), Image.NEAREST), (330 + (k % 2) * 94, 72 + (k // 2) * 94))
        draw.text((330, 300), "shipped toy models:", fill=(180, 180, 180), font=small)
        draw.text((330, 322), "runs as it is", fill=(180, 180, 180), font=small)
        return card
    chain = []
    for nd in sorted(ui["nodes"], key=lambda nd: nd["pos"][0]):
        if nd["type"] != "Note" and nd["title"] not in chain:
            chain.append(nd["title"])
    for k, title in enumerate(chain[:11]):
        draw.text((20 + 246 * (k // 12), 70 + 24 * (k % 12)), f"- {title}", fill=(200, 200, 200), font=small)
    draw.text((20, 352), "placeholder models: see the Note", fill=(150, 150, 150), font=small)
    return card


def main(url: str, demo_dir: Path | None = None):
    """``demo_dir``: a ``make demo`` output folder; with it, the thumbnails are (re)drawn too."""
    object_info = json.load(urllib.request.urlopen(url + "/object_info"))
    (OUT / "api").mkdir(parents=True, exist_ok=True)
    for name, build in GRAPHS.items():
        api = ordered(build(), object_info)
        (OUT / "api" / f"{name}.json").write_text(json.dumps(api, indent=2) + "\n")
        ui = to_ui(api, object_info)
        if not name.startswith("toy_"):
            ui["nodes"].append(note_node(ui["last_node_id"] + 1, ui["nodes"]))
            ui["last_node_id"] += 1
        title = TEMPLATE_TITLES[name]
        (OUT / f"{title}.json").write_text(json.dumps(ui, indent=2) + "\n")
        if demo_dir is not None:
            thumbnail(name, ui, demo_dir).save(OUT / f"{title}.jpg", quality=90)
        print("wrote", name)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8188", Path(sys.argv[2]) if len(sys.argv) > 2 else None)
