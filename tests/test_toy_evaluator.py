"""Shapes-world evaluator: reads renders back (clean and mildly degraded) and scores facts / edits.

"Mild" degradation: Gaussian blur radius 0.5 px, then Gaussian noise std 0.03 (0..1 units).
"""
import random
from dataclasses import replace

import numpy as np
import pytest
import torch

from unifusion_core.errors import UniFusionError
from unifusion_core.toy.evaluator import evaluate_image, read_scene, score, score_edit
from unifusion_core.toy.tasks import edit_example
from unifusion_core.toy.world import (BACKGROUNDS, OBJECT_COLORS, Obj, Scene, cell_center, extent_px,
                                      random_scene, render, shape_alpha)


def _accuracy(n, size, noise, blur, seed):
    rng = random.Random(seed)
    accs = []
    for k in range(n):
        scene = random_scene(rng)
        accs.append(score(read_scene(render(scene, size, noise=noise, blur=blur, seed=k)), scene).accuracy)
    return sum(accs) / n


def test_clean_renders_read_back():
    assert _accuracy(300, 32, 0.0, 0.0, seed=100) >= 0.99


def test_mildly_noisy_blurred_renders_read_back():
    assert _accuracy(300, 32, 0.03, 0.5, seed=200) >= 0.95


@pytest.mark.parametrize("size", [48, 64])
def test_larger_renders_read_back(size):
    assert _accuracy(40, size, 0.03, 0.5, seed=size) >= 0.95


def test_accepted_image_forms_agree():
    scene = random_scene(random.Random(9))
    im = render(scene, 32)
    u8 = np.array(im)
    hwc = torch.from_numpy(u8).float() / 255
    forms = [im, u8, u8 / 255.0, hwc, hwc[None], hwc.permute(2, 0, 1) * 2 - 1, (hwc.permute(2, 0, 1) * 2 - 1)[None]]
    assert all(read_scene(f) == scene for f in forms)
    with pytest.raises(UniFusionError, match="square"):
        read_scene(u8[:, :20])
    with pytest.raises(UniFusionError, match="RGB"):
        read_scene(u8[..., 0])


def test_fact_scoring():
    a, b = Obj("circle", "red", "large", 0, 0), Obj("square", "blue", "small", 2, 2)
    target = Scene("grey", (a, b))
    facts = dict(score(target, target).facts)
    assert len(facts) == 2 + 2 * 5 + 2 and all(facts.values())  # bg, count, 2 objects x 5, 2 relations
    missing = score(Scene("grey", (a,)), target)
    assert not dict(missing.facts)["count"] and missing.accuracy == pytest.approx(6 / 14)  # bg + object a
    swapped = score(Scene("white", (replace(a, color="green"), b)), target)
    assert swapped.accuracy == pytest.approx(12 / 14)
    assert score(Scene("grey", ()), Scene("grey", ())).accuracy == 1.0


def test_edit_scoring_splits_changed_and_preserved_facts():
    rng = random.Random(4)
    for _ in range(30):
        ex = edit_example(rng)
        src, tgt = Scene.from_json(ex["refs"][0]), Scene.from_json(ex["target"])
        perfect = evaluate_image(render(tgt, 32), tgt, source=src)
        assert perfect.edit == perfect.preservation == perfect.accuracy == 1.0
        unchanged = score_edit(src, src, tgt)
        assert unchanged.preservation == 1.0 and unchanged.edit == 0.0
    src = Scene("grey", (Obj("circle", "red", "large", 0, 0), Obj("square", "blue", "small", 2, 2)))
    tgt = Scene("grey", (Obj("circle", "green", "large", 0, 0), src.objects[1]))
    sloppy = score_edit(Scene("grey", (tgt.objects[0], replace(src.objects[1], size="large"))), src, tgt)
    assert sloppy.edit == 1.0 and sloppy.preservation < 1.0


def _jittered(scene, size, rng, shift, scale):
    """Render with each object moved up to ``shift`` px and rescaled by up to ``scale`` (a generator's slop)."""
    img = np.empty((size, size, 3), np.float32)
    img[:] = BACKGROUNDS[scene.background]
    for o in scene.objects:
        cx, cy = cell_center(o.row, o.col, size)
        side = extent_px(o.size, size) * rng.uniform(1 - scale, 1 + scale)
        a = shape_alpha(o.shape, cx + rng.uniform(-shift, shift), cy + rng.uniform(-shift, shift), side, size)
        img = img * (1 - a[..., None]) + np.asarray(OBJECT_COLORS[o.color], np.float32) * a[..., None]
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def test_off_grid_objects_read_back():
    rng = random.Random(7)
    scenes = [random_scene(rng) for _ in range(100)]
    accs = [score(read_scene(_jittered(s, 32, rng, 2.0, 0.15)), s).accuracy for s in scenes]
    assert sum(accs) / len(accs) >= 0.95


def test_garbage_reads_as_unreadable_and_scores_zero():
    """Noise (what an untrained generator makes) must not earn facts by chance: colours and cells are
    all present in noise, so without the readability check it matched most attributes."""
    rng, g = random.Random(5), np.random.default_rng(5)
    for _ in range(10):
        scene = random_scene(rng)
        noise = g.uniform(0, 1, (32, 32, 3)).astype(np.float32)
        assert read_scene(noise) is None
        assert evaluate_image(noise, scene).accuracy == 0.0
        edit = evaluate_image(noise, scene, scene)
        assert edit.preservation == 0.0 and edit.accuracy == 0.0
    # a plain background with no object is readable, and only the background fact holds
    blank = render(Scene("white", ()), 32)
    target = Scene("white", (random_scene(rng).objects[0],))
    assert read_scene(blank) == Scene("white", ())
    assert 0 < evaluate_image(blank, target).accuracy < 0.2
