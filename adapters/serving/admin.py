"""Who may change the delta's state through ``POST /admin/bypass`` (proxy and transformer).

Turning the perturbation off (or forcing it on) changes what every caller's images become,
so the route is not open to whoever can reach the port:

* with an admin token (``--admin-token-env NAME``: the token is read from that environment
  variable, never from the command line, a file or a log), a POST needs
  ``Authorization: Bearer <token>``, compared in constant time, from any host;
* without one, a POST is taken only from this machine (a loopback address, or a Unix
  socket), the operator's shell or a sidecar in the same pod.

``GET /admin/bypass`` (the state, like ``/healthz``) stays open.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
from collections.abc import Mapping
from typing import Any

log = logging.getLogger("blackbox_dft.proxy")

__all__ = ["admin_refusal", "asgi_admin_refusal", "read_admin_token"]


def _is_local(host: str | None) -> bool:
    """Whether a client address is this machine's (None: a Unix socket, no address)."""
    if host is None:
        return True
    if host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:127.0.0.1 from a dual-stack socket
    return bool(ip.is_loopback or (mapped is not None and mapped.is_loopback))


def admin_refusal(client_host: str | None, authorization: str | None,
                  token: str | None) -> tuple[int, str] | None:
    """None when a ``POST /admin/bypass`` may change the state, else ``(HTTP status, why)``.

    client_host: the caller's address as the server saw it (None: a Unix socket);
    authorization: its Authorization header (None: absent); token: the admin token (None:
    none configured, so only local callers may). The reason never quotes the header.
    """
    if token:
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(),
                                                              token.encode()):
            return None
        what = "no Authorization header" if not authorization else \
            "an Authorization header that is not the admin token"
        return 401, (f"POST /admin/bypass needs 'Authorization: Bearer <admin token>' (the "
                     f"value of the variable --admin-token-env names); got {what}")
    if _is_local(client_host):
        return None
    return 403, (f"POST /admin/bypass is taken only from this machine without an admin "
                 f"token; this request came from {client_host}. Start with "
                 "--admin-token-env NAME (the token in that environment variable) to take it "
                 "from other hosts")


def asgi_admin_refusal(scope: Mapping[str, Any], token: str | None) -> tuple[int, str] | None:
    """:func:`admin_refusal` for an ASGI HTTP ``scope`` (its client address and its
    Authorization header); a refusal is logged with the caller's address."""
    client = scope.get("client")
    host = str(client[0]) if client else None
    auth = next((v.decode("latin-1") for k, v in scope.get("headers", [])
                 if k.lower() == b"authorization"), None)
    refused = admin_refusal(host, auth, token)
    if refused is not None:
        log.warning("POST /admin/bypass refused (HTTP %d) from %s", refused[0],
                    host or "a Unix socket")
    return refused


def read_admin_token(env_name: str | None) -> str | None:
    """The admin token from environment variable ``env_name`` (None: no token); ValueError
    naming the variable (never its value) when it is unset, empty or too short."""
    if env_name is None:
        return None
    value = os.environ.get(env_name, "")
    if not value.strip():
        raise ValueError(f"--admin-token-env {env_name}: that environment variable is unset "
                         "or empty; export the admin token in it")
    if len(value.strip()) < 16:
        raise ValueError(f"--admin-token-env {env_name}: the token is {len(value.strip())} "
                         "characters long; use at least 16 (e.g. python -c 'import secrets; "
                         "print(secrets.token_urlsafe(32))')")
    return value.strip()
