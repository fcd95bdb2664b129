"""Misbehaving HTTP servers on 127.0.0.1 for the hostile-server table (raw sockets, so that
a server can trickle, stall, reset or lie about its length).

``HostileServer`` reads each request (line, headers, body by Content-Length), records it,
and answers with the behaviour named by the first path segment (``/<case>/...``): see
:data:`CASES`. Every handler is bounded in time (it gives up after ``_GIVE_UP`` s) and
stops when the client goes away.
"""

from __future__ import annotations

import base64
import gzip
import json
import socket
import struct
import threading
import time
from collections.abc import Callable
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qs, quote, quote_plus

import numpy as np

from blackbox_dft.adapters.remote.vendors import make_preset

_GIVE_UP = 15.0  # s: no handler runs longer, whatever the client does
_BIG = 100 * 2**20  # the "100 MB" answer
_BOMB = gzip.compress(b" " * (20 * 2**20), compresslevel=9)  # ~20 KB that inflate to 20 MiB


class Request:
    """One request as received: method, target (path?query), headers (lower-case), body."""

    def __init__(self, method: str, target: str, headers: dict[str, str], body: bytes,
                 raw: bytes) -> None:
        self.method, self.target, self.headers, self.body, self.raw = (
            method, target, headers, body, raw)

    @property
    def case(self) -> str:
        return self.target.lstrip("/").split("/", 1)[0].split("?", 1)[0]

    @property
    def preset(self) -> str:
        """The preset name: the second path segment (``/<case>/<preset>/...``)."""
        parts = self.target.split("?", 1)[0].strip("/").split("/")
        return parts[1] if len(parts) > 1 else "json"

    def secret_values(self) -> list[str]:
        """What a careless server would echo: auth headers, the target, form key fields."""
        out = [self.headers.get(h, "") for h in ("authorization", "x-api-key", "x-goog-api-key")]
        out.append(self.target)
        if "form" in self.headers.get("content-type", ""):
            form = parse_qs(self.body.decode("ascii", "replace"))
            out += [form.get(k, [""])[0] for k in ("api_key", "api_secret")]
        return [v for v in out if v]


def _read_request(rfile: Any) -> Request | None:
    line = rfile.readline(65537)
    if not line:
        return None
    raw = bytearray(line)
    method, target, _ = line.decode("latin-1").split(" ", 2)
    headers: dict[str, str] = {}
    while True:
        h = rfile.readline(65537)
        raw += h
        if h in (b"\r\n", b"\n", b""):
            break
        k, _, v = h.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    body = rfile.read(int(headers.get("content-length", "0") or 0))
    raw += body
    return Request(method, target, headers, body, bytes(raw))


def _head(status: int, headers: dict[str, str] | None = None, reason: str = "X") -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}"] + [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def answer(conn: socket.socket, status: int, body: bytes, ctype: str = "application/json",
           extra: dict[str, str] | None = None) -> None:
    conn.sendall(_head(status, {"Content-Type": ctype, "Content-Length": str(len(body)),
                                **(extra or {})}) + body)


