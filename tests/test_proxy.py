"""``blackbox-dft proxy``: a fitted delta added to the images of requests on their way to the
stand-in server, in the json, oip and facepp wire formats; own routes, limits, failures."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import numpy as np
import pytest

pytest.importorskip("uvicorn")
pytest.importorskip("aiohttp")

import requests  # noqa: E402
import uvicorn  # noqa: E402

from blackbox_dft import DataFineTuner  # noqa: E402
from blackbox_dft.adapters.remote.http import HTTPModel  # noqa: E402
from blackbox_dft.adapters.remote.vendors import make_preset  # noqa: E402
from blackbox_dft.adapters.remote.wire import (  # noqa: E402
    b64,
    decode_image,
    encode_image,
    unb64,
)
from blackbox_dft.adapters.serving.proxy import ProxyApp, ProxyConfig, perturber  # noqa: E402
from blackbox_dft.adapters.serving.proxy_rewrite import Rewriter  # noqa: E402
from blackbox_dft.adapters.serving.server import Faults, StandInServer  # noqa: E402
from blackbox_dft.cli.main import main  # noqa: E402
from blackbox_dft.testing import make_problem  # noqa: E402

pytestmark = pytest.mark.network


class Recorder:
    """A model that keeps every image it is asked about: (N, 2) scores from brightness."""

    def __init__(self) -> None:
        self.seen: list[np.ndarray] = []

    def predict(self, images: np.ndarray) -> np.ndarray:
        self.seen.append(np.array(images))
        m = images.reshape(len(images), -1).mean(axis=1) / 255.0
        return np.stack([1 - m, m], axis=1)


@pytest.fixture(scope="module")
def tuner(tmp_path_factory: pytest.TempPathFactory) -> DataFineTuner:
    """A small fitted tuner, saved and loaded as the CLI loads a run's."""
    p = make_problem(seed=0, n_train=40, n_val=20, n_test=10)
    t = DataFineTuner(p.model, task="multiclass", scores="logits", query_budget=400, seed=0)
    t.fit(*p.train, validation=p.val)
    path = tmp_path_factory.mktemp("run") / "delta.npz"
    t.save(path)
    return DataFineTuner.load(path, None)


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (3, 24, 20, 3), dtype=np.uint8)


@contextlib.contextmanager
def serve(app: ProxyApp) -> Iterator[tuple[str, uvicorn.Server]]:
    """The proxy on 127.0.0.1 (a free port) in a thread; stopped gracefully at the end."""
    sock = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", access_log=False,
                                           log_level="warning", timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", server
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def proxy_app(tuner: DataFineTuner, upstream: str, preset: str = "json",
              **config: Any) -> ProxyApp:
    rewriter = Rewriter(make_preset(preset), perturber(tuner.delta_for))
    return ProxyApp(rewriter, ProxyConfig(upstream, **config))


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


@pytest.mark.parametrize("preset,options", [("json", {}), ("oip", {"binary": True}),
                                            ("oip", {"binary": False}), ("facepp", {})])
def test_upstream_gets_the_perturbed_images_and_the_callers_keys(
        tuner: DataFineTuner, images: np.ndarray, preset: str, options: dict[str, Any]) -> None:
    model = Recorder()
    with StandInServer(model, preset, api_key="KEY-123") as up, \
            serve(proxy_app(tuner, up.base_url, preset)) as (base, _):
        client = HTTPModel(base + up.path, preset=preset, api_key="KEY-123",
                           api_secret="SECRET-9", max_retries=0, concurrency=1, **options)
        got = client.predict(images)
    want = tuner.transform(images)
    np.testing.assert_array_equal(np.concatenate(model.seen), want)  # exactly these images
    np.testing.assert_allclose(got[:, -1], Recorder().predict(want)[:, -1])  # facepp: smile


