"""HTTPModel against misbehaving servers: every preset x every hostile case fails closed.

The table (:data:`EXPECT`) runs each case of :mod:`_hostile_servers` against each preset
and checks, for every pair: a :class:`ModelError` subclass (never a RecursionError,
JSONDecodeError, KeyError ...), one line of message, no secret in any encoding in the
message, repr, vendor message, exception chain or urllib3's DEBUG log, nothing sent to the
other origin of a redirect, a bounded time, and an honest number of attempts.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote, quote_plus

import cv2
import numpy as np
import pytest
from _hostile_servers import OTHER_PORT, HostileServer, answer, valid_answer
from hypothesis import given, settings
from hypothesis import strategies as st

from blackbox_dft.adapters.errors import (
    AuthenticationError,
    EndpointUnreachable,
    HTTPStatusError,
    ResponseFormatError,
    ThrottledError,
)
from blackbox_dft.adapters.remote.http import HTTPModel
from blackbox_dft.adapters.remote.redact import Redactor, safe_url
from blackbox_dft.adapters.remote.vendors import make_preset
from blackbox_dft.core.model import ModelError, answered_of

pytestmark = pytest.mark.network

KEY = "KEY-s3cr3t+/=Zz"  # api_key of every preset
SECRET = "SEC-pa55+w/rd==\u00e9"  # Face++ api_secret (a form field; non-ASCII on purpose)
HDR = 'HDR-t0k3n+/="Qq\\'  # a user header; JSON escapes its quote and backslash
QS = "QS-c0de+/=Xx"  # a URL query value under a name that does not look like a key
SECRETS = (KEY, SECRET, HDR, QS)
LABELS = ["no", "yes"]
# oip: this table is about the infer POST; its metadata GETs meet the same table in
# tests/test_oip_client.py
PRESETS = {"oip": {"metadata": False}, "tfserving": {}, "torchserve": {"labels": LABELS},
           "json": {}, "facepp": {"api_secret": SECRET}, "gcv": {},
           "clarifai": {"labels": LABELS}, "facepp_compare": {"api_secret": SECRET}}
OPTS = {"max_retries": 1, "backoff": 0.01, "max_backoff": 0.1, "timeout": (2.0, 30.0),
        "deadline": 10.0, "max_response_bytes": 2**20, "concurrency": 1}
#: the cases that test the deadline get a short one (the others a long one: no flakiness)
SHORT_DEADLINE = {"deadline": 0.3}
HANG = 10.0  # s: a bound on a hang (each case takes well under a second)

_REDIRECT = r"redirected \(HTTP {}\) to http://127\.0\.0\.1:\d+/{}.*follows no redirect.*final URL"
_BIG = r"larger than max_response_bytes=1048576 \({}.*raise max_response_bytes"
_DEADLINE = r"longer than the deadline of 0\.3 s; not retried"
_UNUSABLE = r"unusable answer|not JSON"
_CAPPED = (r"still throttled after 1 retry \(2 attempts\); it asked to wait {} s \(Retry-After\)"
           r", but waits are capped at max_backoff=0\.1 s")
_REFUSED = r"the key was refused \(HTTP {}\); the server said: .*\*\*\*"
#: case -> (error class or None for a good answer, message pattern, requests the server gets)
EXPECT: dict[str, tuple[type[ModelError] | None, str, int]] = {
    **{f"redirect-{c}": (HTTPStatusError, _REDIRECT.format(c, r"steal\?code=\*\*\*"), 1)
       for c in (301, 302, 303, 307, 308)},
    "redirect-same-origin": (HTTPStatusError, _REDIRECT.format(307, "elsewhere/predict"), 1),
    "big-declared": (ResponseFormatError, _BIG.format("it declares Content-Length 104857600"),
                     1),
    "big-chunked": (ResponseFormatError, _BIG.format("more than 1048576 bytes came"), 1),
    "gzip-bomb": (ResponseFormatError, _BIG.format("more than 1048576 bytes came"), 1),
    "trickle-body": (EndpointUnreachable, _DEADLINE, 1),
    "trickle-headers": (EndpointUnreachable, _DEADLINE, 1),
    "silent": (EndpointUnreachable, _DEADLINE, 1),
    "reset-mid-body": (EndpointUnreachable, r"connection broke while the answer came .*after 1 "
                                            r"attempt \(no retry\)\); not retried", 1),
    "drop": (EndpointUnreachable, r"no answer after 1 retry \(2 attempts\)", 2),
    "invalid-json": (ResponseFormatError, r"not JSON \(JSONDecodeError at \d+\)", 1),
    "deep-json": (ResponseFormatError, r"not usable JSON: nested deeper", 1),
    "deep-800": (ResponseFormatError, _UNUSABLE, 1),
    "nan": (ResponseFormatError, _UNUSABLE, 1),
    "infinity": (ResponseFormatError, _UNUSABLE, 1),
    "html-page": (ResponseFormatError, r"not JSON .*'text/html', it starts '<!DOCTYPE html> "
                                       r"<html>", 1),
    "empty-200": (ResponseFormatError, r"not JSON", 1),
    "bad-gzip": (ResponseFormatError, r"not in the Content-Encoding it declares \('gzip'\)", 1),
    "json-as-html": (None, "", 1),
    "retry-after-huge": (ThrottledError, _CAPPED.format(1000000000), 2),
    "retry-after-date": (ThrottledError, _CAPPED.format(r"3153\d{4}"), 2),
    "vendor-throttle": (AuthenticationError, _REFUSED.format(403).replace(r".*\*\*\*", ""), 1),
    **{f"echo-{e}-{s}": (AuthenticationError, _REFUSED.format(s), 1) for e, s in (
        ("raw", 401), ("urlenc", 403), ("form", 401), ("json", 403), ("b64", 401),
        ("text", 401), ("request-b64", 403))},
    "echo-raw-500": (HTTPStatusError, r"error answer after 1 retry \(2 attempts\) \(HTTP 500\)"
                                      r"; the server said: .*\*\*\*", 2),
}
#: vendors whose own throttle answer is retried (not a bad key)
THROTTLING = {"facepp", "facepp_compare", "clarifai"}
#: errors that no retry can fix: latched, the next call sends nothing
LATCHED = (AuthenticationError, ResponseFormatError)


def expectation(case: str, preset: str) -> tuple[type[ModelError] | None, str, int]:
    if case == "vendor-throttle" and preset in THROTTLING:
        return ThrottledError, _CAPPED.format(1000000000), 2
    return EXPECT[case]


# -- an independent leak detector ------------------------------------------------------
def _forms(s: str) -> set[str]:
    forms = {s, quote(s, safe=""), quote(s), quote_plus(s), json.dumps(s)[1:-1],
             json.dumps(s, ensure_ascii=False)[1:-1]}
    for wrapped in (s, f"Bearer {s}", f"Key {s}", f"{s}:"):
        for enc in (base64.b64encode, base64.urlsafe_b64encode):
            b = enc(wrapped.encode()).decode()
            forms |= {b, b.rstrip("=")}
    forms |= {s[i:i + 8] for i in range(len(s) - 7)}  # half a key is a leak too
    return forms


_B64_RUN = re.compile(r"[A-Za-z0-9+/_-]{12,}")


def leaks(text: str, secrets: tuple[str, ...] = SECRETS, depth: int = 2) -> list[str]:
    """Every secret that ``text`` reveals: in a known form, or decodable from base64 (at any
    alignment, and base64 inside base64)."""
    found = [f"{s!r} as {f!r}" for s in secrets for f in _forms(s) if f in text]
    for run in _B64_RUN.findall(text) if depth else []:
        std = run.replace("-", "+").replace("_", "/")
        for off in range(4):
            piece = std[off:][:len(std[off:]) // 4 * 4]
            try:
                decoded = base64.b64decode(piece).decode("latin-1")
            except ValueError:
                continue
            found += [f"in base64 {run[:20]}...: {hit}"
                      for hit in leaks(decoded, secrets, depth - 1)]
    return found


def chain_texts(exc: BaseException) -> list[str]:
    """str, repr and vendor message of ``exc`` and of every exception in its chain."""
    out, todo, seen = [], [exc], set()
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        out += [str(e), repr(e), str(getattr(e, "vendor_message", "")),
                str(getattr(e, "url", ""))]
        todo += [e.__context__, e.__cause__]
    return out


def requests_seen(server: HostileServer, case: str, before: int, hits: int,
                  wait: float = 5.0) -> int:
    """Requests of ``case`` the server recorded since ``before``, waiting (up to ``wait``
    seconds) while fewer than ``hits``: the server records a request once it has read it,
    which on a loaded machine can come after the client gave up at its deadline."""
    end = time.monotonic() + wait
    while server.count(case) - before < hits and time.monotonic() < end:
        time.sleep(0.02)
    return server.count(case) - before


def test_the_leak_detector_finds_what_the_servers_echo():
    """The detector is not blind: it sees each echo encoding and base64 at any offset."""
    for s in SECRETS:
        assert leaks(f"x {quote_plus(s)} y") and leaks(json.dumps({"e": s}))
        for pad in range(4):
            assert leaks(base64.b64encode(b"p" * pad + f"Bearer {s}!".encode()).decode())
        basic = base64.b64encode(f"Basic {base64.b64encode(s.encode()).decode()}".encode())
        assert leaks(basic.decode())
    assert not leaks("nothing to see *** here")


# -- the table --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def servers():
    other = HostileServer(handler=lambda conn, req, srv: answer(conn, 200, valid_answer("json")))
    OTHER_PORT[0] = other.port
    hostile = HostileServer()
    yield hostile, other
    hostile.close()
    other.close()
    assert other.count() == 0, "the other origin of a redirect received a request"


def _url(base: str, case: str, preset: str) -> str:
    path = make_preset(preset, **({"labels": LABELS} if "labels" in PRESETS[preset] else {}))
    return f"{base}/{case}/{preset}{path.path('m')}?code={quote(QS, safe='')}"


IMAGE = np.full((1, 8, 16, 3), 100, np.uint8)  # 16 wide: a side-by-side pair for compare


@pytest.mark.parametrize("case", sorted(EXPECT))
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_hostile_server_case_fails_closed(servers, preset, case, caplog):
    hostile, other = servers
    error, pattern, hits = expectation(case, preset)
    caplog.set_level(logging.DEBUG, logger="urllib3")
    before = hostile.count(case)
    opts = {**OPTS, **(SHORT_DEADLINE if error is EndpointUnreachable else {})}
    m = HTTPModel(_url(hostile.base, case, preset), preset=preset, api_key=KEY,
                  headers={"X-Api-Key": HDR}, **opts, **PRESETS[preset])
    t0 = time.monotonic()
    try:
        if error is None:
            got = m.predict(IMAGE)
            assert got.shape[0] == 1 and np.isfinite(got).all()
            return
        with pytest.raises(ModelError) as info:
            m.predict(IMAGE)
        elapsed = time.monotonic() - t0
        exc = info.value
        assert type(exc) is error, f"{type(exc).__name__}: {exc}"
        assert len(str(exc).splitlines()) == 1 and str(exc).strip() == str(exc)
        assert re.search(pattern, str(exc)), str(exc)
        assert exc.__context__ is None and exc.__cause__ is None
        texts = chain_texts(exc) + [caplog.text]
        assert not [hit for t in texts for hit in leaks(t)]
        assert elapsed < HANG
        assert requests_seen(hostile, case, before, hits) == hits
        if isinstance(exc, LATCHED) or case.startswith("redirect"):
            with pytest.raises(error, match="nothing was sent"):
                m.predict(IMAGE)
            assert hostile.count(case) - before == hits
        assert other.count() == 0 and hostile.count("elsewhere") == 0
    finally:
        m.close()


# -- what the table cannot show --------------------------------------------------------
def test_safe_url_treats_every_query_value_and_any_userinfo_as_secret():
    assert safe_url("http://TOKEN@h:1/p?code=S3&k=1#frag") == "http://h:1/p?code=***&k=***"
    assert safe_url("https://u:p@[::1]:8/x?flag") == "https://[::1]:8/x?***"
    assert safe_url("http://h:notaport/x") == "<unparseable URL>"
    with pytest.raises(ValueError, match=r"http\(s\) URL, got 'ftp://h/x\?k=\*\*\*'"):
        HTTPModel("ftp://TOKEN@h/x?k=v")


@settings(max_examples=100, deadline=None, derandomize=True)
@given(secret=st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=6,
                      max_size=40),
       before=st.binary(max_size=7), after=st.binary(max_size=7))
def test_redactor_removes_a_secret_from_any_base64_or_url_encoding(secret, before, after):
    r = Redactor([secret])
    blob = before + f"Bearer {secret}".encode() + after
    for text in (base64.b64encode(blob).decode(), base64.urlsafe_b64encode(blob).decode(),
                 quote(secret, safe=""), quote_plus(secret), json.dumps({"k": secret})):
        assert not leaks(r(f"said: {text}."), (secret,)), text


def test_a_userinfo_token_is_redacted_in_every_encoding(servers):
    hostile, _ = servers
    token = "TOKEN-u53r1nf0+x"
    for userinfo in (f"someone:{quote(token, safe='')}", quote(token, safe="")):
        url = f"http://{userinfo}@127.0.0.1:{hostile.port}/echo-b64-401/json/predict"
        m = HTTPModel(url, **OPTS)  # user:password goes as Basic base64("someone:TOKEN...")
        with pytest.raises(AuthenticationError) as info:
            m.predict(IMAGE)
        assert "***" in info.value.vendor_message or ":" not in userinfo
        assert not [h for t in chain_texts(info.value) for h in leaks(t, (token,))]
        assert "TOKEN" not in repr(m) and "TOKEN" not in m.name


def test_urllib3_debug_log_lines_lose_their_query_values(servers, caplog):
    hostile, _ = servers
    caplog.set_level(logging.DEBUG, logger="urllib3")
    with HTTPModel(_url(hostile.base, "json-as-html", "json"), **OPTS) as m:
        m.predict(IMAGE)
    assert "code=***" in caplog.text and not leaks(caplog.text)


def test_a_complete_answer_keeps_its_connection_for_the_next_request(servers, caplog):
    hostile, _ = servers
    caplog.set_level(logging.DEBUG, logger="urllib3")
    with HTTPModel(_url(hostile.base, "json-as-html", "json"), **OPTS) as m:
        for _ in range(5):
            m.predict(IMAGE)
    assert caplog.text.count("Starting new HTTP connection") == 1
    assert caplog.text.count('"POST /json-as-html/') == 5


@pytest.mark.parametrize("option, value", [("deadline", 0), ("deadline", float("inf")),
                                           ("deadline", "5"), ("max_response_bytes", 0),
                                           ("max_response_bytes", 1.5),
                                           ("max_backoff", -1.0)])
def test_limits_are_checked_in_one_line(option, value):
    with pytest.raises(ValueError, match=f"^{option} must be .*, got {re.escape(repr(value))}$"):
        HTTPModel("http://127.0.0.1:9/p", **{option: value})


@pytest.mark.parametrize("retries, said", [(0, r"after 1 attempt \(no retry\)"),
                                           (2, r"after 2 retries \(3 attempts\)")])
def test_a_refused_connection_says_how_many_attempts_were_made(retries, said):
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    m = HTTPModel(f"http://127.0.0.1:{port}/p?code=xyz", **{**OPTS, "max_retries": retries})
    with pytest.raises(EndpointUnreachable, match=f"no answer {said} .*: Failed to establish a new "
                                                   "connection: .*Connection refused"):
        m.predict(IMAGE)


def test_retry_after_is_honoured_up_to_max_backoff(servers):
    times: list[float] = []

    def once(conn, req, srv):
        times.append(time.monotonic())
        if len(times) == 1:
            answer(conn, 429, b"{}", extra={"Retry-After": "1"})
        else:
            answer(conn, 200, valid_answer("json"))

    srv = HostileServer(handler=once)
    try:
        m = HTTPModel(srv.base + "/p", **{**OPTS, "max_backoff": 0.3})
        assert m.predict(IMAGE).shape == (1, 2)
        assert len(times) == 2 and times[1] - times[0] >= 0.29  # the first backoff is 0
    finally:
        srv.close()


def test_a_wildcard_scores_path_on_a_deep_answer_is_a_format_error(servers):
    deep: object = [0.5]
    for _ in range(900):
        deep = [deep]
    body = json.dumps({"results": [{"label": deep}]}).encode()
    srv = HostileServer(handler=lambda conn, req, s: answer(conn, 200, body))
    try:
        m = HTTPModel(srv.base + "/p", scores_path="results.*.label", labels=LABELS, **OPTS)
        with pytest.raises(ResponseFormatError, match="unusable answer"):
            m.predict(IMAGE)
    finally:
        srv.close()


# -- partial answers and interrupts -----------------------------------------------------
def _grey(req) -> int:
    """The grey level of the first image of a json-preset request."""
    png = base64.b64decode(json.loads(req.body)["images"][0])
    return int(cv2.imdecode(np.frombuffer(png, np.uint8), 1)[0, 0, 0])


def _by_pixel(fail_value: int = -1, delay: float = 0.0, in_flight: int = 0):
    """A json endpoint answering [v/255, 1 - v/255] for an image of grey level v, and 401
    for a request holding an image of ``fail_value``; that one is answered once
    ``in_flight`` requests have arrived (all in flight), the others ``delay`` s later."""

    def handler(conn, req, srv):
        pngs = json.loads(req.body)["images"]
        values = [int(cv2.imdecode(np.frombuffer(base64.b64decode(p), np.uint8), 1)[0, 0, 0])
                  for p in pngs]
        if fail_value in values:
            t0 = time.monotonic()
            while srv.count() < in_flight and time.monotonic() - t0 < HANG:
                time.sleep(0.01)
            answer(conn, 401, b'{"error": "no"}')
            return
        time.sleep(delay)
        answer(conn, 200, json.dumps({"scores": [[v / 255, 1 - v / 255] for v in values]}
                                     ).encode())
    return handler


@pytest.mark.parametrize("concurrency, fail_at, answered", [(8, 10, 10), (1, 4, 4)])
def test_answers_that_came_back_are_attached_when_one_request_fails(concurrency, fail_at,
                                                                    answered):
    x = np.repeat(np.arange(12, dtype=np.uint8)[:, None, None, None] * 10, 4, axis=1)
    x = np.repeat(np.repeat(x, 4, axis=2), 3, axis=3)  # (12, 4, 4, 3), image i grey 10 i
    srv = HostileServer(handler=_by_pixel(10 * fail_at, delay=0.05,
                                          in_flight=6 if concurrency > 1 else 0))
    try:
        m = HTTPModel(srv.base + "/p", images_per_request=2, **{**OPTS, "concurrency":
                                                                 concurrency})
        with pytest.raises(AuthenticationError) as info:
            m.predict(x)
        rows, scores = answered_of(info.value)
        assert rows.tolist() == list(range(answered))
        assert np.allclose(scores[:, 0], 10 * rows / 255)
        # concurrent: every request was in flight and waited for; one by one: none after
        assert srv.count() == (6 if concurrency > 1 else fail_at // 2 + 1)
    finally:
        srv.close()


def test_the_query_cache_keeps_the_answers_of_a_failed_call(tmp_path):
    """Nothing paid twice: after a failed split call, a retry sends only the images whose
    answer never came."""
    from blackbox_dft.cli.cache import CachedModel

    x = np.repeat(np.arange(12, dtype=np.uint8)[:, None, None, None] * 10, 4, axis=1)
    x = np.repeat(np.repeat(x, 4, axis=2), 3, axis=3)
    refused: list[int] = []
    handler = _by_pixel()

    def once(conn, req, srv):
        if not refused and srv.count() == 6:  # the last request (rows 10, 11), once
            refused.append(srv.count())
            answer(conn, 401, b'{"error": "no"}')
            return
        handler(conn, req, srv)

    srv = HostileServer(handler=once)
    try:
        m = HTTPModel(srv.base + "/p", images_per_request=2, **OPTS)  # one by one, in order
        cached = CachedModel(m, tmp_path / "cache.sqlite", key="hostile-test")
        with pytest.raises(AuthenticationError):
            cached.predict(x)
        m.reset()
        got = cached.predict(x)
        assert srv.count() == 7  # 6 requests, then only the one that failed
        assert np.allclose(got[:, 0], np.arange(12) * 10 / 255)
        cached.close()
    finally:
        srv.close()


_CHILD = """
import json, signal, sys
import numpy as np
from blackbox_dft.adapters.remote.http import HTTPModel
from blackbox_dft.core.model import answered_of

