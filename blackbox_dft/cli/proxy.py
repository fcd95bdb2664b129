"""``proxy``: serve a run's delta in front of the model's API, in the run's wire format.

Loads the run's perturbation (``delta_for(H, W)``, the arithmetic of ``transform``) and its
preset (with the run's preset options; ``--preset`` for a run not fitted over HTTP), and
serves :class:`blackbox_dft.adapters.serving.proxy.ProxyApp` with uvicorn until Ctrl-C or
SIGTERM (graceful: the requests in flight are answered, within the deadline). Needs the
``proxy`` extra (uvicorn, httpx): exit code 4 without it.
"""

from __future__ import annotations

import importlib.util
import inspect
import socket
from typing import Any

from blackbox_dft.adapters.remote.http import HTTPModel
from blackbox_dft.adapters.remote.presets import Preset
from blackbox_dft.adapters.remote.redact import safe_url
from blackbox_dft.adapters.remote.vendors import make_preset
from blackbox_dft.adapters.specs import MissingDependency
from blackbox_dft.cli.kinds import kind_named
from blackbox_dft.cli.runs import RunError, RunFolder
from blackbox_dft.cli.saved import read_saved

__all__ = ["PROXY_EXTRA", "proxy_run", "load_proxy", "parse_listen"]

PROXY_EXTRA = 'pip install "blackbox_dft[proxy]"'
#: HTTPModel's own keywords: the rest of a run's model options are the preset's
_CLIENT_OPTIONS = frozenset(inspect.signature(HTTPModel.__init__).parameters) - {"self"}


def _check_extra() -> None:
    missing = [m for m in ("uvicorn", "httpx") if _absent(m)]
    if missing:
        raise MissingDependency(f"the proxy needs {' and '.join(missing)} (the 'proxy' extra, "
                                f"not installed); install it with: {PROXY_EXTRA}")


def _absent(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except (ImportError, ValueError):  # sys.modules[module] = None, a broken install
        return True


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port); ValueError naming the text otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"--listen must be HOST:PORT (e.g. 127.0.0.1:8080), got {text!r}")
    return host.strip("[]"), int(port)


def load_proxy(run_path: str, preset_name: str | None = None) -> tuple[Any, Preset]:
    """(``delta_for(h, w)``, the preset) of a fitted run. RunError (one line) for a run
    without one perturbation or without a preset."""
    run = RunFolder(run_path)
    saved = read_saved(run)
    kind = kind_named(run.read_config().get("kind"), run.config)
    tuner = kind.transformer(run)
    delta_for = getattr(tuner, "delta_for", None)
    if delta_for is None:
        raise RunError(f"run {run.path} holds no single delta_for(h, w) perturbation "
                       f"({type(tuner).__name__}); the proxy serves classification runs")
    model = saved.options.model
    name = preset_name or model.preset
    if name is None and str(model.spec or "").startswith(("http://", "https://")):
        name = "json"  # the HTTP model's default preset
    if name is None:
        raise RunError(f"run {run.path} was not fitted on an HTTP model ({model.spec}); "
                       "name the upstream's wire format with --preset")
    options = {k: v for k, v in (model.model_options or {}).items()
               if k not in _CLIENT_OPTIONS}
    return delta_for, make_preset(name, **(options if name == model.preset else {}))


def proxy_run(run_path: str, upstream: str, listen: str = "127.0.0.1:8080", *,
              preset: str | None = None, max_body_bytes: int = 32 << 20,
              concurrency: int = 64, deadline: float = 30.0, connections: int = 100,
              jpeg_quality: int | None = 95, bypass: bool = False) -> int:
    """Serve the proxy until interrupted; returns the exit code (0)."""
    _check_extra()
    import uvicorn  # the proxy extra: imported only here

    from blackbox_dft.adapters.serving.proxy import ProxyApp, ProxyConfig, perturber
    from blackbox_dft.adapters.serving.proxy_rewrite import Rewriter

    host, port = parse_listen(listen)
    delta_for, wire = load_proxy(run_path, preset)
    config = ProxyConfig(upstream, max_body_bytes=max_body_bytes, concurrency=concurrency,
                         deadline=deadline, connections=connections, bypass=bypass)
    app = ProxyApp(Rewriter(wire, perturber(delta_for), jpeg_quality=jpeg_quality), config)
    sock = socket.create_server((host, port))  # bound here: a busy port is one line, exit 2
    # access_log off: a request line can carry an API key in its query string
    server = uvicorn.Server(uvicorn.Config(
        app, lifespan="on", access_log=False, server_header=False, date_header=False,
        timeout_graceful_shutdown=max(1, int(deadline)), log_level="warning"))
    print(f"proxy: {run_path}'s delta in {wire.name} format on "
          f"http://{host}:{sock.getsockname()[1]} -> {safe_url(upstream)} (Ctrl-C to stop)",
          flush=True)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    m = app.metrics
    print(f"proxy stopped; requests {sum(m.by_code.values())}, images perturbed "
          f"{m.counts['images_perturbed']}, upstream errors {m.counts['upstream_errors']}",
          flush=True)
    return 0


def add_proxy_parser(sub: Any) -> None:
    """The ``proxy`` subcommand's arguments (``sub``: the subparsers of the CLI)."""
    p = sub.add_parser("proxy", help="serve a run's delta as an HTTP proxy in front of the "
                       "model's API (the 'proxy' extra)",
                       description="An HTTP proxy in the run's wire format: adds the run's "
                       "delta to the images of each request, forwards it with the caller's "
                       "own credentials to --upstream, returns the answer untouched. Own "
                       "routes: /healthz, /metrics, /admin/bypass?state=on|off.")
    p.add_argument("--run", required=True, help="fitted run folder")
    p.add_argument("--upstream", required=True,
                   help="base URL of the model's API; request paths are appended to it")
    p.add_argument("--listen", default="127.0.0.1:8080", help="HOST:PORT to listen on")
    p.add_argument("--preset", default=None, help="the upstream's wire format (default: the "
                   "run's)")
    p.add_argument("--max-body-bytes", dest="max_body_bytes", type=int, default=32 << 20,
                   help="largest request body taken (413 above)")
    p.add_argument("--concurrency", type=int, default=64,
                   help="requests forwarded at once (others wait within the deadline)")
    p.add_argument("--deadline", type=float, default=30.0,
                   help="seconds per request, upstream included (504 after)")
    p.add_argument("--connections", type=int, default=100,
                   help="keep-alive connections to the upstream")
    p.add_argument("--jpeg-quality", dest="jpeg_quality", type=int, default=95,
                   help="a JPEG image is sent back as JPEG at this quality (0: as lossless "
                   "PNG, which keeps the whole delta but the upstream must accept PNG)")
    p.add_argument("--bypass", action="store_true",
                   help="start in pass-through (no perturbation)")
