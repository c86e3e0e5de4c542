"""Soak: the agent as a robot runs it — a 30 Hz VGA RGB-D camera and a query every 5 s, for minutes.

Three processes on loopback DDS: ``camera_node`` looping ``open3d_testdata_rgbd`` (640×480, colour,
16UC1 depth, CameraInfo, odometry) at 30 Hz; ``vilasr_agent`` (replay engine, traces saved with the
retention cap ``--trace-cap-mb``); and this client, which asks a query every ``--every`` seconds
and reads the agent's ``/proc`` entry. Every minute it prints the agent's RSS (MiB), threads, open
file descriptors, disk used by traces (MiB), queries answered and answer latency (median / max, s).
At the end: the RSS slope (MiB per hour, least squares over 10 s samples) from the moment the
keyframe buffer stopped growing, and the checks: the agent alive, every query answered exactly once,
trace disk under the cap.

Goal (hardening issue): RSS slope under 10 MiB/h once the buffer is full; disk under the cap.
Run: ``python benchmarks/soak.py --minutes 60`` (CI runs ``--minutes 2`` through test_soak).
Exit code 0 when the checks hold (the slope is reported, not checked: a 2-minute run cannot say).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vilasr_ros.ros.env import apply_loopback_environment  # noqa: E402  (before rclpy)

apply_loopback_environment(domain_id=int(os.environ.get("BENCH_DOMAIN_ID", 1 + (os.getpid() + 30) % 100)))

import numpy as np  # noqa: E402
import rclpy  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from vilasr_ros.trace_store import folder_bytes  # noqa: E402


def proc_stats(pid: int) -> dict:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {"rss_mib": int(fields["VmRSS"].split()[0]) / 1024.0, "threads": int(fields["Threads"]),
            "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def disk_mib(root: Path) -> float:
    return folder_bytes(root) / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--every", type=float, default=5.0, help="seconds between queries")
    parser.add_argument("--rate-hz", type=float, default=30.0)
    parser.add_argument("--trace-cap-mb", type=float, default=2048.0, help="agent's trace_max_total_mb")
    parser.add_argument("--source", default=f"rgbd_folder:{REPO / 'test/data/rgbd/open3d_testdata_rgbd'}")
    parser.add_argument("--json", help="also write the samples and summary here")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="vilasr_soak_"))
    traces = tmp / "traces"
    camera = subprocess.Popen(
        [sys.executable, "-m", "vilasr_ros.ros.camera_node", "--ros-args", "-p", f"source:={args.source}",
         "-p", f"rate_hz:={args.rate_hz}", "-p", "loop:=true"],
        stdout=(tmp / "camera.log").open("w"), stderr=subprocess.STDOUT)
    agent = subprocess.Popen(
        [sys.executable, "-m", "vilasr_ros.ros.agent_node", "--ros-args", "--params-file",
         str(REPO / "config" / "agent.yaml"), "-p", "engine:=replay", "-p", f"trace_root:={traces}",
         "-p", f"trace_max_total_mb:={args.trace_cap_mb}", "-p", "remove_floor:=false"],
        stdout=(tmp / "agent.log").open("w"), stderr=subprocess.STDOUT)

    rclpy.init()
    node = rclpy.create_node("soak_client")
    reliable = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
    answers: dict[str, dict] = {}
    duplicates = []
    sent: dict[str, float] = {}
    diagnostics: dict[str, str] = {}

    def on_answer(msg):
        a = json.loads(msg.data)
        if a["id"] in answers:
            duplicates.append(a["id"])
        a["latency_s"] = time.monotonic() - sent.get(a["id"], time.monotonic())
        answers[a["id"]] = a

    def on_diag(msg):
        for s in msg.status:
            if s.name.startswith("vilasr_agent"):
                diagnostics.update({kv.key: kv.value for kv in s.values})

    node.create_subscription(String, "/vilasr_agent/answer", on_answer, reliable)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, QoSProfile(depth=10))
    query_pub = node.create_publisher(String, "/vilasr_agent/query", reliable)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()

    code = 0
    samples = []  # (t_s, rss_mib, keyframes)
    rows = []
    try:
        deadline = time.monotonic() + 120
        while query_pub.get_subscription_count() < 1 or int(diagnostics.get("keyframes", "0")) < 1:
            if time.monotonic() > deadline or agent.poll() is not None:
                raise RuntimeError("the agent did not start (see " + str(tmp / "agent.log") + ")")
            time.sleep(0.2)
        print(f"soak: {args.minutes:g} min, camera {args.rate_hz:g} Hz ({args.source}), a query every {args.every:g} s, "
              f"trace cap {args.trace_cap_mb:g} MiB; logs in {tmp}")
        print(f"{'min':>4} {'RSS MiB':>8} {'threads':>7} {'fds':>4} {'keyframes':>9} {'traces MiB':>10} "
              f"{'answers':>7} {'lat p50 s':>9} {'lat max s':>9} {'dropped':>7}")
        start = time.monotonic()
        next_query, next_sample, next_row, k = start, start, start + 60.0, 0
        minute_answers: list[float] = []
        seen = 0
        while time.monotonic() - start < args.minutes * 60.0:
            now = time.monotonic()
            if agent.poll() is not None:
                raise RuntimeError(f"the agent died (exit {agent.returncode})")
            if now >= next_query:
                qid = f"soak{k}"
                sent[qid] = now
                query_pub.publish(String(data=json.dumps({"id": qid, "question": "Where is the sofa? Go to it.",
                                                          "target": "sofa"})))
                k += 1
                next_query += args.every
            if now >= next_sample:
                st = proc_stats(agent.pid)
                samples.append((now - start, st["rss_mib"], int(diagnostics.get("keyframes", "0"))))
                next_sample += 10.0
            last_row = now - start >= args.minutes * 60.0 - 0.5 and len(rows) < int(np.ceil(args.minutes))
            if now >= next_row or last_row:
                done = list(answers.values())[seen:]
                seen += len(done)
                minute_answers = [a["latency_s"] for a in done]
                st = proc_stats(agent.pid)
                rows.append({"minute": len(rows) + 1, **st, "keyframes": int(diagnostics.get("keyframes", "0")),
                             "traces_mib": disk_mib(traces), "answers": len(answers),
                             "latency_p50_s": statistics.median(minute_answers) if minute_answers else None,
                             "latency_max_s": max(minute_answers) if minute_answers else None,
                             "dropped": int(diagnostics.get("dropped_total", "0"))})
                r = rows[-1]
                lat = (f"{r['latency_p50_s']:9.3f} {r['latency_max_s']:9.3f}" if minute_answers else f"{'-':>9} {'-':>9}")
                print(f"{r['minute']:4d} {r['rss_mib']:8.1f} {r['threads']:7d} {r['fds']:4d} {r['keyframes']:9d} "
                      f"{r['traces_mib']:10.1f} {r['answers']:7d} {lat} {r['dropped']:7d}", flush=True)
                next_row += 60.0
            time.sleep(0.05)
        wait = time.monotonic() + 60
        while len(answers) < k and time.monotonic() < wait:
            time.sleep(0.1)

        # RSS slope after the buffer stopped growing (least squares, MiB per hour).
        full_at = next((t for t, _, kf in samples if kf >= max(s[2] for s in samples)), None)
        tail = [(t, rss) for t, rss, _ in samples if full_at is not None and t >= full_at]
        slope = None
        if len(tail) >= 3:
            t = np.array([x for x, _ in tail]) / 3600.0
            slope = float(np.polyfit(t, np.array([y for _, y in tail]), 1)[0])
        missing = [q for q in sent if q not in answers]
        disk = disk_mib(traces)
        print(f"queries {k}, answered {len(answers)}, missing {len(missing)}, answered twice {len(duplicates)}")
        print(f"buffer full after {full_at:.0f} s; RSS slope since then: "
              + (f"{slope:+.1f} MiB/h over {tail[-1][0] - tail[0][0]:.0f} s" if slope is not None else "n/a (too short)"))
        print(f"trace disk {disk:.1f} MiB (cap {args.trace_cap_mb:g} MiB); agent alive: {agent.poll() is None}")
        ok = agent.poll() is None and not missing and not duplicates and disk <= args.trace_cap_mb
        code = 0 if ok else 1
        if args.json:
            Path(args.json).write_text(json.dumps({"rows": rows, "samples": samples, "slope_mib_per_h": slope,
                                                   "queries": k, "answered": len(answers), "missing": missing,
                                                   "duplicates": duplicates, "trace_disk_mib": disk}, indent=1))
    except RuntimeError as exc:
        print(f"soak: {exc}")
        code = 1
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
        for p in (agent, camera):
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in (agent, camera):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        if code == 0:
            shutil.rmtree(traces, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
