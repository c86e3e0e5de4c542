"""Procedural indoor scenes: a room (rectangle or L-shape) with walls, a door, windows and furniture.

World frame: REP-103 ``map`` — x, y on the floor, z up, floor at z = 0, metres. Every scene is a
pure function of its seed (``numpy.random.default_rng(seed)``): same seed, same room, same layout,
same MJCF text.

Layout rules: furniture footprints (oriented rectangles) lie inside the room polygon, keep
``SceneConfig.gap_m`` from each other, leave a free circle (the camera's walking area) and the
space in front of the door clear; "wall" categories stand with their back to a wall; a monitor
stands on a table top.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vilasr_ros_sim.catalog import CATEGORIES, Model3D, build, BLACK, WOOD

MAX_COUNT = {"sofa": 1, "bed": 1, "tv": 1, "refrigerator": 1, "table": 2, "shelf": 2, "cabinet": 2, "monitor": 1}
WEIGHTS = {"table": 1.0, "chair": 2.0, "sofa": 0.8, "bed": 0.6, "shelf": 0.8, "cabinet": 0.8, "lamp": 0.8,
           "plant": 1.0, "tv": 0.6, "monitor": 0.7, "trash bin": 0.8, "box": 1.0, "stool": 0.7, "refrigerator": 0.4}


@dataclass(frozen=True)
class SceneConfig:
    """Attributes:
    room_size_m: Range of the room's bounding rectangle sides (m).
    l_shape_probability: Chance of an L-shaped room (else a rectangle).
    wall_height_m: Range of wall heights (m).
    objects: Range (inclusive) of furniture pieces per room.
    gap_m: Minimum gap between footprints (m).
    clear_radius_m: Radius of the free walking circle around the camera path centre (m).
    """

    room_size_m: tuple[float, float] = (4.0, 7.0)
    l_shape_probability: float = 0.3
    wall_height_m: tuple[float, float] = (2.6, 3.0)
    objects: tuple[int, int] = (9, 14)
    gap_m: float = 0.08
    clear_radius_m: float = 0.9

    def __post_init__(self):
        if not 2.5 <= self.room_size_m[0] <= self.room_size_m[1]:
            raise ValueError("room_size_m must be (min, max) with 2.5 <= min <= max")
        if not 1 <= self.objects[0] <= self.objects[1]:
            raise ValueError("objects must be (min, max) with 1 <= min <= max")


@dataclass
class SceneObject:
    """One object of the object table.

    Attributes:
        instance_id: 1-based id; segmentation images hold it at the object's pixels (0 = room shell).
        category: Catalogue category (``"chair"``) or structure (``"door"``, ``"window"``).
        position: Object-frame origin in the world (on its support surface), metres.
        yaw: Rotation about +z, radians (the object's front is its +x axis).
        model: Its primitives.
        support: Instance id of the object it stands on, or None for the floor / a wall.
    """

    instance_id: int
    category: str
    position: np.ndarray
    yaw: float
    model: Model3D
    support: int | None = None

    @property
    def rotation(self) -> np.ndarray:
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])

    @property
    def size(self) -> np.ndarray:
        """[sx, sy, sz] of the bounding box in the object frame, metres."""
        lo, hi = self.model.bounds()
        return hi - lo

    @property
    def centre(self) -> np.ndarray:
        """Bounding-box centre in the world, metres."""
        lo, hi = self.model.bounds()
        return self.position + self.rotation @ ((lo + hi) / 2.0)

    def footprint(self, inflate_m: float = 0.0) -> np.ndarray:
        """(4, 2) world xy corners of the bounding box's footprint, counter-clockwise."""
        return box_footprint(self.centre, self.size, self.yaw, inflate_m)

    def z_range(self) -> tuple[float, float]:
        lo, hi = self.model.bounds()
        return float(self.position[2] + lo[2]), float(self.position[2] + hi[2])

    def to_dict(self) -> dict:
        """Object-table row: category, instance id, centre, size, yaw (m, rad), support."""
        return {
            "instance_id": self.instance_id,
            "category": self.category,
            "centre": [round(float(v), 4) for v in self.centre],
            "size": [round(float(v), 4) for v in self.size],
            "yaw": round(float(self.yaw), 6),
            "support": self.support,
        }


@dataclass
class Scene:
    """A generated room. ``polygon`` is the floor outline (counter-clockwise, metres)."""

    seed: int
    polygon: np.ndarray
    wall_height_m: float
    objects: list[SceneObject]
    clear_centre: np.ndarray
    clear_radius_m: float
    floor_rgb: tuple = (0.6, 0.5, 0.4)
    wall_rgb: tuple = (0.85, 0.84, 0.8)
    shape: str = "rectangle"

    @property
    def area_m2(self) -> float:
        """Floor area (shoelace formula), square metres."""
        x, y = self.polygon[:, 0], self.polygon[:, 1]
        return float(0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))

    def furniture(self) -> list[SceneObject]:
        return [o for o in self.objects if o.category in CATEGORIES]

    def by_id(self, instance_id: int) -> SceneObject:
        return next(o for o in self.objects if o.instance_id == instance_id)

    def object_table(self) -> dict:
        """JSON-ready object table (explains every generated answer)."""
        return {
            "seed": self.seed,
            "shape": self.shape,
            "room_polygon": [[round(float(x), 4), round(float(y), 4)] for x, y in self.polygon],
            "room_area_m2": round(self.area_m2, 4),
            "wall_height_m": round(self.wall_height_m, 4),
            "clear_centre": [round(float(v), 4) for v in self.clear_centre],
            "objects": [o.to_dict() for o in self.objects],
        }