def test_answer_is_byte_identical_and_counted(tuner: DataFineTuner, images: np.ndarray) -> None:
    with StandInServer(Recorder(), "json") as up:
        app = proxy_app(tuner, up.base_url)
        with serve(app) as (base, _):
            body = {"images": [b64(encode_image(im)) for im in images], "extra": [1, "x"]}
            r = requests.post(base + "/predict?code=Q", json=body, timeout=10)
            direct = requests.post(up.url, json={"images": [
                b64(encode_image(im)) for im in tuner.transform(images)]}, timeout=10)
            assert r.status_code == 200 and r.content == direct.content
            assert r.headers["content-type"] == direct.headers["content-type"]
            assert requests.get(base + "/healthz", timeout=5).json()["status"] == "ok"
            metrics = requests.get(base + "/metrics", timeout=5).text
    assert _metric(metrics, "blackbox_dft_proxy_images_perturbed_total") == 3
    assert 'blackbox_dft_proxy_requests_total{code="200"} 1' in metrics
    assert _metric(metrics, "blackbox_dft_proxy_request_seconds_count") == 1
    assert _metric(metrics, "blackbox_dft_proxy_bypass") == 0


def test_bypass_forwards_the_images_as_they_came(tuner: DataFineTuner,
                                                 images: np.ndarray) -> None:
    model = Recorder()
    with StandInServer(model, "json") as up, serve(proxy_app(tuner, up.base_url)) as (base, _):
        assert requests.post(base + "/admin/bypass?state=on", timeout=5).json() == {
            "bypass": True, "state": "bypass_forced"}
        HTTPModel(base + "/predict", max_retries=0).predict(images)
        metrics = requests.get(base + "/metrics", timeout=5).text
        assert requests.post(base + "/admin/bypass?state=maybe", timeout=5).status_code == 400
    np.testing.assert_array_equal(model.seen[0], images)
    assert _metric(metrics, "blackbox_dft_proxy_bypass") == 1
    assert _metric(metrics, "blackbox_dft_proxy_requests_bypassed_total") == 1
    assert _metric(metrics, "blackbox_dft_proxy_images_perturbed_total") == 0


def test_body_over_the_limit_is_413(tuner: DataFineTuner, images: np.ndarray) -> None:
    model = Recorder()
    with StandInServer(model, "json") as up, \
            serve(proxy_app(tuner, up.base_url, max_body_bytes=1000)) as (base, _):
        body = json.dumps({"images": [b64(encode_image(im)) for im in images]})
        r = requests.post(base + "/predict", data=body, timeout=5)
    assert r.status_code == 413 and "1000 bytes" in r.json()["error"]
    assert model.seen == []


