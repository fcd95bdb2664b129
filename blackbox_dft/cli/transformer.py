"""``transformer``: serve a run's delta as a KServe transformer in front of an OIP v2 predictor.

Loads the run's perturbation (``delta_for(H, W)``, the arithmetic of ``transform``) and its
OIP preprocessing (the run's ``oip`` preset options: scale, mean, std, channels; the
request's own datatype, layout and size; defaults for a run not fitted over OIP), and serves
:func:`blackbox_dft.adapters.serving.kserve_transformer.make_transformer`'s ``kserve.Model``
with KServe's ModelServer until SIGTERM or Ctrl-C. Needs the ``kserve`` extra: exit code 4
without it.

KServe's controller appends ``--model_name``, ``--predictor_host`` and ``--http_port`` (and
``--workers``, ``--protocol``) to a transformer container's arguments: those spellings are
this command's too, and every other KServe ModelServer argument (``--predictor_use_ssl``,
``--predictor_request_timeout_seconds``, ``--enable_latency_logging`` ...) is handed to
KServe's own parser. Scheduled checks and the operator's switch: as ``blackbox-dft proxy``
(:func:`blackbox_dft.cli.proxy.scheduled_check` injected into
:class:`~blackbox_dft.adapters.serving.proxy_state.DeltaState`).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
from collections.abc import Sequence
from typing import Any

from blackbox_dft.adapters.remote.oip import OIPPreset
from blackbox_dft.adapters.serving.admin import read_admin_token
from blackbox_dft.adapters.serving.proxy_state import DEFAULT_CHECK_EVERY
from blackbox_dft.adapters.specs import MissingDependency
from blackbox_dft.cli.logs import NOTES
from blackbox_dft.cli.proxy import add_guard_arguments, load_proxy, scheduled_check

__all__ = ["TRANSFORMER_EXTRA", "transformer_run", "add_transformer_parser"]

log = logging.getLogger("blackbox_dft.proxy")  # DeltaState's logger
TRANSFORMER_EXTRA = 'pip install "blackbox_dft[kserve]"'


def _check_extra() -> None:
    try:
        absent = importlib.util.find_spec("kserve") is None
    except (ImportError, ValueError):  # sys.modules["kserve"] = None, a broken install
        absent = True
    if absent:
        raise MissingDependency("the transformer needs kserve (the 'kserve' extra, not "
                                f"installed); install it with: {TRANSFORMER_EXTRA}")


def _predictor_host(text: str) -> str:
    """KServe calls ``http(s)://HOST[:PORT]/v2/models/NAME/infer``: a host, not a URL."""
    if "://" in text or "/" in text or not text.strip():
        raise ValueError(f"--predictor-host takes HOST[:PORT] (e.g. my-model-predictor."
                         f"default or 127.0.0.1:8000), got {text!r}; for https add "
                         "--predictor_use_ssl true")
    return text.strip()


def _free(host: str, port: int) -> None:
    """A port another process listens on: one line (exit 2), before KServe's start."""
    try:
        socket.create_server((host, port)).close()
    except OSError as exc:
        why = os.strerror(exc.errno) if exc.errno else str(exc)
        raise OSError(f"cannot listen on {host}:{port}: {why}; pick another --http-port") \
            from None


