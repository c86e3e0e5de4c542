"""Sim rendering speed, dataset generation time, and target-position error with ground-truth boxes.

Prints:
1. RGB + depth + segmentation frames per second at 640×480 (headless MuJoCo, shadows on and off);
2. the wall time to generate a dataset of at least 100 questions (``vilasr sim generate``);
3. grounding with ground-truth boxes on those frames: the world position from ``surface_in_box``
   (floor and wall removal on) against the object's visible surface (median of its segmented
   pixels), for fully visible objects within 4 m — median and 90th percentile, metres.

Run: ``MUJOCO_GL=egl python benchmarks/sim_render.py [--frames 40] [--out /tmp/sim_bench]``.
"""

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402

from vilasr_ros_sim.dataset import generate_dataset  # noqa: E402
from vilasr_ros_sim.render import RenderConfig, SceneRenderer  # noqa: E402
from vilasr_ros_sim.scene import generate_scene  # noqa: E402
from vilasr_ros_sim.trajectory import TrajectoryConfig, trajectory  # noqa: E402
from vilasr_ros_sim.views import target_errors  # noqa: E402


def render_fps(frames: int, shadows: bool) -> float:
    scene = generate_scene(0)
    with SceneRenderer(scene, RenderConfig(640, 480, shadows=shadows)) as r:
        poses = trajectory(scene, TrajectoryConfig(frames=frames))
        r.render(poses[0])  # warm-up (GL context, shaders)
        t = time.perf_counter()
        for T in poses:
            r.render(T)
        return frames / (time.perf_counter() - t)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=40, help="frames per fps measurement")
    parser.add_argument("--out", help="dataset folder (default: a temp dir, removed)")
    args = parser.parse_args()
    print(f"MUJOCO_GL={os.environ['MUJOCO_GL']}, {os.cpu_count()} CPU cores")
    for shadows in (True, False):
        print(f"render RGB+depth+seg 640x480, shadows {'on ' if shadows else 'off'}: "
              f"{render_fps(args.frames, shadows):.1f} frames/s")
    root = Path(args.out or tempfile.mkdtemp(prefix="sim_bench_"))
    per_scene = len(generate_dataset(root, scenes=1, seed=0))  # estimate (not timed)
    scenes = -(-100 // per_scene)
    while True:
        shutil.rmtree(root, ignore_errors=True)
        t = time.perf_counter()
        items = generate_dataset(root, scenes=scenes, seed=0)
        if len(items) >= 100:
            break
        scenes += 1
    took = time.perf_counter() - t
    print(f"dataset: {len(items)} questions from {scenes} scenes x 16 frames + {scenes} mazes "
          f"in {took:.1f} s ({took / len(items):.2f} s/question)")
    err = target_errors(root)
    print(f"ground-truth boxes -> target position ({len(err)} fully visible objects within 4 m): "
          f"median {np.median(err) * 100:.1f} cm, p90 {np.percentile(err, 90) * 100:.1f} cm, max {err.max() * 100:.1f} cm")
    if not args.out:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