# --- 2D geometry ------------------------------------------------------------------------------

def point_in_polygon(p, polygon: np.ndarray) -> bool:
    """Even-odd rule; points on the boundary count as inside for axis-aligned edges."""
    x, y = p
    inside = False
    n = len(polygon)
    for i in range(n):
        x1, y1 = polygon[i]
        x2, y2 = polygon[(i + 1) % n]
        if (y1 > y) != (y2 > y):
            if x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
                inside = not inside
    return inside


def rects_overlap(a: np.ndarray, b: np.ndarray) -> bool:
    """Separating-axis test for two convex quadrilaterals given as (4, 2) corners."""
    for poly in (a, b):
        for i in range(4):
            edge = poly[(i + 1) % 4] - poly[i]
            axis = np.array([-edge[1], edge[0]])
            pa, pb = a @ axis, b @ axis
            if pa.max() < pb.min() or pb.max() < pa.min():
                return False
    return True


def _segment_distance(p, a, b) -> float:
    ab = b - a
    t = np.clip(np.dot(p - a, ab) / max(np.dot(ab, ab), 1e-12), 0.0, 1.0)
    return float(np.linalg.norm(p - (a + t * ab)))


def footprint_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Shortest distance between two convex quadrilaterals (0 when they overlap), metres."""
    if rects_overlap(a, b):
        return 0.0
    best = math.inf
    for p, q in ((a, b), (b, a)):
        for v in p:
            for i in range(4):
                best = min(best, _segment_distance(v, q[i], q[(i + 1) % 4]))
    return best


def box_footprint(centre, size, yaw: float, inflate_m: float = 0.0) -> np.ndarray:
    """(4, 2) world xy corners (counter-clockwise) of a yawed box's footprint (centre, size in metres)."""
    half = np.asarray(size, float)[:2] / 2.0 + inflate_m
    c, s = math.cos(yaw), math.sin(yaw)
    R = np.array([[c, -s], [s, c]])
    return np.array([np.asarray(centre, float)[:2] + R @ (half * q) for q in ((-1, -1), (1, -1), (1, 1), (-1, 1))])


