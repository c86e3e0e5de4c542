"""Furniture catalogue: categories, realistic sizes and colours, and their MuJoCo primitives.

Every object is built in its own frame: origin on the floor under the footprint centre, +z up, the
object's front facing +x (a sofa's seat, a TV's screen, a cabinet's doors), length along y. The
object table's ``size`` is the axis-aligned bounding box of the primitives in that frame, metres
``[sx, sy, sz]`` (depth along x, width along y, height), and ``centre`` its centre in the world.

Sizes are in the range of common retail furniture (IKEA-style catalogue figures): a dining table
0.72–0.78 m high, a chair seat at ~0.45 m, a bed 2.0 m long, a fridge 1.7–1.9 m tall.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Categories the question generators may name, with their placement habit: "wall" objects stand with
# their back to a wall, "free" ones anywhere, "on_table" ones on a table top.
CATEGORIES: dict[str, str] = {
    "table": "free",
    "chair": "free",
    "sofa": "wall",
    "bed": "wall",
    "shelf": "wall",
    "cabinet": "wall",
    "lamp": "free",
    "plant": "free",
    "tv": "wall",
    "monitor": "on_table",
    "trash bin": "free",
    "box": "free",
    "stool": "free",
    "refrigerator": "wall",
}
STRUCTURES = ("door", "window")

WOOD = [(0.55, 0.38, 0.24), (0.70, 0.52, 0.34), (0.36, 0.24, 0.16), (0.82, 0.70, 0.52), (0.25, 0.22, 0.20)]
FABRIC = [(0.30, 0.35, 0.50), (0.55, 0.20, 0.20), (0.45, 0.45, 0.42), (0.25, 0.45, 0.35), (0.70, 0.62, 0.45)]
WHITE = [(0.92, 0.92, 0.90), (0.85, 0.86, 0.88)]
METAL = [(0.20, 0.20, 0.22), (0.60, 0.60, 0.62)]
BLACK = (0.06, 0.06, 0.07)


@dataclass
class Geom:
    """One MuJoCo primitive in the object frame.

    Attributes:
        type: ``box``, ``cylinder``, ``sphere`` or ``ellipsoid`` (MJCF geom types, axis-aligned).
        size: MJCF half-sizes (box/ellipsoid: 3 half-extents; cylinder: radius, half-height; sphere: radius).
        pos: Centre in the object frame, metres.
        rgb: Colour (0..1).
        material: Optional material name (textures defined by the scene).
    """

    type: str
    size: tuple[float, ...]
    pos: tuple[float, float, float]
    rgb: tuple[float, float, float]
    material: str | None = None

    def half_extents(self) -> np.ndarray:
        """Half-extents of the geom's axis-aligned bounding box in the object frame (m)."""
        s = self.size
        if self.type in ("box", "ellipsoid"):
            return np.array(s[:3], float)
        if self.type == "cylinder":
            return np.array([s[0], s[0], s[1]], float)
        if self.type == "sphere":
            return np.array([s[0]] * 3, float)
        raise ValueError(f"unsupported geom type {self.type!r}")


@dataclass
class Model3D:
    """An object's primitives and its bounding box (object frame)."""

    geoms: list[Geom] = field(default_factory=list)

    def add(self, type_: str, size, pos, rgb, material: str | None = None) -> None:
        self.geoms.append(Geom(type_, tuple(float(v) for v in size), tuple(float(v) for v in pos),
                               tuple(float(v) for v in rgb), material))

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(min (3,), max (3,)) of the union of the geoms' boxes, object frame, metres."""
        lo = np.min([np.array(g.pos) - g.half_extents() for g in self.geoms], axis=0)
        hi = np.max([np.array(g.pos) + g.half_extents() for g in self.geoms], axis=0)
        return lo, hi


def _pick(rng: np.random.Generator, palette) -> tuple[float, float, float]:
    base = np.array(palette[rng.integers(len(palette))])
    return tuple(np.clip(base * rng.uniform(0.9, 1.1), 0, 1).round(3))


