"""A robot's Wi-Fi to a GPU server: the same query through the ``openai`` engine and through ``vilasr serve``.

The server side runs in a network namespace made here, joined to this one by a veth pair shaped with
``tc`` (token bucket, ``--mbit`` each way) plus ``--rtt-ms`` of round trip added by a user-space
delaying proxy (this kernel has no ``sch_netem``). In the namespace: a scripted OpenAI-compatible
server and a ``vilasr serve`` with the same scripted model (the replay engine, five turns: four
drawing turns and an answer). The robot asks the same 16-frame question (640×480 frames, the model
sees 644×476) through (a) the ``openai`` engine — every turn re-sends every frame — and (b) the
``remote`` engine — frames once, turns streamed back. Prints wall time and bytes sent for each,
and whether the two traces' chat text is identical.

Run as root: ``python benchmarks/remote_link.py [--mbit 50] [--rtt-ms 20]``. Exit code 3 when network
namespaces cannot be made here (no privileges).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

SCRIPT = [
    "<think> the sofa </think> Action: Object Mapper\n```json\n[{'index': 3, 'bbox_2d': [150, 200, 420, 400], 'label': 'sofa'}]\n```",
    "<think> again </think> Action: Object Mapper\n```json\n[{'index': 5, 'bbox_2d': [100, 180, 380, 420], 'label': 'sofa'}]\n```",
    "<think> the chair </think> Action: Object Mapper\n```json\n[{'index': 9, 'bbox_2d': [300, 150, 500, 400], 'label': 'chair'}]\n```",
    "<think> a path </think> Action: Path Tracer\n```json\n[{'index': 17, 'start_point_2d': [200, 300], 'end_point_2d': [400, 350], 'label': 'route'}]\n```",
    "<think> done </think> Action: Answer\n<answer> beside the window </answer>",
]


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, check=check)


def wait_http(url: str, timeout: float = 60.0) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mbit", type=float, default=50.0, help="link bandwidth each way (Mbit/s)")
    parser.add_argument("--rtt-ms", type=float, default=20.0, help="added round-trip time (ms)")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()

    tag = f"{os.getpid() % 10000}"
    ns, host_if, ns_if = f"vlink{tag}", f"vlh{tag}", f"vln{tag}"
    octet = 100 + os.getpid() % 100
    host_ip, ns_ip = f"10.213.{octet}.1", f"10.213.{octet}.2"
    made = sh("ip", "netns", "add", ns, check=False)
    if made.returncode != 0:
        print(f"remote_link: network namespaces are not permitted here: {made.stderr.strip()}")
        return 3
    procs: list[subprocess.Popen] = []
    tmp = Path(f"/tmp/vilasr_remote_link_{tag}")
    tmp.mkdir(exist_ok=True)
    try:
        sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        sh("ip", "link", "set", ns_if, "netns", ns)
        sh("ip", "addr", "add", f"{host_ip}/30", "dev", host_if)
        sh("ip", "link", "set", host_if, "up")
        sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{ns_ip}/30", "dev", ns_if)
        sh("ip", "netns", "exec", ns, "ip", "link", "set", ns_if, "up")
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        rate = f"{args.mbit:g}mbit"
        shaped = [sh("tc", "qdisc", "add", "dev", host_if, "root", "tbf", "rate", rate, "burst", "64kb",
                     "latency", "200ms", check=False),
                  sh("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", ns_if, "root", "tbf", "rate", rate,
                     "burst", "64kb", "latency", "200ms", check=False)]
        if any(r.returncode for r in shaped):
            print(f"remote_link: tc token bucket unavailable: {shaped[0].stderr.strip() or shaped[1].stderr.strip()}")
            return 3
        (tmp / "script.json").write_text(json.dumps(SCRIPT))
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        procs.append(subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, str(REPO / "test" / "misbehaving_server.py"),
                                       "18000", "--host", ns_ip, "--script", str(tmp / "script.json")],
                                      stdout=(tmp / "openai.log").open("w"), stderr=subprocess.STDOUT, env=env))
        procs.append(subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "vilasr_ros.cli", "serve",
                                       "--engine", "replay", "--responses", str(tmp / "script.json"), "--host", ns_ip,
                                       "--port", "18080"],
                                      stdout=(tmp / "serve.log").open("w"), stderr=subprocess.STDOUT, env=env))
        from link_proxy import LinkProxy

        delay = args.rtt_ms / 2000.0
        proxy_a = LinkProxy((ns_ip, 18000), delay_s=delay)
        proxy_b = LinkProxy((ns_ip, 18080), delay_s=delay)
        wait_http(proxy_b.url("/health"))
        wait_http(f"http://{ns_ip}:18000/health")

        from vilasr_ros.engines import create_engine
        from vilasr_ros.reasoner import Reasoner, ReasonerConfig
        from vilasr_ros.sources import open_source

        with open_source(f"rgbd_folder:{REPO / 'test/data/rgbd/open3d_testdata_rgbd'}") as source:
            five = [f.rgb for f in source]
        frames = [five[k % len(five)].copy() for k in range(16)]
        config = ReasonerConfig(max_turns=6, max_pixels=351232)
        figures = {}
        traces = {}
        for name, engine in (("openai", create_engine("openai", base_url=proxy_a.url("/v1"), model="m", timeout_s=120.0,
                                                       max_retries=0)),
                             ("serve", create_engine("remote", base_url=proxy_b.url(), timeout_s=120.0))):
            proxy = proxy_a if name == "openai" else proxy_b
            Reasoner(engine, config).run(frames[:1], "warm up", "free-form")  # imports, first connection
            proxy.reset_counts()
            start = time.monotonic()
            trace = Reasoner(engine, config).run(frames, "Where is the sofa?", "free-form")
            figures[f"{name}_s"] = round(time.monotonic() - start, 3)
            figures[f"{name}_sent_mb"] = round(proxy.sent / 1e6, 3)
            figures[f"{name}_finish"] = trace.finish_reason
            traces[name] = trace
        figures["chat_text_identical"] = traces["openai"].chat_text == traces["serve"].chat_text
        figures["speedup"] = round(figures["openai_s"] / figures["serve_s"], 2)
        print(f"link: {args.mbit:g} Mbit/s each way (tc tbf), {args.rtt_ms:g} ms round trip; 16 frames 640x480 "
              f"(model 644x476), 5 turns")
        print(f"{'path':<24} {'wall s':>8} {'sent MB':>8} finish")
        print(f"{'(a) openai engine':<24} {figures['openai_s']:8.2f} {figures['openai_sent_mb']:8.2f} {figures['openai_finish']}")
        print(f"{'(b) vilasr serve':<24} {figures['serve_s']:8.2f} {figures['serve_sent_mb']:8.2f} {figures['serve_finish']}")
        print(f"vilasr serve is {figures['speedup']:.1f}x faster; identical chat text: {figures['chat_text_identical']}")
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=1))
        return 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        sh("ip", "netns", "del", ns, check=False)
        sh("ip", "link", "del", host_if, check=False)


if __name__ == "__main__":
    sys.exit(main())
