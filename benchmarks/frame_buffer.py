"""Keyframe buffer under a simulated 30 Hz 640×480 RGB-D stream.

A producer thread adds frames at 30 Hz of stream time (as fast as the buffer takes them, or paced
in real time with --realtime) from a camera moving 0.5 m/s; a consumer selects 16 frames every
second of stream time. Prints frames/s ingested, keyframes kept, the byte bound and the peak
resident memory of the process.

Run: ``python benchmarks/frame_buffer.py [--minutes 10] [--realtime]``.
"""

import argparse
import resource
import threading
import time

import numpy as np

from vilasr_ros.buffer import BufferConfig, FrameBuffer
from vilasr_ros.frames import CameraIntrinsics, Frame


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--max-mib", type=int, default=256)
    parser.add_argument("--realtime", action="store_true", help="pace frames at 30 Hz wall time")
    args = parser.parse_args()
    intr = CameraIntrinsics(640, 480, 525.0, 525.0, 319.5, 239.5)
    rng = np.random.default_rng(0)
    rgbs = [rng.integers(0, 255, (480, 640, 3), dtype=np.uint8) for _ in range(8)]
    depths = [rng.uniform(0.5, 4.0, (480, 640)).astype(np.float32) for _ in range(8)]
    cfg = BufferConfig(max_frames=100000, max_bytes=args.max_mib * 1024 * 1024, min_translation_m=0.1, max_interval_s=1.0)
    buf = FrameBuffer(cfg)
    n = int(args.minutes * 60 * 30)
    peak_bytes = 0
    selections = 0
    stop = threading.Event()

    def consumer():
        nonlocal selections
        while not stop.is_set():
            if len(buf):
                buf.select(16)
                selections += 1
            time.sleep(0.05)

    thread = threading.Thread(target=consumer)
    thread.start()
    start = time.perf_counter()
    for i in range(n):
        t = i / 30.0
        T = np.eye(4)
        T[0, 3] = 0.5 * t
        buf.add(Frame(rgbs[i % 8].copy(), depths[i % 8].copy(), intr, T, stamp_s=t))  # own arrays, as a driver gives
        peak_bytes = max(peak_bytes, buf.nbytes)
        if args.realtime:
            time.sleep(max(0.0, start + (i + 1) / 30.0 - time.perf_counter()))
    elapsed = time.perf_counter() - start
    stop.set()
    thread.join()
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"stream: {args.minutes:g} min at 30 Hz = {n} frames of 640x480 RGB-D ({Frame(rgbs[0], depths[0], intr).nbytes / 1e6:.2f} MB each)")
    print(f"ingest: {n / elapsed:.0f} frames/s ({elapsed:.1f} s), keyframes accepted {buf.accepted}, kept {len(buf)}")
    print(f"byte bound {cfg.max_bytes / 2**20:.0f} MiB, peak held {peak_bytes / 2**20:.1f} MiB, held at end {buf.nbytes / 2**20:.1f} MiB")
    print(f"peak RSS of the process: {rss_mib:.0f} MiB, selections of 16 frames during the run: {selections}")
    assert peak_bytes <= cfg.max_bytes


if __name__ == "__main__":
    main()
