"""Shapes-world tasks: edits change exactly the edited attribute; compositions; the dataset writer."""
import json
import random
import re
from collections import Counter

import pytest

from unifusion_core.toy.__main__ import main
from unifusion_core.toy.evaluator import read_scene, score
from unifusion_core.toy.language import EDIT_KINDS, describe
from unifusion_core.toy.tasks import compose_example, edit_example, recon_example, t2i_example, write_dataset
from unifusion_core.toy.world import Scene


def _props(o):
    return (o.shape, o.color, o.size)


def _check_edit(kind, src: Scene, tgt: Scene):
    if kind == "background":
        assert tgt.background != src.background and tgt.objects == src.objects
        return
    assert tgt.background == src.background
    s, t = set(src.objects), set(tgt.objects)
    if kind == "add":
        assert s < t and len(t - s) == 1
    elif kind == "remove":
        assert t < s and len(s - t) == 1
    elif kind == "move":
        (a,), (b,) = s - t, t - s
        assert _props(a) == _props(b) and a.cell != b.cell
    else:
        (a,), (b,) = s - t, t - s
        field = {"recolor": "color", "resize": "size", "reshape": "shape"}[kind]
        changed = [f for f in ("shape", "color", "size", "row", "col") if getattr(a, f) != getattr(b, f)]
        assert changed == [field]
    assert 1 <= len(tgt.objects) <= 3


@pytest.mark.parametrize("kind", EDIT_KINDS)
def test_edit_target_differs_exactly_in_the_edited_attribute(kind):
    rng = random.Random(kind)
    for _ in range(40):
        ex = edit_example(rng, kind, split=rng.choice(["train", "heldout"]))
        src, tgt = (Scene.from_json(ex["refs"][0]), Scene.from_json(ex["target"]))
        _check_edit(kind, src, tgt)
        assert ex["rewrite"] == describe(tgt) and ex["prompts"][0]


def test_examples_are_seeded_and_json_serialisable():
    for make in (t2i_example, recon_example, edit_example, compose_example):
        a, b = make(random.Random(5)), make(random.Random(5))
        assert json.dumps(a) == json.dumps(b)
    assert recon_example(random.Random(1))["refs"] == [recon_example(random.Random(1))["target"]]


def test_compositions_combine_the_two_references():
    rng = random.Random(0)
    for _ in range(30):
        ex = compose_example(rng)
        first, second = (Scene.from_json(r) for r in ex["refs"])
        tgt = Scene.from_json(ex["target"])
        if ex["kind"] == "objects_on_background":
            assert tgt.objects == first.objects and tgt.background == second.background != first.background
        elif ex["kind"] == "combine":
            assert Counter(tgt.objects) == Counter(first.objects + second.objects) and tgt.background == first.background
        else:
            assert [_props(o)[0::2] for o in tgt.objects] == [_props(o)[0::2] for o in first.objects]
            assert tgt.objects[0].color == second.objects[0].color != first.objects[0].color


def test_writer_layout_and_cli(tmp_path):
    manifest = write_dataset(tmp_path / "ds", t2i=5, edit=14, recon=2, compose=3, seed=1)
    folder = manifest.parent
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    scenes = [json.loads(line) for line in (folder / "scenes.jsonl").read_text().splitlines()]
    assert Counter(r["task"] for r in records) == {"t2i": 5, "edit": 14, "recon": 2}
    for rec, sc in zip(records, scenes, strict=True):
        assert set(rec) == {"task", "target", "prompt", "refs", "rewrite", "width", "height"}
        assert rec["task"] == sc["task"] and rec["rewrite"] == describe(Scene.from_json(sc["target"]))
        assert all((folder / p).is_file() for p in [rec["target"], *rec["refs"]])
        assert len(rec["refs"]) == (1 if rec["task"] != "t2i" else 0)
        with open(folder / rec["target"], "rb") as f:
            from PIL import Image
            assert score(read_scene(Image.open(f)), Scene.from_json(sc["target"])).accuracy == 1.0
    compose = [json.loads(line) for line in (folder / "compose.jsonl").read_text().splitlines()]
    assert len(compose) == 3 and all(len(r["refs"]) == 2 and r["task"] == "compose" for r in compose)
    assert main(["write", str(tmp_path / "cli"), "--t2i", "2", "--edit", "2", "--recon", "0"]) == 0
    assert len((tmp_path / "cli" / "manifest.jsonl").read_text().splitlines()) == 4
    assert main(["check", str(tmp_path / "cli")]) == 0
    assert main(["write", str(tmp_path / "bad"), "--size", "8"]) == 2


def test_same_seed_same_scenes_across_prompt_splits():
    for make in (t2i_example, edit_example):
        ra, rb = random.Random(3), random.Random(3)
        a = [make(ra, split="train") for _ in range(5)]
        b = [make(rb, split="heldout") for _ in range(5)]
        assert [x["target"] for x in a] == [x["target"] for x in b]
        assert [x["prompts"] for x in a] != [x["prompts"] for x in b]


