"""Errors raised by the HTTP adapter: all are :class:`blackbox_dft.core.model.ModelError`.

Every message is one line that names the URL (with secrets removed), what came back and
what to check. None of them ever contains a secret (API keys, header values, URL query
values and userinfo, in any encoding the server may echo them in), and none carries the
transport error it replaces in ``__context__`` (whose text may hold the URL).
"""

from __future__ import annotations

from blackbox_dft.core.model import ModelError

__all__ = [
    "HTTPModelError",
    "EndpointUnreachable",
    "HTTPStatusError",
    "AuthenticationError",
    "ThrottledError",
    "ResponseFormatError",
]


class HTTPModelError(ModelError):
    """A remote model failed; ``url`` (secret-free), ``status`` and ``vendor_message`` say how."""

    def __init__(self, message: str, *, url: str = "", status: int | None = None,
                 vendor_message: str = "") -> None:
        super().__init__(message)
        self.url = url
        self.status = status
        self.vendor_message = vendor_message


class EndpointUnreachable(HTTPModelError):
    """No answer at all (refused, timed out, dropped) after every retry, an answer that broke
    off or passed the deadline (not retried: it may have been billed), or a call stopped by
    ``close()``. Not latched: the next call tries again."""


class HTTPStatusError(HTTPModelError):
    """The server kept answering with an HTTP error status (4xx, or 5xx after the retries),
    or redirected (3xx: never followed, so that keys stay with the endpoint given)."""


class AuthenticationError(HTTPStatusError):
    """HTTP 401/403 or a vendor's bad-key code: the key is wrong, expired or lacks a scope."""


class ThrottledError(HTTPStatusError):
    """Still throttled (429 or a vendor throttle code) after every retry."""


class ResponseFormatError(HTTPModelError):
    """The answer was not JSON (or nested too deeply), lacked the configured path, had the
    wrong number of scores or non-finite ones, or was larger than ``max_response_bytes``."""