def closest_distance(a: dict, b: dict) -> float:
    """Distance between the closest points of two object-table rows' bounding boxes (m).

    The boxes are prisms (yawed footprint × height interval), so the distance splits exactly into a
    horizontal part (footprint to footprint) and a vertical part (gap between height intervals).
    VSI-Bench measures "from the closest point of each object" on point clouds; the bounding box is
    this simulator's object extent.
    """
    dxy = footprint_distance(box_footprint(a["centre"], a["size"], a["yaw"]), box_footprint(b["centre"], b["size"], b["yaw"]))
    a0, a1 = a["centre"][2] - a["size"][2] / 2, a["centre"][2] + a["size"][2] / 2
    b0, b1 = b["centre"][2] - b["size"][2] / 2, b["centre"][2] + b["size"][2] / 2
    return math.hypot(dxy, max(0.0, b0 - a1, a0 - b1))


# --- generation -------------------------------------------------------------------------------

def _room(rng, config: SceneConfig) -> tuple[np.ndarray, str, np.ndarray]:
    lo, hi = config.room_size_m
    if rng.random() < config.l_shape_probability:
        W, D = rng.uniform(max(lo, 5.0), max(hi, 5.5), size=2)
        cw, cd = W * rng.uniform(0.35, 0.5), D * rng.uniform(0.35, 0.5)
        poly = np.array([[0, 0], [W, 0], [W, D - cd], [W - cw, D - cd], [W - cw, D], [0, D]], float)
        centre = np.array([(W - cw) / 2.0, (D - cd) / 2.0 + 0.3])  # in the big arm of the L
        shape = "L"
    else:
        W, D = rng.uniform(lo, hi, size=2)
        poly = np.array([[0, 0], [W, 0], [W, D], [0, D]], float)
        centre = np.array([W, D]) / 2.0 + rng.uniform(-0.3, 0.3, size=2)
        shape = "rectangle"
    offset = -np.array([poly[:, 0].max(), poly[:, 1].max()]) / 2.0  # room roughly centred on the origin
    return (poly + offset).round(4), shape, (centre + offset).round(4)


def _edges(polygon):
    n = len(polygon)
    for i in range(n):
        a, b = polygon[i], polygon[(i + 1) % n]
        d = b - a
        length = float(np.linalg.norm(d))
        inward = np.array([-d[1], d[0]]) / length  # CCW polygon: interior on the left
        yield i, a, b, length, inward


def _structures(rng, polygon, height, next_id) -> tuple[list[SceneObject], list[np.ndarray]]:
    """A door and 1–3 windows on the walls; returns them and keep-out rectangles."""
    edges = [e for e in _edges(polygon) if e[3] >= 1.6]
    order = rng.permutation(len(edges))
    objects, keepout = [], []
    for rank, k in enumerate(order[: 1 + int(rng.integers(1, 4))]):
        i, a, b, length, inward = edges[k]
        is_door = rank == 0
        w = 0.9 if is_door else float(rng.uniform(0.9, min(1.8, length - 0.6)))
        t = float(rng.uniform(0.5 + w / 2, length - 0.5 - w / 2)) if length - 1.0 > w else length / 2
        along = (b - a) / length
        base = a + along * t
        yaw = math.atan2(inward[1], inward[0])
        m = Model3D()
        if is_door:
            wood = tuple(np.array(WOOD[int(rng.integers(len(WOOD)))]) * 0.9)
            m.add("box", (0.02, w / 2, 1.0), (0.02, 0, 1.0), wood, "wood")
            m.add("box", (0.025, 0.03, 1.03), (0.025, -w / 2 - 0.03, 1.03), (0.95, 0.95, 0.95))
            m.add("box", (0.025, 0.03, 1.03), (0.025, w / 2 + 0.03, 1.03), (0.95, 0.95, 0.95))
            m.add("sphere", (0.03,), (0.07, w / 2 - 0.1, 1.0), (0.8, 0.7, 0.3))
            front = base + inward * 0.6
            R = np.array([[along[0], inward[0]], [along[1], inward[1]]])
            keepout.append(np.array([front + R @ np.array(s) for s in ((-w / 2 - 0.1, -0.6), (w / 2 + 0.1, -0.6),
                                                                        (w / 2 + 0.1, 0.6), (-w / 2 - 0.1, 0.6))]))
            z0 = 0.0
        else:
            h = float(rng.uniform(1.0, 1.4))
            z0 = float(rng.uniform(0.8, max(0.81, height - h - 0.25)))
            m.add("box", (0.01, w / 2, h / 2), (0.01, 0, h / 2), (0.62, 0.78, 0.92), "glass")
            for y in (-w / 2, w / 2):
                m.add("box", (0.03, 0.03, h / 2 + 0.03), (0.03, y, h / 2), (0.95, 0.95, 0.95))
            for z in (0.0, h):
                m.add("box", (0.03, w / 2 + 0.03, 0.03), (0.03, 0, z), (0.95, 0.95, 0.95))
            m.add("box", (0.02, 0.015, h / 2), (0.02, 0, h / 2), (0.95, 0.95, 0.95))  # mullion
        objects.append(SceneObject(next_id + rank, "door" if is_door else "window",
                                   np.array([base[0], base[1], z0]), yaw, m))
    return objects, keepout


