"""The agent ingesting 30 Hz 640×480 RGB-D from a separate process, and its query overhead.

A ``camera_node`` process streams ``test/data/rgbd/open3d_testdata_rgbd`` (looped) at 30 Hz
with colour, 16UC1 depth, CameraInfo and odometry; this process runs ``vilasr_agent`` (replay
engine) on a MultiThreadedExecutor. Prints:

- frames received per second by the agent and frames dropped (published − received),
- CPU share of the agent process (user+system CPU seconds / wall seconds; 1.0 = one core),
- query-to-answer overhead with the replay engine and 16 frames: wall time from publishing a query
  on ``~/query`` to receiving its ``~/answer`` (a test client in this process), median and p90.

Targets (issue 5): 30 Hz with no drops, CPU under 20 % of one core, overhead under 300 ms.
``--transport compressed`` streams image_transport's ``compressed`` colour (jpeg) and
``compressedDepth`` depth instead of raw images (the agent decodes only keyframes either way).
Run: ``python benchmarks/ros_ingest.py [--seconds 30] [--queries 20] [--transport raw|compressed]`` (sets a loopback DDS env;
``BENCH_THREADS=N`` sets the agent executor's thread count, default 4 as in ``vilasr_agent``).
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vilasr_ros.ros.env import apply_loopback_environment  # noqa: E402  (before rclpy)

apply_loopback_environment(domain_id=int(os.environ.get("BENCH_DOMAIN_ID", 1 + (os.getpid() + 50) % 100)))

import numpy as np  # noqa: E402
import rclpy  # noqa: E402
from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from vilasr_ros.ros.agent_node import VilasrAgentNode  # noqa: E402
from vilasr_ros.engines.replay import demo_responses  # noqa: E402


THREADS = int(os.environ.get("BENCH_THREADS", "4"))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=30.0, help="ingest measurement window")
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--source", default=f"rgbd_folder:{REPO / 'test/data/rgbd/open3d_testdata_rgbd'}")
    parser.add_argument("--transport", choices=("raw", "compressed"), default="raw",
                        help="raw Image topics, or jpeg CompressedImage colour + compressedDepth depth")
    args = parser.parse_args()
    compressed = args.transport == "compressed"

    log = Path(tempfile.mkdtemp()) / "camera.log"
    rclpy.init()
    traces = tempfile.mkdtemp(prefix="bench_traces_")
    agent = VilasrAgentNode(parameter_overrides=[
        Parameter("engine", value="replay"), Parameter("responses", value=str(demo_responses())),
        Parameter("trace_root", value=traces), Parameter("remove_floor", value=False),
        Parameter("color_transport", value="compressed" if compressed else "raw"),
        Parameter("depth_transport", value="compressedDepth" if compressed else "raw"),
        Parameter("max_age_s", value=0.0)])
    client = rclpy.create_node("bench_client")
    answers = {}
    reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    client.create_subscription(String, "/vilasr_agent/answer",
                               lambda m: answers.setdefault(json.loads(m.data)["id"], time.perf_counter()), reliable)
    query_pub = client.create_publisher(String, "/vilasr_agent/query", reliable)
    executor = MultiThreadedExecutor(num_threads=THREADS)  # the agent alone, as vilasr_agent runs it
    executor.add_node(agent)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    client_executor = SingleThreadedExecutor()
    client_executor.add_node(client)
    client_spin = threading.Thread(target=client_executor.spin, daemon=True)
    client_spin.start()

    camera = subprocess.Popen(
        [sys.executable, "-m", "vilasr_ros.ros.camera_node", "--ros-args", "-p", f"source:={args.source}",
         "-p", "rate_hz:=30.0", "-p", "wait_for_subscribers:=1",
         "-p", f"color_transport:={'jpeg' if compressed else 'raw'}",
         "-p", f"depth_transport:={'compressedDepth' if compressed else 'raw'}"], stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        while agent.buffer.received < 30:  # warm-up: discovery and the first second
            time.sleep(0.1)
        stats = agent.assembler.stats
        r0, c0, w0, cpu0 = agent.buffer.received, stats.colour, time.perf_counter(), os.times()
        time.sleep(args.seconds)
        r1, c1, w1, cpu1 = agent.buffer.received, stats.colour, time.perf_counter(), os.times()
        wall = w1 - w0
        cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
        print(f"ingest window {wall:.1f} s: frames received {(r1 - r0) / wall:.2f}/s "
              f"(colour messages {(c1 - c0) / wall:.2f}/s), unpaired {stats.unpaired}, "
              f"decode errors {stats.decode_errors}, without pose {stats.without_pose}")
        print(f"agent process CPU ({args.transport} topics): {100 * cpu / wall:.1f} % of one core "
              f"(user {cpu1.user - cpu0.user:.2f} s, system {cpu1.system - cpu0.system:.2f} s)")
        print(f"keyframes buffered: {len(agent.buffer)}")

        latencies = []
        for i in range(args.queries):
            qid = f"b{i}"
            t = time.perf_counter()
            query_pub.publish(String(data=json.dumps({"id": qid, "question": "Go to the sofa",
                                                      "target": "sofa", "frames": 16})))
            while qid not in answers:
                time.sleep(0.001)
            latencies.append(answers[qid] - t)
            time.sleep(0.2)
        ms = np.array(latencies) * 1000
        print(f"query-to-answer overhead (replay engine, 16 frames, {args.queries} queries, camera streaming): "
              f"median {np.median(ms):.0f} ms, p90 {np.percentile(ms, 90):.0f} ms, max {ms.max():.0f} ms")
    finally:
        camera.send_signal(signal.SIGINT)
        camera.wait(timeout=20)
        executor.shutdown()
        client_executor.shutdown()
        spin.join(timeout=10)
        client_spin.join(timeout=10)
        agent.destroy_node()
        client.destroy_node()
        rclpy.try_shutdown()
    text = log.read_text()
    m = re.search(r"published (\d+) frames in ([\d.]+) s \(([\d.]+) Hz\)", text)
    if m:
        print(f"camera_node published {m.group(1)} frames at {m.group(3)} Hz")
    else:
        print("camera_node log:\n" + text[-2000:])


if __name__ == "__main__":
    main()
