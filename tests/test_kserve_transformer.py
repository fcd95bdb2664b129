"""``blackbox-dft transformer`` (issue 15, points 2 and 3): a run's delta as a KServe transformer.

KServe's ModelServer (0.21) runs ``blackbox-dft transformer`` in its own environment,
``.venv-kserve`` (``make kserve``: kserve + this project; or the Python named by
BLACKBOX_DFT_KSERVE_PYTHON), in front of stand-in OIP servers run by this process: skipped
without that environment, except in CI (CI set), where that is a failure. Everything listens
on 127.0.0.1. Three transformers (module fixture; they start while the next run is fitted):

- ``U``: a UINT8 run (fitted over OIP on the synthetic box, no preprocessing options) in
  front of a server that takes UINT8 pixels or BYTES image files;
- ``B``: the same with ``--bypass``;
- ``F``: an FP32 NCHW ImageNet-normalised run in front of a server whose model can be
  swapped (the synthetic box, then its negated scores: an update on which the delta hurts),
  checked every 0.3 s.

The unit tests of the shared tensor arithmetic and the InferenceService example need no KServe.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from cli_synthetic import PROBLEM, write_npz

from blackbox_dft import DataFineTuner
from blackbox_dft.adapters.remote.http import HTTPModel
from blackbox_dft.adapters.remote.tensors import Preprocessing
from blackbox_dft.adapters.remote.wire import b64, decode_image, encode_image
from blackbox_dft.adapters.serving.proxy_rewrite import NoImages, perturb_oip_input
from blackbox_dft.adapters.serving.server import StandInServer
from blackbox_dft.cli.main import _parse, main
from blackbox_dft.tasks.finetuned import FineTunedModel

ROOT = Path(__file__).resolve().parents[1]
STARTUP_TIMEOUT = 60.0
P = "blackbox_dft_transformer_"
X = PROBLEM.test[0][:6]  # (6, 16, 16, 3) uint8: the models' own size, so no client resize


# -- the shared tensor arithmetic (proxy_rewrite.perturb_oip_input), no KServe ---------------
def _shift(images: np.ndarray) -> np.ndarray:
    return np.clip(images.astype(np.int16) + 7, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("datatype,layout,pre", [
    ("UINT8", "NHWC", {}), ("FP32", "NCHW", {"mean": "imagenet"}),
    ("FP16", "NCHW", {"mean": "imagenet"}), ("FP32", "NHWC", {"scale": 1.0, "mean": 128.0})])
def test_a_tensor_comes_back_perturbed_in_its_own_form(datatype, layout, pre) -> None:
    spec = Preprocessing(**pre).spec(datatype, layout, (16, 16))
    tensor = spec.to_tensor(X)
    inp = {"name": "x", "datatype": datatype, "shape": list(tensor.shape)}
    new, n = perturb_oip_input(inp, tensor.ravel().tolist(), Preprocessing(**pre), _shift)
    assert n == len(X) and new.shape == tensor.shape and new.dtype == tensor.dtype
    np.testing.assert_array_equal(new, spec.to_tensor(_shift(X)))


def test_image_files_come_back_as_png_and_bad_inputs_are_one_line() -> None:
    jpeg = encode_image(X[0], "jpeg", 90)
    files, n = perturb_oip_input({"datatype": "BYTES", "shape": [1]}, [b64(jpeg)],
                                 Preprocessing(), _shift)
    assert n == 1 and files[0][:4] == b"\x89PNG"
    np.testing.assert_array_equal(decode_image(files[0]), _shift(decode_image(jpeg)[None])[0])
    bad = [({"datatype": "BYTES", "shape": [1]}, ["not base64!"], "base64"),
           ({"datatype": "UINT8", "shape": [1, 2, 2, 3]}, [300] * 12, "input tensor"),
           ({"datatype": "UINT8", "shape": [1, 5, 5]}, [0] * 25, "not an image tensor"),
           ({"datatype": "FP32", "shape": [1, 2, 2, 3]}, [0.0] * 12, "makes UINT8"),
           ({"datatype": "INT64", "shape": [1]}, [1], "is not images")]
    for inp, data, why in bad:
        pre = Preprocessing(datatype="UINT8") if why == "makes UINT8" else Preprocessing()
        with pytest.raises(NoImages, match=why) as info:
            perturb_oip_input(inp, data, pre, _shift)
        assert "\n" not in str(info.value)


def test_without_kserve_the_command_exits_4(monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(__import__("sys").modules, "kserve", None)
    code = main(["transformer", "--run", "nowhere", "--predictor-host", "127.0.0.1:1",
                 "--model-name", "m"])
    err = capsys.readouterr().err
    assert code == 4 and 'pip install "blackbox_dft[kserve]"' in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("flags,why", [
    (["--predictor-host", "http://127.0.0.1:1"], "takes HOST\\[:PORT\\]"),
    (["--predictor-host", "127.0.0.1:1", "--http-port", "70000"], "must be 1-65535"),
    (["--predictor-host", "127.0.0.1:1", "--protocol", "v1"], "invalid choice: 'v1'")])
def test_bad_arguments_are_one_line_usage_errors(flags, why, capsys) -> None:
    code = main(["transformer", "--run", "nowhere", "--model-name", "m", *flags])
    err = capsys.readouterr().err
    assert code == 2 and re.search(why, err) and len(err.strip().splitlines()) == 1, err


# -- the InferenceService example -----------------------------------------------------------
def _includes_arg(args: list[str], flag: str) -> bool:
    """KServe controller's utils.IncludesArg: an argument equal to or starting with flag."""
    return any(a == flag or a.startswith(flag) for a in args)


