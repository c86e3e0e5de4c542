"""An OpenAI-compatible chat-completions server on 127.0.0.1 that misbehaves on request.

Raw sockets (no framework between the test and the bytes), one thread per connection. Each POST to
``/v1/chat/completions`` takes the next *behaviour* from a queue (``push``) — or the default, a
plain answer — and the tests count what was asked (``requests``):

- ``{"text": T, "finish_reason": "stop"|"length", "usage": U}``: a well-formed reply carrying ``T``
  (any text, lone surrogates included) and any ``usage`` object;
- ``{"raw": BYTES, "status": N}``: exactly this body with status N (malformed JSON, wrong shapes);
- ``{"drip_s": S}``: a well-formed reply sent one byte every S seconds (headers included);
- ``{"huge_bytes": N}``: a reply whose content is N bytes of text;
- ``{"close": True}``: the connection is closed without a reply;
- ``{"hang": True}``: the request is read and never answered.

Run standalone: ``python test/misbehaving_server.py PORT [--host H] [--script TURNS.json]`` (answers
every call with the default, or each conversation with the script's turns in order).
"""

from __future__ import annotations

import json
import queue
import socket
import threading
import time
from typing import Any

DEFAULT_TEXT = "<think> done </think> Action: Answer\n<answer> ok </answer>"


def reply_body(text: str, finish_reason: str = "stop", usage: Any = None) -> bytes:
    body = {"id": "chatcmpl-fuzz", "object": "chat.completion", "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5} if usage is None else usage}
    # json.dumps escapes lone surrogates as \\udXXX (what a real server's JSON encoder writes)
    return json.dumps(body).encode("ascii")


class MisbehavingServer:
    """See the module docstring. ``port`` is chosen by the OS; ``url`` is the ``/v1`` root."""

    def __init__(self, port: int = 0, host: str = "127.0.0.1", script: list[str] | None = None):
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, port))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.url = f"http://{host}:{self.port}/v1"
        self.script = script  # when given: each conversation is answered with these turns, in order
        self._script_position = 0
        self.behaviours: queue.Queue = queue.Queue()
        self.requests = 0
        self.bytes_received = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def push(self, *behaviours: dict) -> None:
        for b in behaviours:
            self.behaviours.put(b)

    def clear(self) -> None:
        while not self.behaviours.empty():
            self.behaviours.get_nowait()

    def close(self) -> None:
        self._stop.set()
        self.listener.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _read_request(self, conn: socket.socket) -> bytes | None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        while len(body) < length:
            chunk = conn.recv(1 << 20)
            if not chunk:
                return None
            body += chunk
        self.bytes_received += len(head) + 4 + len(body)
        self._last_body = body
        return head

    def _handle(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(120)
            head = self._read_request(conn)
            if head is None:
                return
            if head.startswith(b"GET"):
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n"
                             b"Connection: close\r\n\r\n{\"ok\":true}")
                return
            self.requests += 1
            try:
                behaviour = self.behaviours.get_nowait()
            except queue.Empty:
                if self.script:
                    try:  # a conversation's first call (system + first user message) starts the script over
                        if len(json.loads(self._last_body).get("messages", [])) <= 2:
                            self._script_position = 0
                    except (ValueError, AttributeError):
                        pass
                    behaviour = {"text": self.script[self._script_position % len(self.script)]}
                    self._script_position += 1
                else:
                    behaviour = {"text": DEFAULT_TEXT}
            if behaviour.get("close"):
                return
            if behaviour.get("hang"):
                time.sleep(60)
                return
            status = int(behaviour.get("status", 200))
            if "raw" in behaviour:
                body = behaviour["raw"] if isinstance(behaviour["raw"], bytes) else str(behaviour["raw"]).encode("utf-8", "surrogatepass")
            elif "huge_bytes" in behaviour:
                body = reply_body("x" * int(behaviour["huge_bytes"]))
            else:
                body = reply_body(behaviour.get("text", DEFAULT_TEXT), behaviour.get("finish_reason", "stop"),
                                  behaviour.get("usage"))
            message = (f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                       "Connection: close\r\n\r\n").encode("ascii") + body
            if "drip_s" in behaviour:
                for i in range(len(message)):
                    if self._stop.is_set():
                        return
                    conn.sendall(message[i:i + 1])
                    time.sleep(float(behaviour["drip_s"]))
            else:
                conn.sendall(message)
        except OSError:
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int, nargs="?", default=0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--script", help="JSON list of turns answered in order, round and round")
    args = parser.parse_args()
    script = json.loads(open(args.script, encoding="utf-8").read()) if args.script else None
    server = MisbehavingServer(args.port, args.host, script)
    print(server.url, flush=True)
    threading.Event().wait()
