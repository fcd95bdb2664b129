"""Bad CLI inputs, as a table: config files, flags, damaged and altered run files, secrets
in model URLs, ``serve`` errors and a full disk. Every case must end with the right exit
code and exactly one line on stderr that names the file / option / value, never a
traceback, never a secret, and never a payment (the synthetic model counts its images).

Runs in-process (``main([...])``) on the synthetic black box (``python:cli_synthetic:predict``)
except where a real process or a mount is needed.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess

import numpy as np
import pytest
from cli_synthetic import PROBLEM, count, write_npz

from blackbox_dft.cli.main import main
from blackbox_dft.cli.runs import RunError, RunFolder
from blackbox_dft.core import state as state_module
from blackbox_dft.core.state import read_npz_json, write_npz_json
from blackbox_dft.data.datasets import write_image

SPEC = "python:cli_synthetic:predict"
BUDGET = 600


def _fit_argv(data: str, out: str, *extra: str) -> list[str]:
    return ["fit", "--model", SPEC, "--data", data, "--out", out, "--scores", "logits",
            "--budget", str(BUDGET), "--no-progress", *extra]


def _one_line(capsys, argv: list[str], code: int) -> str:
    """Run ``argv``; assert the exit code and ONE line on stderr (data summaries aside)."""
    rc = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("data:")]
    assert rc == code and len(lines) == 1, (rc, err)
    return lines[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("data") / "d.npz")
    write_npz(path)
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data) -> str:
    """A finished run folder (copied by each test that damages it)."""
    out = str(tmp_path_factory.mktemp("finished") / "run")
    assert main(_fit_argv(data, out, "--checkpoint-every", "2")) == 0
    return out


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("images")
    for i in range(2):
        write_image(str(folder / f"{i}.png"), PROBLEM.test[0][i])
    return str(folder)


@pytest.fixture()
def run(tmp_path, finished, monkeypatch) -> str:
    """A copy of the finished run; the model counts what it is sent from here on."""
    out = str(tmp_path / "run")
    shutil.copytree(finished, out)
    monkeypatch.setenv("BBDFT_TEST_COUNTER", str(tmp_path / "paid.txt"))
    return out


def _command(name: str, run: str, data: str, images: str, tmp_path) -> list[str]:
    if name == "resume":
        if os.path.exists(os.path.join(run, "report.json")):
            os.unlink(os.path.join(run, "report.json"))  # so that resume has work to do
        return ["resume", run, "--no-progress"]
    if name == "evaluate":
        return ["evaluate", "--run", run, "--data", data, "--no-progress"]
    if name == "apply":
        return ["apply", "--run", run, "--input", images, "--output", str(tmp_path / "out")]
    return ["info", run]


# -- config files ----------------------------------------------------------------------------
BOOLS = ("skip_bad", "cache", "evaluate", "per_image")
CONFIG_CASES = [
    *[(f"{name}-{value}", "toml", {name: value}, [name, "must be true or false", repr(value)])
      for name in BOOLS for value in ("no", "false", 1)],
    ("batch_size-bool", "json", {"batch_size": True}, ["batch_size", "whole number", "true"]),
    ("batch_size-str", "toml", {"batch_size": "16"}, ["batch_size", "whole number", "'16'"]),
    ("batch_size-zero", "json", {"batch_size": 0}, ["batch_size", ">= 1", "got 0"]),
    ("checkpoint_every-zero", "toml", {"checkpoint_every": 0}, ["checkpoint_every", ">= 1"]),
    ("seed-negative", "json", {"seed": -1}, ["seed", ">= 0", "-1"]),
    ("seed-float", "json", {"seed": 1.5}, ["seed", "whole number", "1.5"]),
    ("limit-bool", "toml", {"limit": False}, ["limit", "whole number", "false"]),
    ("epsilon-str", "json", {"epsilon": "8"}, ["epsilon", "must be a number", "'8'"]),
    ("epsilon-zero", "json", {"epsilon": 0}, ["epsilon", "finite number > 0"]),
    ("learning_rate-negative", "toml", {"learning_rate": -1.0}, ["learning_rate", "> 0"]),
    ("val_fraction-one", "json", {"val_fraction": 1.5}, ["val_fraction", "< 1"]),
    ("estimator-choice", "json", {"estimator": "adam"}, ["estimator", "one of spsa", "adam"]),
    ("classes-int", "json", {"classes": 5}, ["classes", "list of strings", "5"]),
    ("model_options-int", "json", {"model_options": 5}, ["model_options", "KEY=VALUE"]),
    ("budget-bool", "json", {"budget": True}, ["budget", "true"]),
    ("budget-zero", "toml", {"budget": 0}, ["budget", ">= 1"]),
    ("cache-null", "json", {"cache": None}, ["cache", "true or false", "null"]),
    ("unknown-key", "json", {"epsilom": 3}, ["'epsilom'", "did you mean 'epsilon'"]),
    ("unknown-key-toml", "toml", {"skipbad": True}, ["'skipbad'", "did you mean 'skip_bad'"]),
    ("twice", "json", {"skip-bad": True, "skip_bad": False}, ["skip_bad", "twice"]),
]


def _toml(cfg: dict) -> str:
    return "".join(f"{k} = {json.dumps(v)}\n" for k, v in cfg.items())


@pytest.mark.parametrize("case,fmt,bad,expect", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_bad_config_values_are_refused_naming_file_key_and_value(tmp_path, data, capsys,
                                                                 case, fmt, bad, expect):
    out = str(tmp_path / "run")
    cfg = {"model": SPEC, "data": data, "out": out, "scores": "logits", **bad}
    path = tmp_path / f"run.{fmt}"
    path.write_text(_toml(cfg) if fmt == "toml" else json.dumps(cfg))
    line = _one_line(capsys, ["fit", "--config", str(path), "--no-progress"], 2)
    assert f"config {path}" in line, line
    for text in expect:
        assert text in line, line
    assert not os.path.exists(out)


@pytest.mark.parametrize("text,fmt,expect", [
    ("skip_bad = = 1\n", "toml", "not valid TOML"),
    ("[1, 2]", "json", "must hold an object of options"),
    ("{\"model\": ", "json", "not valid JSON"),
    ("\xff\xfe", "json", "not valid JSON"),
])
def test_broken_config_files_are_one_line(tmp_path, capsys, text, fmt, expect):
    path = tmp_path / f"c.{fmt}"
    path.write_bytes(text.encode("latin-1"))
    line = _one_line(capsys, ["fit", "--config", str(path), "--no-progress"], 2)
    assert expect in line and str(path) in line, line


# -- flags -----------------------------------------------------------------------------------
FLAG_CASES = [
    (["--epsilon", "inf"], "epsilon must be a finite number > 0, got inf"),
    (["--epsilon", "nan"], "epsilon must be a finite number > 0, got nan"),
    (["--epsilon", "-1"], "epsilon must be a finite number > 0, got -1"),
    (["--learning-rate", "inf"], "learning_rate must be a finite number > 0, got inf"),
    (["--fd-step", "0"], "fd_step must be a finite number > 0, got 0"),
    (["--cost-per-1000", "nan"], "cost_per_1000 must be a finite number >= 0, got nan"),
    (["--cost-per-1000", "-2"], "cost_per_1000 must be a finite number >= 0, got -2"),
    (["--energy-penalty", "inf"], "energy_penalty must be a finite number >= 0, got inf"),
    (["--checkpoint-every", "0"], "checkpoint_every must be a whole number >= 1, got 0"),
    (["--batch-size", "0"], "batch_size must be a whole number >= 1, got 0"),
    (["--seed", "-1"], "seed must be a whole number >= 0, got -1"),
    (["--val-fraction", "1"], "val_fraction must be a number >= 0 and < 1, got 1"),
    (["--limit", "ten"], "limit must be a whole number, got 'ten'"),
    (["--budget", "0"], "--budget must pay for at least one image"),
    (["--budget", "-5"], "--budget must be a number of queries"),
]


@pytest.mark.parametrize("extra,expect", FLAG_CASES, ids=[" ".join(c[0]) for c in FLAG_CASES])
def test_bad_numeric_flags_are_refused_at_parse_time(tmp_path, data, capsys, extra, expect):
    out = str(tmp_path / "run")
    argv = ["fit", "--model", SPEC, "--data", data, "--out", out, "--scores", "logits",
            "--no-progress", *extra]
    if "--budget" not in extra:
        argv += ["--budget", "600"]
    assert expect in _one_line(capsys, argv, 2)
    assert not os.path.exists(out)


def test_demo_flags_are_checked_before_any_task_loads(tmp_path, capsys):
    line = _one_line(capsys, ["demo", "--epsilon", "inf", "--out", str(tmp_path / "d")], 2)
    assert "epsilon must be a finite number > 0, got inf" in line


# -- damaged run files -----------------------------------------------------------------------
DAMAGES = {
    "truncated": lambda b: b[:len(b) // 2],
    "empty": lambda b: b"",
    "garbage": lambda b: b"\x00\xffnot what it should be\n" * 3,
}
DAMAGE_CASES = [(f, c) for f, cmds in (
    ("checkpoint.npz", ("resume", "info")), ("delta.npz", ("evaluate", "apply")),
    ("config.json", ("info", "resume", "evaluate")), ("spend.json", ("resume",)),
    ("report.json", ("info",))) for c in cmds]


@pytest.mark.parametrize("damage", sorted(DAMAGES))
@pytest.mark.parametrize("name,command", DAMAGE_CASES, ids=[f"{f}-{c}" for f, c in DAMAGE_CASES])
def test_damaged_run_files_name_the_file_and_what_to_do(tmp_path, run, data, images, capsys,
                                                        name, command, damage):
    path = os.path.join(run, name)
    raw = open(path, "rb").read()
    open(path, "wb").write(DAMAGES[damage](raw))
    argv = _command(command, run, data, images, tmp_path)
    line = _one_line(capsys, argv, 2)
    assert f"{name} in {run} is damaged" in line, line
    hint = {"checkpoint.npz": "delete it to start the fit over", "spend.json": "counted from 0",
            "config.json": "restore it", "report.json": "resume"}.get(name, "restore it")
    assert hint in line, line
    assert count(str(tmp_path / "paid.txt")) == 0  # nothing was sent to the model
    assert not os.path.exists(tmp_path / "out")  # apply wrote nothing


def test_damaged_ledger_warns_in_info_and_history_is_rebuilt(tmp_path, run, capsys):
    open(os.path.join(run, "spend.json"), "w").write("{\"asked\": 12")
    assert main(["info", run]) == 0
    err = capsys.readouterr().err
    assert "warning: spend.json in" in err and "damaged" in err and "Traceback" not in err
    open(os.path.join(run, "history.jsonl"), "w").write("{\"step\": 1}\nnot json\n")
    with pytest.raises(RunError, match=r"history.jsonl in .* is damaged \(line 2"):
        RunFolder(run).read_history()
    os.unlink(os.path.join(run, "report.json"))
    os.unlink(os.path.join(run, "spend.json"))  # the user's choice after the warning
    assert main(["resume", run, "--no-progress"]) == 0  # history comes from the checkpoint
    assert len(RunFolder(run).read_history()) > 1
    assert count(str(tmp_path / "paid.txt")) == 0  # the cache answered the evaluation


@pytest.mark.parametrize("field,value", [("evaluate", "no"), ("checkpoint_every", 0),
                                         ("skip_bad", "false"), ("seed", True)])
def test_altered_saved_options_are_refused(tmp_path, run, capsys, field, value):
    path = os.path.join(run, "config.json")
    cfg = json.load(open(path))
    cfg["options"][field] = value
    json.dump(cfg, open(path, "w"))
    argv = _command("resume", run, "", "", tmp_path)
    line = _one_line(capsys, argv, 2)
    assert path in line and field in line and "altered" in line, line


# -- tampered state --------------------------------------------------------------------------
def _tamper(path: str, change) -> None:
    arrays, meta = read_npz_json(path)
    change(arrays, meta)
    write_npz_json(path, arrays, meta)


def _set(where: str, key: str, value):
    def change(arrays, meta):
        (meta["state"] if where == "state" else meta)[key] = value
    return change


def _array(key: str, fn):
    def change(arrays, meta):
        name = key if key in arrays else next(k for k in arrays if k.startswith(key))
        arrays[name] = fn(arrays[name])
    return change


def _swap_history(arrays, meta):
    h = meta["state"]["history"]
    h[1]["queries"] = h[0]["queries"] - 1


CHECKPOINT_TAMPERS = {
    "z-nan": (_array("z", lambda z: np.full_like(z, np.nan)), "z holds"),
    "z-inf": (_array("z", lambda z: np.where(z == z.flat[0], np.inf, z)), "non-finite"),
    "z-strings": (_array("z", lambda z: np.array(["a", "b"])), "must be a float array"),
    "best_z-shape": (_array("best_z", lambda z: np.zeros((2, 2, 3))), "best_z has shape"),
    "opt-nan": (_array("opt.", lambda a: np.full_like(a, np.nan)), "non-finite"),
    "queries-negative": (_set("state", "queries", -100000),
                         "state.queries is -100000, must be >= 0"),
    "queries-over-budget": (_set("state", "queries", BUDGET + 1),
                            f"<= the query budget {BUDGET}"),
    "queries-float": (_set("state", "queries", 12.5), "state.queries is 12.5"),
    "step-negative": (_set("state", "step", -1), "state.step is -1"),
    "best_step-after-step": (_set("state", "best_step", 10 ** 6), "state.best_step"),
    "lost-negative": (_set("state", "lost_queries", -5), "state.lost_queries is -5"),
    "done-string": (_set("state", "done", "yes"), "state.done"),
    "history-decreasing": (_swap_history, "queries never decrease"),
    "history-not-list": (_set("state", "history", "x"), "state.history"),
    "rng-garbage": (_set("state", "rng_state", {"bit_generator": "PCG64", "state": {}}),
                    "state.rng_state"),
    "image_shape-zero": (_set("meta", "image_shape", [0, 16]), "image_shape"),
}


@pytest.mark.parametrize("case", sorted(CHECKPOINT_TAMPERS))
def test_tampered_checkpoint_is_refused_before_anything_is_paid(tmp_path, run, capsys, case):
    change, expect = CHECKPOINT_TAMPERS[case]
    path = os.path.join(run, "checkpoint.npz")
    _tamper(path, change)
    line = _one_line(capsys, _command("resume", run, "", "", tmp_path), 2)
    assert path in line and expect in line and "altered or damaged" in line, line
    assert count(str(tmp_path / "paid.txt")) == 0


def _result(key: str, value):
    return _set("meta", key, value)


DELTA_TAMPERS = {
    "latent-nan": (_array("latent", lambda z: np.full_like(z, np.nan)), "latent holds"),
    "delta-inf": (_array("delta", lambda d: np.full_like(d, np.inf)), "non-finite"),
    "delta-2d": (_array("delta", lambda d: d[..., 0]), "must have 3 dimensions"),
    "delta-over-epsilon": (_array("delta", lambda d: np.full_like(d, 100.0)),
                           "<= epsilon 8"),
    "image_shape-mismatch": (_result("image_shape", [8, 8]), "but image_shape is [8, 8]"),
    "image_shape-strings": (_result("image_shape", ["a", 16]), "image_shape"),
    "queries-negative": (_result("queries", -1), "queries is -1"),
    "best_step-over": (_result("best_step", 10 ** 6), "best_step"),
    "history-not-list": (_result("history", {"a": 1}), "history"),
}


@pytest.mark.parametrize("command", ["evaluate", "apply"])
@pytest.mark.parametrize("case", sorted(DELTA_TAMPERS))
def test_tampered_delta_is_refused_and_nothing_is_written(tmp_path, run, data, images, capsys,
                                                         case, command):
    change, expect = DELTA_TAMPERS[case]
    path = os.path.join(run, "delta.npz")
    _tamper(path, change)
    line = _one_line(capsys, _command(command, run, data, images, tmp_path), 2)
    assert path in line and expect in line and "altered or damaged" in line, line
    assert not os.path.exists(tmp_path / "out")
    assert count(str(tmp_path / "paid.txt")) == 0


def test_a_pickle_planted_as_a_checkpoint_is_refused(tmp_path, run, capsys):
    path = os.path.join(run, "checkpoint.npz")
    np.save(path.replace(".npz", ".npy"), np.array([object()], dtype=object), allow_pickle=True)
    os.replace(path.replace(".npz", ".npy"), path)
    line = _one_line(capsys, _command("resume", run, "", "", tmp_path), 2)
    assert "pickled" in line and "checkpoint.npz" in line, line


# -- serve -----------------------------------------------------------------------------------
def test_serve_an_unknown_model_lists_the_valid_names(capsys):
    line = _one_line(capsys, ["serve", "--model", "nope", "--port", "0"], 2)
    assert "'nope'" in line and "blazeface" in line and "smiling" in line, line


def test_serve_on_a_busy_port_says_so(capsys):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        line = _one_line(capsys, ["serve", "--model", "gender", "--port", str(port)], 2)
    assert f"port {port} on 127.0.0.1 is in use; pick another with --port" in line, line


def test_serve_bad_flag_is_one_line(capsys):
    line = _one_line(capsys, ["serve", "--model", "gender", "--port", "eighty"], 2)
    assert "--port" in line and "eighty" in line, line


# -- a full disk -----------------------------------------------------------------------------
def _temps(folder: str) -> list[str]:
    return [n for n in os.listdir(folder) if n.startswith(".tmp-") or n.endswith(".part")]


def test_disk_full_during_a_checkpoint_names_the_file_and_resumes(tmp_path, data, capsys,
                                                                  monkeypatch):
    ref, out = str(tmp_path / "ref"), str(tmp_path / "run")
    extra = ("--checkpoint-every", "2", "--budget", "1200")
    assert main(_fit_argv(data, ref, *extra)) == 0
    savez, calls = np.savez, []

    def full(fh, **arrays):
        calls.append(1)
        if len(calls) == 2:  # the second checkpoint: half written, then no space left
            fh.write(b"PK\x03\x04 half a zip")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return savez(fh, **arrays)

    monkeypatch.setattr(state_module.np, "savez", full)
    capsys.readouterr()
    line = _one_line(capsys, _fit_argv(data, out, *extra), 5)
    path = os.path.join(out, "checkpoint.npz")
    assert f"cannot write {path}: No space left on device" in line, line
    assert f"resumable once there is space: 'blackbox-dft resume {out}'" in line, line
    assert _temps(out) == []  # the half-written temp file was removed
    monkeypatch.setattr(state_module.np, "savez", savez)
    assert main(["resume", out, "--no-progress"]) == 0
    same = [read_npz_json(os.path.join(d, "delta.npz"))[0]["delta"] for d in (ref, out)]
    assert np.array_equal(*same)


@pytest.fixture()
def tiny_disk(tmp_path):
    """A 128 KiB tmpfs (root only; skipped elsewhere), made larger by ``grow()``."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(mnt)],
                       check=True, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        pytest.skip("cannot mount a tmpfs here (needs root)")

    def grow() -> None:
        subprocess.run(["mount", "-o", "remount,size=16m", str(mnt)], check=True, timeout=10)

    try:
        yield str(mnt), grow
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=10)