def stop(*_):
    raise KeyboardInterrupt
signal.signal(signal.SIGTERM, stop)
m = HTTPModel(sys.argv[1], concurrency=int(sys.argv[2]), images_per_request=1, max_retries=5,
              backoff=0.01, max_backoff=30.0)
try:
    m.predict(np.arange(4, dtype=np.uint8)[:, None, None, None].repeat(4, 1).repeat(4, 2)
              .repeat(3, 3) * 10)  # image i is grey 10 i
except KeyboardInterrupt as exc:
    got = answered_of(exc)
    print(json.dumps(sorted(got[0].tolist()) if got else None), flush=True)
"""


def _sigint_default() -> None:
    """In the child, before exec: SIGINT back to its default. A parent started in the
    background by a non-interactive shell (``cmd &``, nohup) ignores SIGINT, its children
    inherit that, and Python then installs no KeyboardInterrupt handler: the signal the test
    sends would be ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("sig, concurrency", [(signal.SIGTERM, 2), (signal.SIGINT, 1)])
def test_an_interrupt_ends_a_sleeping_retry_at_once_and_keeps_the_answers(sig, concurrency):
    """Images 0 and 1 are answered, 2 and 3 get 429 'Retry-After: 1e9' and sleep (up to
    max_backoff=30 s, five times); SIGTERM/SIGINT must end the process within seconds."""
    answered = _by_pixel()

    def handler(conn, req, srv):
        if b'"images"' in req.body and _grey(req) >= 20:
            answer(conn, 429, b"{}", extra={"Retry-After": "1000000000"})
        else:
            answered(conn, req, srv)

    srv = HostileServer(handler=handler)
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, srv.base + "/p", str(concurrency)],
                            preexec_fn=_sigint_default,
                            cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        t0 = time.monotonic()
        while srv.count() < 2 + min(concurrency, 2) and time.monotonic() - t0 < 30:
            time.sleep(0.05)  # until the 429s are in and their retries sleep
        time.sleep(0.2)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=15)  # a bound on a hang, not a speed test
    finally:
        proc.kill()
        srv.close()
    assert json.loads(out.strip().splitlines()[-1]) == [0, 1], err
    assert srv.count() == 2 + min(concurrency, 2)  # nothing was sent after the signal


def test_close_from_another_thread_wakes_a_sleeping_call():
    srv = HostileServer(handler=lambda conn, req, s: answer(conn, 429, b"{}", extra={
        "Retry-After": "1000000000"}))
    m = HTTPModel(srv.base + "/p", images_per_request=1, **{**OPTS, "concurrency": 2,
                                                            "max_backoff": 30.0})
    caught: list[BaseException] = []

    def run() -> None:
        try:
            m.predict(np.zeros((2, 4, 4, 3), np.uint8))
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            caught.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        t0 = time.monotonic()
        while srv.count() < 2 and time.monotonic() - t0 < 10:
            time.sleep(0.02)
        m.close()
        t.join(HANG)
        assert not t.is_alive()
        assert isinstance(caught[0], EndpointUnreachable) and "closed" in str(caught[0])
    finally:
        srv.close()
