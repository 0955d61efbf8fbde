"""Reads a shapes-world image back into a scene and scores it against a target (no learned model).

Reading (``read_scene``):
  1. background = the background palette colour nearest to the per-channel median of all pixels
     (objects cover at most ~25% of the image);
  2. coverage = per pixel, the position along the background->colour segment of the object colour
     that explains it best; foreground = coverage > 0.5; 4-connected components smaller than a third
     of a small triangle are dropped as noise; a component holding two colours (touching objects) is
     split by colour;
  3. colour = the object palette colour nearest to the mean of the component's core pixels (those at
     least 70% as far from the background as its farthest pixel), so blurred rims do not vote;
  4. coverage of that colour (projection onto the background->colour segment) within 2 px of the
     component; shape = the template (``world.shape_alpha``) with the least L1 distance to it, tried
     per shape at the small and large box sides and at the side implied by the covered area, placed
     by the coverage centroid (so off-centre or off-size objects of a generator still read well);
  5. size = small / large by the fitted box side (threshold: geometric mean of the two); position =
     the grid cell holding the fitted box centre. Two objects in one cell keep the larger.
  6. an image that does not look like a shapes-world picture reads as None (every fact false): less
     than half of its pixels near the background colour, or more than ``MAX_CLUTTER`` of them
     neither background nor part of an object (noise, smears, garbage from an untrained model).

Scoring (``score``): DPG-style facts of the target, each true or false in the prediction: the
background; the object count; per target object its existence, colour, shape, size and position;
per pair of target objects the horizontal and vertical relation where the columns / rows differ.
Target objects are matched to predicted ones by the assignment that agrees on the most attributes
(a match needs at least 2 of colour, shape, size, position). ``score_edit`` splits the target facts
into those the source already satisfied (preservation) and those the edit changed.

Accepted images: a PIL image; a numpy array (H, W, 3) uint8 0..255 or float 0..1; a torch tensor
(H, W, 3) float 0..1 (ComfyUI IMAGE) or (3, H, W) float in [-1, 1] (the pixel model space); a
leading batch dimension of 1 is dropped. Images are square, 32..64 px (``world.check_size``).

Tested (tests/test_toy_evaluator.py) on clean renders, on "mild" degradation (Gaussian blur radius
0.5 px, then Gaussian noise std 0.03 in 0..1 units) and on objects shifted / rescaled off the grid.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import UniFusionError
from .world import (BACKGROUNDS, OBJECT_COLORS, SHAPES, SIZE_EXTENT, Obj, Scene,
                    check_size, extent_px, relations, shape_alpha)

_OBJ_NAMES = tuple(OBJECT_COLORS)
_OBJ_RGB = np.asarray([OBJECT_COLORS[c] for c in _OBJ_NAMES], np.float32)  # (K, 3)
_BG_NAMES = tuple(BACKGROUNDS)
_BG_RGB = np.asarray([BACKGROUNDS[c] for c in _BG_NAMES], np.float32)  # (K, 3)


# -- input ---------------------------------------------------------------------------------------------

def to_rgb_array(image) -> np.ndarray:
    """Any accepted image (see module docstring) -> (H, W, 3) float32 in 0..255."""
    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL
        return np.asarray(image.convert("RGB"), np.float32)
    chw = False
    if type(image).__module__.startswith("torch"):
        t = image.detach().float().cpu()
        if t.dim() == 4 and t.shape[0] == 1:
            t = t[0]
        chw = t.dim() == 3 and t.shape[0] == 3 and t.shape[-1] != 3
        arr = t.numpy()
    else:
        arr = np.asarray(image)
        if arr.ndim == 4 and arr.shape[0] == 1:
            arr = arr[0]
    if chw:
        return (np.transpose(arr, (1, 2, 0)).astype(np.float32) + 1) * 127.5  # [-1, 1] -> 0..255
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise UniFusionError(f"expected an RGB image (H, W, 3) or (3, H, W), found shape {tuple(arr.shape)}.")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32)
    return arr.astype(np.float32) * 255.0


# -- reading -------------------------------------------------------------------------------------------

def _components(mask: np.ndarray) -> list[np.ndarray]:
    """4-connected components of a boolean (H, W) mask, as boolean masks (min-label propagation)."""
    h, w = mask.shape
    big = h * w + 1
    labels = np.where(mask, np.arange(h * w).reshape(h, w), big)
    while True:
        p = np.pad(labels, 1, constant_values=big)
        nb = np.minimum.reduce([p[1:-1, 1:-1], p[:-2, 1:-1], p[2:, 1:-1], p[1:-1, :-2], p[1:-1, 2:]])
        nb = np.where(mask, nb, big)
        if np.array_equal(nb, labels):
            break
        labels = nb
    return [labels == v for v in np.unique(labels[mask])]


# area of each shape as a share of its bounding box, and its centroid's offset below the box centre
# as a share of the box side (a triangle pointing up has its centroid a sixth of the side lower)
_SHAPE_AREA = {"circle": math.pi / 4, "square": 1.0, "triangle": 0.5, "cross": 5 / 9}
_CENTROID_DY = {"circle": 0.0, "square": 0.0, "triangle": 1 / 6, "cross": 0.0}
# small / large threshold on the box side: the geometric mean of the two extents
_SIZE_SPLIT = math.sqrt(SIZE_EXTENT["small"] * SIZE_EXTENT["large"])


def _shape_fit(alpha: np.ndarray) -> tuple[str, float, float, float]:
    """(shape, box side, box centre x, y) of the template closest (L1) to the coverage ``alpha``.

    Sides tried per shape: the world's two sizes and the one the covered area implies (for objects
    a generator drew off-size); the box centre follows from the centroid and the shape.
    """
    size = alpha.shape[0]
    mass = float(alpha.sum())
    grid = np.arange(size, dtype=np.float32) + 0.5  # pixel centres
    mx, my = float(alpha.sum(0) @ grid) / mass, float(alpha.sum(1) @ grid) / mass
    cell = size / 3
    best, best_err = ("circle", 0.0, mx, my), float("inf")
    for shape in SHAPES:
        for side in (math.sqrt(mass / _SHAPE_AREA[shape]), *(f * cell for f in SIZE_EXTENT.values())):
            cy = my - _CENTROID_DY[shape] * side
            err = float(np.abs(shape_alpha(shape, mx, cy, side, size) - alpha).sum())
            if err < best_err:
                best, best_err = (shape, side, mx, cy), err
    return best


def _coverage(img: np.ndarray, bg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel, the object colour whose bg->colour segment fits it best (S, S) and its coverage
    in [0, 1] along that segment (S, S)."""
    diff = img - bg  # (S, S, 3)
    dirs = _OBJ_RGB - bg  # (K, 3)
    a = np.clip(diff @ dirs.T / (dirs * dirs).sum(-1), 0, 1)  # (S, S, K)
    resid = np.linalg.norm(diff[..., None, :] - a[..., None] * dirs, axis=-1)  # (S, S, K)
    label = resid.argmin(-1)  # (S, S)
    return label, np.take_along_axis(a, label[..., None], -1)[..., 0]