def test_a_really_full_disk_stops_the_fit_resumably(tmp_path, data, capsys, tiny_disk):
    mnt, grow = tiny_disk
    ref, out = str(tmp_path / "ref"), os.path.join(mnt, "run")
    extra = ("--checkpoint-every", "2", "--budget", "1200")
    assert main(_fit_argv(data, ref, *extra)) == 0
    capsys.readouterr()
    line = _one_line(capsys, _fit_argv(data, out, *extra), 5)
    assert f"cannot write {out}{os.sep}" in line and "resumable once there is space" in line, line
    assert _temps(out) == []
    grow()
    assert main(["resume", out, "--no-progress"]) == 0
    same = [read_npz_json(os.path.join(d, "delta.npz"))[0]["delta"] for d in (ref, out)]
    assert np.array_equal(*same)


# -- secrets in model URLs -------------------------------------------------------------------
SECRETS = ("AzFnCode0123456789", "KayValue98765xyz", "TokenUser4242abc", "PassWord7777qq",
           "BareToken5151zz", "Sl+sh/Eq==Key99")


def _url_cases(base: str) -> dict[str, str]:
    rest = base.split("://", 1)[1]
    return {"code": f"{base}?code={SECRETS[0]}", "k": f"{base}?api-version=2&k={SECRETS[1]}",
            "userinfo": f"http://{SECRETS[2]}@{rest}",
            "user-password": f"http://me:{SECRETS[3]}@{rest}?code={SECRETS[0]}",
            "bare": f"{base}?{SECRETS[4]}", "encoded": f"{base}?code=Sl%2Bsh%2FEq%3D%3DKey99"}


