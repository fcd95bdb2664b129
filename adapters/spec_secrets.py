"""Secrets in model URLs and headers: written as ``${VAR}``, never saved, never printed.

Every query value, the userinfo (``user:password@``) and the fragment of a model URL are
secrets (Azure Functions' ``?code=``, ``?k=``, ``https://TOKEN@host/``: their names tell
nothing). A URL may take them from environment variables, written ``${VAR}``::

    https://fn.azurewebsites.net/api/score?code=${AZ_CODE}

``config.json`` keeps the URL as written (with ``${VAR}``; :func:`stored_spec`), the model
is built from the expanded URL (:func:`expand`), and a resumed run expands it again. A
*literal* secret is saved and shown as ``***``; such a run can be resumed only with
``--model-url`` (:func:`same_url`). The spec as given is kept in this process only
(:func:`register_spec` / :func:`raw_spec`), and every value that is a secret is
remembered so that :func:`scrub` can take it out of any message as a last line of defence
(the adapters redact their own messages; the CLI never composes one from the raw URL).
"""

from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import quote, quote_plus, urlsplit, urlunsplit

from blackbox_dft.core.model import model_name

__all__ = ["MASK", "is_url", "stored_spec", "literal_secrets", "expand", "register_spec",
           "raw_spec", "same_url", "scrub", "remember_secret", "check_headers",
           "expand_headers", "reset", "model_label"]

MASK = "***"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_BENIGN_HEADERS = ("content-type", "accept", "accept-encoding", "user-agent")
_MIN_SCRUB = 6  # shorter values would garble messages; real keys are far longer
_RAW: dict[str, str] = {}  # stored spec -> spec as given (this process only)
_SECRETS: set[str] = set()


def is_url(spec: Any) -> bool:
    """Whether a model spec is an http(s) URL."""
    return isinstance(spec, str) and spec.lower().startswith(("http://", "https://"))


def _from_env(value: str) -> bool:
    """A value whose secret comes from the environment (it references a ``${VAR}``)."""
    return bool(_VAR.search(value))


def _split_netloc(netloc: str) -> tuple[str | None, str]:
    userinfo, sep, host = netloc.rpartition("@")
    return (userinfo, host) if sep else (None, netloc)


def _mask(value: str, keep_env: bool) -> str:
    return value if keep_env and _from_env(value) else MASK


def _redact(spec: str, keep_env: bool) -> tuple[str, list[str]]:
    """``spec`` with its secret parts masked (``${VAR}`` ones kept if ``keep_env``), and
    the names of the literal secrets found."""
    parts = urlsplit(spec)
    found: list[str] = []
    userinfo, host = _split_netloc(parts.netloc)
    if userinfo is not None:
        masked = ":".join(_mask(p, keep_env) if p else p for p in userinfo.split(":", 1))
        if MASK in masked and not (keep_env and masked == userinfo):
            found.append("userinfo")
        host = f"{masked}@{host}"
    pairs = []
    for pair in parts.query.split("&") if parts.query else []:
        name, sep, value = pair.partition("=")
        if not sep:  # a bare token (?SECRET) is a value too
            name, value = "", name
        shown = _mask(value, keep_env) if value else value
        if shown == MASK and not _from_env(value):
            found.append(name or "a bare query value")
        pairs.append(f"{name}={shown}" if sep else shown)
    fragment = _mask(parts.fragment, keep_env) if parts.fragment else ""
    if fragment == MASK and not _from_env(parts.fragment):
        found.append("#fragment")
    return urlunsplit((parts.scheme, host, parts.path, "&".join(pairs), fragment)), found


def stored_spec(spec: str) -> str:
    """The spec as saved in ``config.json`` and shown: a URL's literal query values,
    userinfo and fragment become ``***``, ``${VAR}`` references stay; other specs as is."""
    return _redact(spec, keep_env=True)[0] if is_url(spec) else spec


