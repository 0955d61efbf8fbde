"""Shapes world: scene validation, JSON round trip, relations, rendering."""
import itertools
import json
import random

import numpy as np
import pytest

from unifusion_core.errors import UniFusionError
from unifusion_core.toy.world import (BACKGROUNDS, OBJECT_COLORS, SHAPES, Obj, Scene, random_scene, relations,
                                      render)


def test_palettes_are_well_separated():
    dist = lambda a, b: float(np.linalg.norm(np.subtract(a, b)))  # noqa: E731
    objs, bgs = list(OBJECT_COLORS.values()), list(BACKGROUNDS.values())
    assert len(objs) >= 6 and len(SHAPES) >= 4
    assert min(dist(a, b) for a, b in itertools.combinations(objs, 2)) >= 60
    assert min(dist(a, b) for a in objs for b in bgs) >= 90


def test_scene_validates_and_sorts():
    a, b = Obj("circle", "red", "large", 2, 2), Obj("square", "blue", "small", 0, 1)
    assert Scene("grey", (a, b)).objects == (b, a)
    with pytest.raises(UniFusionError, match="one object per grid cell"):
        Scene("grey", (a, Obj("cross", "green", "small", 2, 2)))
    with pytest.raises(UniFusionError, match="color"):
        Obj("circle", "pink", "large", 0, 0)
    with pytest.raises(UniFusionError, match="background"):
        Scene("red", ())


def test_json_round_trip_and_determinism():
    scenes = [random_scene(random.Random(s)) for s in range(50)]
    assert scenes == [random_scene(random.Random(s)) for s in range(50)]
    for s in scenes:
        assert 1 <= len(s.objects) <= 3
        assert Scene.from_json(json.loads(json.dumps(s.to_json()))) == s
    with pytest.raises(UniFusionError, match="needs 'background'"):
        Scene.from_json({"objects": []})


def test_relations_follow_cells():
    s = Scene("grey", (Obj("circle", "red", "large", 0, 0), Obj("square", "blue", "small", 1, 2),
                       Obj("cross", "green", "small", 0, 2)))
    # sorted by cell: red (0,0), green (0,2), blue (1,2)
    assert set(relations(s)) == {(0, "left of", 1), (0, "left of", 2), (0, "above", 2), (1, "above", 2)}


def test_render_sizes_and_noise_seed():
    s = random_scene(random.Random(3))
    for size in (32, 48, 64):
        im = render(s, size)
        assert im.size == (size, size) and im.mode == "RGB"
    a = np.asarray(render(s, 32, noise=0.03, blur=0.5, seed=1))
    assert np.array_equal(a, np.asarray(render(s, 32, noise=0.03, blur=0.5, seed=1)))
    assert not np.array_equal(a, np.asarray(render(s, 32, noise=0.03, blur=0.5, seed=2)))
    with pytest.raises(UniFusionError, match="32..64"):
        render(s, 16)