def _legs(m: Model3D, sx, sy, h, t, rgb, inset=0.03) -> None:
    for ix in (-1, 1):
        for iy in (-1, 1):
            m.add("box", (t / 2, t / 2, h / 2), (ix * (sx / 2 - inset - t / 2), iy * (sy / 2 - inset - t / 2), h / 2), rgb)


def build(category: str, rng: np.random.Generator) -> Model3D:
    """Primitives of one random instance of ``category`` (sizes in metres, see module docstring).

    Raises:
        KeyError: Unknown category.
    """
    return _BUILDERS[category](rng)


def _table(rng):
    m, sx, sy, h = Model3D(), rng.uniform(0.7, 1.0), rng.uniform(1.0, 1.8), rng.uniform(0.72, 0.78)
    wood = _pick(rng, WOOD)
    m.add("box", (sx / 2, sy / 2, 0.02), (0, 0, h - 0.02), wood, "wood")
    _legs(m, sx, sy, h - 0.04, 0.05, wood)
    return m


def _chair(rng):
    m, s, seat = Model3D(), rng.uniform(0.44, 0.52), rng.uniform(0.43, 0.47)
    wood, top = _pick(rng, WOOD), rng.uniform(0.85, 0.95)
    m.add("box", (s / 2, s / 2, 0.025), (0, 0, seat - 0.025), _pick(rng, FABRIC + WOOD), "fabric")
    _legs(m, s, s, seat - 0.05, 0.04, wood, inset=0.01)
    m.add("box", (0.02, s / 2, (top - seat) / 2), (-s / 2 + 0.02, 0, (top + seat) / 2), wood, "wood")
    return m


def _sofa(rng):
    m, sx, sy, h = Model3D(), rng.uniform(0.85, 1.0), rng.uniform(1.8, 2.4), rng.uniform(0.8, 0.95)
    fabric = _pick(rng, FABRIC)
    arm = 0.18
    m.add("box", (sx / 2, sy / 2 - arm, 0.2), (0, 0, 0.2), fabric, "fabric")  # base + seat
    m.add("box", (0.1, sy / 2 - arm, (h - 0.4) / 2), (-sx / 2 + 0.1, 0, 0.4 + (h - 0.4) / 2), fabric, "fabric")
    for side in (-1, 1):
        m.add("box", (sx / 2, arm / 2, 0.31), (0, side * (sy / 2 - arm / 2), 0.31), fabric, "fabric")
    n = 2 if sy < 2.1 else 3
    w = (sy - 2 * arm) / n
    for i in range(n):
        m.add("box", (sx / 2 - 0.14, w / 2 - 0.01, 0.06), (0.08, -sy / 2 + arm + w * (i + 0.5), 0.46),
              tuple(np.clip(np.array(fabric) * 1.15, 0, 1)), "fabric")
    return m


def _bed(rng):
    m, sx, sy = Model3D(), rng.uniform(2.0, 2.1), rng.uniform(1.4, 1.8)
    wood, sheet = _pick(rng, WOOD), _pick(rng, WHITE + FABRIC[:2])
    m.add("box", (sx / 2, sy / 2, 0.15), (0, 0, 0.15), wood, "wood")
    m.add("box", (sx / 2 - 0.06, sy / 2 - 0.03, 0.11), (0.03, 0, 0.41), sheet, "fabric")
    m.add("box", (0.04, sy / 2, 0.5), (-sx / 2 + 0.04, 0, 0.5), wood, "wood")  # headboard at the back
    for side in (-1, 1):
        m.add("box", (0.18, sy / 4 - 0.05, 0.06), (-sx / 2 + 0.3, side * sy / 4, 0.58), WHITE[0], "fabric")
    return m


