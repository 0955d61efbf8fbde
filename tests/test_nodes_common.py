"""Node-layer code that runs without ComfyUI: errors, folder listing, image lists, the layer plot,
and the workflow files (each UI file and its API twin describe the same graph)."""
import importlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / "workflows"
sys.path.insert(0, str(ROOT / "tests" / "integration"))
from workflow_format import TEMPLATE_TITLES, api_graph_summary, ui_graph_summary  # noqa: E402


@pytest.fixture(scope="module")
def pack():
    """The repo imported as ComfyUI imports it: a package, so nodes/ reaches the core relatively."""
    name = "ufpack_under_test"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return name


@pytest.fixture(scope="module")
def common(pack):
    return importlib.import_module(f"{pack}.nodes.common")


@pytest.fixture(scope="module")
def layerviz(pack):
    return importlib.import_module(f"{pack}.nodes.layerviz")


def test_hf_model_dirs(common, tmp_path):
    a, b = tmp_path / "LLM", tmp_path / "text_encoders"
    for d in (a / "Qwen3-VL-2B", a / "org" / "Big-Model", a / ".cache" / "x", b / "Qwen2.5-VL-7B"):
        d.mkdir(parents=True)
        (d / "config.json").write_text("{}")
    (a / "loose.safetensors").write_bytes(b"")
    assert common.hf_model_dirs([str(a), str(b), str(tmp_path / "missing")]) == [
        "Qwen2.5-VL-7B", "Qwen3-VL-2B", "org/Big-Model"]
    assert common.resolve_model_dir("org/Big-Model", [str(b), str(a)]) == str(a / "org" / "Big-Model")
    with pytest.raises(ValueError, match="No VLM folder named 'nope'"):
        common.resolve_model_dir("nope", [str(a)])


def test_user_errors_is_one_sentence_without_chain(common, pack):
    errors = importlib.import_module(f"{pack}.unifusion_core.errors")
    with pytest.raises(ValueError) as info:
        with common.user_errors():
            raise errors.UniFusionError("the checkpoint expects a 4-layer x 64 VLM, but the given one is 3 x 48.")
    assert type(info.value) is ValueError and info.value.__suppress_context__
    assert str(info.value) == "the checkpoint expects a 4-layer x 64 VLM, but the given one is 3 x 48."


def test_missing_transformers_message(common, monkeypatch):
    monkeypatch.setattr(common.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match=r"install transformers>=4\.57 \(pip install -r requirements\.txt\)"):
        common.require_transformers()


def test_pack_and_node_helpers_import_without_transformers():
    code = ("import importlib.abc, importlib.util, sys\n"
            "class Block(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] == 'transformers': raise ImportError('blocked')\n"
            "sys.meta_path.insert(0, Block())\n"
            f"spec = importlib.util.spec_from_file_location('p', r'{ROOT / '__init__.py'}', "
            f"submodule_search_locations=[r'{ROOT}'])\n"
            "m = importlib.util.module_from_spec(spec); sys.modules['p'] = m; spec.loader.exec_module(m)\n"
            "import p.nodes.common, p.nodes.layerviz, p.unifusion_core.vlm\n")
    subprocess.run([sys.executable, "-c", code], cwd="/", check=True)


def test_gather_images_and_details(common):
    d1, d2 = common.make_detail(4096, 0), common.make_detail(0, 6)
    assert (d1.max_pixels, d1.max_tiles, d2.max_pixels, d2.max_tiles) == (4096, None, None, 6)
    batch = torch.rand(2, 8, 8, 3)
    more = (common.ImageRef(torch.rand(5, 7, 3), d2), common.ImageRef(torch.rand(1, 4, 4, 3)))
    images, details = common.gather_images(batch, d1, more)
    assert [tuple(i.shape) for i in images] == [(2, 8, 8, 3), (1, 5, 7, 3), (1, 4, 4, 3)]
    assert details == [d1, d1, d2, common.ImageDetail()]
    assert common.gather_images() == ([], [])


