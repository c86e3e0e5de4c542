"""RealSense ``.db3`` playback, read again and again: does any read lose, repeat or change a frame?

Records the bundled Open3D RGB-D frames (``test/data/rgbd/open3d_testdata_rgbd``, 5 frames) into a
``.db3`` with librealsense's software device and recorder (``write_realsense_file``), then reads it
with ``RealSenseSource`` for ``--seconds`` and compares every read with the recorded frames (count,
order, bit-identical colour and depth). Optional ``--busy N`` busy-loop processes load the CPUs, as a
CI machine running the rest of the suite would. Prints reads, bad reads by kind and seconds per read.

librealsense's playback drops a frame read before its sensor has started (the first frame of a
recording, in a race); ``RealSenseSource`` starts the sensors paused to avoid it. The race is rare —
this is a check that nothing regresses, not a reproduction.

Run: ``python benchmarks/realsense_replay.py [--seconds 600] [--busy 2] [--timeout-s 1]``.
"""

import argparse
import logging
import multiprocessing
import tempfile
import time
from pathlib import Path

import numpy as np

from vilasr_ros.sources import open_source
from vilasr_ros.sources.realsense import RealSenseSource, write_realsense_file

RGBD = Path(__file__).resolve().parents[1] / "test" / "data" / "rgbd" / "open3d_testdata_rgbd"


def _busy(stop_at: float) -> None:
    while time.time() < stop_at:
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--busy", type=int, default=2, help="busy-loop processes loading the CPUs")
    parser.add_argument("--timeout-s", type=float, default=1.0, help="end-of-recording wait per read")
    parser.add_argument("--frames", default=str(RGBD), help="an rgbd_folder to record")
    args = parser.parse_args()
    logging.disable(logging.WARNING)

    with open_source(f"rgbd_folder:{args.frames}") as source:
        frames = list(source)
    path = Path(tempfile.mkdtemp()) / "replay.db3"
    write_realsense_file(frames, path)

    end = time.time() + args.seconds
    hogs = [multiprocessing.Process(target=_busy, args=(end,), daemon=True) for _ in range(args.busy)]
    for hog in hogs:
        hog.start()
    reads, bad = 0, {"lost": 0, "repeated": 0, "changed": 0}
    t0 = time.perf_counter()
    while time.time() < end:
        back = list(RealSenseSource(str(path), timeout_s=args.timeout_s))
        reads += 1
        stamps = [f.stamp_s for f in back]
        if len(set(stamps)) < len(stamps):
            bad["repeated"] += 1
        elif len(back) < len(frames):
            bad["lost"] += 1
        elif len(back) != len(frames) or not all(
                np.array_equal(a.rgb, b.rgb) and np.array_equal(a.depth_m, b.depth_m) for a, b in zip(frames, back)):
            bad["changed"] += 1
    elapsed = time.perf_counter() - t0
    for hog in hogs:
        hog.join()
    print(f"recording: {len(frames)} frames, {path.stat().st_size / 1e6:.2f} MB; busy processes: {args.busy}")
    print(f"reads: {reads}  lost a frame: {bad['lost']}  repeated a frame: {bad['repeated']}  "
          f"changed a frame: {bad['changed']}  ({elapsed / max(reads, 1):.2f} s per read, "
          f"{args.timeout_s:.1f} s of it the end-of-recording wait)")


if __name__ == "__main__":
    main()
