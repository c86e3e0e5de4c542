"""``sim:...`` frame source: simulated RGB-D frames with exact intrinsics and poses.

Spec forms:

- ``sim:seed=7`` (options ``frames=16``, ``kind=walkthrough|look_around``, ``width=640``,
  ``height=480``, ``fovy=60``, ``shadows=1``, ``height_m=1.1``) — renders scene 7 live, frame by frame;
- ``sim:DIR`` — a scene folder written by ``vilasr sim generate`` (``DIR/scenes/scene_0000``), read
  with the ``rgbd_folder`` reader; a dataset root means its first scene;
- ``sim:demo`` — the bundled demo scene (``demo_scene/``: a living room with one sofa, 16 frames of
  320×240 along a walkthrough, z-up ``map``, ground truth in ``scene.json``); needs no MuJoCo.

A scene read from a folder knows its ground truth: :meth:`SimSource.target_error` measures a
grounded target against the objects of ``scene.json``.

Frames carry ``world_frame_id`` ``map`` and optical ``frame_id`` ``sim_camera_optical_frame``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vilasr_ros.errors import ConfigError
from vilasr_ros.frames import Frame
from vilasr_ros.sources.base import FrameSource, SourceError

DEMO_SCENE = Path(__file__).resolve().parent / "demo_scene"
"""The bundled demo scene (``sim:demo``)."""

_KEYS = {"seed": int, "frames": int, "kind": str, "width": int, "height": int, "fovy": float, "shadows": int,
         "height_m": float}


def parse_sim_spec(arg: str) -> dict:
    """``"seed=3,frames=8"`` → ``{"seed": 3, "frames": 8}``.

    Raises:
        ConfigError: Unknown key or a value of the wrong type.
    """
    out: dict = {}
    for part in filter(None, (p.strip() for p in arg.split(","))):
        key, sep, value = part.partition("=")
        if not sep or key not in _KEYS:
            raise ConfigError(f"bad sim option {part!r}; use sim:DIR or sim:seed=N[,frames=16,kind=walkthrough|look_around,"
                             "width=640,height=480,fovy=60,shadows=1,height_m=1.1]")
        try:
            out[key] = _KEYS[key](value)
        except ValueError as exc:
            raise ConfigError(f"sim option {key} needs a {_KEYS[key].__name__}, got {value!r}") from exc
    if "seed" not in out:
        raise ConfigError("sim source needs seed=N or a scene folder (sim:DIR)")
    return out


@dataclass(frozen=True)
class SimSourceConfig:
    """Settings of a ``sim:SPEC`` source.

    Attributes:
        spec: ``demo``, a rendered scene or dataset folder, or ``seed=N[,key=value...]`` (module docstring).
        frame_rate_hz: Stamps are ``index / frame_rate_hz`` (s).
        world_frame_id: The world frame (z-up ``map``).
    """

    spec: str = "demo"
    frame_rate_hz: float = 30.0
    world_frame_id: str = "map"

    def __post_init__(self):
        if not self.frame_rate_hz > 0:
            raise ConfigError(f"frame_rate_hz must be > 0, got {self.frame_rate_hz}")


class SimSource(FrameSource):
    """Frames of a simulated scene (see module docstring for the spec).

    Raises:
        ConfigError: Malformed spec.
        SourceError: A folder that is not a rendered scene.
    """

    config_class = SimSourceConfig
    primary_option = "spec"

    def __init__(self, config: SimSourceConfig | str | None = None, /, **options: Any):
        self.config = cfg = self.resolve_config(config, options)
        arg, frame_rate_hz, world_frame_id = cfg.spec, cfg.frame_rate_hz, cfg.world_frame_id
        self.source_id = f"sim:{arg}"
        self.frame_rate_hz = frame_rate_hz
        self._folder = None
        self._live = None
        self._meta: dict | None = None
        path = DEMO_SCENE if arg == "demo" else Path(arg)
        if arg and "=" not in arg:
            if (path / "scenes").is_dir():
                scenes = sorted((path / "scenes").glob("scene_*"))
                if not scenes:
                    raise SourceError(f"{path}/scenes holds no scene folders")
                path = scenes[0]
            if not (path / "scene.json").is_file():
                raise SourceError(f"{path} is not a rendered sim scene (no scene.json); generate one with `vilasr sim generate`")
            from vilasr_ros.sources.rgbd_folder import RGBDFolderSource

            self._folder = RGBDFolderSource(path, frame_rate_hz=frame_rate_hz, world_frame_id=world_frame_id)
            self._folder.source_id = self.source_id
            self.scene_dir = path
            return
        from vilasr_ros_sim.render import RenderConfig
        from vilasr_ros_sim.trajectory import TrajectoryConfig

        opts = parse_sim_spec(arg)
        try:
            self._render = RenderConfig(opts.get("width", 640), opts.get("height", 480), opts.get("fovy", 60.0),
                                        bool(opts.get("shadows", 1)))
            self._traj = TrajectoryConfig(opts.get("kind", "walkthrough"), opts.get("frames", 16),
                                          opts.get("height_m", 1.1))
        except ValueError as exc:
            raise ConfigError(f"sim source: {exc}") from exc
        self._seed = opts["seed"]

    def __len__(self) -> int:
        return len(self._folder) if self._folder is not None else self._traj.frames

    @property
    def playback_rate_hz(self) -> float | None:  # type: ignore[override]
        return self._folder.playback_rate_hz if self._folder is not None else None

    @property
    def skipped(self) -> list[str]:  # type: ignore[override]
        return self._folder.skipped if self._folder is not None else []

    def __iter__(self) -> Iterator[Frame]:
        if self._folder is not None:
            yield from self._folder
            return
        from vilasr_ros_sim.render import SceneRenderer
        from vilasr_ros_sim.scene import generate_scene
        from vilasr_ros_sim.trajectory import trajectory

        scene = generate_scene(self._seed)
        with SceneRenderer(scene, self._render) as renderer:
            for i, T in enumerate(trajectory(scene, self._traj)):
                yield renderer.frame(T, index=i, stamp_s=i / self.frame_rate_hz, source_id=self.source_id)

    def target_error(self, label: str, position_world) -> dict | None:
        """Distance of a grounded target to the nearest object labelled like ``label`` (the
        grounding's label rule: exact, substring, shared word) in ``scene.json``; None for a live
        scene or when no object matches. See :meth:`FrameSource.target_error`."""
        if self._folder is None:
            return None
        from vilasr_ros.grounding import label_match
        from vilasr_ros_sim.views import point_box_distance

        if self._meta is None:
            self._meta = json.loads((self.scene_dir / "scene.json").read_text(encoding="utf-8"))
        p = np.asarray(position_world, float)
        best = None
        for rule in ("exact", "substring", "word"):
            hits = [o for o in self._meta["objects"] if label_match(o["category"], label) == rule]
            for obj in hits:
                d = point_box_distance(p, obj["centre"], obj["size"], obj["yaw"])
                if best is None or d < best["distance_m"]:
                    best = {"object": obj["category"], "instance_id": obj["instance_id"], "distance_m": round(d, 4),
                            "centre_m": round(float(np.linalg.norm(p - np.asarray(obj["centre"]))), 4)}
            if best is not None:
                return best
        return None
