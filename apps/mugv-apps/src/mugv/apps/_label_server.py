"""The HTTP server of `mugv label`: the page, a small JSON API and the videos, stdlib only.

Routes (all local, nothing fetched from outside):

- ``GET /``: the labelling page (``_label_page.html``).
- ``GET /api/state``: progress and the first pair this annotator has not labelled.
- ``POST /api/choice`` ``{"pair_id", "choice"}``: records a choice ("a", "b", "tie", "skip").
- ``POST /api/undo``: removes the annotator's latest choice.
- ``GET /video/<pair id>/<a|b>``: the pair's video, with HTTP Range requests so that
  Chromium's ``<video>`` can seek. Only the pairs' own files are served.
"""

from __future__ import annotations

import contextlib
import errno
import http.server
import json
import logging
import mimetypes
import re
import socket
import threading
from importlib import resources
from pathlib import Path
from typing import Any

from mugv.apps._config import AppError
from mugv.apps._label_store import LabelStore, Pair

logger = logging.getLogger(__name__)

_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")
_CHUNK = 1 << 16


class _HTTPServer(http.server.ThreadingHTTPServer):
    """Remembers open connections, so that closing the server also ends kept-alive ones."""

    daemon_threads = True

    def __init__(self, *args: Any) -> None:
        self.connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(*args)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            for connection in self.connections:
                with contextlib.suppress(OSError):  # already closed by the client
                    connection.shutdown(socket.SHUT_RDWR)


def _page() -> bytes:
    return resources.files("mugv.apps").joinpath("_label_page.html").read_bytes()


class LabelServer:
    """Serves `pairs` for `annotator`, storing choices in `store`, until `close()`."""

    def __init__(
        self,
        pairs: list[Pair],
        store: LabelStore,
        *,
        annotator: str,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if not annotator.strip():
            raise AppError("--annotator must be a non-empty name")
        self.pairs = pairs
        self.by_id = {p.id: p for p in pairs}
        self.store = store
        self.annotator = annotator
        handler = type("Handler", (_Handler,), {"app": self})
        try:
            self.httpd = _HTTPServer((host, port), handler)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise AppError(
                    f"port {port} on {host} is in use; pass another --port (0 picks a free one)"
                ) from exc
            raise AppError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
        store.add_pairs(pairs)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def start(self) -> LabelServer:
        """Serves from a background thread (tests, notebooks)."""
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stops serving and ends every open connection (a browser keeps them alive)."""
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join()
        self.httpd.close_connections()
        self.httpd.server_close()

    def state(self) -> dict[str, Any]:
        """Progress "k of n" and the first pair without a choice of this annotator."""
        rows = self.store.choices(self.annotator)
        chosen = {r[0]: r[2] for r in rows}
        index = next((k for k, p in enumerate(self.pairs) if p.id not in chosen), None)
        last = next((r for r in reversed(rows) if r[0] in self.by_id), None)
        pair = None if index is None else self.pairs[index]
        return {
            "annotator": self.annotator,
            "total": len(self.pairs),
            "done": sum(p.id in chosen for p in self.pairs),
            "index": index,
            "pair": None if pair is None else {"id": pair.id, "prompt": pair.prompt},
            "last": None if last is None else {"pair_id": last[0], "choice": last[2]},
        }


class _Handler(http.server.BaseHTTPRequestHandler):
    app: LabelServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            self._send(200, _page(), "text/html; charset=utf-8")
        elif path == "/api/state":
            self._json(200, self.app.state())
        elif m := re.fullmatch(r"/video/([^/]+)/(a|b)", path):
            pair = self.app.by_id.get(m[1])
            if pair is None:
                self._json(404, {"error": f"no pair {m[1]!r}"})
            else:
                self._video(Path(pair.video_a if m[2] == "a" else pair.video_b))
        else:
            self._json(404, {"error": f"no page {path}"})

    def do_POST(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            if self.path == "/api/choice":
                if body.get("pair_id") not in self.app.by_id:
                    raise AppError(f"no pair {body.get('pair_id')!r} on this page")
                self.app.store.record(body["pair_id"], self.app.annotator, body.get("choice"))
            elif self.path == "/api/undo":
                self.app.store.undo(self.app.annotator, among=self.app.by_id)
            else:
                self._json(404, {"error": f"no action {self.path}"})
                return
        except (AppError, ValueError, AttributeError) as exc:
            self._json(400, {"error": str(exc)})
            return
        self._json(200, self.app.state())

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, data: Any) -> None:
        self._send(status, json.dumps(data).encode(), "application/json")

    def _video(self, path: Path) -> None:
        try:
            f = path.open("rb")
        except OSError:
            self._json(404, {"error": f"video {path.name} is gone"})
            return
        with f:
            size = path.stat().st_size
            start, end, status = 0, size - 1, 200
            m = _RANGE.match(self.headers.get("Range", "").strip())
            if m and (m[1] or m[2]):
                if m[1]:
                    start, end = int(m[1]), min(int(m[2]), size - 1) if m[2] else size - 1
                else:  # a suffix: the last N bytes
                    start = max(size - int(m[2]), 0)
                if start > end or start >= size:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206
            self.send_response(status)
            self.send_header("Content-Type", mimetypes.guess_type(path.name)[0] or "video/mp4")
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(end - start + 1))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            f.seek(start)
            left = end - start + 1
            try:
                while left > 0 and (chunk := f.read(min(_CHUNK, left))):
                    self.wfile.write(chunk)
                    left -= len(chunk)
            except (BrokenPipeError, ConnectionResetError):  # the browser cancelled a range
                self.close_connection = True
