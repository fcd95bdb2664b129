"""Money under faults: the budget is a hard cap on paid images, and nothing paid is paid twice.

Library level: the query counter charges a call before it is sent and keeps a failed call's
images as paid; the query cache keeps the answers of a call that failed halfway and refunds
nothing it sent. End to end: a CLI fit against a local HTTP server that goes down in the
middle of a split predict, then a resume: every image the server answered was answered once,
the fit's paid images stay within the budget, and the ledger covers what the server served.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading

import numpy as np
import pytest
from cli_synthetic import PROBLEM, write_npz

from blackbox_dft import SPSA, DataFineTuner, LowResolution, PerImage
from blackbox_dft.adapters.base import CallableModel
from blackbox_dft.cli.cache import CachedModel
from blackbox_dft.cli.main import main
from blackbox_dft.cli.meter import Meter, read_ledger
from blackbox_dft.core.model import BudgetExhausted, ModelError, QueryCounter, attach_answered
from blackbox_dft.core.state import FitState, paid_images


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 16, 16, 3), dtype=np.uint8)


class HalfThenFail:
    """Answers the first half of a call, then fails, attaching the answered half (what a
    split HTTP call does when one of its requests fails for good). ``sent`` counts images
    the model received; ``fail`` switches the failure on and off."""

    def __init__(self) -> None:
        self.inner = PROBLEM.model
        self.sent = 0
        self.fail = True

    def predict(self, images: np.ndarray) -> np.ndarray:
        self.sent += len(images)
        scores = self.inner.predict(images)
        if not self.fail:
            return scores
        half = len(images) // 2
        raise attach_answered(ModelError("second request failed"), np.arange(half),
                              scores[:half])


def test_the_cache_keeps_the_answers_of_a_call_that_failed_halfway(tmp_path):
    model = HalfThenFail()
    cache = CachedModel(model, tmp_path / "c.sqlite", key="m")
    x = _images(10)
    with pytest.raises(ModelError):
        cache.predict(x)
    # all 10 were sent (5 answered, 5 unknown: paid) and the 5 answers are in the file
    assert model.sent == 10 and cache.images_sent == 10 and len(cache) == 5
    model.fail = False
    got = cache.predict(x)
    assert np.allclose(got, PROBLEM.model.predict(x))
    assert model.sent == 15 and cache.images_sent == 15 and cache.hits == 5
    # the counter of sent images lives in the file: a new process sees it
    cache.close()
    assert CachedModel(model, tmp_path / "c.sqlite", key="m").images_sent == 15


@pytest.mark.network
@pytest.mark.parametrize("concurrency", [1, 3])
def test_requests_that_never_went_out_are_not_paid(tmp_path, concurrency):
    """A split call whose second request fails for good: the requests after it that were
    never sent are taken back from the cache's count of sent images; the failed one and
    the answered ones stay paid, and the answered ones are kept."""
    from blackbox_dft.adapters import HTTPModel
    from blackbox_dft.adapters.serving.server import StandInServer

    x = _images(12, seed=5)
    bad = hashlib.sha256(x[4].tobytes()).digest()

    class FailsOnImage4:
        def predict(self, images: np.ndarray) -> np.ndarray:
            if any(hashlib.sha256(im.tobytes()).digest() == bad for im in images):
                raise RuntimeError("backend cannot score this one")
            return PROBLEM.model.predict(images)

    with StandInServer(FailsOnImage4(), "oip") as srv, \
            HTTPModel(srv.url, preset="oip", images_per_request=4, concurrency=concurrency,
                      max_retries=0) as http:
        cache = CachedModel(http, tmp_path / "c.sqlite", key="m")
        with pytest.raises(ModelError):
            cache.predict(x)
        answered = srv.images_served
    # rows 0-3 answered and kept; rows 4-7 sent and refused (paid); rows 8-11: sent only if
    # their request had started before the failure (concurrency 3), never otherwise
    assert len(cache) == answered >= 4
    if concurrency == 1:
        assert answered == 4 and cache.images_sent == 8
    else:
        assert cache.images_sent == answered + 4


def test_the_counter_charges_before_sending_and_refunds_only_cache_answers(tmp_path):
    model = HalfThenFail()
    cache = CachedModel(model, tmp_path / "c.sqlite", key="m")
    counter = QueryCounter(cache, budget=25)
    x = _images(10)
    with pytest.raises(ModelError):
        counter.predict(x)
    assert counter.queries == 10 and counter.paid == 10  # a failed call stays paid
    model.fail = False
    counter.predict(x)  # 5 answered by the cache: refunded; 5 sent again: paid
    assert counter.queries == 20 and counter.paid == 15 and model.sent == 15
    with pytest.raises(BudgetExhausted, match="20 used of 25"):
        counter.predict(_images(6, seed=1))
    assert model.sent == 15  # refused before anything was sent
    counter.predict(_images(5, seed=1))
    assert counter.queries == 25 == counter.paid + 5
    assert model.sent == 20


def test_the_meter_ledger_is_written_before_the_call_and_survives_a_kill(tmp_path):
    """A process killed during a call (simulated: its meter is dropped without a final write)
    still leaves every image it sent in the ledger of the next process."""
    ledger = str(tmp_path / "spend.json")
    model = HalfThenFail()
    cache = CachedModel(model, tmp_path / "c.sqlite", key="m")
    meter = Meter(cache, cache=cache, ledger=ledger)
    model.fail = False
    meter.predict(_images(8))
    assert read_ledger(ledger)["paid"] == 8
    # the cache sends (and counts) 6 more images, but the process dies before the ledger
    # is written again
    cache.predict(_images(6, seed=2))
    again = Meter(cache, cache=cache, ledger=ledger)
    assert again.images_sent == 14 == model.sent
    assert again.totals()["paid"] == 14


def _flaky_fit(model, budget, checkpoint, resume=False):
    return DataFineTuner(model, task="multiclass", epsilon=8, perturbation=LowResolution((4, 4)),
                         estimator=PerImage(SPSA(directions=1, step=2.0)),
                         batch_size=8, query_budget=budget, seed=3, progress=False,
                         scores="logits").fit(
        *PROBLEM.train, validation=PROBLEM.val, checkpoint=checkpoint, checkpoint_every=2,
        resume=resume)


@pytest.mark.parametrize("budget", [900, 1000, 1200])
def test_faults_never_push_paid_images_past_the_budget(tmp_path, budget):
    """A model that fails every 7th call (before answering) through a fit and its resumes:
    the images it was sent, failed calls included, never exceed the budget, and the fit's
    ``queries_`` is exactly that count."""
    calls = {"n": 0, "sent": 0}

    def flaky(x: np.ndarray) -> np.ndarray:
        calls["n"] += 1
        calls["sent"] += len(x)
        if calls["n"] % 7 == 0:
            raise ConnectionError("vendor went away")
        return PROBLEM.model.predict(x)

    model = CallableModel(flaky, name="flaky")
    ckpt = tmp_path / "f.npz"
    tuner = None
    for attempt in range(200):
        try:
            tuner = _flaky_fit(model, budget, ckpt, resume=attempt > 0)
            break
        except ConnectionError:
            continue
    assert tuner is not None
    assert calls["sent"] <= budget
    assert tuner.queries_ == calls["sent"]
    assert paid_images(FitState.load(ckpt)[0]) == calls["sent"]


class Outage:
    """The model behind the test server: records every image it answers (by hash) and,
    once ``after`` images were answered, fails every request until switched off."""

    def __init__(self, after: int) -> None:
        self.after = after
        self.down = False
        self.answered: list[bytes] = []
        self.refused = 0
        self.lock = threading.Lock()

    def predict(self, images: np.ndarray) -> np.ndarray:
        with self.lock:
            if self.down or (self.after and len(self.answered) >= self.after):
                self.down = True
                self.refused += len(images)
                raise RuntimeError("backend down")
            self.answered += [hashlib.sha256(im.tobytes()).digest() for im in images]
        return PROBLEM.model.predict(images)


@pytest.mark.network
def test_a_split_predict_that_fails_halfway_pays_nothing_twice_end_to_end(tmp_path, capsys):
    from blackbox_dft.adapters.serving.server import StandInServer

    data = str(tmp_path / "d.npz")
    write_npz(data)
    out = str(tmp_path / "run")
    budget = 600
    backend = Outage(after=300)
    with StandInServer(backend, "oip") as srv:
        argv = ["fit", "--model", srv.url, "--preset", "oip", "--data", data, "--out", out,
                "--scores", "logits", "--budget", str(budget), "--batch-size", "16",
                "--checkpoint-every", "2", "--no-progress",
                "--model-option", "concurrency=4", "--model-option", "images_per_request=4",
                "--model-option", "max_retries=1", "--model-option", "backoff=0.01"]
        assert main(argv) == 3
        assert "resum" in capsys.readouterr().err
        first = read_ledger(os.path.join(out, "spend.json"))
        # everything the server answered is paid and in the ledger; so are the requests it
        # refused (their outcome is unknown to a client: fail closed)
        assert len(backend.answered) <= first["paid"]
        backend.down, backend.after = False, 0
        assert main(["resume", out, "--no-progress"]) == 0
    answered = backend.answered
    # nothing the server answered was asked again: the cache kept the answers of the split
    # predict that failed halfway
    assert len(answered) == len(set(answered)), "an answered image was sent twice"
    report = json.load(open(os.path.join(out, "report.json")))
    spend = report["spend"]
    # paid: what the server answered plus what reached it and was refused (requests of the
    # failed call that never went out are taken back; the refused ones stay paid: a client
    # cannot know whether a vendor charged them)
    assert len(answered) <= spend["paid"] <= len(answered) + backend.refused
    state = FitState.load(os.path.join(out, "checkpoint.npz"))[0]
    assert paid_images(state) <= budget
    assert main(["info", out]) == 0
    info = capsys.readouterr().out
    assert f"fit queries {paid_images(state)} of {budget}" in info