def _objects_masks(label: np.ndarray, alpha: np.ndarray, min_area: float) -> list[np.ndarray]:
    """Components of coverage > 0.5; one whose pixels hold two colours of at least ``min_area``
    pixels each (touching objects) is split by colour."""
    out = []
    for comp in _components(alpha > 0.5):
        if comp.sum() < min_area:
            continue
        colours = [k for k in np.unique(label[comp]) if (comp & (label == k)).sum() >= min_area]
        if len(colours) < 2:
            out.append(comp)
            continue
        for k in colours:
            out += [c for c in _components(comp & (label == k)) if c.sum() >= min_area]
    return out


def _dilate(mask: np.ndarray, steps: int) -> np.ndarray:
    for _ in range(steps):
        p = np.pad(mask, 1)
        mask = p[1:-1, 1:-1] | p[:-2, 1:-1] | p[2:, 1:-1] | p[1:-1, :-2] | p[1:-1, 2:]
    return mask


def _read_object(img: np.ndarray, bg: np.ndarray, comp: np.ndarray, region: np.ndarray) -> Obj:
    """One object from its component (coverage > 0.5) and the region its soft rim may occupy."""
    size = img.shape[0]
    dist = np.linalg.norm(img - bg, axis=-1)  # (S, S)
    core = comp & (dist >= 0.7 * dist[comp].max())
    k = int(np.argmin(np.linalg.norm(_OBJ_RGB - img[core].mean(axis=0), axis=-1)))
    direction = _OBJ_RGB[k] - bg
    alpha = np.clip(((img - bg) @ direction) / float(direction @ direction), 0, 1) * region  # (S, S)
    shape, side, cx, cy = _shape_fit(alpha)
    cell = size / 3
    col, row = min(max(int(cx // cell), 0), 2), min(max(int(cy // cell), 0), 2)
    size_name = "large" if side > _SIZE_SPLIT * cell else "small"
    return Obj(shape, _OBJ_NAMES[k], size_name, row, col)


BG_TOLERANCE = 48.0  # RGB distance (0..255) within which a pixel counts as background
MIN_BACKGROUND = 0.5  # share of background pixels below which an image is unreadable
MAX_CLUTTER = 0.08  # share of pixels neither background nor object above which it is unreadable


def read_scene(image) -> Scene | None:
    """Image (see module docstring for accepted forms) -> the scene it shows, or None when the image
    is not readable as a shapes-world picture (step 6 of the module docstring)."""
    img = to_rgb_array(image)  # (S, S, 3) 0..255
    if img.shape[0] != img.shape[1]:
        raise UniFusionError(f"the shapes-world evaluator reads square images, found {img.shape[1]}x{img.shape[0]}.")
    size = img.shape[0]
    check_size(size)
    median = np.median(img.reshape(-1, 3), axis=0)
    b = int(np.argmin(np.linalg.norm(_BG_RGB - median, axis=-1)))
    bg = _BG_RGB[b]
    min_area = max(2.0, 0.5 * extent_px("small", size) ** 2 / 3)
    comps = _objects_masks(*_coverage(img, bg), min_area)
    taken = np.zeros((size, size), bool) if not comps else np.logical_or.reduce(comps)
    near_bg = np.linalg.norm(img - bg, axis=-1) < BG_TOLERANCE
    if near_bg.mean() < MIN_BACKGROUND or (~near_bg & ~_dilate(taken, 1)).mean() > MAX_CLUTTER:
        return None
    by_cell: dict[int, tuple[int, Obj]] = {}
    for comp in comps:
        area = int(comp.sum())
        obj = _read_object(img, bg, comp, _dilate(comp, 2) & ~(taken & ~comp))
        if obj.cell not in by_cell or by_cell[obj.cell][0] < area:
            by_cell[obj.cell] = (area, obj)
    return Scene(_BG_NAMES[b], tuple(o for _, o in by_cell.values()))


# -- scoring -------------------------------------------------------------------------------------------

_ATTRS = ("color", "shape", "size", "position")


def _agree(t: Obj, p: Obj) -> tuple[bool, ...]:
    return (t.color == p.color, t.shape == p.shape, t.size == p.size, t.cell == p.cell)


def _best_assignment(gain: list[list[int]], min_gain: int) -> list[int | None]:
    """One-to-one assignment of rows (target objects) to columns (read objects) maximising the summed
    ``gain``; a pair needs at least ``min_gain``. Exact by dynamic programming over subsets of
    columns (scenes hold at most 9 objects). -> per row, its column or None."""
    memo: dict[tuple[int, int], tuple[int, tuple]] = {}

    def best(i: int, used: int) -> tuple[int, tuple]:
        if i == len(gain):
            return 0, ()
        if (i, used) not in memo:
            total, rest = best(i + 1, used)
            options = [(total, (None,) + rest)]
            for j, g in enumerate(gain[i]):
                if g >= min_gain and not used >> j & 1:
                    t, r = best(i + 1, used | 1 << j)
                    options.append((t + g, (j,) + r))
            memo[(i, used)] = max(options, key=lambda o: o[0])
        return memo[(i, used)]

    return list(best(0, 0)[1])


def match(pred: Scene, target: Scene) -> list[int | None]:
    """For each target object, the index of its predicted object (or None): most attributes agreeing."""
    return _best_assignment([[sum(_agree(t, p)) for p in pred.objects] for t in target.objects], 2)


@dataclass(frozen=True)
class Score:
    """Facts of the target as (name, satisfied) pairs; ``accuracy`` is the share satisfied."""

    facts: tuple[tuple[str, bool], ...]

    @property
    def accuracy(self) -> float:
        return sum(ok for _, ok in self.facts) / len(self.facts)


def score(pred: Scene | None, target: Scene) -> Score:
    """DPG-style fact accuracy of ``pred`` (e.g. ``read_scene(image)``) against ``target``; an
    unreadable prediction (None) satisfies no fact."""
    if pred is None:
        return Score(tuple((name, False) for name, _ in score(target, target).facts))
    m = match(pred, target)
    facts = [("background", pred.background == target.background),
             ("count", len(pred.objects) == len(target.objects))]
    for i, (t, j) in enumerate(zip(target.objects, m)):
        agree = _agree(t, pred.objects[j]) if j is not None else (False,) * 4
        name = f"object {i} ({t.size} {t.color} {t.shape} at {t.row},{t.col})"
        facts.append((f"{name}: exists", j is not None))
        facts.extend((f"{name}: {attr}", ok) for attr, ok in zip(_ATTRS, agree))
    pred_rel = {(a, r, b) for a, r, b in relations(pred)}
    for a, rel, b in relations(target):
        ok = m[a] is not None and m[b] is not None and _holds(pred, m[a], rel, m[b], pred_rel)
        facts.append((f"object {a} {rel} object {b}", ok))
    return Score(tuple(facts))


def _holds(pred: Scene, a: int, rel: str, b: int, pred_rel: set) -> bool:
    inverse = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
    return (a, rel, b) in pred_rel or (b, inverse[rel], a) in pred_rel


@dataclass(frozen=True)
class EditScore:
    """``accuracy`` over all target facts; ``edit`` over the facts the edit changed (the source did not
    satisfy them); ``preservation`` over the facts that should not change (the source satisfied them)."""

    target: Score
    changed: tuple[bool, ...]

    @property
    def accuracy(self) -> float:
        return self.target.accuracy

    @property
    def edit(self) -> float:
        hits = [ok for (_, ok), ch in zip(self.target.facts, self.changed) if ch]
        return sum(hits) / len(hits) if hits else 1.0

    @property
    def preservation(self) -> float:
        hits = [ok for (_, ok), ch in zip(self.target.facts, self.changed) if not ch]
        return sum(hits) / len(hits) if hits else 1.0


def score_edit(pred: Scene | None, source: Scene, target: Scene) -> EditScore:
    """Score an edit result: target facts split into changed ones and preserved ones."""
    baseline = score(source, target)
    return EditScore(score(pred, target), tuple(not ok for _, ok in baseline.facts))


def evaluate_image(image, target: Scene, source: Scene | None = None) -> Score | EditScore:
    """``score`` (or ``score_edit`` when ``source`` is given) of the scene read from ``image``."""
    pred = read_scene(image)
    return score(pred, target) if source is None else score_edit(pred, source, target)


# -- strict scoring (GenEval-style) ----------------------------------------------------------------------
# An object counts only when shape, colour, size and cell all match; read objects are matched to target
# objects one to one, extra objects cost precision, and a scene is exact only when nothing is wrong.

def assign(pred: Scene, target: Scene) -> list[int | None]:
    """One-to-one assignment of target objects to read objects (Hungarian-style, exact by dynamic
    programming over subsets: scenes hold at most 9 objects) maximising first the number of objects
    right in all four attributes, then the attributes that agree. -> per target object, the index of
    its read object, or None when there are fewer read objects (or only ones agreeing on nothing)."""
    gain = [[10 * all(_agree(t, p)) + sum(_agree(t, p)) for p in pred.objects] for t in target.objects]
    return _best_assignment(gain, 1)


@dataclass(frozen=True)
class StrictScore:
    """One image against its target scene, strictly. ``correct``: target objects read back right in all
    four attributes (one-to-one); ``attr_hits``: per attribute, agreeing assigned pairs (of ``assigned``);
    ``rel_hits`` of ``rel_total`` target relations hold between assigned objects."""

    readable: bool
    background: bool
    n_target: int
    n_read: int
    correct: int
    assigned: int
    attr_hits: tuple[int, int, int, int]  # colour, shape, size, position
    rel_hits: int
    rel_total: int

    @property
    def precision(self) -> float:
        return self.correct / self.n_read if self.n_read else float(self.n_target == 0)

    @property
    def recall(self) -> float:
        return self.correct / self.n_target if self.n_target else float(self.n_read == 0)

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def exact(self) -> bool:
        """Right background, right count, every object right, nothing extra."""
        return (self.readable and self.background and self.n_read == self.n_target
                and self.correct == self.n_target)


def strict_score(pred: Scene | None, target: Scene) -> StrictScore:
    """The strict verdict of a read scene (``read_scene``; None = unreadable: nothing right)."""
    rel = relations(target)
    if pred is None:
        return StrictScore(False, False, len(target.objects), 0, 0, 0, (0, 0, 0, 0), 0, len(rel))
    m = assign(pred, target)
    agrees = [_agree(t, pred.objects[j]) for t, j in zip(target.objects, m) if j is not None]
    pred_rel = {(a, r, b) for a, r, b in relations(pred)}
    rel_hits = sum(m[a] is not None and m[b] is not None and _holds(pred, m[a], r, m[b], pred_rel)
                   for a, r, b in rel)
    hits = tuple(sum(a[k] for a in agrees) for k in range(4))
    return StrictScore(True, pred.background == target.background, len(target.objects), len(pred.objects),
                       sum(all(a) for a in agrees), len(agrees), hits, rel_hits, len(rel))


def _present(obj: Obj, pred: Scene) -> bool:
    return obj in pred.objects


@dataclass(frozen=True)
class EditVerdict:
    """An edit result, judged as an edit: ``applied`` (the asked change is visible: a changed background
    is the target's, every new or changed object is there in all four attributes, every removed or
    replaced object is gone) and ``preserved`` (the untouched objects are all there in all four
    attributes, and the background unless the edit changes it). A removal counts as applied only when
    the rest is preserved too (an empty image is not a removal)."""

    kind: str
    applied: bool
    preserved: bool


def edit_verdict(pred: Scene | None, source: Scene, target: Scene, kind: str = "") -> EditVerdict:
    if pred is None:
        return EditVerdict(kind, False, False)
    added = [o for o in target.objects if o not in source.objects]
    gone = [o for o in source.objects if o not in target.objects]
    kept = [o for o in target.objects if o in source.objects]
    bg_changed = source.background != target.background
    applied = ((not bg_changed or pred.background == target.background)
               and all(_present(o, pred) for o in added) and not any(_present(o, pred) for o in gone))
    preserved = all(_present(o, pred) for o in kept) and (bg_changed or pred.background == source.background)
    if kind == "remove" or (gone and not added and not bg_changed):
        applied = applied and preserved
    return EditVerdict(kind, applied, preserved)
