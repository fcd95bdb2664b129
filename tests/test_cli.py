"""The command line: fit / evaluate / apply / info / demo, config files, money, secrets, and
bad input (one line on stderr, exit code 2, never a traceback)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from cli_synthetic import PROBLEM, error_line, write_npz

from blackbox_dft.cli.main import main
from blackbox_dft.core.state import read_npz_json
from blackbox_dft.data.datasets import read_image, write_image

SPEC = "python:cli_synthetic:predict"


@pytest.fixture()
def data(tmp_path):
    path = str(tmp_path / "d.npz")
    write_npz(path)
    return path


def _fit(data: str, out: str, *extra: str) -> int:
    return main(["fit", "--model", SPEC, "--data", data, "--out", out, "--scores", "logits",
                 "--budget", "1200", "--no-progress", *extra])


def test_fit_writes_a_complete_run_folder(tmp_path, data, capsys):
    out = str(tmp_path / "run")
    assert _fit(data, out, "--cost-per-1000", "2.0") == 0
    printed = capsys.readouterr().out
    assert "held-out test accuracy" in printed and "money spent" in printed
    for name in ("config.json", "checkpoint.npz", "history.jsonl", "delta.npz", "report.json",
                 "report.png", "cache.sqlite", "spend.json"):
        assert os.path.exists(os.path.join(out, name)), name
    report = json.load(open(os.path.join(out, "report.json")))
    assert report["test"]["accuracy_after"] > report["test"]["accuracy_before"]
    assert report["spend"]["cost"] == pytest.approx(report["spend"]["paid"] * 2.0 / 1000)
    history = [json.loads(ln) for ln in open(os.path.join(out, "history.jsonl"))]
    assert len(history) == report["fit"]["steps"] and history[-1]["step"] == len(history)
    png = read_image(os.path.join(out, "report.png"))
    assert png.shape[0] > 300 and png.shape[1] > 600


def test_evaluate_apply_info_and_resume_of_a_finished_run(tmp_path, data, capsys):
    out = str(tmp_path / "run")
    assert _fit(data, out) == 0
    capsys.readouterr()
    assert main(["evaluate", "--run", out, "--data", data, "--split", "test",
                 "--json", str(tmp_path / "m.json"), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "recall per class" in printed and "PSNR" in printed
    assert "600 answered by the cache" in printed  # the fit's own evaluation, not paid twice
    metrics = json.load(open(tmp_path / "m.json"))
    report = json.load(open(os.path.join(out, "report.json")))
    assert metrics["accuracy_after"] == report["test"]["accuracy_after"]
    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    write_image(str(src / "a.png"), PROBLEM.test[0][0])
    write_image(str(src / "b.jpg"), PROBLEM.test[0][1])
    assert main(["apply", "--run", out, "--input", str(src), "--output", str(dst)]) == 0
    delta = read_npz_json(os.path.join(out, "delta.npz"))[0]["delta"]
    want = np.clip(np.rint(PROBLEM.test[0][0] + delta), 0, 255).astype(np.uint8)
    assert np.array_equal(read_image(str(dst / "a.png")), want)
    assert sorted(os.listdir(dst)) == ["a.png", "b.png"]
    capsys.readouterr()
    assert main(["apply", "--run", out, "--input", str(src), "--output", str(dst)]) == 2
    assert "--force" in error_line(capsys)
    assert main(["info", out]) == 0
    assert "fit done" in capsys.readouterr().out
    assert main(["resume", out]) == 0
    assert "complete" in capsys.readouterr().out


def test_config_file_json_and_toml_flags_override(tmp_path, data, capsys):
    cfg = {"model": SPEC, "data": data, "scores": "logits", "budget": 900, "epsilon": 4,
           "batch-size": 16}
    (tmp_path / "run.json").write_text(json.dumps(cfg))
    out = str(tmp_path / "a")
    assert main(["fit", "--config", str(tmp_path / "run.json"), "--out", out,
                 "--epsilon", "6", "--no-progress"]) == 0
    params = json.load(open(os.path.join(out, "config.json")))["params"]
    assert params["epsilon"] == 6.0 and params["batch_size"] == 16
    assert params["query_budget"] == 900
    toml = "\n".join(f'{k} = {json.dumps(v)}' for k, v in cfg.items()) + '\nout = "' + \
        str(tmp_path / "b") + '"\n'
    (tmp_path / "run.toml").write_text(toml)
    assert main(["fit", "--config", str(tmp_path / "run.toml"), "--no-progress"]) == 0
    assert json.load(open(tmp_path / "b" / "config.json"))["params"]["epsilon"] == 4.0
    (tmp_path / "bad.json").write_text(json.dumps({**cfg, "epsilom": 3}))
    capsys.readouterr()
    assert main(["fit", "--config", str(tmp_path / "bad.json"), "--out", str(tmp_path / "c")]) == 2
    line = error_line(capsys)
    assert "'epsilom'" in line and "did you mean 'epsilon'" in line and "bad.json" in line
    assert not os.path.exists(tmp_path / "c")


def test_money_budget_covers_fit_and_evaluation(tmp_path, data, capsys):
    out = str(tmp_path / "run")
    assert main(["fit", "--model", SPEC, "--data", data, "--out", out, "--scores", "logits",
                 "--budget", "$3", "--cost-per-1000", "1.0", "--no-progress"]) == 0
    params = json.load(open(os.path.join(out, "config.json")))["params"]
    assert params["query_budget"] == 3000 - 2 * 300
    report = json.load(open(os.path.join(out, "report.json")))
    assert report["spend"]["cost"] <= 3.0
    capsys.readouterr()
    assert main(["info", out]) == 0
    assert "projected total" in capsys.readouterr().out


def test_force_restarts_but_keeps_the_cache(tmp_path, data, capsys):
    out = str(tmp_path / "run")
    assert _fit(data, out) == 0
    first = read_npz_json(os.path.join(out, "delta.npz"))[0]["delta"]
    capsys.readouterr()
    assert _fit(data, out) == 2
    assert "resume" in error_line(capsys)
    assert _fit(data, out, "--force") == 0
    assert np.array_equal(read_npz_json(os.path.join(out, "delta.npz"))[0]["delta"], first)
    spend = json.load(open(os.path.join(out, "report.json")))["spend"]
    assert spend["paid"] == 0 and spend["saved"] == spend["asked"]


def _image_folder(root, corrupt: bool = False, empty: bool = False) -> str:
    x, y = PROBLEM.train
    for i in range(40):
        d = root / str(int(y[i]))
        d.mkdir(parents=True, exist_ok=True)
        write_image(str(d / f"{i:03d}.png"), x[i])
    if corrupt:
        (root / "1" / "broken.png").write_bytes(b"\x89PNG garbage")
    if empty:
        (root / "7").mkdir()
    return str(root)


@pytest.mark.parametrize("case", [
    "missing_data", "bad_number", "unknown_flag", "unknown_model", "corrupt_image",
    "empty_class", "csv_missing_label", "incompatible_run", "missing_env_key", "secret_option",
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, data, capsys, case, monkeypatch):
    out = str(tmp_path / "run")
    base = ["fit", "--model", SPEC, "--out", out, "--scores", "logits", "--no-progress"]
    if case == "missing_data":
        argv, expect = base + ["--data", str(tmp_path / "nope")], "not found"
    elif case == "bad_number":
        argv, expect = base + ["--data", data, "--epsilon", "lots"], "--epsilon"
    elif case == "unknown_flag":
        argv, expect = base + ["--data", data, "--epsilonn", "3"], "unrecognized"
    elif case == "unknown_model":
        argv, expect = ["fit", "--model", "magic:thing", "--data", data, "--out", out], "spec"
    elif case == "corrupt_image":
        argv, expect = base + ["--data", _image_folder(tmp_path / "f", corrupt=True)], "broken.png"
    elif case == "empty_class":
        argv, expect = base + ["--data", _image_folder(tmp_path / "f", empty=True)], "'7' has no"
    elif case == "csv_missing_label":
        write_image(str(tmp_path / "0.png"), PROBLEM.train[0][0])
        (tmp_path / "d.csv").write_text("path,label\n0.png,1\n0.png,\n")
        argv, expect = base + ["--data", str(tmp_path / "d.csv")], "label missing"
    elif case == "incompatible_run":
        assert _fit(data, out) == 0
        cfg = json.load(open(os.path.join(out, "config.json")))
        cfg["run_format"] = 99
        json.dump(cfg, open(os.path.join(out, "config.json"), "w"))
        capsys.readouterr()
        argv, expect = ["evaluate", "--run", out, "--data", data], "run format 99"
    elif case == "missing_env_key":
        monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
        argv = ["fit", "--model", "http://127.0.0.1:9/v2/models/m/infer", "--preset", "oip",
                "--api-key-env", "NO_SUCH_KEY_VAR", "--data", data, "--out", out]
        expect = "NO_SUCH_KEY_VAR"
    else:
        argv = base + ["--data", data, "--model-option", "api_key=hunter2"]
        expect = "secret"
    assert main(argv) == 2
    assert expect in error_line(capsys)
    if case != "incompatible_run":
        assert not os.path.exists(out)  # bad input leaves no run folder behind


def test_skip_bad_skips_and_names_the_file(tmp_path, capsys):
    root = _image_folder(tmp_path / "f", corrupt=True)
    out = str(tmp_path / "run")
    assert main(["fit", "--model", SPEC, "--data", root, "--out", out, "--scores", "logits",
                 "--budget", "600", "--skip-bad", "--no-progress"]) == 0
    assert "skipped unreadable image: 1/broken.png" in capsys.readouterr().err


@pytest.mark.network
def test_http_model_key_only_from_env_and_never_written(tmp_path, data, capsys, monkeypatch):
    from blackbox_dft.adapters.serving.server import StandInServer

    secret = "s3cr3t-KEY-that-must-not-leak"
    monkeypatch.setenv("MY_VENDOR_KEY", secret)
    with StandInServer(PROBLEM.model, "oip", port=0, api_key=secret) as server:
        url = server.url
        out = str(tmp_path / "run")
        assert main(["fit", "--model", url, "--preset", "oip", "--api-key-env", "MY_VENDOR_KEY",
                     "--data", data, "--out", out, "--scores", "logits", "--budget", "800",
                     "--no-progress"]) == 0
        captured = capsys.readouterr()
        assert secret not in captured.out + captured.err
        for name in os.listdir(out):
            assert secret.encode() not in open(os.path.join(out, name), "rb").read(), name
        monkeypatch.setenv("MY_VENDOR_KEY", "wrong-key")
        bad = str(tmp_path / "bad")
        assert main(["fit", "--model", url, "--preset", "oip", "--api-key-env", "MY_VENDOR_KEY",
                     "--data", data, "--out", bad, "--scores", "logits", "--budget", "800",
                     "--no-progress"]) == 3
        err = capsys.readouterr().err
        assert "resum" in err and "Traceback" not in err and "wrong-key" not in err
        assert os.path.exists(os.path.join(bad, "checkpoint.npz"))


@pytest.mark.slow
def test_demo_writes_the_run_folder_and_auto_suffixes(tmp_path, capsys):
    out = str(tmp_path / "demo")
    os.makedirs(out)
    (tmp_path / "demo" / "keep.txt").write_text("not ours")
    assert main(["demo", "--out", out, "--budget", "1500", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    run = out + "-2"
    assert f"run folder: {run}" in printed and "before" in printed and "PSNR" in printed
    for name in ("delta.npz", "report.json", "report.png", "config.json"):
        assert os.path.exists(os.path.join(run, name))
    report = json.load(open(os.path.join(run, "report.json")))
    assert report["unshifted_test_accuracy"] > report["test"]["accuracy_before"]
    assert report["fit"]["queries"] <= 1500
    assert read_image(os.path.join(run, "report.png")).shape[1] > 800


@pytest.mark.slow
def test_cli_fit_on_an_image_folder_equals_the_library_call(tmp_path, capsys):
    """The face task written as PNG files and fitted by the CLI gives the library's delta."""
    from blackbox_dft import DataFineTuner
    from blackbox_dft.adapters.standins.tasks import load_task

    task = load_task("face", shift="blur:sigma=2.5", seed=0)
    root = tmp_path / "faces"
    ordered = {}
    for split, (x, y) in (("train", task.train), ("val", task.val), ("test", task.test)):
        for i in range(len(y)):
            d = root / split / str(int(y[i]))
            d.mkdir(parents=True, exist_ok=True)
            write_image(str(d / f"{i:03d}.png"), x[i])
        order = np.argsort(y, kind="stable")  # the folder order: by class, then by name
        ordered[split] = (x[order], y[order])
    out = str(tmp_path / "run")
    assert main(["fit", "--model", "standin:blazeface", "--data", str(root), "--out", out,
                 "--budget", "1500", "--seed", "0", "--no-progress"]) == 0
    lib = DataFineTuner(task.model, "multiclass", query_budget=1500, seed=0, progress=False)
    lib.fit(*ordered["train"], validation=ordered["val"])
    cli_delta = read_npz_json(os.path.join(out, "delta.npz"))[0]["delta"]
    assert np.array_equal(cli_delta, lib.delta_)
    report = json.load(open(os.path.join(out, "report.json")))
    want = lib.evaluate(*ordered["test"])
    assert report["test"]["accuracy_after"] == want["accuracy_after"]
    assert report["test"]["psnr"] == pytest.approx(want["psnr"])