def test_the_inferenceservice_example_runs_the_transformer_on_the_predictors_model() -> None:
    import yaml  # PyYAML: the test extra
    doc = yaml.safe_load((ROOT / "docs/kserve/inferenceservice.yaml").read_text())
    assert (doc["apiVersion"], doc["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    predictor, transformer = doc["spec"]["predictor"], doc["spec"]["transformer"]
    assert predictor["model"]["protocolVersion"] == "v2"
    loaded = [a.split("=", 1)[1] for a in predictor["model"]["args"]
              if a.startswith("--load-model=")]
    (container,) = transformer["containers"]
    args = list(container["args"])
    # what KServe's controller appends to a transformer container unless the args have it
    for flag, value in (("--model_name", doc["metadata"]["name"]),
                        ("--predictor_host", "face-detector-predictor.default"),
                        ("--http_port", "8080")):
        if not _includes_arg(args, flag):
            args += [flag, value]
    parsed, rest = _parse(container["command"][1:] + args)
    assert container["command"][0] == "blackbox-dft" and parsed.command == "transformer"
    assert rest == [] and loaded == [parsed.model_name] and parsed.http_port == 8080
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in transformer["volumes"]}
    assert any(parsed.run.startswith(mounts[name]) for name in claims if name in mounts)


# -- KServe: three transformers in front of stand-in servers ---------------------------------
def _kserve_python() -> str:
    path = os.environ.get("BLACKBOX_DFT_KSERVE_PYTHON") or str(ROOT / ".venv-kserve/bin/python")
    found = ("import importlib.util as u; "
             "assert u.find_spec('kserve') and u.find_spec('blackbox_dft')")
    ok = Path(path).exists() and subprocess.run([path, "-c", found], capture_output=True,
                                                timeout=60).returncode == 0
    if not ok:
        if os.environ.get("CI"):
            pytest.fail("CI has no KServe environment with blackbox_dft: .ci/run must run "
                        "`make kserve`")
        pytest.skip("no KServe environment with blackbox_dft: `make kserve` makes .venv-kserve")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Swappable:
    """The synthetic box until ``flipped``, then its negated scores."""

    def __init__(self) -> None:
        self.flipped = False

    def predict(self, images: np.ndarray) -> np.ndarray:
        raw = PROBLEM.model.predict(images)
        return -raw if self.flipped else raw


ADMIN_TOKEN = "test-admin-token-0123456789"  # B's, through --admin-token-env


class Transformer:
    """``blackbox-dft transformer`` in a subprocess of the KServe Python, its output in a file."""

    def __init__(self, python: str, run: str, server: StandInServer, log: Path,
                 *extra: str) -> None:
        self.port, self.log, self._terminated = _free_port(), log, False
        self.base = f"http://127.0.0.1:{self.port}"
        host = server.base_url.split("//", 1)[1]
        env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1",
               "DFT_TEST_ADMIN_TOKEN": ADMIN_TOKEN}
        self._out = open(log, "wb")
        self.proc = subprocess.Popen(
            [python, "-m", "blackbox_dft.cli", "transformer", "--run", run, "--model_name",
             "syn", "--predictor_host", host, "--http-port", str(self.port), "--host",
             "127.0.0.1", "--enable_latency_logging", "false", *extra],
            stdout=self._out, stderr=subprocess.STDOUT, env=env)

    @property
    def url(self) -> str:
        return f"{self.base}/v2/models/syn/infer"

    def wait_ready(self, deadline: float) -> None:
        while True:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the transformer did not start (exit {self.proc.poll()}):\n"
                            f"{self.text()[-3000:]}")
            try:
                if requests.get(self.base + "/v2/models/syn/ready", timeout=1).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def terminate(self) -> None:
        """SIGTERM, once (a second one reaches KServe's handler mid-shutdown)."""
        if self.proc.poll() is None and not self._terminated:
            self.proc.terminate()
            self._terminated = True

    def stop(self) -> int | None:
        self.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self._out.close()
        return self.proc.returncode


