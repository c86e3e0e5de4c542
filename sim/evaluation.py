"""Measuring sim navigation answers against the scene's ground truth (``vilasr eval run --dataset sim``).

Registered as the ``sim`` entry of the ``vilasr_ros.eval_measures`` group: the evaluation runner
calls :func:`measure_navigation` for every sim item that names a navigation ``target``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from vilasr_ros.grounding import GroundingConfig, ground_trace
from vilasr_ros.sources import open_source
from vilasr_ros.trace import Trace
from vilasr_ros_sim.views import point_box_distance, visible_surface_point


def measure_navigation(raw: dict[str, Any], image_paths: list[Path], trace: Trace, root: Path) -> dict[str, Any]:
    """Ground a sim navigation answer and measure it against the scene (metres).

    Args:
        raw: The dataset item (``target``: category, instance id, position; ``scene``: its folder).
        image_paths: The frames shown, in order (``scenes/scene_N/color/NNNNN.png``).
        trace: The run.
        root: The dataset folder.

    Returns:
        ``{"grounding": GroundingResult dict, "position_error_m": error to the target's visible
        surface as the fused position is made (per-axis median over the boxes used of the visible
        surface in each box's frame; the target's centre when none of those frames shows it),
        "error_reference", "box_error_m": distance to the target's oriented bounding box,
        "centre_error_xy_m"}``; ``{}`` for items that are not navigation items.
    """
    target = raw.get("target")
    if not target or not raw.get("scene"):
        return {}
    scene_dir = root / raw["scene"]
    with open_source(f"sim:{scene_dir}") as source:
        frames_by_index = {f.index: f for f in source}
    frames = [frames_by_index[int(p.stem)] for p in image_paths]
    result = ground_trace(trace, frames, target["category"], GroundingConfig(remove_floor=True))
    out: dict[str, Any] = {"grounding": result.to_dict(), "position_error_m": None, "error_reference": None}
    if not result.ok:
        return out
    world = np.array(result.position_world)
    surfaces = []
    for view in result.views_used:
        try:
            surfaces.append(visible_surface_point(scene_dir, view["frame_index"], int(target["instance_id"])))
        except ValueError:  # that frame does not show the target
            pass
    if surfaces:
        reference, out["error_reference"] = np.median(surfaces, axis=0), "visible_surface"
    else:
        reference, out["error_reference"] = np.array(target["position"]), "centre"
    out["position_error_m"] = round(float(np.linalg.norm(world - reference)), 4)
    obj = next((o for o in json.loads((scene_dir / "scene.json").read_text())["objects"]
                if o["instance_id"] == int(target["instance_id"])), None)
    if obj is not None:
        out["box_error_m"] = round(point_box_distance(world, obj["centre"], obj["size"], obj["yaw"]), 4)
    out["centre_error_xy_m"] = round(float(np.linalg.norm(world[:2] - np.array(target["position"][:2]))), 4)
    return out
