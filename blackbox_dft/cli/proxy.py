"""``proxy``: serve a run's delta in front of the model's API, in the run's wire format.

Loads the run's perturbation (``delta_for(H, W)``, the arithmetic of ``transform``) and its
preset (with the run's preset options; ``--preset`` for a run not fitted over HTTP), and
serves :class:`blackbox_dft.adapters.serving.proxy.ProxyApp` with uvicorn until Ctrl-C or
SIGTERM (graceful: the requests in flight are answered, within the deadline). Needs the
``proxy`` extra (uvicorn, aiohttp): exit code 4 without it.

Scheduled checks (``--check-every``, ``--check-budget``): the guard of ``blackbox-dft
check`` run by the proxy in a worker thread, injected into it (adapters do not import
tasks). The proxy holds no key, so the check needs its own access to the model: the run's
saved model spec, its key from the environment variables the run names (``--api-key-env``
at fit time) and ``--model-url`` as for ``check``; never a file. Without that access (a key
variable not set, a URL whose secrets were not saved, a run without a canary set) the proxy
still serves, scheduled checks are off, and the log and /metrics say why.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import socket
from collections.abc import Callable
from typing import Any

from blackbox_dft.adapters.remote.http import HTTPModel
from blackbox_dft.adapters.remote.presets import Preset
from blackbox_dft.adapters.remote.redact import safe_url
from blackbox_dft.adapters.remote.vendors import make_preset
from blackbox_dft.adapters.serving.admin import read_admin_token
from blackbox_dft.adapters.serving.proxy_state import DEFAULT_CHECK_EVERY
from blackbox_dft.adapters.specs import MissingDependency, SpecError
from blackbox_dft.cli.jobs import open_model
from blackbox_dft.cli.kinds import kind_named
from blackbox_dft.cli.logs import NOTES
from blackbox_dft.cli.runs import RunError, RunFolder
from blackbox_dft.cli.saved import read_saved, use_model_url
from blackbox_dft.tasks.classification import DataFineTuner
from blackbox_dft.tasks.guard import GuardReport, check_delta

__all__ = ["PROXY_EXTRA", "add_guard_arguments", "proxy_run", "load_proxy", "parse_listen",
           "scheduled_check"]

log = logging.getLogger("blackbox_dft.proxy")
PROXY_EXTRA = 'pip install "blackbox_dft[proxy]"'
#: HTTPModel's own keywords: the rest of a run's model options are the preset's
_CLIENT_OPTIONS = frozenset(inspect.signature(HTTPModel.__init__).parameters) - {"self"}


def _check_extra() -> None:
    missing = [m for m in ("uvicorn", "aiohttp") if _absent(m)]
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


def scheduled_check(run_path: str, *, model_url: str | None = None,
                    tolerance: float = 0.05) -> tuple[Callable[[int | None], GuardReport] | None,
                                                      str]:
    """(``check(budget) -> GuardReport``, "") for the proxy's schedule, or (None, why not):
    the run's canary re-queried through its own saved model spec (its keys from the
    environment), as ``blackbox-dft check`` does, without the run's lock or check.json."""
    run = RunFolder(run_path)
    saved = read_saved(run)
    if saved.kind.name != "classification":
        return None, f"a {saved.kind.name} run keeps no canary set"
    try:
        use_model_url(saved, model_url, run)
        model, _ = open_model(saved.options.model)
    except (SpecError, RunError, ValueError) as exc:  # no key, masked URL, missing extra
        return None, "no model access: " + " ".join(str(exc).split())[:300]
    tuner = DataFineTuner.load(saved.kind.result_path(run), model)
    if not hasattr(tuner, "canary_images_"):
        return None, (f"{saved.kind.result_path(run)} has no canary set (fit again with a "
                      "validation split)")

    def check(budget: int | None) -> GuardReport:
        return check_delta(tuner, model, tolerance=tolerance, budget=budget)

    return check, ""