def _fit(url: str, data: str, out: str, budget: int, *options: str) -> DataFineTuner:
    assert main(["fit", "--model", url, "--preset", "oip", *options, "--data", data, "--out",
                 out, "--scores", "logits", "--budget", str(budget), "--no-progress",
                 "-q"]) == 0
    return DataFineTuner.load(f"{out}/delta.npz", None)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Servers, runs and transformers: {"U", "B", "F"} -> Transformer, plus the rest."""
    python = _kserve_python()
    tmp = tmp_path_factory.mktemp("kserve_transformer")
    data = str(tmp / "d.npz")
    write_npz(data)
    swap = Swappable()
    # U: takes UINT8 NHWC pixels at any size, or BYTES files (no datatype configured)
    plain = StandInServer(PROBLEM.model, "oip", model_name="syn")
    normed = StandInServer(swap, "oip", model_name="syn", datatype="FP32", layout="NCHW",
                           size=[16, 16], mean="imagenet")
    started: list[Transformer] = []
    with plain, normed:
        run_u, run_f = str(tmp / "run_u"), str(tmp / "run_f")
        try:  # U and B start while F is fitted
            tuners = {"U": _fit(plain.url, data, run_u, 300)}
            for name, extra in (("U", ()), ("B", ("--bypass", "--admin-token-env",
                                                  "DFT_TEST_ADMIN_TOKEN"))):
                started.append(Transformer(python, run_u, plain, tmp / f"{name}.log",
                                           "--check-every", "0", *extra))
            tuners["F"] = _fit(normed.url, data, run_f, 1500, "--model-option", "mean=imagenet")
            started.append(Transformer(python, run_f, normed, tmp / "F.log", "--check-every",
                                       "0.3", "--check-budget", "20"))
            deadline = time.monotonic() + STARTUP_TIMEOUT
            for t in started:
                t.wait_ready(deadline)
            yield {"U": started[0], "B": started[1], "F": started[2], "plain": plain,
                   "normed": normed, "swap": swap, "tuners": tuners}
        finally:
            for t in started:  # all at once: each waits for KServe's graceful shutdown
                t.terminate()
            codes = [t.stop() for t in started]
    assert codes == [0] * len(started), [t.text()[-2000:] for t in started]
    for t in started:
        assert "transformer stopped; requests perturbed" in t.text()
        assert "Traceback" not in t.text(), t.text()[-3000:]


def _metrics(base: str) -> dict[str, float]:
    """Our samples of KServe's /metrics: name (with labels) -> value."""
    text = requests.get(base + "/metrics", timeout=10).text
    return {k: float(v) for k, v in re.findall(r"^(blackbox_dft_\S+) (\S+)$", text, re.M)}


def _wait(base: str, name: str, value: float, seconds: float = 20.0) -> dict[str, float]:
    """/metrics once ``name`` reached ``value`` (or after ``seconds``: a bound)."""
    end = time.monotonic() + seconds
    while True:
        metrics = _metrics(base)
        if metrics.get(name, 0) >= value or time.monotonic() > end:
            return metrics
        time.sleep(0.05)


