"""The VERIFI nodes through a real ComfyUI: the rewrite as STRING and as the node's UI text in /history,
sampling seeds, re-conditioning on an edited rewrite, interrupt mid-decoding, one-sentence errors.
(From Text of the Rewrite's own text = the Rewrite's conditioning: test_host_inprocess.py.)"""

import numpy as np

from graphs import edited, load_api
from unifusion_core.toy.comfy_host import error_of

REWRITE, PREVIEW = "3", "11"  # node ids in workflows/api/verifi_t2i.json


def _text(entry, nid):
    return entry["outputs"][nid]["text"][0]


def _image(host, entry, graph):
    save = next(nid for nid, n in graph.items() if n["class_type"] == "SaveImage")
    return host.images(entry, save)[0]


def test_rewrite_text_on_node_and_as_string(host):
    graph = load_api("verifi_t2i", pixel=True)
    entry = host.run_ok(graph)
    text = _text(entry, REWRITE)  # the node's own UI output (ui.PreviewText)
    assert text.strip(), "empty rewrite"
    assert _text(entry, PREVIEW) == text, "the STRING output differs from the text shown on the node"
    again = host.run_ok(edited(graph, **{"7": {"seed": 7}}))  # the rewrite is cached, its UI text still listed
    assert _text(again, REWRITE) == text


def test_rewrite_sampling_seed(host):
    graph = load_api("verifi_t2i", pixel=True)

    def run(seed):
        g = edited(graph, **{REWRITE: {"decoding": "sample", "temperature": 1.0, "seed": seed}})
        entry = host.run_ok(g)
        return _text(entry, REWRITE), _image(host, entry, g)

    (t1, a1), (t2, b), (t1b, a2) = run(11), run(12), run(11)
    assert t1 != t2 and t1 == t1b, "sampling is not a function of the seed"
    assert np.array_equal(a1, a2) and not np.array_equal(a1, b)


def test_edited_rewrite_reconditions(host):
    graph = load_api("verifi_edit_the_rewrite", pixel=True)
    entry = host.run_ok(edited(graph, **{"13": {"string_b": ""}}))
    original = _text(entry, "11")
    assert original.strip() and _text(entry, "14").strip() == original.strip()
    added = "A small wooden cabin stands on the left."
    edited_entry = host.run_ok(edited(graph, **{"13": {"string_b": added}}))
    assert _text(edited_entry, "14") == f"{original} {added}"
    plain, changed = _image(host, entry, graph), _image(host, edited_entry, graph)
    assert np.abs(plain.astype(int) - changed.astype(int)).mean() > 0.5, "the edited rewrite changed nothing"


def test_interrupt_during_rewrite(host):
    """POST /interrupt while the VLM decodes a long rewrite ends the prompt as interrupted; the next runs."""
    graph = edited(load_api("verifi_t2i", pixel=True), **{REWRITE: {"max_new_tokens": 8192, "instruction": "long"}})
    entry, stopped = host.run_and_interrupt(graph, after=1.5, timeout=120)
    assert entry["status"]["status_str"] == "error"
    interrupted = [data for ev, data in entry["status"]["messages"] if ev == "execution_interrupted"]
    assert interrupted and interrupted[0]["node_type"] == "UniFusionVERIFIRewrite", entry["status"]["messages"]
    assert stopped < 10, f"decoding took {stopped:.1f}s to stop"
    assert _text(host.run_ok(load_api("verifi_t2i", pixel=True)), REWRITE).strip()


def _error(host, graph, node_type, words):
    entry = host.run(graph)
    assert entry["status"]["status_str"] == "error"
    err = error_of(entry)
    msg = err["exception_message"].strip()
    assert err["node_type"] == node_type and err["exception_type"] == "ValueError", err
    assert "\n" not in msg and words in msg, msg


def test_verifi_errors(host):
    graph = load_api("verifi_t2i", pixel=True)
    _error(host, edited(graph, **{REWRITE: {"system_preset": "custom"}}), "UniFusionVERIFIRewrite",
           "custom system text is empty")
    _error(host, edited(load_api("verifi_edit_the_rewrite", pixel=True), **{"15": {"rewrite": " "}}),
           "UniFusionVERIFIFromText", "rewrite text is empty")