def proxy_run(run_path: str, upstream: str, listen: str = "127.0.0.1:8080", *,
              preset: str | None = None, max_body_bytes: int = 32 << 20,
              concurrency: int = 64, deadline: float = 30.0, connections: int = 100,
              rewrite_threads: int = 1, jpeg_quality: int | None = None, png: str = "auto",
              bypass: bool = False,
              force_active: bool = False, check_every: float = DEFAULT_CHECK_EVERY,
              check_budget: int | None = None, check_tolerance: float = 0.05,
              model_url: str | None = None, admin_token_env: str | None = None) -> int:
    """Serve the proxy until interrupted; returns the exit code (0). bypass / force_active:
    start in a forced state. check_every: seconds between scheduled checks (0: none);
    check_budget: images per check (None: the canary twice). png: how perturbed images go
    upstream as PNG (``proxy_rewrite.PNG_CHOICES``). admin_token_env: the environment
    variable holding the token ``POST /admin/bypass`` needs (None: local callers only)."""
    _check_extra()
    import uvicorn  # the proxy extra: imported only here

    from blackbox_dft.adapters.serving.proxy import ProxyApp, ProxyConfig, perturber
    from blackbox_dft.adapters.serving.proxy_rewrite import Rewriter
    from blackbox_dft.adapters.serving.proxy_state import DeltaState

    host, port = parse_listen(listen)
    admin_token = read_admin_token(admin_token_env)
    delta_for, wire = load_proxy(run_path, preset)
    config = ProxyConfig(upstream, max_body_bytes=max_body_bytes, concurrency=concurrency,
                         deadline=deadline, connections=connections, bypass=bypass,
                         rewrite_threads=rewrite_threads, admin_token=admin_token)
    check, why = (None, "--check-every 0") if check_every == 0 else \
        scheduled_check(run_path, model_url=model_url, tolerance=check_tolerance)
    state = DeltaState(check, every=check_every, budget=check_budget, off_reason=why,
                       forced="off" if force_active else None)
    app = ProxyApp(Rewriter(wire, perturber(delta_for), jpeg_quality=jpeg_quality, png=png),
                   config, state)
    if NOTES.isEnabledFor(logging.INFO) and not log.isEnabledFor(logging.INFO):
        log.setLevel(logging.INFO)  # one line per check, unless -q
    sock = socket.create_server((host, port))  # bound here: a busy port is one line, exit 2
    # access_log off: a request line can carry an API key in its query string
    server = uvicorn.Server(uvicorn.Config(
        app, lifespan="on", access_log=False, server_header=False, date_header=False,
        timeout_graceful_shutdown=max(1, int(deadline)), log_level="warning"))
    print(f"proxy: {run_path}'s delta in {wire.name} format on "
          f"http://{host}:{sock.getsockname()[1]} -> {safe_url(upstream)} (Ctrl-C to stop)",
          flush=True)
    print(f"proxy: state {state.state}; " + (
        f"delta checked every {check_every:g} s" if state.enabled else
        f"scheduled checks off ({why})"), flush=True)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        log.setLevel(logging.NOTSET)
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
    p.add_argument("--rewrite-threads", dest="rewrite_threads", type=int, default=1,
                   help="threads that perturb request bodies; 1 (default) costs the least "
                   "CPU per request, more let image decoding overlap on more cores")
    p.add_argument("--jpeg-quality", dest="jpeg_quality", type=int, default=0,
                   help="0: every image goes upstream as lossless PNG, which keeps the whole "
                   "delta (the upstream must accept PNG); Q > 0: a JPEG image goes back as "
                   "JPEG at quality Q, which costs much of the gain (face task: +0.111 at 95 "
                   "against +0.267 lossless, benchmarks/results/proxy_jpeg.md)")
    p.add_argument("--png", choices=("auto", "stored", "fast"), default="auto",
                   help="how perturbed images go upstream as PNG (lossless either way): "
                   "stored = uncompressed, a tenth of the CPU of fast to write and to read "
                   "but 1.7x the bytes on photos; fast = zlib run-length compressed; auto "
                   "(default) = stored up to 1 MiB of pixels (~590x590), fast above, where "
                   "vendors' upload limits may bite")
    add_guard_arguments(p)


def add_guard_arguments(p: Any) -> None:
    """The delta-state flags the proxy and the transformer share: a forced state at start
    and the scheduled checks (``p``: an argparse parser)."""
    force = p.add_mutually_exclusive_group()
    force.add_argument("--bypass", action="store_true", help="start in forced pass-through "
                       "(no perturbation, whatever the checks say; /admin/bypass?state=auto "
                       "hands control to them)")
    force.add_argument("--force-active", dest="force_active", action="store_true",
                       help="start with the delta forced on, whatever the checks say")
    p.add_argument("--check-every", dest="check_every", type=float,
                   default=DEFAULT_CHECK_EVERY, help="seconds between checks of the delta on "
                   "the run's canary set (0: never); pass-through when it no longer helps. "
                   "Needs the run's model access: its key in the environment variable the "
                   "run names")
    p.add_argument("--check-budget", dest="check_budget", type=int, default=None,
                   help="images one check may send (default: the canary set twice)")
    p.add_argument("--check-tolerance", dest="check_tolerance", type=float, default=0.05,
                   help="as check --tolerance")
    p.add_argument("--model-url", dest="model_url", default=None, help="the run's model "
                   "URL for the checks, when its secrets were not saved, as for check "
                   "(default: the URL saved in the run)")
    p.add_argument("--admin-token-env", dest="admin_token_env", default=None, metavar="NAME",
                   help="environment variable holding a token (16+ characters) that POST "
                   "/admin/bypass must carry as 'Authorization: Bearer <token>', from any "
                   "host (default: none, so only this machine, on loopback, may change the "
                   "state)")