def _choose_categories(rng, n: int) -> list[str]:
    chosen: list[str] = ["table"] if rng.random() < 0.8 else []
    cats = list(WEIGHTS)
    p = np.array([WEIGHTS[c] for c in cats])
    while len(chosen) < n:
        c = cats[int(rng.choice(len(cats), p=p / p.sum()))]
        if chosen.count(c) >= MAX_COUNT.get(c, 4):
            continue
        if c == "monitor" and "table" not in chosen:
            continue
        chosen.append(c)
    size_rank = {"bed": 0, "sofa": 1, "refrigerator": 2, "shelf": 3, "table": 4, "cabinet": 5, "tv": 6}
    return sorted(chosen, key=lambda c: (c == "monitor", size_rank.get(c, 10)))


def generate_scene(seed: int, config: SceneConfig | None = None) -> Scene:
    """Generate one room from ``seed``.

    Returns:
        A :class:`Scene`; objects that found no collision-free spot after 200 tries are dropped
        (the object table lists exactly what was placed).
    """
    config = config or SceneConfig()
    rng = np.random.default_rng(seed)
    polygon, shape, clear_centre = _room(rng, config)
    height = float(rng.uniform(*config.wall_height_m))
    structures, keepout = _structures(rng, polygon, height, next_id=1)
    objects: list[SceneObject] = list(structures)
    placed_fp: list[np.ndarray] = list(keepout)
    edges = list(_edges(polygon))
    n = int(rng.integers(config.objects[0], config.objects[1] + 1))
    for category in _choose_categories(rng, n):
        model = build(category, rng)
        lo, hi = model.bounds()
        iid = len(objects) + 1
        for _ in range(200):
            if CATEGORIES[category] == "on_table":
                tables = [o for o in objects if o.category == "table"]
                if not tables:
                    break
                table = tables[int(rng.integers(len(tables)))]
                if any(o.support == table.instance_id for o in objects):
                    continue
                ts = table.size
                local = np.array([rng.uniform(-1, 1) * max(0.0, ts[0] / 2 - 0.2), rng.uniform(-1, 1) * max(0.0, ts[1] / 2 - 0.35), 0])
                yaw = table.yaw + (0.0 if rng.random() < 0.5 else math.pi) + rng.uniform(-0.3, 0.3)
                pos = table.position + table.rotation @ local
                pos[2] = table.z_range()[1]
                obj = SceneObject(iid, category, pos, float(yaw), model, support=table.instance_id)
                corners = obj.footprint()
                if all(point_in_polygon(c, table.footprint(-0.02)) for c in corners):
                    objects.append(obj)
                    break
                continue
            if CATEGORIES[category] == "wall" or (category in ("table", "cabinet", "plant", "lamp") and rng.random() < 0.4):
                _, a, b, length, inward = edges[int(rng.integers(len(edges)))]
                yaw = math.atan2(inward[1], inward[0])
                t = rng.uniform(0.0, length)
                back = a + (b - a) * t / length + inward * (0.03 - lo[0])
                pos = np.array([back[0], back[1], 0.0])
            else:
                xs, ys = polygon[:, 0], polygon[:, 1]
                pos = np.array([rng.uniform(xs.min(), xs.max()), rng.uniform(ys.min(), ys.max()), 0.0])
                yaw = rng.uniform(-math.pi, math.pi)
            obj = SceneObject(iid, category, pos, float(yaw), model)
            fp = obj.footprint()
            if not all(point_in_polygon(c, polygon) for c in obj.footprint(0.02)):
                continue
            if any(point_in_polygon(v, fp) for v in polygon):  # L-shape: the inner corner inside the footprint
                continue
            if _min_dist_to_point(fp, clear_centre) < config.clear_radius_m:
                continue
            grown = obj.footprint(config.gap_m)
            if any(rects_overlap(grown, other) for other in placed_fp):
                continue
            objects.append(obj)
            placed_fp.append(fp)
            break
    floor_rgb = tuple(np.array(WOOD[int(rng.integers(len(WOOD)))]).round(3))
    wall_rgb = tuple((np.array([0.86, 0.85, 0.8]) * rng.uniform(0.9, 1.05, size=3)).clip(0, 1).round(3))
    return Scene(seed, polygon, height, objects, clear_centre, config.clear_radius_m, floor_rgb, wall_rgb, shape)


