"""The shapes world: seeded scenes of 1-3 coloured shapes on a 3x3 grid, and their renderer.

A scene is a background colour plus objects; each object has a shape, a colour, a size and a grid
cell (row, col), at most one object per cell. Pairwise relations (left of, above, ...) follow from
the cells. Rendering is exact up to 4x supersampled anti-aliasing, so ``evaluator.read_scene`` can
read any clean or mildly degraded render back into the same scene.

Geometry (image side S, cell side c = S / 3): an object is centred in its cell; its bounding box is
``SIZE_EXTENT[size] * c`` wide, so large objects in neighbouring cells keep a gap of 0.2 c.
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ..errors import UniFusionError

# -- vocabulary of the world (names are the canonical words of language.py) -------------------------
SHAPES = ("circle", "square", "triangle", "cross")
OBJECT_COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220),
    "yellow": (235, 225, 35), "purple": (150, 60, 190), "orange": (245, 140, 30),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "grey": (128, 128, 128), "white": (240, 240, 240), "black": (20, 20, 20), "beige": (225, 205, 170),
}
SIZES = ("small", "large")
SIZE_EXTENT = {"small": 0.5, "large": 0.8}  # bounding-box side as a share of the cell side
ROWS = ("top", "middle", "bottom")
COLS = ("left", "center", "right")
MIN_SIZE, MAX_SIZE = 32, 64
SUPERSAMPLE = 4


@dataclass(frozen=True)
class Obj:
    """One object: ``row``/``col`` index the 3x3 grid from the top left (0..2)."""

    shape: str
    color: str
    size: str
    row: int
    col: int

    def __post_init__(self):
        for field, value, allowed in (("shape", self.shape, SHAPES), ("color", self.color, tuple(OBJECT_COLORS)),
                                      ("size", self.size, SIZES), ("row", self.row, (0, 1, 2)),
                                      ("col", self.col, (0, 1, 2))):
            if value not in allowed:
                raise UniFusionError(f"object {field} must be one of {allowed}, found {value!r}.")

    @property
    def cell(self) -> int:
        return self.row * 3 + self.col


@dataclass(frozen=True)
class Scene:
    """A background plus objects in distinct cells; objects are kept sorted by cell (row-major)."""

    background: str
    objects: tuple[Obj, ...]

    def __post_init__(self):
        if self.background not in BACKGROUNDS:
            raise UniFusionError(f"background must be one of {tuple(BACKGROUNDS)}, found {self.background!r}.")
        objects = tuple(sorted(self.objects, key=lambda o: o.cell))
        cells = [o.cell for o in objects]
        if len(set(cells)) != len(cells):
            raise UniFusionError(f"at most one object per grid cell is allowed, found cells {cells}.")
        object.__setattr__(self, "objects", objects)

    def to_json(self) -> dict:
        return {"background": self.background, "objects": [asdict(o) for o in self.objects]}

    @classmethod
    def from_json(cls, data: dict) -> "Scene":
        try:
            return cls(data["background"], tuple(Obj(**o) for o in data["objects"]))
        except (KeyError, TypeError) as err:
            raise UniFusionError(f"a scene needs 'background' and 'objects' with shape/color/size/row/col, "
                                 f"found {data!r}.") from err

    def free_cells(self) -> list[int]:
        used = {o.cell for o in self.objects}
        return [c for c in range(9) if c not in used]


def relations(scene: Scene) -> list[tuple[int, str, int]]:
    """Pairwise facts (i, relation, j), i < j, for every pair whose columns or rows differ."""
    out = []
    objs = scene.objects
    for i in range(len(objs)):
        for j in range(i + 1, len(objs)):
            a, b = objs[i], objs[j]
            if a.col != b.col:
                out.append((i, "left of" if a.col < b.col else "right of", j))
            if a.row != b.row:
                out.append((i, "above" if a.row < b.row else "below", j))
    return out


def random_object(rng: random.Random, cell: int) -> Obj:
    return Obj(rng.choice(SHAPES), rng.choice(tuple(OBJECT_COLORS)), rng.choice(SIZES), cell // 3, cell % 3)


def random_scene(rng: random.Random, min_objects: int = 1, max_objects: int = 3) -> Scene:
    """A uniformly random scene with ``min_objects``..``max_objects`` objects in distinct cells."""
    if not 0 <= min_objects <= max_objects <= 9:
        raise UniFusionError(f"object counts must satisfy 0 <= min <= max <= 9, found {min_objects}..{max_objects}.")
    n = rng.randint(min_objects, max_objects)
    cells = rng.sample(range(9), n)
    return Scene(rng.choice(tuple(BACKGROUNDS)), tuple(random_object(rng, c) for c in cells))


# -- rendering ----------------------------------------------------------------------------------------

def check_size(size: int) -> None:
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise UniFusionError(f"image size must be within {MIN_SIZE}..{MAX_SIZE} px, found {size}.")


def cell_center(row: int, col: int, size: int) -> tuple[float, float]:
    """(x, y) pixel coordinates of a cell's centre in a ``size``-px image (pixel edges at integers)."""
    c = size / 3
    return (col + 0.5) * c, (row + 0.5) * c