def _shelf(rng):
    m, sx, sy, h = Model3D(), rng.uniform(0.3, 0.4), rng.uniform(0.8, 1.2), rng.uniform(1.6, 2.0)
    wood, t = _pick(rng, WOOD), 0.02
    for side in (-1, 1):
        m.add("box", (sx / 2, t / 2, h / 2), (0, side * (sy / 2 - t / 2), h / 2), wood, "wood")
    m.add("box", (t / 2, sy / 2, h / 2), (-sx / 2 + t / 2, 0, h / 2), wood, "wood")
    levels = int(rng.integers(4, 6))
    for k in range(levels + 1):
        z = min(h - t / 2, t / 2 + k * (h - t) / levels)
        m.add("box", (sx / 2, sy / 2 - t, t / 2), (0, 0, z), wood, "wood")
        if k < levels:
            y = -sy / 2 + t + 0.02
            while y < sy / 2 - t - 0.06:  # books on the shelf
                bw, bh = rng.uniform(0.02, 0.05), rng.uniform(0.6, 0.9) * (h - t) / levels
                m.add("box", (sx / 2 - 0.05, bw / 2, bh / 2), (0.0, y + bw / 2, z + t / 2 + bh / 2), _pick(rng, FABRIC))
                y += bw + rng.uniform(0.0, 0.03)
    return m


def _cabinet(rng):
    m, sx, sy, h = Model3D(), rng.uniform(0.45, 0.6), rng.uniform(0.8, 1.2), rng.uniform(0.8, 1.0)
    body = _pick(rng, WOOD + WHITE)
    m.add("box", (sx / 2, sy / 2, h / 2 - 0.03), (0, 0, h / 2 + 0.03), body, "wood")
    m.add("box", (sx / 2 - 0.02, sy / 2 - 0.02, 0.03), (0, 0, 0.03), BLACK)  # plinth
    m.add("box", (0.005, 0.004, h / 2 - 0.06), (sx / 2 + 0.005, 0, h / 2 + 0.03), BLACK)  # door gap
    for side in (-1, 1):
        m.add("box", (0.01, 0.01, 0.06), (sx / 2 + 0.01, side * 0.06, h * 0.7), METAL[1])
    return m


def _lamp(rng):
    m, h, r = Model3D(), rng.uniform(1.45, 1.75), rng.uniform(0.16, 0.22)
    metal = _pick(rng, METAL)
    m.add("cylinder", (0.15, 0.015), (0, 0, 0.015), metal)
    m.add("cylinder", (0.012, (h - 0.3) / 2), (0, 0, 0.03 + (h - 0.3) / 2), metal)
    m.add("cylinder", (r, 0.15), (0, 0, h - 0.15), _pick(rng, WHITE + [(0.95, 0.85, 0.6)]), "fabric")
    return m


def _plant(rng):
    m, rp, hp = Model3D(), rng.uniform(0.14, 0.2), rng.uniform(0.28, 0.4)
    m.add("cylinder", (rp, hp / 2), (0, 0, hp / 2), _pick(rng, [(0.6, 0.3, 0.2), (0.85, 0.85, 0.82), (0.2, 0.2, 0.2)]))
    green = _pick(rng, [(0.15, 0.45, 0.15), (0.2, 0.55, 0.25), (0.1, 0.35, 0.12)])
    fr, fh = rng.uniform(0.22, 0.32), rng.uniform(0.3, 0.5)
    m.add("ellipsoid", (fr, fr, fh), (0, 0, hp + fh * 0.9), green, "leaves")
    m.add("ellipsoid", (fr * 0.6, fr * 0.6, fh * 0.6), (fr * 0.3, -fr * 0.2, hp + fh * 1.6), green, "leaves")
    return m


def _tv(rng):
    m, w = Model3D(), rng.uniform(1.0, 1.45)
    sh = w * 9 / 16
    bottom = rng.uniform(0.75, 0.9)
    m.add("box", (0.17, 0.3, 0.02), (0, 0, 0.02), METAL[0])  # floor stand foot
    m.add("box", (0.03, 0.05, (bottom + 0.1) / 2), (-0.05, 0, (bottom + 0.1) / 2), METAL[0])
    m.add("box", (0.03, w / 2, sh / 2), (0.0, 0, bottom + sh / 2), BLACK)
    m.add("box", (0.002, w / 2 - 0.02, sh / 2 - 0.02), (0.031, 0, bottom + sh / 2), (0.08, 0.10, 0.16), "screen")
    return m


