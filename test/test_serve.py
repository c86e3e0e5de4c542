"""`vilasr serve` and the robot's `remote` engine: the same trace as a local run, frames sent once,
bounded under load, refusing bad requests, and a client that goes away cancels its query."""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
requests = pytest.importorskip("requests")

from conftest import REPO, stop_processes as stop  # noqa: E402
from misbehaving_server import MisbehavingServer  # noqa: E402
from vilasr_ros.engines import create_engine  # noqa: E402
from vilasr_ros.reasoner import Reasoner, ReasonerConfig  # noqa: E402
from vilasr_ros.sources import open_source  # noqa: E402

sys.path.insert(0, str(REPO / "benchmarks"))
from link_proxy import LinkProxy  # noqa: E402

FIVE_TURNS = [
    "<think> the sofa </think> Action: Object Mapper\n```json\n[{'index': 11, 'bbox_2d': [47, 93, 209, 202], 'label': 'sofa'}]\n```",
    "<think> and again </think> Action: Object Mapper\n```json\n[{'index': 12, 'bbox_2d': [121, 94, 295, 193], 'label': 'sofa'}]\n```",
    "<think> the door </think> Action: Object Mapper\n```json\n[{'index': 12, 'bbox_2d': [5, 20, 90, 230], 'label': 'door'}]\n```",
    "<think> a path </think> Action: Path Tracer\n```json\n[{'index': 19, 'start_point_2d': [50, 120], 'end_point_2d': [200, 150], 'label': 'route'}]\n```",
    "<think> done </think> Action: Answer\n<answer> The sofa stands beside the door. </answer>",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_serve(tmp_path: Path, *extra: str, script=FIVE_TURNS, env=None) -> tuple[subprocess.Popen, str]:
    """A `vilasr serve` subprocess with a replay engine; returns (process, base url)."""
    (tmp_path / "script.json").write_text(json.dumps(script))
    port = _free_port()
    log = (tmp_path / f"serve_{port}.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "vilasr_ros.cli", "serve", "--engine", "replay", "--responses",
                             str(tmp_path / "script.json"), "--port", str(port), *extra],
                            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(url + "/health", timeout=1).ok:
                return proc, url
        except requests.RequestException:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("vilasr serve did not start: " + (tmp_path / f"serve_{port}.log").read_text()[-2000:])


@pytest.fixture(scope="module")
def frames():
    with open_source("sim:demo") as source:
        return [f.rgb for f in source]


def test_same_trace_as_a_local_run_with_frames_sent_once(tmp_path, frames):
    config = ReasonerConfig(max_turns=6)
    # (a) the openai engine: the loop on the robot, every turn re-sends every frame
    scripted = MisbehavingServer(script=FIVE_TURNS)
    proxy_a = LinkProxy(("127.0.0.1", scripted.port))
    engine_a = create_engine("openai", base_url=proxy_a.url("/v1"), model="m", timeout_s=30.0, max_retries=0)
    trace_a = Reasoner(engine_a, config).run(frames, "Where is the sofa?", "free-form")
    # (b) a vilasr serve with the same scripted model: frames once, turns streamed back
    proc, url = start_serve(tmp_path)
    proxy_b = LinkProxy(("127.0.0.1", int(url.rsplit(":", 1)[1])))
    try:
        engine_b = create_engine("remote", base_url=proxy_b.url())
        trace_b = Reasoner(engine_b, config).run(frames, "Where is the sofa?", "free-form")
    finally:
        stop(proc)
        scripted.close()
    assert trace_a.finish_reason == trace_b.finish_reason == "stop" and len(trace_a.turns) == 5
    assert trace_b.chat_text == trace_a.chat_text and trace_b.answer == trace_a.answer
    assert [im.tobytes() for im in trace_b.pil_images] == [im.tobytes() for im in trace_a.pil_images]
    frames_bytes = engine_b.bytes_sent  # the 16 frames as PNG, encoded once
    print(f"robot -> server bytes for one 16-frame, 5-turn query: openai engine {proxy_a.sent / 1e6:.2f} MB, "
          f"vilasr serve {proxy_b.sent / 1e6:.3f} MB (the 16 PNG frames: {frames_bytes / 1e6:.3f} MB)")
    assert proxy_b.sent <= 1.1 * frames_bytes
    assert proxy_a.sent > 4 * frames_bytes  # five requests, each with every frame


@pytest.fixture()
def slow_server(tmp_path):
    """vilasr serve, 2 workers, 2 waiting at most, a scripted model that takes 0.2 s a turn."""
    box = "<think> x </think> Action: Object Mapper\n```json\n[{'index': 1, 'bbox_2d': [5, 5, 60, 60], 'label': 'sofa'}]\n```"
    (tmp_path / "script.json").write_text(json.dumps([box, box.replace("sofa", "door"), box.replace("sofa", "chair"), FIVE_TURNS[4]]))
    port = _free_port()
    log = tmp_path / "serve.log"
    code = ("import logging; logging.basicConfig(level=logging.INFO)\n"
            "from vilasr_ros.engines import create_engine; from vilasr_ros.serve import ServeConfig, serve\n"
            f"serve(create_engine('replay', responses={str(tmp_path / 'script.json')!r}, delay_s=0.2), "
            f"ServeConfig(port={port}, workers=2, max_queue=2))\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(url + "/health", timeout=1).ok:
                break
        except requests.RequestException:
            time.sleep(0.2)
    yield proc, url, log
    stop(proc)


def test_eight_clients_ten_queries_each_answered_or_429(slow_server, frames):
    proc, url, log = slow_server
    small = frames[:4]
    results: list[tuple[str, float]] = []
    lock = threading.Lock()

    def client(k: int) -> None:
        engine = create_engine("remote", base_url=url, timeout_s=30.0)
        for _ in range(10):
            start = time.monotonic()
            trace = Reasoner(engine, ReasonerConfig(max_turns=5)).run(small, "Where is the sofa?")
            outcome = trace.finish_reason if trace.finish_reason == "stop" else ("429" if "HTTP 429" in (trace.error or "") else trace.error)
            with lock:
                results.append((outcome, time.monotonic() - start))
            if outcome == "429":
                time.sleep(float(trace.error.split("retry after ")[1].split(" s")[0]))  # honour Retry-After

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a client hung"
    outcomes = [o for o, _ in results]
    assert len(results) == 80 and set(outcomes) <= {"stop", "429"}, set(outcomes)
    latency = sorted(d for o, d in results if o == "stop")
    p99 = latency[min(len(latency) - 1, int(0.99 * len(latency)))]
    print(f"8 clients x 10 queries: {outcomes.count('stop')} answered, {outcomes.count('429')} refused (429); "
          f"answered latency p50 {statistics.median(latency):.2f} s, p99 {p99:.2f} s")
    assert outcomes.count("stop") >= 20
    metrics = requests.get(url + "/metrics", timeout=5).json()
    assert metrics["rejected_busy"] == outcomes.count("429") and metrics["running"] == 0 and metrics["queued"] == 0


def test_a_client_going_away_cancels_its_query(slow_server, frames):
    proc, url, log = slow_server
    engine = create_engine("remote", base_url=url, timeout_s=30.0)
    long_script_request = Reasoner(engine, ReasonerConfig(max_turns=5))
    cancel = threading.Event()

    def on_turn(trace, turn):
        cancel.set()  # leave after the first turn; closing the stream tells the server

    trace = long_script_request.run(frames[:4], "Where is the sofa?", cancel=cancel, on_turn=on_turn)
    assert trace.finish_reason == "cancelled"
    deadline = time.monotonic() + 10
    while requests.get(url + "/metrics", timeout=5).json()["cancelled_by_client"] < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert requests.get(url + "/metrics", timeout=5).json()["cancelled_by_client"] == 1
    assert "the client went away" in log.read_text()


def test_a_server_killed_mid_query_is_a_clear_error_in_time(slow_server, frames):
    proc, url, log = slow_server
    engine = create_engine("remote", base_url=url, timeout_s=10.0)
    killer = threading.Timer(0.3, lambda: proc.send_signal(signal.SIGKILL))
    killer.start()
    start = time.monotonic()
    trace = Reasoner(engine, ReasonerConfig(max_turns=5)).run(frames[:4], "Where is the sofa?")
    assert time.monotonic() - start < 10.0
    assert trace.finish_reason == "error" and ("closed the stream" in trace.error or "cannot reach" in trace.error)


@pytest.fixture(scope="module")
def token_server(tmp_path_factory):
    proc, url = start_serve(tmp_path_factory.mktemp("token_server"), env={"VILASR_SERVE_TOKEN": "s3cret-token"})
    yield url
    stop(proc)


@pytest.mark.parametrize("case", ["no frames", "100 frames", "not an image", "50 MB body", "wrong token",
                                  "malformed JSON", "unknown field"])
def test_bad_requests_get_a_4xx_with_a_message(token_server, frames, case):
    url = token_server
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frames[0]).save(buf, format="PNG")
    png = buf.getvalue()
    headers = {"Authorization": "Bearer s3cret-token"}
    query = json.dumps({"question": "Where is the sofa?"})
    files = [("frames", ("f.png", png, "image/png"))]
    if case == "no frames":
        files = []
    elif case == "100 frames":
        files = files * 100
    elif case == "not an image":
        files = [("frames", ("f.png", b"this is text", "image/png"))]
    elif case == "50 MB body":
        files = [("frames", ("big.png", b"\0" * (50 * 2**20 + 1), "image/png"))]
    elif case == "wrong token":
        headers = {"Authorization": "Bearer nope"}
    elif case == "malformed JSON":
        query = "{not json"
    elif case == "unknown field":
        query = json.dumps({"question": "?", "colour": "red"})
    response = requests.post(url + "/v1/queries", data={"query": query}, files=files or None, headers=headers,
                             timeout=60)
    assert 400 <= response.status_code < 500, (case, response.status_code, response.text[:200])
    detail = response.json()["detail"]
    assert detail and isinstance(detail, (str, list)), response.text
    # still serving
    ok = requests.post(url + "/v1/queries", data={"query": json.dumps({"question": "Where is the sofa?",
                                                                       "loop": {"max_turns": 6}})},
                       files=[("frames", ("f.png", png, "image/png"))], headers={"Authorization": "Bearer s3cret-token"},
                       timeout=60)
    assert ok.status_code == 200 and ok.json()["trace"]["finish_reason"] in ("stop", "ToolError")
    assert requests.get(url + "/health", timeout=5).json()["service"] == "vilasr-serve"


def test_openapi_document_describes_the_api(token_server):
    doc = requests.get(token_server + "/openapi.json", timeout=10).json()
    assert {"/v1/queries", "/health", "/ready", "/metrics"} <= set(doc["paths"])
    assert "post" in doc["paths"]["/v1/queries"]


def test_auto_detects_a_vilasr_serve_from_its_health_document(tmp_path):
    from vilasr_ros.engines import choose_engine

    proc, url = start_serve(tmp_path)
    scripted = MisbehavingServer()
    try:
        assert choose_engine("auto", base_url=url)[0] == "remote"
        assert choose_engine("auto", base_url=scripted.url)[0] == "openai"
    finally:
        stop(proc)
        scripted.close()


def test_remote_link_benchmark_in_a_shaped_network_namespace(tmp_path):
    """50 Mbit/s (tc token bucket on a veth pair) and 20 ms round trip: both paths give the same chat text,
    and vilasr serve sends a third of the bytes or less (frames once, not every turn). The wall times are
    the benchmark's figures (printed), not asserted: a loaded machine changes them, not the bytes."""
    probe = subprocess.run(["ip", "netns", "add", f"vprobe{os.getpid() % 10000}"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"network namespaces are not permitted here: {probe.stderr.strip()}")
    subprocess.run(["ip", "netns", "del", f"vprobe{os.getpid() % 10000}"], capture_output=True)
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "remote_link.py"), "--json", str(tmp_path / "r.json")],
                         capture_output=True, text=True, timeout=600)
    print(out.stdout[-3000:])
    if out.returncode == 3:
        pytest.skip(out.stdout.strip().splitlines()[-1])
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["chat_text_identical"]
    assert result["openai_sent_mb"] >= 3.0 * result["serve_sent_mb"], result