def extent_px(size_name: str, size: int) -> float:
    return SIZE_EXTENT[size_name] * size / 3


def _outline(shape: str, cx: float, cy: float, extent: float) -> list[tuple[float, float]]:
    h = extent / 2
    if shape == "triangle":  # isosceles, pointing up, filling its bounding box
        return [(cx, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "cross":  # plus sign, arms one third of the box wide
        a = extent / 6
        return [(cx - a, cy - h), (cx + a, cy - h), (cx + a, cy - a), (cx + h, cy - a), (cx + h, cy + a),
                (cx + a, cy + a), (cx + a, cy + h), (cx - a, cy + h), (cx - a, cy + a), (cx - h, cy + a),
                (cx - h, cy - a), (cx - a, cy - a)]
    return [(cx - h, cy - h), (cx + h, cy + h)]  # circle / square: the bounding box


def shape_alpha(shape: str, cx: float, cy: float, extent: float, size: int) -> np.ndarray:
    """Coverage (size, size) float32 in [0, 1] of one shape centred at (cx, cy), anti-aliased."""
    ss = SUPERSAMPLE
    canvas = Image.new("L", (size * ss, size * ss), 0)
    draw = ImageDraw.Draw(canvas)
    pts = [(x * ss, y * ss) for x, y in _outline(shape, cx, cy, extent)]
    if shape == "circle":
        draw.ellipse([pts[0], (pts[1][0] - 1, pts[1][1] - 1)], fill=255)
    elif shape == "square":
        draw.rectangle([pts[0], (pts[1][0] - 1, pts[1][1] - 1)], fill=255)
    else:
        draw.polygon(pts, fill=255)
    small = canvas.resize((size, size), Image.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def render(scene: Scene, size: int = 32, noise: float = 0.0, blur: float = 0.0, seed: int = 0) -> Image.Image:
    """RGB image of ``scene``; ``blur`` is a Gaussian radius in px, ``noise`` a Gaussian std in 0..1 units.

    Blur is applied before noise; the noise is drawn from ``seed`` so a render is reproducible.
    """
    check_size(size)
    img = np.empty((size, size, 3), np.float32)  # (S, S, 3) in 0..255
    img[:] = BACKGROUNDS[scene.background]
    for o in scene.objects:
        cx, cy = cell_center(o.row, o.col, size)
        a = shape_alpha(o.shape, cx, cy, extent_px(o.size, size), size)[..., None]  # (S, S, 1)
        img = img * (1 - a) + np.asarray(OBJECT_COLORS[o.color], np.float32) * a
    out = Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8), "RGB")
    if blur > 0:
        out = out.filter(ImageFilter.GaussianBlur(radius=blur))
    if noise > 0:
        arr = np.asarray(out, np.float32) + np.random.default_rng(seed).normal(0, noise * 255, (size, size, 3))
        out = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "RGB")
    return out
