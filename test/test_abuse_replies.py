"""Servers that reply too much or too slowly (issue 28 #3, #6) and a query cancelled before it started
(#12): the robot's engines stay within their byte caps and deadlines, and `vilasr serve` answers 499."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from vilasr_ros.engines import create_engine
from vilasr_ros.reasoner import Reasoner, ReasonerConfig

pytest.importorskip("requests")

BODY_MB = 300


class _Huge(BaseHTTPRequestHandler):
    """Every request: HTTP 500 (or a 200 /health) with a 300 MB body, streamed as long as it is read."""

    def _huge(self, status: int):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(BODY_MB * 2**20))
        self.end_headers()
        chunk = b'{"detail": "' + b"x" * (2**20 - 12)
        try:
            for _ in range(BODY_MB):
                self.wfile.write(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._huge(500)

    def do_GET(self):
        self._huge(200)

    def log_message(self, *args):
        pass


class _Drip(BaseHTTPRequestHandler):
    """Sends its status line and headers one byte every 0.5 s, for a minute."""

    def _drip(self):
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + b"X-Slow: " + b"y" * 200 + b"\r\n\r\n"
        try:
            for byte in head:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.5)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._drip()

    do_GET = _drip

    def log_message(self, *args):
        pass


@pytest.fixture()
def server(request):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), request.param)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()


def _frames():
    return [Image.new("RGB", (112, 112), (k * 40, 60, 90)) for k in range(2)]


def _peak_mb(call):
    """``(result, peak MB of Python allocations during call)`` (tracemalloc sees every bytes object a
    reply is read into)."""
    import tracemalloc

    tracemalloc.start()
    try:
        result = call()
        return result, tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("server", [_Huge], indirect=True)
@pytest.mark.parametrize("engine_name", ["remote", "openai"])
def test_a_huge_error_reply_is_read_within_its_cap(server, engine_name):
    """#3: a 300 MB HTTP 500 body: the query ends with a one-line error naming HTTP 500, and the
    process's peak memory grows by far less than the body (the cap is 64 KiB)."""
    pytest.importorskip("openai" if engine_name == "openai" else "requests")
    base = server + ("/v1" if engine_name == "openai" else "")
    options = {"max_retries": 0, "model": "m"} if engine_name == "openai" else {}
    engine = create_engine(engine_name, base_url=base, timeout_s=30.0, **options)
    start = time.monotonic()
    trace, peak = _peak_mb(lambda: Reasoner(engine, ReasonerConfig(max_turns=2, max_pixels=12544)).run(
        _frames(), "Where?", "free-form"))
    assert trace.finish_reason == "error" and "HTTP 500" in trace.error and "\n" not in trace.error
    assert time.monotonic() - start < 20
    assert peak < 20, f"{peak:.0f} MB allocated while reading a {BODY_MB} MB error reply"


@pytest.mark.parametrize("server", [_Huge], indirect=True)
def test_a_huge_health_document_is_not_a_vilasr_serve(server):
    from vilasr_ros.engines.remote import detect_server

    found, peak = _peak_mb(lambda: detect_server(server, timeout_s=3.0))
    assert found is None and peak < 20


@pytest.mark.parametrize("server", [_Drip], indirect=True)
def test_a_server_dripping_its_headers_is_cut_off_by_the_wall_clock(server):
    """#6: headers one byte every 0.5 s (each read well inside the socket timeout): a remote query with
    a 2 s deadline ends within a few seconds, and `auto` detection gives /health its 3 s."""
    from vilasr_ros.engines.remote import detect_server

    engine = create_engine("remote", base_url=server, timeout_s=2.0)
    start = time.monotonic()
    trace = Reasoner(engine, ReasonerConfig(max_turns=2, max_pixels=12544)).run(_frames(), "Where?", "free-form")
    assert trace.finish_reason == "error" and "within 2 s" in trace.error
    assert time.monotonic() - start < 6
    start = time.monotonic()
    assert detect_server(server, timeout_s=3.0) is None
    assert time.monotonic() - start < 5


def test_a_query_whose_client_left_before_it_started_is_a_499_not_a_500(tmp_path):
    """#12: one worker busy, a second query queued whose client disconnects: when a worker takes it,
    it is answered 499 and logged in one line — no 500, no traceback, no error counted."""
    import requests
    from test_serve import _free_port, _serve_process, stop

    port = _free_port()
    proc, url, log = _serve_process(tmp_path, port, delay_s=1.0, workers=1, max_queue=4)
    try:
        from vilasr_ros.engines.remote import encode_frame

        files = [("frames", ("f.png", encode_frame(Image.new("RGB", (112, 112))), "image/png"))]
        busy = threading.Thread(target=lambda: requests.post(
            url + "/v1/queries", data={"query": json.dumps({"question": "first"})}, files=files, timeout=60))
        busy.start()
        time.sleep(0.5)
        with pytest.raises(requests.exceptions.ReadTimeout):  # queued behind the first, then gone
            requests.post(url + "/v1/queries", data={"query": json.dumps({"question": "second"})}, files=files,
                          timeout=(5, 0.5))
        busy.join(timeout=60)
        deadline = time.monotonic() + 20
        while "went away before the query started" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        metrics = requests.get(url + "/metrics", timeout=5).json()
        text = log.read_text()
        assert "went away before the query started" in text and "Traceback" not in text
        assert metrics["errors"] == 0 and metrics["running"] == 0 and metrics["queued"] == 0
        assert socket.create_connection(("127.0.0.1", port), timeout=5)  # still serving
    finally:
        stop(proc)
