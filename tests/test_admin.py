"""Who may change the delta's state (POST /admin/bypass on the proxy and the transformer):
with an admin token, a Bearer header carrying it, from any host; without one, this machine
only. Refusals name the problem, never the header or the token."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from blackbox_dft.adapters.serving.admin import admin_refusal, read_admin_token

TOKEN = "s3cret-admin-token-0123456789"


@pytest.mark.parametrize("host", ["127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1",
                                  "localhost", None])
def test_without_a_token_this_machine_may(host: str | None) -> None:
    assert admin_refusal(host, None, None) is None
    assert admin_refusal(host, "Bearer anything", None) is None


@pytest.mark.parametrize("host", ["10.0.0.7", "192.168.1.20", "::ffff:10.0.0.7",
                                  "2001:db8::1", "0.0.0.0", "not-an-address"])
def test_without_a_token_other_hosts_are_refused(host: str) -> None:
    status, why = admin_refusal(host, "Bearer " + TOKEN, None)
    assert status == 403 and host in why and "--admin-token-env" in why
    assert TOKEN not in why


@pytest.mark.parametrize("host", ["10.0.0.7", "127.0.0.1", None])
def test_with_a_token_only_the_bearer_header_may(host: str | None) -> None:
    assert admin_refusal(host, "Bearer " + TOKEN, TOKEN) is None
    assert admin_refusal(host, "bearer  " + TOKEN + " ", TOKEN) is None  # scheme any case
    for header in (None, "", "Bearer", "Bearer wrong-token-xxxxxxxxxxxx", "Basic " + TOKEN,
                   TOKEN, "Bearer " + TOKEN + "x"):
        status, why = admin_refusal(host, header, TOKEN)
        assert status == 401 and "Authorization: Bearer" in why
        assert TOKEN not in why and "wrong-token" not in why  # neither token is echoed


def test_the_token_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert read_admin_token(None) is None
    monkeypatch.setenv("DFT_ADMIN", "  " + TOKEN + "\n")
    assert read_admin_token("DFT_ADMIN") == TOKEN
    monkeypatch.setenv("DFT_ADMIN", "short")
    with pytest.raises(ValueError, match="DFT_ADMIN: the token is 5 characters long") as e:
        read_admin_token("DFT_ADMIN")
    assert "short" not in str(e.value)
    monkeypatch.delenv("DFT_ADMIN")
    with pytest.raises(ValueError, match="DFT_ADMIN: that environment variable is unset"):
        read_admin_token("DFT_ADMIN")


def _post(app: Any, client: tuple[str, int] | None, headers: list[tuple[bytes, bytes]],
          state: str = "on") -> tuple[int, dict[str, Any]]:
    """One POST /admin/bypass?state=... through the proxy's ASGI app, as a given client."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/admin/bypass",
             "query_string": f"state={state}".encode(), "headers": headers, "client": client}
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], json.loads(sent[1]["body"])


def _proxy(token: str | None) -> Any:
    pytest.importorskip("aiohttp")
    import numpy as np

    from blackbox_dft.adapters.remote.vendors import make_preset
    from blackbox_dft.adapters.serving.proxy import ProxyApp, ProxyConfig, perturber
    from blackbox_dft.adapters.serving.proxy_rewrite import Rewriter

    rewriter = Rewriter(make_preset("json"), perturber(lambda h, w: np.zeros((h, w, 3))))
    return ProxyApp(rewriter, ProxyConfig("http://127.0.0.1:9", admin_token=token))


def test_proxy_admin_route_checks_the_caller() -> None:
    app = _proxy(None)
    status, body = _post(app, ("10.0.0.7", 5000), [])
    assert status == 403 and "10.0.0.7" in body["error"] and app.state.state != "bypass_forced"
    assert _post(app, ("127.0.0.1", 5000), [])[0] == 200
    assert app.state.state == "bypass_forced"

    app = _proxy(TOKEN)
    status, body = _post(app, ("127.0.0.1", 5000), [(b"authorization", b"Bearer nope")])
    assert status == 401 and "nope" not in body["error"] and app.state.state != "bypass_forced"
    auth = [(b"authorization", ("Bearer " + TOKEN).encode())]
    assert _post(app, ("10.0.0.7", 5000), auth) == (200, {"bypass": True,
                                                          "state": "bypass_forced"})
    assert TOKEN not in repr(app.config)  # the config's repr (logs, tracebacks) hides it


def test_cli_refuses_an_unset_token_variable_before_anything(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("uvicorn")
    pytest.importorskip("aiohttp")
    from blackbox_dft.cli.main import main

    monkeypatch.delenv("DFT_NO_SUCH_TOKEN", raising=False)
    code = main(["proxy", "--run", "no-such-run", "--upstream", "http://127.0.0.1:9",
                 "--admin-token-env", "DFT_NO_SUCH_TOKEN"])
    err = capsys.readouterr().err
    assert code == 2 and "--admin-token-env DFT_NO_SUCH_TOKEN: that environment variable " \
        "is unset or empty" in err and "Traceback" not in err