def test_layer_spec(common):
    assert common.layer_spec("", (1, 2)) == (1, 2) and common.layer_spec("  ", None) is None
    assert common.layer_spec(" 4,7 ", None) == "4,7"


def test_draw_inspector(layerviz):
    img = layerviz.draw_inspector(torch.tensor([0.25, -0.1, 0.6]), [4, 7, 10], [torch.eye(3), torch.full((3, 3), 1 / 3)])
    assert img.ndim == 4 and img.shape[0] == 1 and img.shape[-1] == 3
    assert 0.0 <= float(img.min()) and float(img.max()) <= 1.0 and float(img.std()) > 0.01


WORKFLOW_NAMES = ("t2i", "edit", "compose_two_refs", "chain_two_edits", "t2i_custom_sampler", "verifi_t2i",
                  "verifi_edit", "verifi_edit_the_rewrite")
WORKFLOW_NAMES += ("toy_t2i_verifi", "toy_t2i_raw", "toy_edit_chain", "toy_compose_two_refs")  # shipped models


def _drops(longer: list, shorter: list, k: int) -> bool:
    """``shorter`` is ``longer`` with exactly ``k`` entries left out (order kept)."""
    if len(longer) - len(shorter) != k:
        return False
    it = iter(longer)
    return all(any(v == w for w in it) for v in shorter)


@pytest.mark.parametrize("name", WORKFLOW_NAMES)
def test_workflow_twins_describe_the_same_graph(name):
    ui = json.loads((WORKFLOWS / f"{TEMPLATE_TITLES[name]}.json").read_text())
    api = json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())
    assert {"nodes", "links", "version"} <= set(ui), "not a UI-format workflow"
    ui_sum, api_sum = ui_graph_summary(ui), api_graph_summary(api)
    assert ui_sum.keys() == api_sum.keys()
    linked_widgets = {str(node["id"]): sum(1 for i in node.get("inputs", []) if i.get("widget") and i["link"])
                      for node in ui["nodes"]}
    for nid, (cls, socks, vals) in api_sum.items():
        ui_cls, ui_socks, ui_vals = ui_sum[nid]
        assert (ui_cls, ui_socks) == (cls, socks), nid
        # a widget fed by a link keeps its (unused) value slot in the UI file, as the frontend saves it
        assert _drops(ui_vals, vals, linked_widgets[nid]), (nid, ui_vals, vals)
    for node in ui["nodes"]:  # every link in a node's inputs is listed once in the links table
        for inp in node.get("inputs", []):
            if inp["link"] is not None:
                link = next(l for l in ui["links"] if l[0] == inp["link"])
                assert link[3] == node["id"]


def test_workflow_set_is_complete():
    assert sorted(p.stem for p in WORKFLOWS.glob("*.json")) == sorted(TEMPLATE_TITLES[n] for n in WORKFLOW_NAMES)
    assert sorted(TEMPLATE_TITLES) == sorted(WORKFLOW_NAMES)
    assert sorted(p.stem for p in (WORKFLOWS / "api").glob("*.json")) == sorted(WORKFLOW_NAMES)


def test_vlm_folder_is_only_ever_a_listed_name_inside_the_model_folders(common, tmp_path):
    """ComfyUI does not check combo values, so any HTTP client can send any string as vlm_folder."""
    base, outside, uploads = tmp_path / "models" / "LLM", tmp_path / "somewhere" / "vlm", tmp_path / "input" / "evil"
    for d in (base / "Good", outside, uploads):
        d.mkdir(parents=True)
        (d / "config.json").write_text("{}")
    (base / "linked").symlink_to(tmp_path / "somewhere", target_is_directory=True)  # a user's symlink: fine
    bases = [str(base)]
    assert common.resolve_model_dir("Good", bases) == str(base / "Good")
    assert common.resolve_model_dir("linked/vlm", bases) == str(base / "linked" / "vlm")
    for bad in ("../../somewhere/vlm", "../input/evil", str(outside), "Good/..", "./Good", "Good\\..\\x",
                "C:/x", "", "Good//"):
        with pytest.raises(ValueError, match="paths, '..' and backslashes are not accepted") as err:
            common.resolve_model_dir(bad, bases)
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="No VLM folder named 'Missing'.*listed: Good, linked/vlm"):
        common.resolve_model_dir("Missing", bases)
    (base / "up").symlink_to(tmp_path / "input", target_is_directory=True)
    with pytest.raises(ValueError, match="never a model folder"):
        common.resolve_model_dir("up/evil", bases, forbidden=[str(tmp_path / "input")])


