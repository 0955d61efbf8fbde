"""The pack in ComfyUI's real frontend (headless Chromium): every shipped UI workflow loads with every
node type known, no missing-node dialog, no console error of its own and no two nodes overlapping at
the sizes the frontend draws; the template browser lists them; the toy VERIFI workflow runs from the
page and its rewrite appears on the VERIFI node."""
import json
import time
from pathlib import Path

import pytest

from browser import Browser, chromium
from workflow_format import TEMPLATE_TITLES

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
NAMES = sorted(p.stem for p in WORKFLOWS.glob("*.json"))

pytestmark = pytest.mark.skipif(chromium() is None, reason="no Chromium here (Debian: apt install chromium); "
                                                            "the browser check of the frontend needs one")


# not ours: the frontend probing for optional per-user files (404 until they are written), and its calls
# to outside services (comfy.org release notes, ...), which an offline machine cannot reach
FRONTEND_NOISE = ("/api/userdata/", "https://api.comfy.org/", "net::ERR_NAME_NOT_RESOLVED")


def _ours(errors):
    return [e for e in errors if not any(p in e for p in FRONTEND_NOISE)]


@pytest.fixture(scope="module")
def page(host):
    import fixtures

    for name in ("unifusion_ref1.png", "unifusion_ref2.png"):  # the placeholder references the workflows name
        if not (host.base / "input" / name).exists():
            fixtures.make_image(host.base / "input" / name, (48, 40), len(name))
    b = Browser(host.url)
    b.wait_for("!!(window.app && window.app.graph && window.LiteGraph && "
               "LiteGraph.registered_node_types['UniFusionVERIFIRewrite'])", timeout=120)
    time.sleep(1)
    b.baseline = list(b.errors)  # the frontend's own start-up noise, before any workflow of ours
    b.errors.clear()
    yield b
    b.close()


def _overlapping(nodes) -> list:
    """Pairs of node ids whose drawn boxes (title bar of 30 px above ``pos`` included) intersect."""
    boxes = [(n["id"], n["pos"][0], n["pos"][1] - 30, n["size"][0], n["size"][1] + 30) for n in nodes]
    return [(a, b) for i, (a, ax, ay, aw, ah) in enumerate(boxes) for b, bx, by, bw, bh in boxes[i + 1:]
            if not (ax + aw <= bx or bx + bw <= ax or ay + ah <= by or by + bh <= ay)]


def _load(page, name):
    wf = json.loads((WORKFLOWS / f"{name}.json").read_text())
    return page.js(f"(async () => {{ await app.loadGraphData({json.dumps(wf)}, true, true, {json.dumps(name)});"
                   " return app.graph._nodes.map(n => ({id: n.id, type: n.type, title: n.title,"
                   " known: !!LiteGraph.registered_node_types[n.type], pos: Array.from(n.pos),"
                   " size: Array.from(n.size)})); })()")


def test_template_browser_lists_every_workflow_with_a_readable_title_and_thumbnail(page, host):
    listed = host.get("/workflow_templates")
    module, ours = next((k, v) for k, v in listed.items() if "unifusion" in k.lower())
    assert sorted(ours) == NAMES and all("-" in n and " " not in n and "_" not in n for n in ours)
    # what the frontend fetches for each card: the workflow and its thumbnail (names URL-encoded by the page)
    got = page.js("Promise.all(" + json.dumps(ours) + ".map(async n => [n, (await fetch(app.api.apiURL("
                  "`/workflow_templates/" + module + "/${encodeURIComponent(n)}.json`))).status, (await fetch("
                  "app.api.apiURL(`/workflow_templates/" + module + "/${encodeURIComponent(n)}.jpg`))).status]))")
    assert all(a == 200 and b == 200 for _, a, b in got), got


@pytest.mark.parametrize("name", NAMES)
def test_workflow_loads_cleanly(page, name):
    page.errors.clear()
    nodes = _load(page, name)
    time.sleep(0.3)
    assert [n["type"] for n in nodes if not n["known"]] == [], "missing node types"
    dialogs = page.js("Array.from(document.querySelectorAll('.p-dialog')).map(d => d.innerText)")
    assert not [d for d in dialogs if "missing" in d.lower()], dialogs
    assert _ours(page.errors) == [], page.errors
    for n in nodes:
        if n["type"].startswith("UniFusion"):
            assert n["title"] != n["type"], f"{n['type']} shows its class name"
    assert _overlapping(nodes) == [], f"{name}: overlapping nodes"


def test_toy_verifi_workflow_runs_from_the_page(page, tmp_path):
    page.errors.clear()
    _load(page, TEMPLATE_TITLES["toy_t2i_verifi"])
    page.js("(async () => { await app.queuePrompt(0, 1); return true; })()")
    text = page.wait_for("(() => { const n = app.graph._nodes.find(n => n.type === 'UniFusionVERIFIRewrite');"
                         " const w = n && n.widgets.find(w => w.name === 'rewritten'); return w && w.value; })()",
                         timeout=240)
    assert "circle" in text or "square" in text or "triangle" in text or "cross" in text, text
    after = page.js("app.graph._nodes.map(n => ({id: n.id, pos: Array.from(n.pos), size: Array.from(n.size)}))")
    assert _overlapping(after) == []  # after the run, with the rewrite shown on the VERIFI node
    page.screenshot(tmp_path / "toy_t2i_verifi.png")
    assert _ours(page.errors) == [], page.errors
