"""Scenes of the synthetic benchmark: coloured shapes on a grid, sampled from a seed, rendered to PNG.

A scene is a small symbolic object (shapes with colour, size and grid cell, plus an optional gray box
that hides one cell). Every text of the benchmark is computed from the symbolic scene, and the image is
rendered from it, so text and pixels agree by construction.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass

import numpy as np

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 90, 235),
    "yellow": (235, 215, 40),
    "purple": (155, 60, 205),
    "white": (240, 240, 240),
}
SHAPES = ("square", "circle", "triangle", "diamond", "cross")
SIZES = ("small", "large")
BOX_RGB = (128, 128, 128)   # the occluder: gray, never a shape colour
BACKGROUND_RGB = (0, 0, 0)

# radius of a shape as a fraction of the grid cell (large shapes nearly fill their cell)
_RADIUS = {"small": 0.28, "large": 0.42, "box": 0.49}
_COLOUR_JITTER = 20        # per-channel colour noise, so a colour is a region of RGB space, not one value
_POSITION_JITTER = 0.06    # centre jitter as a fraction of the cell

# names of grid rows and columns by grid size; a cell is named "<row> <column>" ("center" for 3x3 middle)
ROW_NAMES = {2: ("top", "bottom"), 3: ("top", "middle", "bottom"), 4: ("top", "upper", "lower", "bottom")}
COL_NAMES = {2: ("left", "right"), 3: ("left", "center", "right"), 4: ("leftmost", "left", "right", "rightmost")}


def cell_name(row: int, col: int, grid_size: int) -> str:
    if grid_size == 3 and row == 1 and col == 1:
        return "center"
    return f"{ROW_NAMES[grid_size][row]} {COL_NAMES[grid_size][col]}"


def all_cell_names(grid_size: int) -> list[str]:
    return [cell_name(r, c, grid_size) for r in range(grid_size) for c in range(grid_size)]


@dataclass(frozen=True)
class Obj:
    shape: str
    colour: str
    size: str
    row: int
    col: int

    @property
    def cell(self) -> tuple[int, int]:
        return (self.row, self.col)

    def phrase(self, with_size: bool = False) -> str:
        """'red circle' or 'small red circle' (no article)."""
        return f"{self.size} {self.colour} {self.shape}" if with_size else f"{self.colour} {self.shape}"


@dataclass(frozen=True)
class Scene:
    """Visible shapes (each colour+shape at most once, so 'the red circle' is unambiguous) and an
    optional gray box covering one cell: what lies under it is unknown (SNLI-VE's 'neutral')."""

    objects: tuple[Obj, ...]
    grid_size: int
    box: tuple[int, int] | None = None

    def at(self, cell: tuple[int, int]) -> Obj | None:
        for obj in self.objects:
            if obj.cell == cell:
                return obj
        return None

    def has(self, colour: str | None = None, shape: str | None = None) -> bool:
        return self.count(colour, shape) > 0

    def count(self, colour: str | None = None, shape: str | None = None) -> int:
        return sum(1 for o in self.objects if (colour is None or o.colour == colour) and (shape is None or o.shape == shape))

    def reading_order(self) -> list[Obj]:
        return sorted(self.objects, key=lambda o: (o.row, o.col))


def sample_scene(rng: random.Random, grid_size: int, max_objects: int, box_probability: float = 0.0,
                 min_objects: int = 1) -> Scene:
    """1..max_objects shapes in distinct cells with distinct (colour, shape); with probability
    ``box_probability`` one extra cell (counted in max_objects) holds the gray box."""
    cells = [(r, c) for r in range(grid_size) for c in range(grid_size)]
    with_box = max_objects > min_objects and rng.random() < box_probability
    n_items = rng.randint(min_objects + int(with_box), max_objects)
    chosen = rng.sample(cells, n_items)
    box = chosen.pop() if with_box else None
    kinds = rng.sample([(c, s) for c in COLOURS for s in SHAPES], len(chosen))
    objects = tuple(
        Obj(shape=s, colour=c, size=rng.choice(SIZES), row=r, col=k)
        for (c, s), (r, k) in zip(kinds, chosen)
    )
    return Scene(objects=objects, grid_size=grid_size, box=box)


def _mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    ax, ay = np.abs(dx), np.abs(dy)
    if shape in ("square", "box"):
        return (ax <= r) & (ay <= r)
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "triangle":   # apex up
        return (dy >= -r) & (dy <= r) & (ax <= (dy + r) / 2)
    if shape == "diamond":
        return ax + ay <= r * 1.15
    if shape == "cross":
        arm = r / 3
        return ((ax <= arm) & (ay <= r)) | ((ay <= arm) & (ax <= r))
    raise ValueError(f"unknown shape {shape!r}")


def render(scene: Scene, image_size: int, rng: random.Random) -> np.ndarray:
    """uint8 [H, W, 3]. ``rng`` draws the jitter, so the same scene and stream give the same pixels."""
    img = np.empty((image_size, image_size, 3), dtype=np.uint8)
    img[:] = BACKGROUND_RGB
    cell = image_size / scene.grid_size
    coords = np.arange(image_size, dtype=np.float32) + 0.5
    items = [(o.shape, COLOURS[o.colour], _RADIUS[o.size], o.row, o.col) for o in scene.objects]
    if scene.box is not None:
        items.append(("box", BOX_RGB, _RADIUS["box"], scene.box[0], scene.box[1]))
    for shape, rgb, radius, row, col in items:
        jitter = _POSITION_JITTER * cell if shape != "box" else 0.0
        cx = (col + 0.5) * cell + rng.uniform(-jitter, jitter)
        cy = (row + 0.5) * cell + rng.uniform(-jitter, jitter)
        mask = _mask(shape, coords[None, :] - cx, coords[:, None] - cy, radius * cell)
        if shape == "box":
            colour = rgb
        else:
            colour = tuple(min(255, max(0, v + rng.randint(-_COLOUR_JITTER, _COLOUR_JITTER))) for v in rgb)
        img[mask] = colour
    return img


def png_bytes(pixels: np.ndarray) -> bytes:
    """PNG with a fixed zlib level and no metadata: identical bytes for identical pixels."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()
