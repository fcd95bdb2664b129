"""HTTPModel: a remote model (vendor REST API or model server) as a ``Model``.

One ``requests.Session`` with a connection pool; each ``predict`` call is split
into requests of at most ``images_per_request`` images, sent by up to
``concurrency`` daemon threads under a client-side ``rate_limit``, and the scores
come back in input order. Transient faults (connection errors, timeouts, 429, 5xx)
are retried by urllib3's ``Retry`` (POST included, exponential backoff with jitter,
``Retry-After`` honoured up to ``max_backoff``); vendor throttles that are not a 429
(Face++ 403 ``CONCURRENCY_LIMIT_EXCEEDED``, Clarifai's body status 11005) are retried
here. Every wait is capped by ``max_backoff`` and ends at once when the call is
interrupted; every attempt has a ``deadline``; every answer body a size cap; no
redirect is ever followed (see :mod:`blackbox_dft.adapters.remote.transport`). Before
the first request, a preset may read the server's metadata (OIP: the model's input).

Query accounting: this adapter counts nothing towards the budget. The budget
is ``blackbox_dft.core.model.QueryCounter`` (images passed to ``predict``), so a
retried request never changes any count. When a call fails or is interrupted, the
answers that did come back are attached to the exception
(:func:`blackbox_dft.core.model.attach_answered`) so that the query cache keeps them.

Errors that retrying cannot fix (bad key, a redirect, a URL that answers with something
else, the wrong number of scores) are raised once and *latched*: later calls
raise the same error without sending anything, until :meth:`HTTPModel.reset`,
so that a caller's loop cannot keep paying for requests that will fail. Secrets
(keys, header values, URL query values and userinfo) are redacted from every
message, in the encodings a server may echo them in (:mod:`blackbox_dft.adapters.remote.redact`).
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Mapping
from concurrent.futures import FIRST_EXCEPTION, Future, wait
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from blackbox_dft.adapters.base import BaseModel
from blackbox_dft.adapters.errors import EndpointUnreachable, ResponseFormatError
from blackbox_dft.adapters.remote.endpoint import Endpoint
from blackbox_dft.adapters.remote.presets import Preset
from blackbox_dft.adapters.remote.redact import safe_url
from blackbox_dft.adapters.remote.transport import Aborted, Call, DaemonPool
from blackbox_dft.adapters.remote.vendors import make_preset
from blackbox_dft.adapters.remote.wire import encode_image
from blackbox_dft.core.images import check_image_pairs, side_by_side
from blackbox_dft.core.model import attach_answered

__all__ = ["HTTPModel", "safe_url"]

OUTPUT_KINDS = ("scores", "labels", "ordinal", "embedding", "similarity")
#: answers of classification endpoints are far smaller (a 128-image Clarifai answer with
#: 20 concepts is ~0.4 MB, 32 images x 1000 classes of OIP FP64 ~0.7 MB): 16 MiB is 20x
#: that, and bounds a call's memory at concurrency x 16 MiB
MAX_RESPONSE_BYTES = 16 * 2**20
_INTERRUPT_GRACE = 1.0  # s: answers arriving this soon after Ctrl-C/SIGTERM are kept


class HTTPModel(BaseModel):
    """A model behind an HTTP endpoint, in one of the preset wire formats.

    url: the full endpoint URL (e.g. ``http://host:8080/v2/models/smile/infer``);
    preset: a name from ``blackbox_dft.adapters.remote.vendors.PRESETS`` or a :class:`Preset`; the
    preset's options (``labels``, ``template``, ``scores_path``, ``outputs``, ...)
    are passed as further keywords. api_key / api_secret: secrets, else read from
    the preset's environment variables; sent only in headers or form fields.
    headers: extra headers (every value is treated as a secret, except Content-Type,
    Accept and similar). Query values and userinfo of ``url`` are secrets too.
    timeout: seconds, or (connect, read), per socket operation. max_retries: retries per
    request. backoff: seconds of the first backoff (doubles, jittered); max_backoff: the
    longest wait between attempts, seconds, also for a server's ``Retry-After`` (a larger
    one is cut to it, and the error says so). deadline: seconds one attempt may take, from
    sending the request to the last byte of the answer (default: twice connect + read
    timeout, 130 s with the default timeout); an attempt past it is cut and *not* retried
    (the server may have billed it, and a trickling server would cost another deadline):
    :class:`EndpointUnreachable`, not latched. max_response_bytes: the largest answer body
    read (default 16 MiB; checked on ``Content-Length`` and while reading the decoded body):
    a larger one is a latched :class:`ResponseFormatError`. Redirects are never followed,
    to another origin or the same one (a key would go where the user did not send it):
    a 3xx answer is a latched :class:`HTTPStatusError` naming the target (secret-free);
    use the final URL.
    concurrency: requests in flight at once. images_per_request: batch size per
    request (capped by the vendor's limit). rate_limit: request starts per second.
    encoding: ``"png"`` (lossless, default) or ``"jpeg"`` (warns: it erodes a small
    perturbation).
    output_kind: what the endpoint returns: ``"scores"`` (default), ``"labels"`` (a
    decision per image, e.g. ``scores_path="results.*.label"`` with ``labels=[...]``: each
    label string, or a boolean for two classes, becomes a one-hot row; fit it with
    ``scores="labels"``), ``"ordinal"`` (coarse likelihood levels), ``"embedding"`` or
    ``"similarity"`` (a face-compare API: use :meth:`compare`; default for presets that
    declare it, e.g. ``facepp_compare``). The tuners refuse a loss that does not fit the
    declared kind.

    A failed or interrupted ``predict`` attaches the answers that came back to its
    exception (``exc.answered``: row numbers, scores). On a request that fails for good,
    no further request starts, sleeping retries stop, and requests in flight are waited
    for (each bounded by the deadline). On KeyboardInterrupt (the CLI turns SIGTERM into
    one), answers arriving within 1 s are kept and the rest are cut.
    """

    def __init__(self, url: str, *, preset: str | Preset = "json",
                 headers: Mapping[str, str] | None = None,
                 api_key: str | None = None, api_secret: str | None = None,
                 timeout: float | tuple[float, float] = (5.0, 60.0), max_retries: int = 5,
                 backoff: float = 0.5, max_backoff: float = 30.0, concurrency: int = 4,
                 images_per_request: int | None = None, rate_limit: float | None = None,
                 encoding: str = "png", jpeg_quality: int = 95, name: str | None = None,
                 output_kind: str | None = None, deadline: float | None = None,
                 max_response_bytes: int = MAX_RESPONSE_BYTES, **preset_options: Any) -> None:
        if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
            raise ValueError(f"url must be an http(s) URL, got {safe_url(str(url))!r}")
        if output_kind is not None and output_kind not in OUTPUT_KINDS:
            raise ValueError(f"output_kind must be one of {OUTPUT_KINDS}, got {output_kind!r}")
        self.preset = make_preset(preset, **preset_options)
        self.output_kind = output_kind or self.preset.output_kind
        self.encoding, self.jpeg_quality = _check_encoding(encoding), int(jpeg_quality)
        ipr = _images_per_request(self.preset, images_per_request)
        if concurrency < 1 or max_retries < 0:
            raise ValueError(f"need concurrency >= 1 and max_retries >= 0, "
                             f"got {concurrency}, {max_retries}")
        self.images_per_request, self.concurrency = ipr, int(concurrency)
        self.timeout, self.max_retries = timeout, int(max_retries)
        self.backoff, self.max_backoff = float(backoff), float(max_backoff)
        self.deadline = _deadline(timeout, deadline)
        if not self.max_backoff >= 0:
            raise ValueError(f"max_backoff must be >= 0 seconds, got {max_backoff!r}")
        self.max_response_bytes = _max_response_bytes(max_response_bytes)
        self.rate_limit = rate_limit
        self.name = name or f"HTTPModel({self.preset.name}@{safe_url(url)})"
        self._secrets = _read_secrets(self.preset, {"api_key": api_key, "api_secret": api_secret})
        self._headers = {str(k): str(v) for k, v in (headers or {}).items()}
        self._endpoint = Endpoint(
            url, self.preset, secrets=self._secrets, headers=self._headers,
            encode=lambda im: encode_image(im, self.encoding, self.jpeg_quality),
            timeout=timeout, max_retries=self.max_retries, backoff=self.backoff,
            max_backoff=self.max_backoff, deadline=self.deadline,
            max_response_bytes=self.max_response_bytes, pool_size=self.concurrency,
            rate_limit=rate_limit)
        #: counters: requests sent, failed attempts, vendor throttles, images answered
        self.stats = self._endpoint.stats
        self.session = self._endpoint.session
        self._pool: DaemonPool | None = None
        self._prepared, self._prepare_lock = False, threading.Lock()  # metadata read once
        self._calls: set[Call] = set()
        self._calls_lock = threading.Lock()

    @property
    def url(self) -> str:
        """The endpoint URL (with its secrets; show ``safe_url(url)``)."""
        return self._endpoint.url

    @url.setter
    def url(self, value: str) -> None:
        self._endpoint.url = value

    # -- Model API ---------------------------------------------------------------------
    def _prepare(self, images: np.ndarray) -> None:
        """Once, before the first request: the preset reads what it needs from the server
        (OIP: the metadata) and settles the URL and images per request. A failure sends no
        request (``exc.answered`` says so); a metadata that does not fit is latched."""
        call, n, error = Call(), len(images), None
        with self._calls_lock:
            self._calls.add(call)
        try:
            url = self.preset.prepare(self.url, lambda u: self._endpoint.get_json(u, call))
        except BaseException as exc:  # an HTTPModelError, KeyboardInterrupt, the preset's line
            error = exc
        finally:
            with self._calls_lock:
                self._calls.discard(call)
        if error is not None:  # raised out here: nothing in the new error's __context__
            if isinstance(error, ValueError):
                error = self._endpoint.fatal = self._endpoint.error(ResponseFormatError, f"{error}")
            self._attach(error, {}, list(range(0, len(images), self.images_per_request)), n)
            raise error
        self.url = url  # the version path, when one was given
        cap = self.preset.max_images_per_request
        self.images_per_request = min(self.images_per_request, cap or self.images_per_request)
        self._prepared = True

    def _predict(self, images: np.ndarray) -> np.ndarray:
        latched = self._endpoint.latched()
        if latched is not None:
            raise latched
        if not self._prepared:
            with self._prepare_lock:
                if not self._prepared:
                    self._prepare(images)
        k = self.images_per_request
        starts = list(range(0, len(images), k))
        done: dict[int, np.ndarray] = {}  # first row of a request -> its scores
        unsent: list[int] = []  # first rows of requests that never went out
        call = Call()
        with self._calls_lock:
            self._calls.add(call)
        error: BaseException | None = None
        try:
            if len(starts) == 1 or self.concurrency == 1:
                self._in_turn(images, starts, call, done, unsent)
            else:
                error = self._gather(images, starts, call, done, unsent)
        except BaseException as exc:  # KeyboardInterrupt included: keep what came back
            call.cut_all()
            error = exc
        finally:
            with self._calls_lock:
                self._calls.discard(call)
        if isinstance(error, Aborted):  # only close() from another thread stops a call so
            error = self._endpoint.error(
                EndpointUnreachable, "the call was stopped before every request was answered "
                "(the model was closed)")
        if error is not None:
            self._attach(error, done, unsent, len(images))
            raise error
        parts = [done[s] for s in starts]
        widths = {p.shape[1] for p in parts}
        if len(widths) != 1:
            raise self._endpoint.error(
                ResponseFormatError, f"requests answered different numbers of scores per "
                f"image: {sorted(widths)}", check="the preset options")
        return np.concatenate(parts, axis=0)

    def _in_turn(self, images: np.ndarray, starts: list[int], call: Call,
                 done: dict[int, np.ndarray], unsent: list[int]) -> None:
        """Send the requests one after the other; on a failure, the ones after it (and it,
        if it was stopped before going out) are recorded in ``unsent``."""
        k = self.images_per_request
        for i, s in enumerate(starts):
            try:
                done[s] = self._endpoint.send(images[s:s + k], call)
            except BaseException as exc:
                went_out = not (isinstance(exc, Aborted) and exc.before_send)
                unsent += starts[i + 1 if went_out else i:]
                raise

    def _gather(self, images: np.ndarray, starts: list[int], call: Call,
                done: dict[int, np.ndarray], unsent: list[int]) -> BaseException | None:
        """Send the requests on the pool; fill ``done``; return the error to raise, if any."""
        if self._pool is None:
            self._pool = DaemonPool(self.concurrency, "HTTPModel")
        k = self.images_per_request
        futures: dict[Future[np.ndarray], int] = {
            self._pool.submit(self._endpoint.send, images[s:s + k], call): s for s in starts}
        try:
            wait(futures, return_when=FIRST_EXCEPTION)
            if any(f.done() and f.exception() is not None for f in futures):
                call.abort.set()  # nothing new starts; sleeping retries wake and stop
                wait(futures)  # in flight: each bounded by the deadline, and maybe paid
        except KeyboardInterrupt as exc:
            call.abort.set()
            try:
                wait(futures, timeout=_INTERRUPT_GRACE)
            except KeyboardInterrupt:
                pass
            call.cut_all()
            self._collect(futures, done, unsent)
            return exc
        errors = self._collect(futures, done, unsent)
        real = [e for e in errors if not isinstance(e, Aborted)]
        return (real or errors)[0] if errors else None

    @staticmethod
    def _collect(futures: dict[Future[np.ndarray], int], done: dict[int, np.ndarray],
                 unsent: list[int]) -> list[BaseException]:
        """Answers into ``done``, the first rows of requests never sent into ``unsent``;
        returns the errors."""
        errors = []
        for f, s in sorted(futures.items(), key=lambda item: item[1]):
            if not f.done():
                if f.cancel():  # never started
                    unsent.append(s)
                continue
            err = f.exception()
            if err is not None:
                errors.append(err)
                if isinstance(err, Aborted) and err.before_send:
                    unsent.append(s)
            else:
                done[s] = f.result()
        return [e for e in errors if e is not None]

    def _attach(self, error: BaseException, done: dict[int, np.ndarray], unsent: list[int],
                n: int) -> None:
        """Record on ``error`` the requests that came back and those never sent (rows into
        this call's ``n`` images)."""
        k = self.images_per_request
        never = np.concatenate([np.arange(s, min(s + k, n)) for s in sorted(unsent)]) \
            if unsent else np.zeros(0, dtype=np.int64)
        if not done or len({p.shape[1] for p in done.values()}) != 1:
            attach_answered(error, np.zeros(0, dtype=np.int64), np.zeros((0, 1)), never)
            return
        rows = np.concatenate([np.arange(s, s + len(p)) for s, p in sorted(done.items())])
        attach_answered(error, rows, np.concatenate([p for _, p in sorted(done.items())]),
                        never)

    def compare(self, images_a: np.ndarray, images_b: np.ndarray) -> np.ndarray:
        """Similarities float64 ``(P,)`` of pairs ``(images_a[i], images_b[i])`` from a
        face-compare endpoint (``output_kind="similarity"``): each pair is sent as one
        side-by-side image that the preset splits into the vendor's two fields."""
        if self.output_kind != "similarity":
            raise TypeError(f"{self.name} answers {self.output_kind!r}, not pair similarities; "
                            "compare() needs a face-compare preset such as 'facepp_compare'")
        a, b = check_image_pairs(images_a, images_b)
        sims = self.predict(side_by_side(a, b))
        if sims.shape[1] != 1:
            raise self._endpoint.error(
                ResponseFormatError, f"expected one similarity per pair, got {sims.shape[1]} "
                "values", check="the preset options")
        return sims[:, 0]

    def reset(self) -> None:
        """Forget a latched error so that the next ``predict`` sends requests again (and
        reads the server's metadata again, for a preset that reads it)."""
        self._endpoint.fatal = None
        self._prepared = False

    def close(self) -> None:
        """Stop the calls in progress, the worker threads and the connection pool."""
        with self._calls_lock:
            calls = list(self._calls)
        for call in calls:
            call.cut_all()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        self.session.close()

    def __enter__(self) -> HTTPModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        auth = f", secrets={sorted(self._secrets)} (hidden)" if self._secrets else ""
        hdrs = f", headers={sorted(self._headers)}" if self._headers else ""
        return (f"HTTPModel({safe_url(self.url)!r}, preset={self.preset!r}, "
                f"concurrency={self.concurrency}, images_per_request={self.images_per_request}, "
                f"rate_limit={self.rate_limit}, encoding={self.encoding!r}{auth}{hdrs})")


def _deadline(timeout: Any, deadline: Any) -> float:
    """Seconds per attempt: ``deadline``, or twice connect + read timeout (120 s if either
    is None, i.e. unbounded)."""
    if deadline is None:
        pair = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        known = all(isinstance(t, (int, float)) for t in pair)
        return 2.0 * float(pair[0] + pair[1]) if known else 120.0
    if isinstance(deadline, bool) or not isinstance(deadline, (int, float)) or not (
            0 < deadline < float("inf")):
        raise ValueError(f"deadline must be a finite number of seconds > 0, got {deadline!r}")
    return float(deadline)


def _check_encoding(encoding: str) -> str:
    """``encoding`` if it is ``"png"`` or ``"jpeg"`` (which warns: it is lossy)."""
    if encoding not in ("png", "jpeg"):
        raise ValueError(f"encoding must be 'png' or 'jpeg', got {encoding!r}")
    if encoding == "jpeg":  # stacklevel 3: the caller of HTTPModel(...)
        warnings.warn("encoding='jpeg' is lossy: compression erodes a perturbation of a few "
                      "grey levels, so the model may not see the learned delta; prefer 'png'",
                      UserWarning, stacklevel=3)
    return encoding


def _images_per_request(preset: Preset, asked: int | None) -> int:
    """Images per request: ``asked``, else the preset's default; within the vendor's cap."""
    cap = preset.max_images_per_request
    ipr = asked or preset.default_images_per_request
    if ipr < 1 or (cap is not None and ipr > cap):
        raise ValueError(f"images_per_request={ipr} out of range for preset "
                         f"{preset.name!r} (at most {cap} images per request)")
    return int(ipr)


def _max_response_bytes(value: Any) -> int:
    """The body cap, bytes: a positive integer (a bool is refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"max_response_bytes must be a positive integer (bytes), got {value!r}")
    return int(value)


def _read_secrets(preset: Preset, given: Mapping[str, str | None]) -> dict[str, str]:
    """The preset's secrets: each from ``given``, else from its environment variable; raises
    if one the preset requires is in neither (the message names the variables, not values)."""
    secrets: dict[str, str] = {}
    for key, env in preset.secret_env.items():
        value = given.get(key) or os.environ.get(env, "")
        if value:
            secrets[key] = value
    missing = [k for k in preset.required_secrets if k not in secrets]
    if missing:
        envs = [preset.secret_env[k] for k in missing]
        raise ValueError(f"preset {preset.name!r} needs {missing}: pass them as arguments "
                         f"or set the environment variables {envs}")
    return secrets