def _jsonb(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def valid_answer(preset: str, n: int = 1) -> bytes:
    """A correct answer of ``preset`` for ``n`` images (scores 0.25 / 0.75)."""
    opts = {"labels": ["no", "yes"]} if preset in ("torchserve", "clarifai") else {}
    return _jsonb(make_preset(preset, **opts).write_response(np.tile([[0.25, 0.75]], (n, 1))))


def _until_gone(conn: socket.socket, chunks: Callable[[], bytes | None], gap: float) -> None:
    """Send ``chunks()`` every ``gap`` s until it returns None, the client leaves, or time is up."""
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < _GIVE_UP and (piece := chunks()) is not None:
            conn.sendall(piece)
            if gap:
                time.sleep(gap)
    except OSError:  # the client closed: what a hostile server hopes never happens
        pass


def _stream(total: int, piece: int = 65536) -> Callable[[], bytes | None]:
    sent = [0]

    def nxt() -> bytes | None:
        if sent[0] >= total:
            return None
        sent[0] += piece
        return b" " * piece

    return nxt


def _echo_body(req: Request, enc: Callable[[str], str], status: int) -> bytes:
    echo = " ".join(enc(v) for v in req.secret_values())
    return _jsonb({"error": f"denied: {echo}", "error_message": f"denied: {echo}",
                   "status": {"code": 99999, "description": f"denied: {echo}"}})


def _echo_header(req: Request, enc: Callable[[str], str]) -> dict[str, str]:
    """The key in a response header too (the client must not show headers it got)."""
    value = enc(req.headers.get("authorization", req.headers.get("x-api-key", "")))
    return {"WWW-Authenticate": f'Bearer error="invalid_token", got="{value}"'}


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


ENCODINGS: dict[str, Callable[[str], str]] = {
    "raw": lambda s: s,
    "urlenc": lambda s: quote(s, safe=""),
    "form": quote_plus,
    "json": lambda s: json.dumps(s)[1:-1],
    "b64": _b64,  # of the header value itself: base64("Bearer KEY"), base64("Key KEY")
}


def _redirect(status: int, where: Callable[[Request], str]) -> Callable[..., None]:
    def h(conn: socket.socket, req: Request, srv: HostileServer) -> None:
        conn.sendall(_head(status, {"Location": where(req), "Content-Length": "0"}))
    return h


def _nan_body(req: Request, token: str) -> bytes:
    text = valid_answer(req.preset).decode()
    # the score 0.75 as each preset writes it: 0.75, 75.0 (Face++ percent), LIKELY (Vision)
    for score in ("0.75", "75.0", '"LIKELY"', "25.0"):
        text = text.replace(score, token)
    return text.encode()


def _handlers() -> dict[str, Callable[..., None]]:
    h: dict[str, Callable[..., None]] = {}
    for code in (301, 302, 303, 307, 308):
        h[f"redirect-{code}"] = _redirect(
            code, lambda req: f"http://127.0.0.1:{OTHER_PORT[0]}/steal?code=elsewhere")
    h["redirect-same-origin"] = _redirect(307, lambda req: "/elsewhere/predict")

    def big_declared(conn: socket.socket, req: Request, srv: HostileServer) -> None:
        conn.sendall(_head(200, {"Content-Type": "application/json",
                                 "Content-Length": str(_BIG)}))
        _until_gone(conn, _stream(_BIG), 0)

    def big_chunked(conn: socket.socket, req: Request, srv: HostileServer) -> None:
        conn.sendall(_head(200, {"Content-Type": "application/json",
                                 "Transfer-Encoding": "chunked"}))
        nxt = _stream(_BIG)
        _until_gone(conn, lambda: None if (p := nxt()) is None else
                    f"{len(p):x}\r\n".encode() + p + b"\r\n", 0)

    def gzip_bomb(conn: socket.socket, req: Request, srv: HostileServer) -> None:
        answer(conn, 200, _BOMB, extra={"Content-Encoding": "gzip"})

    def trickle_body(conn: socket.socket, req: Request, srv: HostileServer) -> None:
        conn.sendall(_head(200, {"Content-Type": "application/json", "Content-Length": "1000"}))
        _until_gone(conn, lambda: b" ", 0.1)

    def trickle_headers(conn: socket.socket, req: Request, srv: HostileServer) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        _until_gone(conn, lambda: b"a", 0.1)

    def silent(conn: socket.socket, req: Request, srv: HostileServer) -> None:
        conn.settimeout(_GIVE_UP)
        try:
            conn.recv(1)  # returns when the client gives up
        except OSError:
            pass

    def reset_mid_body(conn: socket.socket, req: Request, srv: HostileServer) -> None:
        conn.sendall(_head(200, {"Content-Type": "application/json", "Content-Length": "1000"})
                     + b'{"scores": [[0.25, 0.7')
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        raise ConnectionAbortedError  # close now: an RST, not a FIN

    def drop(conn: socket.socket, req: Request, srv: HostileServer) -> None:
        raise ConnectionAbortedError  # close without a word

    h.update({"big-declared": big_declared, "big-chunked": big_chunked,
              "gzip-bomb": gzip_bomb, "trickle-body": trickle_body,
              "trickle-headers": trickle_headers, "silent": silent,
              "reset-mid-body": reset_mid_body, "drop": drop})
    canned: dict[str, Callable[[Request], tuple[int, bytes, str, dict[str, str]]]] = {
        "invalid-json": lambda r: (200, b'{"scores": [[0.5,', "application/json", {}),
        "deep-json": lambda r: (200, b"[" * 100_000 + b"]" * 100_000, "application/json", {}),
        "deep-800": lambda r: (200, _jsonb({k: _deep(800) for k in (
            "scores", "predictions", "outputs", "responses", "faces", "confidence")}),
            "application/json", {}),
        "nan": lambda r: (200, _nan_body(r, "NaN"), "application/json", {}),
        "infinity": lambda r: (200, _nan_body(r, "-Infinity"), "application/json", {}),
        "html-page": lambda r: (200, b"<!DOCTYPE html>\n<html><body><h1>Sign in</h1>\n"
                                     b"</body></html>", "text/html", {}),
        "empty-200": lambda r: (200, b"", "application/json", {}),
        "bad-gzip": lambda r: (200, b"this is not gzip", "application/json",
                               {"Content-Encoding": "gzip"}),
        "json-as-html": lambda r: (200, valid_answer(r.preset), "text/html", {}),
        "retry-after-huge": lambda r: (429, b'{"error": "slow down"}', "application/json",
                                       {"Retry-After": "1000000000"}),
        "retry-after-date": lambda r: (429, b'{"error": "slow down"}', "application/json",
                                       {"Retry-After": formatdate(time.time() + 365 * 86400,
                                                                  usegmt=True)}),
        "vendor-throttle": lambda r: (403, _jsonb({
            "error_message": "CONCURRENCY_LIMIT_EXCEEDED",
            "status": {"code": 11005, "description": "slow down"}}), "application/json",
            {"Retry-After": "1000000000"}),
        "echo-text-401": lambda r: (401, ("denied: " + " ".join(r.secret_values()) + "\r\n"
                                          "try again").encode(), "text/plain", {}),
        "echo-request-b64-403": lambda r: (403, _jsonb({"error": base64.b64encode(
            b"you sent: " + r.raw).decode()}), "application/json", {}),
        "echo-raw-500": lambda r: (500, _echo_body(r, ENCODINGS["raw"], 500),
                                   "application/json", {}),
    }
    for i, (name, enc) in enumerate(ENCODINGS.items()):
        status = (401, 403)[i % 2]
        canned[f"echo-{name}-{status}"] = (
            lambda r, enc=enc, status=status: (status, _echo_body(r, enc, status),
                                               "application/json", _echo_header(r, enc)))
    for name, make in canned.items():
        def handler(conn: socket.socket, req: Request, srv: HostileServer,
                    make: Any = make) -> None:
            status, body, ctype, extra = make(req)
            answer(conn, status, body, ctype, extra)
        h[name] = handler
    return h


def _deep(depth: int) -> Any:
    node: Any = [0.5]
    for _ in range(depth):
        node = [node]
    return node


OTHER_PORT = [0]  # the port of the "other origin" server, set by the fixture


class HostileServer:
    """A threaded raw-socket HTTP/1.1 server on 127.0.0.1 that records every request.

    handler(conn, request, server) answers one request; by default the case handlers
    above, chosen by the request path. Keep-alive is honoured after a complete answer.
    """

    def __init__(self, handler: Callable[..., None] | None = None) -> None:
        self.handlers = _handlers()
        self.handler = handler
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def count(self, case: str | None = None) -> int:
        with self._lock:
            return sum(1 for r in self.requests if case is None or r.case == case)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(_GIVE_UP)
        rfile = conn.makefile("rb")
        try:
            while (req := _read_request(rfile)) is not None:
                with self._lock:
                    self.requests.append(req)
                handler = self.handler or self.handlers.get(req.case)
                if handler is None:
                    answer(conn, 404, b'{"error": "no such case"}')
                    continue
                handler(conn, req, self)
        except (OSError, ValueError):
            pass
        finally:
            rfile.close()  # the socket only closes (FIN, or RST after SO_LINGER 0) after this
            conn.close()

    def close(self) -> None:
        self.sock.close()