@pytest.mark.parametrize("body,content_type,shown", [
    ('{"detail": "queue full"}', "application/json", "queue full"),
    ('[{"loc": ["body"], "msg": "bad"}]', "application/json", "[{"),  # JSON, but not FastAPI's object
    ('{"detail": ["frame 3", "not an image"]}', "application/json", "not an image"),
    ("<html>proxy error</html>", "text/html", "proxy error"),
])
def test_a_refusal_of_any_shape_is_a_clear_engine_error(body, content_type, shown, frames):
    """What a server (or a proxy in front of it) says when it refuses becomes the error's text."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Refuse(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            data = body.encode()
            self.send_response(503)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        engine = create_engine("remote", base_url=f"http://127.0.0.1:{server.server_port}", timeout_s=10.0)
        trace = Reasoner(engine, ReasonerConfig(max_turns=2)).run(frames[:2], "Where is the sofa?")
    finally:
        server.shutdown()
        server.server_close()
    assert trace.finish_reason == "error" and "refused the query: HTTP 503" in trace.error and shown in trace.error


def _serve_process(tmp_path, port: int, nofile: int | None = None, delay_s: float = 0.2, **config):
    """A `vilasr serve` subprocess (replay engine, ``delay_s`` a turn, 4 turns) with ServeConfig fields;
    optionally under an open-file limit (soft = hard = ``nofile``)."""
    import resource

    box = "<think> x </think> Action: Object Mapper\n```json\n[{'index': 1, 'bbox_2d': [5, 5, 60, 60], 'label': 'sofa'}]\n```"
    (tmp_path / "script.json").write_text(json.dumps([box, box, box, FIVE_TURNS[4]]))
    fields = ", ".join(f"{k}={v!r}" for k, v in {"port": port, **config}.items())
    code = ("import logging; logging.basicConfig(level=logging.INFO)\n"
            "from vilasr_ros.engines import create_engine; from vilasr_ros.serve import ServeConfig, serve\n"
            f"serve(create_engine('replay', responses={str(tmp_path / 'script.json')!r}, delay_s={delay_s}), "
            f"ServeConfig({fields}))\n")

    def limit():
        if nofile:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    log = tmp_path / f"serve_{port}.log"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=log.open("w"), stderr=subprocess.STDOUT, preexec_fn=limit)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(url + "/health", timeout=1).ok:
                return proc, url, log
        except requests.RequestException:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("vilasr serve did not start: " + log.read_text()[-2000:])


def test_a_flood_of_slow_connections_and_uploads_leaves_health_answering(tmp_path):
    """Issue 28 must-hold 2: 1,100 connections sending their headers slowly and 50 clients uploading
    slowly against a server limited to 1,024 open files: /health answers every probe throughout (its
    latency printed), the server's fds stay under the limit, refused uploads are 503 with Retry-After,
    accept errors are logged at most once a second, and the server lives."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 2400:
        pytest.skip(f"the test process needs 2400 open files (hard limit {hard})")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2400), hard))
    port = _free_port()
    proc, url, log = _serve_process(tmp_path, port, nofile=1024, header_timeout_s=5.0, body_timeout_s=5.0, max_uploads=8)
    slow: list[socket.socket] = []
    uploads: list[socket.socket] = []
    health_s: list[float] = []
    fds: list[int] = []
    stop_probe = threading.Event()

    def probe():
        while not stop_probe.is_set():
            start = time.monotonic()
            try:
                ok = requests.get(url + "/health", timeout=5).ok
            except requests.RequestException:
                ok = False
            health_s.append(time.monotonic() - start if ok else float("inf"))
            fds.append(len(os.listdir(f"/proc/{proc.pid}/fd")))
            time.sleep(0.2)

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    started = time.monotonic()
    try:
        for k in range(1100):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # never finishes its head
            slow.append(s)
        refused = 0
        for k in range(50):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"POST /v1/queries HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                      b"Content-Length: 1000000\r\n\r\n--b\r\n")  # a body that will never arrive whole
            uploads.append(s)
        time.sleep(1.0)
        for s in uploads:
            s.settimeout(0.2)
            try:
                head = s.recv(4096).decode("latin-1")
            except (socket.timeout, ConnectionError):
                continue
            if head.startswith("HTTP/1.1 503"):
                assert "retry-after: 1" in head.lower(), head
                refused += 1
        time.sleep(6.0)  # the header and body timeouts pass while the probe keeps asking
    finally:
        stop_probe.set()
        prober.join(timeout=10)
        for s in slow + uploads:
            s.close()
    elapsed_s = time.monotonic() - started
    assert proc.poll() is None, log.read_text()[-3000:]
    metrics = requests.get(url + "/metrics", timeout=5).json()
    stop(proc)
    text = log.read_text()
    print(f"/health: {len(health_s)} probes, max {max(health_s):.3f} s; fds max {max(fds)}; uploads refused {refused}; "
          f"guards {dict((k, metrics[k]) for k in ('slow_headers_closed', 'connections_refused', 'slow_bodies', 'uploads_refused'))}")
    # Every probe answered (a refused or unanswered one is inf). Its latency is a figure for the note and
    # the benchmark, not asserted tightly: a loaded CI machine changes it (0.63 s max measured alone).
    assert health_s and max(health_s) < 5.0, sorted(health_s)[-5:]
    assert max(fds) < 1024
    assert refused >= 40 and metrics["uploads_refused"] >= 40  # 8 read at once, the rest refused at the door
    assert metrics["slow_headers_closed"] >= 1100 - 512  # the oldest slow heads made room
    accept_errors = [line for line in text.splitlines() if "accept" in line and ("rror" in line or "open files" in line)]
    assert len(accept_errors) <= elapsed_s + 1  # at most one line a second
    assert "Traceback" not in text


