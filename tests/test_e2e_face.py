"""End to end on a real black box: BlazeFace on blurred LFW crops, the library defaults."""

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")
tasks = pytest.importorskip("blackbox_dft.adapters.standins.tasks")

from blackbox_dft import DataFineTuner  # noqa: E402


@pytest.mark.slow
def test_face_task_gains_at_least_10_points_with_a_small_budget():
    task = tasks.load_task("face", shift="blur:sigma=1")
    xt, yt = task.test
    before = float(np.mean(task.model.predict(xt).argmax(1) == yt))
    t = DataFineTuner(task.model, "binary", epsilon=8, query_budget=3_000, seed=0,
                      progress=False).fit(*task.train, validation=task.val)
    after = float(np.mean(task.model.predict(t.transform(xt)).argmax(1) == yt))
    assert after - before >= 0.10, (before, after)
    assert t.queries_ <= 3_000 and np.abs(t.delta_).max() <= 8.0