def test_upstream_down_is_one_line_502_without_secret(tuner: DataFineTuner,
                                                      images: np.ndarray,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    free = socket.create_server(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()  # nothing listens there now
    with serve(proxy_app(tuner, f"http://tok:SECRETPW@127.0.0.1:{port}")) as (base, _):
        r = requests.post(base + "/predict?key=SECRETQ", headers={"Authorization": "Bearer X1"},
                          json={"images": [b64(encode_image(images[0]))]}, timeout=5)
        metrics = requests.get(base + "/metrics", timeout=5).text
    assert r.status_code == 502
    why = r.json()["error"]
    assert "\n" not in why and "ClientConnectorError" in why
    for secret in ("SECRETPW", "SECRETQ", "X1"):
        assert secret not in r.text and secret not in caplog.text
    assert _metric(metrics, "blackbox_dft_proxy_upstream_errors_total") == 1


def test_graceful_shutdown_answers_the_request_in_flight(tuner: DataFineTuner,
                                                         images: np.ndarray) -> None:
    got: list[requests.Response] = []
    with StandInServer(Recorder(), "json", faults=Faults(latency=0.5)) as up:
        app = proxy_app(tuner, up.base_url)
        with serve(app) as (base, server):
            body = {"images": [b64(encode_image(images[0]))]}
            t = threading.Thread(target=lambda: got.append(
                requests.post(base + "/predict", json=body, timeout=10)))
            t.start()
            for _ in range(200):  # until the request is in the proxy
                if app.metrics.in_flight:
                    break
                time.sleep(0.005)
            assert app.metrics.in_flight == 1
            server.should_exit = True
            t.join(timeout=10)
    assert len(got) == 1 and got[0].status_code == 200 and "scores" in got[0].json()


def test_form_fields_and_jpeg_keep_their_form(tuner: DataFineTuner, images: np.ndarray) -> None:
    rw = Rewriter(make_preset("facepp"), perturber(tuner.delta_for), jpeg_quality=90)
    jpeg = encode_image(images[0], "jpeg", 90)
    body = (b"api_key=K%2B1&api_secret=S%2F2&image_base64="
            + requests.utils.quote(b64(jpeg), safe="").encode() + b"&return_attributes=smiling")
    out = rw.rewrite(body, {})
    fields, before = parse_qs(out.body.decode()), parse_qs(body.decode())
    assert {k: v for k, v in fields.items() if k != "image_base64"} == {
        k: v for k, v in before.items() if k != "image_base64"}
    assert out.body.split(b"&")[:2] == body.split(b"&")[:2]  # the keys' bytes untouched
    sent = unb64(fields["image_base64"][0])
    assert sent[:3] == b"\xff\xd8\xff" and out.images == 1  # JPEG stays JPEG
    png = Rewriter(make_preset("facepp"), perturber(tuner.delta_for), jpeg_quality=None)
    lossless = unb64(parse_qs(png.rewrite(body, {}).body.decode())["image_base64"][0])
    np.testing.assert_array_equal(decode_image(lossless),
                                  tuner.transform(decode_image(jpeg)[None])[0])


def test_png_auto_writes_small_images_stored_and_large_ones_compressed(
        tuner: DataFineTuner) -> None:
    """auto: uncompressed up to STORED_MAX_BYTES of pixels (cheap to write and read), run-
    length compressed above (a vendor's upload limit); either way the pixels arrive exact."""
    from blackbox_dft.adapters.serving.proxy_rewrite import STORED_MAX_BYTES, png_mode

    rng = np.random.default_rng(3)  # smooth: a compressed copy is much smaller than stored
    small = np.clip(np.cumsum(rng.integers(-2, 3, (64, 48, 3)), axis=1) + 128, 0, 255)
    small = small.astype(np.uint8)
    side = int(np.sqrt(STORED_MAX_BYTES / 3)) + 1  # just over the limit
    large = np.full((side, side, 3), 90, np.uint8)
    assert (png_mode("auto", small), png_mode("auto", large)) == ("stored", "fast")
    assert png_mode("fast", small) == "fast" and png_mode("stored", large) == "stored"
    for png, image in (("auto", small), ("auto", large), ("fast", small), ("stored", large)):
        rw = Rewriter(make_preset("facepp"), perturber(tuner.delta_for), png=png)
        body = b"api_key=K&image_base64=" + requests.utils.quote(
            b64(encode_image(image)), safe="").encode()
        sent = unb64(parse_qs(rw.rewrite(body, {}).body.decode())["image_base64"][0])
        np.testing.assert_array_equal(decode_image(sent), tuner.transform(image[None])[0])
        stored = len(sent) > image.size  # stored blocks hold every pixel byte as it is
        assert stored == (png_mode(png, image) == "stored"), (png, image.shape, len(sent))
    with pytest.raises(ValueError, match="png must be one of auto, stored, fast, got 'zip'"):
        Rewriter(make_preset("facepp"), perturber(tuner.delta_for), png="zip")


def test_cli_without_the_extra_exits_4(monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(__import__("sys").modules, "uvicorn", None)
    code = main(["proxy", "--run", "nowhere", "--upstream", "http://127.0.0.1:1"])
    err = capsys.readouterr().err
    assert code == 4 and "blackbox_dft[proxy]" in err and len(err.strip().splitlines()) == 1


def test_load_proxy_reads_the_runs_delta_and_preset(tmp_path: Any) -> None:
    from cli_synthetic import write_npz

    from blackbox_dft.cli.proxy import load_proxy
    from blackbox_dft.cli.runs import RunError

    data, out = str(tmp_path / "d.npz"), str(tmp_path / "run")
    write_npz(data)
    assert main(["fit", "--model", "python:cli_synthetic:predict", "--data", data, "--out", out,
                 "--scores", "logits", "--budget", "300", "--no-progress", "-q"]) == 0
    with pytest.raises(RunError, match="--preset"):  # a python model: no wire format saved
        load_proxy(out)
    delta_for, preset = load_proxy(out, "oip")
    saved = DataFineTuner.load(f"{out}/delta.npz", None)
    np.testing.assert_array_equal(delta_for(30, 17), saved.delta_for(30, 17))
    assert preset.name == "oip"


def test_upstream_cookies_go_back_to_their_caller_only(tuner: DataFineTuner) -> None:
    """The proxy keeps no cookie jar: a cookie the upstream sets reaches the caller that got
    it (in the answer's headers) and is not sent upstream with anyone's later requests."""
    seen: list[dict[bytes, bytes]] = []

    async def upstream(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        seen.append(dict(scope["headers"]))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"set-cookie", b"session=ALICE; Path=/"),
                                (b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})

    with serve(upstream) as (up, _), serve(proxy_app(tuner, up)) as (base, _):
        first = requests.get(base + "/a", timeout=5)
        second = requests.get(base + "/b", timeout=5)  # another caller: no cookie of its own
    assert first.status_code == second.status_code == 200
    assert first.headers["set-cookie"] == "session=ALICE; Path=/"
    assert len(seen) == 2 and all(b"cookie" not in h for h in seen)
    # nor headers the caller did not send
    assert b"user-agent" in seen[0] and seen[0][b"user-agent"].startswith(b"python-requests")
    assert b"accept-encoding" in seen[0]  # the caller's own, passed through


def test_credentials_in_the_upstream_url_go_only_when_the_caller_sends_none(
        tuner: DataFineTuner) -> None:
    import base64

    seen: list[bytes | None] = []

    async def upstream(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        seen.append(dict(scope["headers"]).get(b"authorization"))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    with serve(upstream) as (up, _):
        with_creds = up.replace("http://", "http://op%40x:p%3Ass@")
        with serve(proxy_app(tuner, with_creds)) as (base, _):
            requests.get(base + "/a", timeout=5)
            requests.get(base + "/b", headers={"Authorization": "Bearer CALLER"}, timeout=5)
    assert seen[0] == b"Basic " + base64.b64encode(b"op@x:p:ss")
    assert seen[1] == b"Bearer CALLER"


@pytest.mark.parametrize("field,value,message", [
    ("rewrite_threads", 0, "rewrite_threads must be >= 1, got 0"),
    ("concurrency", -1, "concurrency must be >= 1, got -1"),
    ("deadline", 0.0, "deadline must be > 0 seconds, got 0"),
])
def test_proxy_config_names_the_bad_value(field: str, value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ProxyConfig("http://127.0.0.1:9", **{field: value})


def test_the_perturber_is_apply_delta_at_every_size() -> None:
    """The proxy's cached, pre-split delta gives apply_delta's (transform's) pixels, at the
    delta's own size and resized, for one image or several, at the clipping edges too."""
    from blackbox_dft.core.images import apply_delta, resize_delta

    rng = np.random.default_rng(0)
    delta = rng.uniform(-8, 8, (25, 25, 3)).astype(np.float32)
    delta[0, 0] = [0.5, -0.5, 1.5]  # ties: numpy's rint, as apply_delta
    perturb = perturber(lambda h, w: resize_delta(delta, h, w), sizes=2)
    for h, w, n in ((25, 25, 1), (224, 224, 2), (31, 17, 3), (25, 25, 2), (224, 224, 1)):
        images = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
        images[:, :2] = 0
        images[:, -2:] = 255
        np.testing.assert_array_equal(perturb(images),
                                      apply_delta(images, resize_delta(delta, h, w)))
        np.testing.assert_array_equal(perturb(images[:, ::-1]),  # not contiguous
                                      apply_delta(images[:, ::-1], resize_delta(delta, h, w)))
