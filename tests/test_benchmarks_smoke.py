"""Smoke test of benchmarks/query_efficiency.py --quick: it runs and writes its outputs."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "query_efficiency.py")


def test_query_efficiency_quick_writes_json_markdown_and_png(tmp_path):
    pytest.importorskip("nevergrad")
    pytest.importorskip("cma")
    pytest.importorskip("matplotlib")
    proc = subprocess.run([sys.executable, SCRIPT, "--quick", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for ext in ("json", "md", "png"):
        assert (tmp_path / f"query_efficiency.{ext}").stat().st_size > 0
    doc = json.loads((tmp_path / "query_efficiency.json").read_text())
    assert doc["benchmark"] == "query_efficiency" and doc["quick"] is True
    assert {"python", "numpy", "cpus", "nevergrad", "cma"} <= set(doc["machine"])
    summary = doc["summary"]["synthetic"]
    assert summary["limit"] is not None and summary["limit_gain"] is not None
    groups = {doc["methods"][m]["group"] for m in summary["methods"]}
    assert groups == {"ours", "peer"}
    assert "default" in summary["methods"]
    for m in summary["methods"].values():
        for p in m["points"].values():
            assert 0.0 <= p["accuracy_mean"] <= 1.0 and p["n"] == len(doc["seeds"])
    ctrl = doc["controls"]["synthetic"]
    assert {"baseline", "random 8x8", "random full", "constant offset"} <= set(ctrl)
    assert len(ctrl["random full"]["draws"]) == 5
    assert "default" in (tmp_path / "query_efficiency.md").read_text()


def test_standin_tasks_quick_writes_json_and_markdown(tmp_path):
    pytest.importorskip("ai_edge_litert")
    pytest.importorskip("skimage")
    script = os.path.join(ROOT, "benchmarks", "standin_tasks.py")
    proc = subprocess.run([sys.executable, script, "--quick", "--workers", "1",
                           "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((tmp_path / "standin_tasks.json").read_text())
    assert doc["benchmark"] == "standin_tasks" and doc["quick"] is True
    assert set(doc["summary"]) == {"face", "smiling"}
    for run in doc["runs"]:
        assert run["queries"] <= doc["budget"] and run["max_abs_delta"] <= doc["epsilon"]
        assert len(run["random_noise"]["accuracy"]) == 5
        assert run["psnr_db"] >= 30.0  # |delta| <= 8 grey levels: MSE <= 64, PSNR >= 30.07 dB
    assert "balanced acc." in (tmp_path / "standin_tasks.md").read_text()
