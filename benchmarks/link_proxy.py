"""A TCP proxy on 127.0.0.1 that counts the bytes each way and can delay them (a link emulator).

Used by ``benchmarks/remote_link.py`` (a robot's Wi-Fi: the bandwidth comes from ``tc`` on a veth
pair; the delay from here, since this kernel has no ``sch_netem``) and by ``test/test_serve.py``
(bytes a robot sends, counted on the socket).
"""

from __future__ import annotations

import queue
import socket
import threading
import time


class LinkProxy:
    """Forwards ``127.0.0.1:<port>`` to ``target``; ``sent`` / ``received`` count client→server and
    server→client bytes; each chunk is held ``delay_s`` before it is forwarded (one way)."""

    def __init__(self, target: tuple[str, int], delay_s: float = 0.0, listen: str = "127.0.0.1"):
        self.target, self.delay_s = target, delay_s
        self.sent = self.received = 0
        self._lock = threading.Lock()
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((listen, 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def reset_counts(self) -> None:
        with self._lock:
            self.sent = self.received = 0

    def close(self) -> None:
        self._stop.set()
        self.listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=30)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            for a, b, upstream in ((client, server, True), (server, client, False)):
                threading.Thread(target=self._pump, args=(a, b, upstream), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        """Read ``src`` as fast as it sends; a writer forwards each chunk ``delay_s`` after it came."""
        chunks: queue.Queue = queue.Queue()

        def writer() -> None:
            try:
                while True:
                    item = chunks.get()
                    if item is None:
                        break
                    due, data = item
                    wait = due - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

        thread = threading.Thread(target=writer, daemon=True)
        thread.start()
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                with self._lock:
                    if upstream:
                        self.sent += len(data)
                    else:
                        self.received += len(data)
                chunks.put((time.monotonic() + self.delay_s, data))
        except OSError:
            pass
        finally:
            chunks.put(None)
            thread.join(timeout=60)
            try:
                src.close()
            except OSError:
                pass