def literal_secrets(spec: str) -> list[str]:
    """Names of the literal (not ``${VAR}``) secrets in a URL spec (``[]`` if none)."""
    return _redact(spec, keep_env=True)[1] if is_url(spec) else []


def same_url(a: str, b: str) -> bool:
    """Whether two URL specs are the same endpoint once every secret is masked (``${VAR}``
    references and literal values alike): how ``--model-url`` is checked against a run."""
    return is_url(a) and is_url(b) and _redact(a, False)[0] == _redact(b, False)[0]


def expand(text: str, what: str = "the model URL") -> str:
    """``text`` with every ``${VAR}`` replaced by the environment variable's value (each
    remembered as a secret); ValueError naming a variable that is not set."""
    def sub(m: re.Match[str]) -> str:
        value = os.environ.get(m.group(1))
        if not value:
            raise ValueError(f"environment variable {m.group(1)} (in {what}) is not set")
        remember_secret(value)
        return value

    return _VAR.sub(sub, text)


def remember_secret(value: str | None) -> None:
    """Remember a secret value (and its URL encodings) for :func:`scrub`."""
    if value and len(value) >= _MIN_SCRUB:
        _SECRETS.update({value, quote(value, safe=""), quote_plus(value)})


def register_spec(spec: str, as_spec: str | None = None) -> str:
    """Keep ``spec`` as given (it may hold literal secrets) for this process under its
    stored form (or ``as_spec``: the stored form of the run being resumed); returns the
    stored form, which is all that options, files and messages ever see."""
    stored = as_spec if as_spec is not None else stored_spec(spec)
    if is_url(spec):
        parts = urlsplit(spec)
        userinfo = _split_netloc(parts.netloc)[0] or ""
        values = [p.partition("=")[2] or p for p in parts.query.split("&") if p]
        for value in [*userinfo.split(":"), *values, parts.fragment]:
            if not _from_env(value):
                remember_secret(value)
    _RAW[stored] = spec
    return stored


def raw_spec(spec: str) -> str:
    """The spec as given for a stored form registered by :func:`register_spec` (else
    ``spec``); ValueError if it is a URL whose literal secrets were not saved."""
    raw = _RAW.get(spec, spec)
    if is_url(raw) and MASK in raw:
        raise ValueError("the model URL's secret values were not saved (they show as ***); "
                         "give the URL again with --model-url, its secrets as ${VAR}")
    return raw


def scrub(text: str) -> str:
    """``text`` without any remembered secret value (replaced by ``***``)."""
    for value in sorted(_SECRETS, key=len, reverse=True):
        if value in text:
            text = text.replace(value, MASK)
    return text


def model_label(model: Any) -> str:
    """The model's display name for messages, reports and the progress bar, scrubbed."""
    return scrub(model_name(model))


def check_headers(headers: Any) -> None:
    """ValueError unless every header value that may be a secret (all but Content-Type,
    Accept, ...) takes its secret from ``${VAR}``: options are saved in ``config.json``."""
    if not isinstance(headers, dict):
        raise ValueError(f"model option headers must be an object of header: value, got "
                         f"{type(headers).__name__}")
    for name, value in headers.items():
        if str(name).lower() in _BENIGN_HEADERS:
            continue
        if not isinstance(value, str) or not _from_env(value):
            raise ValueError(f"model option headers: the value of {name} is a secret and would "
                             "be saved in config.json; write it as ${VAR} (an environment "
                             f"variable), e.g. {name}=\"${{MY_KEY}}\"")


def expand_headers(headers: dict[str, Any]) -> dict[str, Any]:
    """Header values with ``${VAR}`` expanded (the values are remembered as secrets)."""
    return {k: expand(v, f"the header {k}") if isinstance(v, str) else v
            for k, v in headers.items()}


def reset() -> None:
    """Forget the specs and secrets of an earlier command (each command starts afresh)."""
    _RAW.clear()
    _SECRETS.clear()