def _monitor(rng):
    m, w = Model3D(), rng.uniform(0.5, 0.65)
    sh = w * 9 / 16
    m.add("box", (0.1, 0.12, 0.01), (0, 0, 0.01), METAL[0])
    m.add("box", (0.015, 0.03, 0.06), (-0.03, 0, 0.08), METAL[0])
    m.add("box", (0.02, w / 2, sh / 2), (0.0, 0, 0.12 + sh / 2), BLACK)
    m.add("box", (0.002, w / 2 - 0.01, sh / 2 - 0.01), (0.021, 0, 0.12 + sh / 2), (0.15, 0.25, 0.35), "screen")
    return m


def _trash_bin(rng):
    m, r, h = Model3D(), rng.uniform(0.14, 0.2), rng.uniform(0.35, 0.5)
    colour = _pick(rng, METAL + [(0.2, 0.4, 0.7), (0.3, 0.5, 0.3)])
    m.add("cylinder", (r, h / 2 - 0.015), (0, 0, h / 2 - 0.015), colour)
    m.add("cylinder", (r + 0.01, 0.015), (0, 0, h - 0.015), tuple(np.array(colour) * 0.6))
    return m


def _box(rng):
    m, sx, sy, sz = Model3D(), rng.uniform(0.3, 0.6), rng.uniform(0.3, 0.6), rng.uniform(0.25, 0.5)
    m.add("box", (sx / 2, sy / 2, sz / 2), (0, 0, sz / 2), _pick(rng, [(0.72, 0.55, 0.35), (0.65, 0.5, 0.3)]), "cardboard")
    m.add("box", (sx / 2 + 0.002, 0.03, 0.002), (0, 0, sz + 0.002), (0.75, 0.7, 0.55))  # tape
    return m


def _stool(rng):
    m, r, h = Model3D(), rng.uniform(0.15, 0.19), rng.uniform(0.45, 0.65)
    wood = _pick(rng, WOOD + METAL)
    m.add("cylinder", (r, 0.02), (0, 0, h - 0.02), wood, "wood")
    for k in range(4):
        a = np.pi / 4 + k * np.pi / 2
        m.add("cylinder", (0.015, (h - 0.04) / 2), (0.7 * r * np.cos(a), 0.7 * r * np.sin(a), (h - 0.04) / 2), wood)
    return m


def _refrigerator(rng):
    m, sx, sy, h = Model3D(), rng.uniform(0.65, 0.75), rng.uniform(0.6, 0.8), rng.uniform(1.7, 1.9)
    body = _pick(rng, WHITE + METAL[1:])
    m.add("box", (sx / 2, sy / 2, h / 2), (0, 0, h / 2), body)
    m.add("box", (0.004, sy / 2 - 0.01, 0.004), (sx / 2 + 0.004, 0, h * 0.62), BLACK)  # freezer door gap
    for z0, z1 in ((0.1, h * 0.55), (h * 0.68, h - 0.1)):
        m.add("box", (0.02, 0.012, (z1 - z0) / 4), (sx / 2 + 0.02, sy / 2 - 0.08, (z0 + z1) / 2), METAL[1])
    return m


_BUILDERS = {
    "table": _table, "chair": _chair, "sofa": _sofa, "bed": _bed, "shelf": _shelf, "cabinet": _cabinet,
    "lamp": _lamp, "plant": _plant, "tv": _tv, "monitor": _monitor, "trash bin": _trash_bin, "box": _box,
    "stool": _stool, "refrigerator": _refrigerator,
}
assert set(_BUILDERS) == set(CATEGORIES)