def test_a_client_that_does_not_stream_and_goes_away_cancels_its_query(tmp_path, frames):
    """Issue 28 #7: a plain (non-streaming) POST whose client disconnects cancels its query."""
    from vilasr_ros.engines.remote import encode_frame
    from vilasr_ros.protocol import resize_for_model, to_rgb
    from PIL import Image

    port = _free_port()
    proc, url, log = _serve_process(tmp_path, port, delay_s=2.0)  # 8 s of model turns
    try:
        image = resize_for_model(to_rgb(Image.fromarray(frames[0])), 351232)
        files = [("frames", ("f.png", encode_frame(image), "image/png"))]
        with pytest.raises(requests.exceptions.ReadTimeout):  # the client gives up after 0.5 s
            requests.post(url + "/v1/queries", data={"query": json.dumps({"question": "Where is the sofa?"})},
                          files=files, timeout=(5, 0.5))
        deadline = time.monotonic() + 30
        while requests.get(url + "/metrics", timeout=5).json()["cancelled_by_client"] < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        metrics = requests.get(url + "/metrics", timeout=5).json()
        assert metrics["cancelled_by_client"] == 1 and metrics["errors"] == 0
    finally:
        stop(proc)


def test_a_served_qwen3_vl_refuses_a_robot_that_would_read_its_boxes_as_vilasr_pixels(tmp_path, tiny_qwen3_dir, frames):
    """`vilasr serve` with a Qwen3-VL (the tiny one, transformers): /health names the family; a robot
    whose loop reads ViLaSR's pixel coordinates gets a one-line refusal naming the fix, never a trace
    drawn in the wrong place; the robot set to qwen3_vl gets the server's trace."""
    from vilasr_ros.engines import SamplingConfig

    port = _free_port()
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "vilasr_ros.cli", "serve", "--engine", "transformers", "--model",
                             str(tiny_qwen3_dir), "--device", "cpu", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                health = requests.get(url + "/health", timeout=1).json()
                break
            except requests.RequestException:
                assert time.monotonic() < deadline and proc.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
                time.sleep(0.3)
        assert health["model_family"] == "qwen3_vl" and health["engine"]["model_family"] == "qwen3_vl"
        engine = create_engine("remote", base_url=url, timeout_s=60.0)
        short = SamplingConfig(temperature=0.0, max_tokens=8)
        trace = Reasoner(engine, ReasonerConfig(max_turns=1, sampling=short)).run(frames[:2], "Where is the sofa?",
                                                                                     "free-form")
        assert trace.finish_reason == "error" and "this server's model is qwen3_vl" in trace.error
        assert "set model_family: qwen3_vl" in trace.error and not trace.turns
        trace = Reasoner(engine, ReasonerConfig(max_turns=1, sampling=short, model_family="qwen3_vl")).run(
            frames[:2], "Where is the sofa?", "free-form")
        assert trace.finish_reason != "error", trace.error
        assert len(trace.turns) == 1 and trace.settings["model_family"] == "qwen3_vl"
        assert all(im.size[0] % 32 == 0 and im.size[1] % 32 == 0 for im in trace.images)
    finally:
        stop(proc)