def _min_dist_to_point(quad: np.ndarray, p) -> float:
    if point_in_polygon(p, quad):
        return 0.0
    return min(_segment_distance(np.asarray(p, float), quad[i], quad[(i + 1) % 4]) for i in range(4))


# --- MJCF ---------------------------------------------------------------------------------------

def _fmt(values) -> str:
    return " ".join(f"{float(v):.5g}" for v in values)


def to_mjcf(scene: Scene, width: int = 640, height: int = 480, shadows: bool = True) -> str:
    """MJCF text of the scene: static geoms named ``obj<ID>_<k>`` per object, ``shell_*`` for the room.

    One camera ``cam`` in the world body; the renderer moves it (``model.cam_pos``/``cam_quat``).
    """
    del shadows  # a render-time flag (mjRND_SHADOW); lights always declare castshadow
    poly = scene.polygon
    H, t = scene.wall_height_m, 0.12
    xs, ys = poly[:, 0], poly[:, 1]
    cx, cy = (xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2
    hx, hy = (xs.max() - xs.min()) / 2 + t, (ys.max() - ys.min()) / 2 + t
    fr, wr = scene.floor_rgb, scene.wall_rgb
    out = [
        '<mujoco model="vilasr_sim_room">',
        '  <compiler angle="radian"/>',
        f'  <visual><global offwidth="{width}" offheight="{height}"/><quality shadowsize="1024"/>'
        '<map znear="0.01" zfar="20"/><headlight ambient="0.35 0.35 0.35" diffuse="0.35 0.35 0.35" specular="0 0 0"/></visual>',
        f'  <statistic extent="{max(hx, hy) * 2:.4g}" center="{cx:.4g} {cy:.4g} 1"/>',
        "  <asset>",
        f'    <texture name="t_floor" type="2d" builtin="checker" rgb1="{_fmt(fr)}" rgb2="{_fmt(np.array(fr) * 0.85)}" '
        'width="256" height="256" mark="edge" markrgb="0.2 0.15 0.1"/>',
        '    <material name="floor" texture="t_floor" texrepeat="2 2" texuniform="true" reflectance="0.05"/>',
        f'    <texture name="t_wall" type="2d" builtin="flat" rgb1="{_fmt(wr)}" width="128" height="128" '
        f'mark="random" random="0.08" markrgb="{_fmt(np.array(wr) * 0.93)}"/>',
        '    <material name="wall" texture="t_wall" texrepeat="3 3" texuniform="true"/>',
        '    <texture name="t_fabric" type="2d" builtin="flat" rgb1="1 1 1" width="64" height="64" mark="random" random="0.25" markrgb="0.8 0.8 0.8"/>',
        '    <material name="fabric" texture="t_fabric" texrepeat="8 8" texuniform="true"/>',
        '    <texture name="t_wood" type="2d" builtin="gradient" rgb1="1 1 1" rgb2="0.8 0.8 0.8" width="64" height="64"/>',
        '    <material name="wood" texture="t_wood" texrepeat="4 1" texuniform="true" specular="0.2"/>',
        '    <texture name="t_leaves" type="2d" builtin="flat" rgb1="1 1 1" width="64" height="64" mark="random" random="0.4" markrgb="0.5 0.7 0.4"/>',
        '    <material name="leaves" texture="t_leaves" texrepeat="6 6" texuniform="true"/>',
        '    <material name="cardboard" specular="0.05"/>',
        '    <material name="screen" specular="0.6" shininess="0.9"/>',
        '    <material name="glass" specular="0.8" shininess="0.9" emission="0.3"/>',
        "  </asset>",
        "  <worldbody>",
        f'    <geom name="shell_floor" type="box" size="{hx:.4f} {hy:.4f} 0.05" pos="{cx:.4f} {cy:.4f} -0.05" material="floor"/>',
        f'    <geom name="shell_ceiling" type="box" size="{hx:.4f} {hy:.4f} 0.05" pos="{cx:.4f} {cy:.4f} {H + 0.05:.4f}" rgba="0.95 0.95 0.95 1"/>',
    ]
    n = len(poly)
    for i, a, b, length, inward in _edges(poly):
        prev_v, next_v = poly[i - 1], poly[(i + 2) % n]
        convex_a = np.cross(a - prev_v, b - a) > 0
        convex_b = np.cross(b - a, next_v - b) > 0
        ext_a, ext_b = (t if convex_a else 0.0), (t if convex_b else 0.0)
        along = (b - a) / length
        mid = (a + b) / 2 + along * (ext_b - ext_a) / 2 - inward * t / 2
        yaw = math.atan2(along[1], along[0])
        out.append(f'    <geom name="shell_wall{i}" type="box" size="{length / 2 + (ext_a + ext_b) / 2:.4f} {t / 2} {H / 2:.4f}" '
                   f'pos="{mid[0]:.4f} {mid[1]:.4f} {H / 2:.4f}" euler="0 0 {yaw:.6f}" material="wall"/>')
        out.append(f'    <geom name="shell_skirting{i}" type="box" size="{length / 2:.4f} 0.008 0.04" '
                   f'pos="{(a + b)[0] / 2 + inward[0] * 0.008:.4f} {(a + b)[1] / 2 + inward[1] * 0.008:.4f} 0.04" '
                   f'euler="0 0 {yaw:.6f}" rgba="{_fmt(BLACK if i % 2 else (0.95, 0.95, 0.95))} 1"/>')
    lc = scene.clear_centre
    out.append(f'    <light name="ceiling_main" pos="{lc[0]:.3f} {lc[1]:.3f} {H - 0.15:.3f}" dir="0 0 -1" cutoff="75" '
               'exponent="2" diffuse="0.55 0.55 0.52" specular="0.1 0.1 0.1" castshadow="true" attenuation="1 0 0"/>')
    out.append(f'    <light name="fill" pos="{cx:.3f} {cy:.3f} {H - 0.1:.3f}" dir="0 0 -1" directional="true" '
               'diffuse="0.2 0.2 0.2" specular="0 0 0" castshadow="false"/>')
    out.append('    <camera name="cam" pos="0 0 1" quat="1 0 0 0" fovy="60"/>')
    for obj in scene.objects:
        p = obj.position
        out.append(f'    <body name="obj{obj.instance_id}" pos="{_fmt(p)}" euler="0 0 {obj.yaw:.6f}">')
        for k, g in enumerate(obj.model.geoms):
            mat = f' material="{g.material}"' if g.material else ""
            out.append(f'      <geom name="obj{obj.instance_id}_{k}" type="{g.type}" size="{_fmt(g.size)}" '
                       f'pos="{_fmt(g.pos)}" rgba="{_fmt(g.rgb)} 1"{mat}/>')
        out.append("    </body>")
    out += ["  </worldbody>", "</mujoco>"]
    return "\n".join(out) + "\n"
