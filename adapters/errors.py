"""Errors raised by the HTTP adapter: all are :class:`blackbox_dft.model.ModelError`.

Every message names the URL (with secrets removed), what came back and what to
check. None of them ever contains an API key: the adapter redacts its secrets
from every message before raising.
"""

from __future__ import annotations

from blackbox_dft.model import ModelError

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
    """No answer at all (refused, timed out, dropped) after every retry."""


class HTTPStatusError(HTTPModelError):
    """The server kept answering with an HTTP error status (4xx, or 5xx after the retries)."""


class AuthenticationError(HTTPStatusError):
    """HTTP 401/403 or a vendor's bad-key code: the key is wrong, expired or lacks a scope."""


class ThrottledError(HTTPStatusError):
    """Still throttled (429 or a vendor throttle code) after every retry."""


class ResponseFormatError(HTTPModelError):
    """The answer was not JSON, lacked the configured path, or had the wrong number of scores."""