def _client(t: Transformer, **options: Any) -> HTTPModel:
    return HTTPModel(t.url, preset="oip", max_retries=0, timeout=10, **options)


class TestThroughKServe:
    """The transformer in KServe's ModelServer, in front of the stand-in servers."""

    pytestmark = [pytest.mark.network, pytest.mark.kserve, pytest.mark.slow]

    @pytest.mark.parametrize("which,options", [
        ("U", {"binary": False}), ("U", {"binary": True}),
        ("U", {"datatype": "BYTES", "binary": False}),
        ("F", {"mean": "imagenet", "binary": False}), ("F", {"mean": "imagenet", "binary": True})])
    def test_scores_through_the_transformer_equal_the_local_fine_tuned_model(
            self, stack, which, options) -> None:
        t, tuner = stack[which], stack["tuners"][which]
        local = FineTunedModel(PROBLEM.model, tuner.delta_).predict(X)
        with _client(t, **options) as client:
            got = client.predict(X)
            sent = client.preset.resolved
        np.testing.assert_array_equal(got, local)
        assert np.abs(got - PROBLEM.model.predict(X)).max() > 0.01  # the delta did something
        assert sent is not None and sent[1].datatype == options.get(
            "datatype", "UINT8" if which == "U" else "FP32")  # the predictor's, via metadata

    def test_with_bypass_the_predictor_gets_the_images_as_they_came(self, stack) -> None:
        t = stack["B"]
        with _client(t, binary=True) as client:
            np.testing.assert_array_equal(client.predict(X), PROBLEM.model.predict(X))
        assert requests.get(t.base + "/admin/bypass", timeout=10).json() == {
            "bypass": True, "state": "bypass_forced"}
        m = _metrics(t.base)
        assert m[P + "requests_bypassed_total"] >= 1 and m[P + "images_perturbed_total"] == 0
        assert m[P + 'state{state="bypass_forced"}'] == 1 and m[P + "bypass"] == 1
        assert "scheduled checks off (--check-every 0)" in t.text()

    def test_with_an_admin_token_the_state_changes_only_with_it(self, stack) -> None:
        t = stack["B"]
        for headers in ({}, {"Authorization": "Bearer not-the-admin-token"}):
            r = requests.post(t.base + "/admin/bypass?state=on", headers=headers, timeout=10)
            assert r.status_code == 401 and "Authorization: Bearer" in r.json()["error"]
            assert "not-the-admin-token" not in r.text
        ok = requests.post(t.base + "/admin/bypass?state=on", timeout=10,
                           headers={"Authorization": "Bearer " + ADMIN_TOKEN})
        assert ok.json() == {"bypass": True, "state": "bypass_forced"}
        assert "POST /admin/bypass refused (HTTP 401) from 127.0.0.1" in t.text()
        assert ADMIN_TOKEN not in t.text()

    def test_other_inputs_parameters_and_id_pass_through_untouched(self, stack) -> None:
        t, plain = stack["U"], stack["plain"]
        seen: list[bytes] = []
        read = plain.routes.read
        plain.routes.read = lambda body, headers: (seen.append(body), read(body, headers))[1]
        extra = {"name": "threshold", "datatype": "FP32", "shape": [2], "data": [0.25, 0.5],
                 "parameters": {"unit": "p"}}
        image = {"name": "images", "datatype": "UINT8", "shape": [1, 16, 16, 3],
                 "data": X[:1].ravel().tolist()}
        body = {"id": "req-42", "parameters": {"trace": "yes"}, "inputs": [image, extra]}
        try:
            r = requests.post(t.url, json=body, timeout=10)
        finally:
            plain.routes.read = read
        assert r.status_code == 200 and r.json()["id"] == "req-42"
        forwarded = json.loads(seen[-1])
        assert forwarded["id"] == "req-42" and forwarded["parameters"] == {"trace": "yes"}
        assert forwarded["inputs"][1] == extra
        want = stack["tuners"]["U"].transform(X[:1])
        np.testing.assert_array_equal(
            np.asarray(forwarded["inputs"][0]["data"], np.uint8).reshape(1, 16, 16, 3), want)

    def test_unreadable_image_inputs_and_predictor_refusals_are_one_line_errors(
            self, stack) -> None:
        t = stack["U"]
        cases = [({"name": "images", "datatype": "BYTES", "shape": [1], "data": ["%%%"]}, 400,
                  r"^blackbox-dft transformer: invalid base64"),
                 ({"name": "images", "datatype": "UINT8", "shape": [1, 5, 5],
                   "data": [0] * 25}, 400, r"^blackbox-dft transformer: input tensor: .*not an "
                                           r"image tensor"),
                 # a tensor the transformer reads but the predictor refuses: its status, words
                 ({"name": "images", "datatype": "FP32", "shape": [1, 16, 16, 3],
                   "data": [0.5] * 768}, 400, r"^predictor 127\.0\.0\.1:\d+ answered HTTP 400: "
                                              r"bad request: unsupported datatype 'FP32'")]
        before = _metrics(t.base)
        for inp, status, why in cases:
            r = requests.post(t.url, json={"inputs": [inp]}, timeout=10)
            error = r.json()["error"]
            assert r.status_code == status and re.match(why, error), (r.status_code, error)
            assert "\n" not in error and "Traceback" not in error
        after = _metrics(t.base)
        assert after[P + "requests_refused_total"] - before[P + "requests_refused_total"] == 2
        assert after[P + "predictor_errors_total"] - before[P + "predictor_errors_total"] == 1
        assert t.text().count("WARNING blackbox_dft.transformer: refused") >= 3

    def _post(self, t: Transformer, state: str) -> requests.Response:
        return requests.post(f"{t.base}/admin/bypass?state={state}", timeout=10)

    def test_a_swapped_model_switches_to_pass_through_and_the_operator_can_force_either(
            self, stack, capsys) -> None:
        t, swap, tuner = stack["F"], stack["swap"], stack["tuners"]["F"]
        with _client(t, mean="imagenet") as client:
            m = _wait(t.base, P + 'checks_total{result="helps"}', 1)
            assert m[P + 'state{state="active"}'] == 1 and m[P + "checks_enabled"] == 1
            swapped, checks = time.monotonic(), m[P + 'checks_total{result="helps"}']
            swap.flipped = True
            try:
                m = _wait(t.base, P + 'checks_total{result="hurts"}', 1)
                took = time.monotonic() - swapped
                assert m[P + 'state{state="bypass_auto"}'] == 1 and m[P + "bypass"] == 1
                flipped = -PROBLEM.model.predict(X)
                np.testing.assert_array_equal(client.predict(X), flipped)  # unperturbed now
                # the operator: the delta forced on, whatever the checks say; then auto again
                forced = self._post(t, "off").json()
                assert forced == {"bypass": False, "state": "active_forced"}
                perturbed = -FineTunedModel(PROBLEM.model, tuner.delta_).predict(X)
                np.testing.assert_array_equal(client.predict(X), perturbed)
                hurts = _metrics(t.base)[P + 'checks_total{result="hurts"}']
                m = _wait(t.base, P + 'checks_total{result="hurts"}', hurts + 1)
                assert m[P + 'state{state="active_forced"}'] == 1  # a check does not undo it
                assert self._post(t, "auto").json() == {"bypass": True, "state": "bypass_auto"}
                bad = self._post(t, "maybe")
                assert bad.status_code == 400 and "state=on" in bad.json()["error"]
            finally:
                swap.flipped = False
                requests.post(f"{t.base}/admin/bypass?state=auto", timeout=10)
            helps = _metrics(t.base)[P + 'checks_total{result="helps"}']
            m = _wait(t.base, P + 'checks_total{result="helps"}', helps + 1)
            assert m[P + 'state{state="active"}'] == 1  # the original model: the delta again
        assert m[P + "check_queries_total"] >= 20 * (checks + 2)
        log = t.text()
        assert "WARNING blackbox_dft.proxy: delta state bypass_auto: the delta no longer helps" \
            in log and "NO LONGER HELPS" in log
        with capsys.disabled():  # the figure for the README: time to detect a swap
            print(f"\ntransformer: swap detected after {took:.2f} s (checks every 0.3 s, 20 "
                  "queries each)")