def test_energy_penalty_flag_reaches_the_tuner_and_bad_values_exit_2(tmp_path, data, capsys):
    out = str(tmp_path / "e")
    assert main(["fit", "--model", SPEC, "--data", data, "--scores", "logits", "--budget", "600",
                 "--energy-penalty", "0.01", "--out", out, "--no-progress"]) == 0
    params = json.load(open(os.path.join(out, "config.json")))["params"]
    assert params["energy_penalty"] == 0.01
    capsys.readouterr()
    assert main(["fit", "--model", SPEC, "--data", data, "--scores", "logits", "--budget", "600",
                 "--energy-penalty", "-1", "--out", str(tmp_path / "f"), "--no-progress"]) == 2
    line = error_line(capsys)
    assert "energy_penalty" in line and "-1" in line


def test_per_image_flag_reaches_the_estimator(tmp_path, data):
    out = str(tmp_path / "p")
    assert main(["fit", "--model", SPEC, "--data", data, "--scores", "logits", "--budget", "600",
                 "--per-image", "--batch-size", "8", "--out", out, "--no-progress"]) == 0
    params = json.load(open(os.path.join(out, "config.json")))["params"]
    assert params["estimator"] == {"type": "PerImage", "base": {
        "type": "SPSA", "directions": 1, "step": 2.0, "step_decay": 0.0}}
    fit = json.load(open(os.path.join(out, "report.json")))["fit"]
    assert fit["kept"]["queries"] <= 600 and fit["best_step"] >= 1


def test_demo_smiling_uses_its_own_default_shift(tmp_path, capsys):
    pytest.importorskip("ai_edge_litert")
    out = str(tmp_path / "s")
    assert main(["demo", "--task", "smiling", "--out", out, "--budget", "600",
                 "--no-progress"]) == 0
    cap = capsys.readouterr()
    assert "smiling task under blur:sigma=0.7" in cap.out + cap.err
    cfg = json.load(open(os.path.join(out, "config.json")))
    assert "blur:sigma=0.7" in json.dumps(cfg)
