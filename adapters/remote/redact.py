"""Keeping secrets out of text: URLs, error messages, exception text and urllib3's log lines.

Fail closed: every query value and any userinfo (user and password) of a URL is a secret,
whatever its name (``?code=`` is Azure Functions' key, ``http://TOKEN@host`` a bearer
token). A :class:`Redactor` replaces each secret by ``***`` in any text, in the encodings
a server may echo it in: URL-encoded (``%2B`` or ``%2b``), form-encoded (``+`` for a space),
JSON- and HTML-escaped, and base64 (standard and URL-safe, padded or not, on its own, as
``"Bearer KEY"`` / ``"user:pass"``, or anywhere inside a longer base64 text).
"""

from __future__ import annotations

import base64
import html
import json
import logging
import re
import threading
import weakref
from collections.abc import Iterable
from urllib.parse import quote, quote_plus, unquote, unquote_plus, urlsplit, urlunsplit

__all__ = ["safe_url", "url_secrets", "redact_urls", "one_line", "Redactor",
           "install_log_filter"]

# a query value anywhere in a text (a URL, "url: /p?code=X", a log line); the value ends at
# the next separator, quote, space or bracket
_QUERY_VALUE = re.compile(r"([?&;][^=&;#\s'\"<>()\[\]]*=)[^&;#\s'\"<>()\[\]]+")
# userinfo of any URL in a text: "scheme://anything@" up to the host
_USERINFO = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://)[^/?#@\s'\"<>]*@")
_PCT = re.compile(r"%[0-9A-F]{2}")
_MIN_LEN = 3  # shorter strings are not replaced everywhere (they would garble the text)


def safe_url(url: str) -> str:
    """``url`` without userinfo or fragment, and with every query value replaced by ``***``."""
    try:
        parts = urlsplit(url)
        netloc = parts.hostname or ""
        if ":" in netloc:  # an IPv6 literal
            netloc = f"[{netloc}]"
        if parts.port:
            netloc = f"{netloc}:{parts.port}"
    except ValueError:  # a malformed netloc or port: show nothing of it
        return "<unparseable URL>"
    query = "&".join(f"{q.split('=', 1)[0]}=***" if "=" in q else "***"
                     for q in parts.query.split("&") if q)
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def url_secrets(url: str) -> list[str]:
    """Every secret a URL holds: user, password, ``user:password`` and each query value,
    both as written and decoded."""
    try:
        parts = urlsplit(url)
        user, password = parts.username, parts.password
    except ValueError:
        return [url]
    out: list[str] = []
    if user is not None or password is not None:
        u, p = unquote(user or ""), unquote(password or "")
        basic = base64.b64encode(f"{u}:{p}".encode("latin-1", "replace")).decode("ascii")
        # requests sends user:password as "Basic <base64>": that string is a secret too
        out += [user or "", password or "", u, p, f"{u}:{p}", basic]
    for q in parts.query.split("&"):
        value = q.split("=", 1)[1] if "=" in q else q
        out += [value, unquote_plus(value)]
    out.append(parts.fragment)  # never sent, but part of the URL the user gave
    return [s for s in out if s]


def redact_urls(text: str) -> str:
    """``text`` with every URL query value and userinfo replaced (no secret list needed)."""
    return _USERINFO.sub(r"\1", _QUERY_VALUE.sub(r"\1***", text))


def one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line (control characters and line breaks become spaces), at most
    ``limit`` characters."""
    flat = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return flat if len(flat) <= limit else flat[:limit - 3] + "..."


def _b64_forms(raw: bytes) -> set[str]:
    forms = set()
    for enc in (base64.b64encode, base64.urlsafe_b64encode):
        full = enc(raw).decode("ascii")
        forms |= {full, full.rstrip("=")}
        # the part of the base64 text that only depends on ``raw``, whatever precedes it
        # (offset 0, 1 or 2 bytes into a 3-byte group) and follows it
        for off in range(3):
            text = enc(b"\0" * off + raw).decode("ascii")
            core = text[-(-4 * off // 3):(4 * (off + len(raw))) // 3]
            if len(core) >= 6:
                forms.add(core)
    return forms


def secret_forms(secret: str) -> set[str]:
    """The strings that reveal ``secret``: itself and its URL/form/JSON/HTML/base64 forms."""
    forms = {secret, quote(secret, safe=""), quote(secret), quote_plus(secret),
             json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1],
             html.escape(secret), unquote_plus(secret)}
    forms |= {_PCT.sub(lambda m: m.group().lower(), f) for f in forms if "%" in f}
    raw = secret.encode("utf-8", "replace")
    forms |= _b64_forms(raw)
    for prefix in (b"Bearer ", b"Basic ", b"Key ", b"Token "):  # short secrets: whole forms
        forms |= {base64.b64encode(prefix + raw).decode("ascii")}
    return {f for f in forms if len(f) >= _MIN_LEN}


class Redactor:
    """Replaces the given secrets (in every form of :func:`secret_forms`), URL query values
    and userinfo by ``***``. Secrets shorter than 3 characters are only removed from URLs."""

    def __init__(self, secrets: Iterable[str]) -> None:
        forms: set[str] = set()
        for s in secrets:
            if isinstance(s, str) and len(s) >= _MIN_LEN:
                forms |= secret_forms(s)
        ordered = sorted(forms, key=len, reverse=True)  # longest first: whole forms win
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def __call__(self, text: str) -> str:
        if self._pattern is not None:
            text = self._pattern.sub("***", text)
        return redact_urls(text)


# -- logging ----------------------------------------------------------------------------
_LIVE: weakref.WeakSet[Redactor] = weakref.WeakSet()
_LOGGERS = ("urllib3", "urllib3.connectionpool", "urllib3.connection", "urllib3.response",
            "urllib3.poolmanager", "urllib3.util.retry", "requests")
_installed = False
_install_lock = threading.Lock()


class _RedactingFilter(logging.Filter):
    """Rewrites a record's message (and traceback text) without its secrets; drops nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # a broken format string: logging reports it, we do not hide it
            return True
        clean = _redact_all(msg)
        if clean != msg:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = _redact_all(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = _redact_all(record.exc_text)
        return True


def _redact_all(text: str) -> str:
    for redactor in list(_LIVE):
        text = redactor(text)
    return redact_urls(text)


def install_log_filter(redactor: Redactor | None = None) -> None:
    """Make the loggers of urllib3 and requests redact URL secrets (and the secrets of
    ``redactor``, while it lives) from their records. Installs the filter once; the user's
    own logging setup (levels, handlers) is left as it is."""
    global _installed
    if redactor is not None:
        _LIVE.add(redactor)
    with _install_lock:
        if _installed:
            return
        flt = _RedactingFilter()
        for name in _LOGGERS:
            logging.getLogger(name).addFilter(flt)
        _installed = True