def _leaks(text: str) -> list[str]:
    from urllib.parse import quote, quote_plus

    forms = {f for s in SECRETS for f in (s, quote(s, safe=""), quote_plus(s))}
    return sorted(f for f in forms if f in text)


def _folder_leaks(folder: str) -> list[str]:
    found = []
    for root, _, files in os.walk(folder):
        for name in files:
            raw = open(os.path.join(root, name), "rb").read().decode("latin-1")
            found += [f"{name}: {f}" for f in _leaks(raw)]
    return found


@pytest.fixture(scope="module")
def server():
    from blackbox_dft.adapters.serving.server import StandInServer

    with StandInServer(PROBLEM.model, "oip", port=0) as srv:
        yield srv


@pytest.mark.network
@pytest.mark.parametrize("case", ["code", "k", "userinfo", "user-password", "bare", "encoded"])
def test_literal_url_secrets_never_reach_files_or_messages(tmp_path, data, capsys, server,
                                                           case):
    url = _url_cases(server.url)[case]
    out = str(tmp_path / "run")
    argv = ["fit", "--model", url, "--preset", "oip", "--data", data, "--out", out,
            "--scores", "logits", "--budget", "600", "--no-evaluate", "--no-progress"]
    assert main(argv) == 0
    said = capsys.readouterr()
    warning = [ln for ln in said.err.splitlines() if ln.startswith("warning:")]
    assert len(warning) == 1 and "resume --model-url" in warning[0], said.err
    assert "***" in json.load(open(os.path.join(out, "config.json")))["options"]["model"]
    assert main(["info", out]) == 0
    info = capsys.readouterr()
    assert "***" in info.out
    os.unlink(os.path.join(out, "report.json"))  # something left to resume
    line = _one_line(capsys, ["resume", out, "--no-progress"], 2)
    assert "--model-url" in line and "was fitted with literal secrets" in line, line
    other = url.replace("127.0.0.1", "localhost")
    line = _one_line(capsys, ["resume", out, "--model-url", other, "--no-progress"], 2)
    assert "is not the URL" in line, line
    assert main(["resume", out, "--model-url", url, "--no-progress"]) == 0
    again = capsys.readouterr()
    assert _leaks(said.out + said.err + info.out + info.err + again.out + again.err) == []
    assert _folder_leaks(out) == []


