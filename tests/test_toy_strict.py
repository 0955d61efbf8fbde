"""Strict shapes-world scoring (one-to-one objects, all four attributes, extra objects count) and the
baselines the quality report prints next to every figure: each proven to be what it claims."""
import random
from dataclasses import replace

import numpy as np

from unifusion_core.toy import quality as q
from unifusion_core.toy.evaluator import assign, edit_verdict, read_scene, strict_score
from unifusion_core.toy.language import EDIT_KINDS
from unifusion_core.toy.tasks import edit_example
from unifusion_core.toy.world import Obj, Scene, random_scene, render

A = Obj("circle", "red", "large", 0, 0)
B = Obj("square", "blue", "small", 2, 2)
C = Obj("triangle", "green", "large", 1, 1)


def test_ground_truth_renders_are_exact_scenes():
    """The ceiling: every clean render of a random scene reads back as an exact scene."""
    rng = random.Random(5)
    scenes = [random_scene(rng) for _ in range(150)]
    scores = [strict_score(read_scene(render(s, 32)), s) for s in scenes]
    assert all(s.exact for s in scores)
    assert all(s.precision == s.recall == s.f1 == 1.0 for s in scores)


def test_an_extra_object_loses_exact_scene_and_precision():
    target = Scene("white", (A, B))
    s = strict_score(read_scene(render(Scene("white", (A, B, C)), 32)), target)
    assert not s.exact and s.recall == 1.0 and abs(s.precision - 2 / 3) < 1e-9 and s.f1 < 1.0


def test_a_wrong_cell_object_is_unmatched_though_three_attributes_agree():
    target = Scene("white", (A, B))
    moved = Scene("white", (replace(A, row=1, col=2), B))
    s = strict_score(read_scene(render(moved, 32)), target)
    assert not s.exact and s.correct == 1 and s.precision == 0.5 and s.recall == 0.5
    assert s.attr_hits == (2, 2, 2, 1)  # both pairs assigned; the moved one agrees on colour, shape, size


def test_one_to_one_assignment_prefers_fully_right_objects():
    near = replace(A, row=0, col=1)  # three attributes agree, the cell does not
    target = Scene("white", (A, replace(A, row=0, col=2)))
    pred = Scene("white", (near, A))
    m = assign(pred, target)
    assert pred.objects[m[0]] == A  # the exact read object goes to the target it matches in full
    s = strict_score(pred, target)
    assert s.correct == 1 and s.assigned == 2  # one read object cannot count for two targets


def test_unreadable_image_is_nothing_right():
    s = strict_score(None, Scene("white", (A,)))
    assert not s.exact and s.f1 == 0.0 and s.correct == 0


def test_source_unchanged_applies_no_edit_of_any_kind():
    """"Do nothing" (the source returned as it is) scores 0% change applied on every edit kind, and the
    ground-truth target scores 100% applied and preserved."""
    rng = random.Random(9)
    for kind in EDIT_KINDS:
        for _ in range(10):
            ex = edit_example(rng, kind=kind)
            src, tgt = Scene.from_json(ex["refs"][0]), Scene.from_json(ex["target"])
            assert not edit_verdict(read_scene(render(src, 32)), src, tgt, kind).applied, (kind, src, tgt)
            v = edit_verdict(read_scene(render(tgt, 32)), src, tgt, kind)
            assert v.applied and v.preserved, (kind, src, tgt)


def test_remove_counts_only_when_the_rest_is_preserved():
    src, tgt = Scene("white", (A, B)), Scene("white", (B,))
    assert edit_verdict(Scene("white", ()), src, tgt, "remove") == type(edit_verdict(None, src, tgt))(
        "remove", False, False)
    assert edit_verdict(Scene("white", (B,)), src, tgt, "remove").applied


def test_floor_scene_keeps_background_and_count_and_differs():
    rng = random.Random(1)
    for _ in range(50):
        s = random_scene(rng)
        f = q.floor_scene(s, rng)
        assert f.background == s.background and len(f.objects) == len(s.objects) and set(f.objects) != set(s.objects)


def test_bootstrap_interval_holds_the_mean_and_narrows_with_n():
    rng = np.random.default_rng(0)
    small, large = rng.random(50) < 0.5, rng.random(2000) < 0.5
    m, lo, hi = q.bootstrap(small)
    assert lo < m < hi
    m2, lo2, hi2 = q.bootstrap(large)
    assert hi2 - lo2 < (hi - lo) / 3
    assert q.bootstrap([1.0] * 20) == (1.0, 1.0, 1.0)


def test_text_verdicts_catch_invented_and_dropped_objects():
    from unifusion_core.toy.language import describe, describe_in_order

    truth = Scene("white", (A, B))
    assert q.judge_text(describe(truth), truth).exact
    assert q.judge_text(describe_in_order(truth, truth.objects[::-1]), truth).exact  # request order counts
    swapped = Scene("white", (replace(A, color=B.color), replace(B, color=A.color)))
    assert not q.judge_text(describe_in_order(swapped, swapped.objects[::-1]), truth).exact  # misbound colours do not
    extra = q.judge_text(describe(Scene("white", (A, B, C))), truth)
    assert extra.invented and not extra.dropped and not extra.exact
    missing = q.judge_text(describe(Scene("white", (A,))), truth)
    assert missing.dropped and not missing.invented
    assert q.judge_text("garbage words", truth).dropped
    wrong = q.judge_text(describe(Scene("white", (replace(A, color="green"), B))), truth)
    assert not wrong.invented and not wrong.dropped and not wrong.exact and wrong.score.attr_hits[0] == 1