def transformer_run(run_path: str, predictor_host: str, model_name: str, *,
                    http_port: int = 8080, host: str = "0.0.0.0", bypass: bool = False,
                    force_active: bool = False, check_every: float = DEFAULT_CHECK_EVERY,
                    check_budget: int | None = None, check_tolerance: float = 0.05,
                    model_url: str | None = None, admin_token_env: str | None = None,
                    kserve_args: Sequence[str] = ()) -> int:
    """Serve the transformer until stopped; returns the exit code (0). bypass /
    force_active: start in a forced state. check_every: seconds between scheduled checks (0:
    none); check_budget: images per check (None: the canary twice). admin_token_env: the
    environment variable holding the token ``POST /admin/bypass`` needs (None: local callers
    only). kserve_args: KServe ModelServer's own arguments."""
    predictor_host = _predictor_host(predictor_host)
    if not 0 < http_port <= 65535:
        raise ValueError(f"--http-port must be 1-65535, got {http_port}")
    admin_token = read_admin_token(admin_token_env)
    _check_extra()
    from blackbox_dft.adapters.serving.kserve_transformer import (
        kserve_options,
        make_transformer,
        serve_transformer,
    )
    from blackbox_dft.adapters.serving.proxy import perturber
    from blackbox_dft.adapters.serving.proxy_state import DeltaState

    kserve = kserve_options(list(kserve_args))
    delta_for, wire = load_proxy(run_path, "oip")
    assert isinstance(wire, OIPPreset), "load_proxy(run, 'oip') makes an OIP preset"
    check, why = (None, "--check-every 0") if check_every == 0 else \
        scheduled_check(run_path, model_url=model_url, tolerance=check_tolerance)
    state = DeltaState(check, every=check_every, budget=check_budget, off_reason=why,
                       forced="on" if bypass else "off" if force_active else None)
    model = make_transformer(model_name, perturber(delta_for), state, pre=wire.pre,
                             input_name=wire.input_name)
    _free(host, http_port)
    if NOTES.isEnabledFor(logging.INFO) and not log.isEnabledFor(logging.INFO):
        log.setLevel(logging.INFO)  # one line per check, unless -q
    print(f"transformer: {run_path}'s delta on model {model_name!r} ({wire.pre!r}) at "
          f"http://{host}:{http_port}/v2/models/{model_name}/infer -> predictor "
          f"{predictor_host} (SIGTERM or Ctrl-C to stop)", flush=True)
    print(f"transformer: state {state.state}; " + (
        f"delta checked every {check_every:g} s" if state.enabled else
        f"scheduled checks off ({why})"), flush=True)
    grpc = any(a.startswith("--enable_grpc") for a in kserve_args) and kserve.enable_grpc
    try:
        serve_transformer(model, kserve, predictor_host=predictor_host, http_port=http_port,
                          host=host, grpc=bool(grpc), admin_token=admin_token)
    except SystemExit as exc:  # uvicorn's exit at a failed start (its log line says why)
        raise OSError(f"KServe's server did not start (exit {exc.code}); its log above "
                      "says why") from None
    finally:
        log.setLevel(logging.NOTSET)
    c = model.counts
    print(f"transformer stopped; requests perturbed {c.requests_perturbed}, images "
          f"perturbed {c.images_perturbed}, bypassed {c.requests_bypassed}, refused "
          f"{c.requests_refused}, predictor errors {c.predictor_errors}", flush=True)
    return 0


def add_transformer_parser(sub: Any) -> None:
    """The ``transformer`` subcommand's arguments (``sub``: the subparsers of the CLI)."""
    p = sub.add_parser(
        "transformer", help="serve a run's delta as a KServe transformer in front of an "
        "Open Inference Protocol v2 predictor (the 'kserve' extra)",
        description="A KServe ModelServer whose model adds the run's delta to the image "
        "input of each OIP v2 request (POST /v2/models/NAME/infer) and forwards it to the "
        "predictor; the answer comes back as the predictor gave it. Own routes: "
        "/admin/bypass?state=on|off|auto; KServe's /metrics carries blackbox_dft_transformer_*."
        " Other KServe ModelServer arguments (--predictor_use_ssl true, "
        "--predictor_request_timeout_seconds S, --enable_latency_logging false, ...) are "
        "passed to KServe.")
    p.add_argument("--run", required=True, help="fitted run folder")
    p.add_argument("--predictor-host", "--predictor_host", dest="predictor_host",
                   required=True, help="HOST[:PORT] of the OIP v2 predictor (KServe's "
                   "controller sets --predictor_host)")
    p.add_argument("--model-name", "--model_name", dest="model_name", required=True,
                   help="the predictor's model name, which clients call on the transformer "
                   "too (KServe's controller appends --model_name <InferenceService name> "
                   "unless given: give it when the predictor's model is named otherwise)")
    p.add_argument("--http-port", "--http_port", dest="http_port", type=int, default=8080,
                   help="port to listen on")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (KServe's: all)")
    p.add_argument("--predictor-protocol", "--predictor_protocol", "--protocol",
                   dest="predictor_protocol", choices=["v2"], default="v2",
                   help="the predictor's protocol: Open Inference Protocol v2 over REST")
    add_guard_arguments(p)