def test_request_order_data_set_has_the_same_prompts_and_scenes_with_reordered_rewrites(tmp_path):
    from unifusion_core.errors import UniFusionError
    from unifusion_core.toy.language import parse_description

    a = write_dataset(tmp_path / "a", t2i=40, seed=3)
    b = write_dataset(tmp_path / "b", t2i=40, seed=3, rewrite_order="request")
    ra, rb = ([json.loads(x) for x in m.read_text().splitlines()] for m in (a, b))
    scenes = [Scene.from_json(json.loads(x)["target"]) for x in (tmp_path / "b" / "scenes.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in ra] == [r["prompt"] for r in rb]  # only the rewrites differ
    assert all(r["rewrite"] == describe(s) for r, s in zip(ra, scenes))
    assert all(parse_description(r["rewrite"]) == s for r, s in zip(rb, scenes))
    assert sum(x["rewrite"] != y["rewrite"] for x, y in zip(ra, rb)) > 5
    with pytest.raises(UniFusionError, match="rewrite_order should be"):
        write_dataset(tmp_path / "c", t2i=1, rewrite_order="sorted")


def test_source_first_edit_rewrites_read_the_source_then_state_the_target(tmp_path):
    from unifusion_core.errors import UniFusionError
    from unifusion_core.toy import lexicon
    from unifusion_core.toy.language import edit_rewrite, parse_description, source_part, vocabulary, words
    from unifusion_core.toy.toy_vlm import build_tokenizer

    a = write_dataset(tmp_path / "a", t2i=10, edit=30, seed=4)
    b = write_dataset(tmp_path / "b", t2i=10, edit=30, seed=4, edit_rewrite="source_first")
    ra, rb = ([json.loads(x) for x in m.read_text().splitlines()] for m in (a, b))
    sc = [json.loads(x) for x in (tmp_path / "b" / "scenes.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in ra] == [r["prompt"] for r in rb]  # only the edits' rewrites differ
    vocab, tok = set(vocabulary()), build_tokenizer()
    for x, y, s in zip(ra, rb, sc):
        target = Scene.from_json(s["target"])
        assert parse_description(y["rewrite"]) == target == parse_description(x["rewrite"])
        if s["task"] == "edit":
            source = Scene.from_json(s["refs"][0])
            head, tail = y["rewrite"].split(f". {lexicon.EDIT_MARK} ")
            assert head == describe(source) and parse_description(head) == source != target
            assert set(words(y["rewrite"])) <= vocab  # the toy VLM's tokenizer has every word
            decoded = tok.decode(tok(y["rewrite"])["input_ids"], skip_special_tokens=True)  # "... edited : ..."
            assert "edited :" in decoded and parse_description(decoded) == target
            assert source_part(y["rewrite"]) == source == source_part(decoded) and source_part(x["rewrite"]) is None
        else:
            assert y["rewrite"] == x["rewrite"] and lexicon.EDIT_MARK not in y["rewrite"]
    with pytest.raises(UniFusionError, match="edit rewrite style should be one of"):
        edit_rewrite(source, target, "diff")


def _object_phrases(description: str) -> list[str]:
    return re.split(r", | and ", description.rsplit(" on ", 1)[0])


def test_source_first_states_the_target_in_the_sources_order_one_object_changed():
    """The part after the mark (and the whole ``in_place`` rewrite) is the source's text with one
    object's words changed in place (a moved object keeps its place, not its cell's), an added object
    last, a removed one left out."""
    from unifusion_core.toy import lexicon
    from unifusion_core.toy.language import edit_rewrite, parse_description

    rng, reordered = random.Random(11), 0
    for kind in EDIT_KINDS:
        for _ in range(150):
            ex = edit_example(rng, kind=kind, edit_rewrite="source_first")
            source, target = Scene.from_json(ex["refs"][0]), Scene.from_json(ex["target"])
            parts = ex["rewrite"].split(f". {lexicon.EDIT_MARK} ")
            head, tail = (_object_phrases(t) for t in parts)
            assert ex["rewrite"] == edit_rewrite(source, target, "source_first")
            # the in_place style is the part after the mark alone, and states the target
            assert edit_rewrite(source, target, "in_place") == parts[1]
            assert parse_description(edit_rewrite(source, target, "in_place")) == target
            if kind == "add":
                assert tail[:-1] == head and len(tail) == len(head) + 1, ex
            elif kind == "remove":
                assert len(tail) == len(head) - 1 and all(p in head for p in tail), ex
                assert [p for p in head if p in tail] == tail, ex  # the kept ones in their order
            else:
                changed = [i for i, (a, b) in enumerate(zip(head, tail)) if a != b]
                assert len(tail) == len(head) and len(changed) == (kind != "background"), ex
            reordered += tail != _object_phrases(describe(target))
    assert reordered > 50  # moves and additions whose cell order differs from the source's order