@pytest.mark.parametrize("name", WORKFLOW_NAMES)
def test_workflow_layout_fits_with_display_names(name):
    """Shipped UI workflows open readable: no two nodes overlap (the VERIFI node's box includes the
    rewrite it shows after a run), nodes are sized to their widgets, and the pack's nodes carry a
    display name or their own title, never a raw class name."""
    ui = json.loads((WORKFLOWS / f"{TEMPLATE_TITLES[name]}.json").read_text())
    boxes = [(n["id"], *n["pos"], *n["size"]) for n in ui["nodes"]]
    for i, (a, ax, ay, aw, ah) in enumerate(boxes):
        for b, bx, by, bw, bh in boxes[i + 1:]:
            assert ax + aw <= bx or bx + bw <= ax or ay + ah <= by or by + bh <= ay, f"nodes {a} and {b} overlap"
    for node in ui["nodes"]:
        if node["type"].startswith("UniFusion"):
            assert node["title"] != node["type"], f"node {node['id']} is titled with its class name {node['type']}"
        multiline = sum(1 for v in node.get("widgets_values", []) if isinstance(v, str) and len(v) > 60)
        assert node["size"][1] >= 30 + 22 * len(node.get("outputs", [])) + 60 * multiline, node["id"]


@pytest.mark.parametrize("name", [w for w in WORKFLOW_NAMES if not w.startswith("toy_")])
def test_placeholder_workflows_say_which_files_go_where(name):
    ui = json.loads((WORKFLOWS / f"{TEMPLATE_TITLES[name]}.json").read_text())
    notes = [n for n in ui["nodes"] if n["type"] == "Note"]
    assert len(notes) == 1, "a workflow naming placeholder models carries one Note saying where they go"
    text = notes[0]["widgets_values"][0]
    api = json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())
    for node in api.values():
        for key in ("vlm_folder", "checkpoint", "vae_name"):
            if key in node["inputs"]:
                assert node["inputs"][key] in text, (key, node["inputs"][key])
    assert "models/LLM/" in text and "models/diffusion_models/" in text and "models/vae/" in text


def test_every_workflow_has_a_template_browser_thumbnail():
    """ComfyUI's template browser shows workflows/<name>.jpg for each workflows/<name>.json."""
    from PIL import Image

    for name in WORKFLOW_NAMES:
        img = Image.open(WORKFLOWS / f"{TEMPLATE_TITLES[name]}.jpg")
        assert img.format == "JPEG" and img.size == (512, 384), name
        assert len(set(img.convert("L").resize((32, 24)).getdata())) > 8, f"{name}.jpg is a blank card"


@pytest.mark.parametrize("name", [w for w in WORKFLOW_NAMES if w.startswith("toy_")])
def test_toy_workflows_ask_what_the_showcase_asks(name):
    """The toy workflows are the `make demo` showcase as graphs; its prompts are drawn from the toy
    language, so a lexicon change that redraws them must rewrite the workflows too (the ComfyUI
    integration test then compares the images; CI has no ComfyUI, this catches it without one)."""
    from unifusion_core.toy.showcase import JOBS

    prompts = {job.prompt for job in JOBS}
    api = json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())
    asked = [n["inputs"]["instruction"] for n in api.values()
             if n["class_type"] in ("UniFusionVLMFeatures", "UniFusionVERIFIRewrite")]
    assert asked and set(asked) <= prompts, f"{name} asks {set(asked) - prompts}, not the showcase's prompts"