@pytest.mark.network
def test_url_secrets_from_the_environment_resume_without_the_url(tmp_path, data, capsys,
                                                                 server, monkeypatch):
    monkeypatch.setenv("BBDFT_HOSTILE_CODE", SECRETS[0])
    url = server.url + "?code=${BBDFT_HOSTILE_CODE}"
    out = str(tmp_path / "run")
    argv = ["fit", "--model", url, "--preset", "oip", "--data", data, "--out", out,
            "--scores", "logits", "--budget", "600", "--no-evaluate", "--no-progress"]
    assert main(argv) == 0
    said = capsys.readouterr()
    assert "warning" not in said.err
    assert json.load(open(os.path.join(out, "config.json")))["options"]["model"] == url
    os.unlink(os.path.join(out, "report.json"))
    assert main(["resume", out, "--no-progress"]) == 0
    again = capsys.readouterr()
    assert _leaks(said.out + said.err + again.out + again.err) == []
    assert _folder_leaks(out) == []
    monkeypatch.delenv("BBDFT_HOSTILE_CODE")
    os.unlink(os.path.join(out, "report.json"))
    line = _one_line(capsys, ["resume", out, "--no-progress"], 2)
    assert "environment variable BBDFT_HOSTILE_CODE (in the model URL) is not set" in line


def test_url_secrets_stay_out_of_a_model_failure(tmp_path, data, capsys):
    url = f"http://{SECRETS[2]}@127.0.0.1:9/v2/models/m/infer?code={SECRETS[0]}&{SECRETS[4]}"
    out = str(tmp_path / "run")
    argv = ["fit", "--model", url, "--preset", "oip", "--data", data, "--out", out,
            "--scores", "logits", "--budget", "600", "--model-option", "max_retries=0",
            "--no-progress"]
    assert main(argv) == 3
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if ln.startswith("model failed")]
    assert len(errors) == 1 and "resum" in errors[0] and "Traceback" not in err, err
    assert _leaks(err) == [] and _folder_leaks(out) == []


def test_literal_secret_headers_are_refused(tmp_path, data, capsys, monkeypatch):
    argv = ["fit", "--model", "http://127.0.0.1:9/v1/score", "--data", data, "--out",
            str(tmp_path / "run"), "--model-option", f'headers={{"X-Api-Key": "{SECRETS[1]}"}}']
    line = _one_line(capsys, argv, 2)
    assert "X-Api-Key" in line and "${VAR}" in line and _leaks(line) == [], line
    assert not os.path.exists(tmp_path / "run")
