"""UI-format <-> API-format workflow conversion, the way ComfyUI's frontend does it (graphToPrompt):
widget values are positional in ``/object_info`` input order, and a seed widget with
``control_after_generate`` is followed by a frontend-only control value ("fixed", "randomize", ...).

``ui_to_api`` needs /object_info (from a live host); ``ui_graph_summary`` / ``api_graph_summary``
compare twins without a host (used by the unit tests)."""
from __future__ import annotations

CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}

# workflow name (the API twin workflows/api/<name>.json) -> the UI file's name, which ComfyUI's template
# browser shows as the template's title (workflows/<title>.json, thumbnail workflows/<title>.jpg); no spaces,
# so shell tools and whitespace-split file lists handle them (the frontend shows the hyphens as they are)
TEMPLATE_TITLES = {
    "t2i": "UniFusion-text-to-image",
    "edit": "UniFusion-edit-an-image",
    "compose_two_refs": "UniFusion-compose-two-reference-images",
    "chain_two_edits": "UniFusion-a-chain-of-two-edits",
    "t2i_custom_sampler": "UniFusion-text-to-image-with-a-custom-sampler",
    "verifi_t2i": "UniFusion-text-to-image-with-VERIFI",
    "verifi_edit": "UniFusion-edit-with-VERIFI",
    "verifi_edit_the_rewrite": "UniFusion-edit-with-VERIFI-and-an-editable-rewrite",
    "toy_t2i_verifi": "UniFusion-toy-text-to-image-with-VERIFI",
    "toy_t2i_raw": "UniFusion-toy-text-to-image-without-VERIFI",
    "toy_edit_chain": "UniFusion-toy-an-edit-chain",
    "toy_compose_two_refs": "UniFusion-toy-compose-two-reference-images",
}
VIRTUAL_NODES = {"Note", "MarkdownNote"}  # frontend-only: never in an API prompt
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def _spec_inputs(info: dict) -> list[tuple[str, list]]:
    order = info.get("input_order", {})
    specs = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
    names = order.get("required", []) + order.get("optional", [])
    return [(n, specs[n]) for n in names]


def is_widget(spec: list) -> bool:
    kind = spec[0]
    return isinstance(kind, list) or kind in WIDGET_TYPES


def has_control(spec: list) -> bool:
    return len(spec) > 1 and isinstance(spec[1], dict) and bool(spec[1].get("control_after_generate"))


def ui_to_api(ui: dict, object_info: dict) -> dict:
    """UI workflow -> API prompt dict (string node ids)."""
    links = {l[0]: (str(l[1]), l[2]) for l in ui["links"]}
    api = {}
    for node in ui["nodes"]:
        if node["type"] in VIRTUAL_NODES:
            continue
        info = object_info[node["type"]]
        inputs, values = {}, list(node.get("widgets_values", []))
        socket_links = {i["name"]: i.get("link") for i in node.get("inputs", [])}
        for name, spec in _spec_inputs(info):
            if socket_links.get(name) is not None:
                inputs[name] = list(links[socket_links[name]])
                if is_widget(spec) and values:  # a widget converted to an input keeps its slot
                    values.pop(0)
            elif is_widget(spec):
                inputs[name] = values.pop(0)
                if has_control(spec) and values and values[0] in CONTROL_VALUES:
                    values.pop(0)
        api[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return api


def api_graph_summary(api: dict) -> dict:
    """{node id: (class, {socket: (src, slot)}, [widget values in order])} of an API prompt."""
    out = {}
    for nid, node in api.items():
        socks = {k: tuple(v) for k, v in node["inputs"].items() if _is_link(v)}
        vals = [v for v in node["inputs"].values() if not _is_link(v)]
        out[str(nid)] = (node["class_type"], socks, vals)
    return out


def ui_graph_summary(ui: dict) -> dict:
    """The same summary from a UI workflow, dropping control values that follow a seed widget.

    Without /object_info the widget names are unknown, so a control value is recognised as a
    CONTROL_VALUES string right after an int widget value."""
    links = {l[0]: (str(l[1]), l[2]) for l in ui["links"]}
    out = {}
    for node in ui["nodes"]:
        if node["type"] in VIRTUAL_NODES:
            continue
        socks = {i["name"]: links[i["link"]] for i in node.get("inputs", []) if i.get("link") is not None}
        vals, prev = [], None
        for v in node.get("widgets_values", []):
            if isinstance(v, str) and v in CONTROL_VALUES and isinstance(prev, int) and not isinstance(prev, bool):
                prev = v
                continue
            vals.append(v)
            prev = v
        out[str(node["id"])] = (node["type"], socks, vals)
    return out


def _is_link(v) -> bool:
    return isinstance(v, list) and len(v) == 2 and isinstance(v[0], str) and isinstance(v[1], int)
