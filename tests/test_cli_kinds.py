"""The typed CLI: one option table (dataclasses) for flags, config files and config.json, whose
saved form keeps run format 1's keys; the registry of run kinds that every command goes
through; and what the commands say about a run of an unknown kind."""

from __future__ import annotations

import argparse
import json
import os

import pytest
from cli_synthetic import error_line, write_attribute_csv, write_npz

from blackbox_dft.cli.kinds import CLASSIFICATION, KINDS, PER_ATTRIBUTE, VERIFICATION, kind_for
from blackbox_dft.cli.main import build_parser, main
from blackbox_dft.cli.options import (
    FIT_OPTIONS,
    FitOptions,
    resolve_options,
    saved_fit_options,
)
from blackbox_dft.cli.runs import RunFolder

SPEC = "python:cli_synthetic:predict"
# The "options" keys of config.json in run format 1 (blackbox_dft 0.1.0): runs written by
# earlier versions must still resume, evaluate, apply and show their info.
RUN_FORMAT_1_KEYS = sorted([
    "api_key_env", "api_secret_env", "attribute_mode", "attributes", "batch_size", "budget",
    "cache", "cache_path", "checkpoint_every", "class_weight", "classes", "cost_per_1000",
    "data", "directions", "energy_penalty", "epsilon", "estimator", "evaluate", "far",
    "fd_step", "fd_step_decay", "image_root", "label_map", "learning_rate", "limit",
    "lr_schedule", "max_image_pixels", "model", "model_options", "optimizer", "out", "pairs",
    "per_image", "perturbation", "preset", "scores", "seed", "selection", "shift", "size",
    "size_mode", "skip_bad", "task", "test_fraction", "threshold", "val_fraction",
    "validation_every"])
# Added since: early stopping (issue 16); a format-1 config without them still loads.
ADDED_KEYS = ["early_stopping", "patience", "sampling"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("data") / "d.npz")
    write_npz(path)
    return path


def test_the_option_table_is_the_flags_the_config_keys_and_the_saved_keys(tmp_path, data):
    assert sorted(o.name for o in FIT_OPTIONS) == sorted(RUN_FORMAT_1_KEYS + ADDED_KEYS)
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert {a.dest for a in sub.choices["fit"]._actions} >= set(RUN_FORMAT_1_KEYS)
    out = str(tmp_path / "run")
    assert main(["fit", "--model", SPEC, "--data", data, "--out", out, "--scores", "logits",
                 "--budget", "600", "--limit", "200", "--cost-per-1000", "2", "--no-evaluate",
                 "--no-progress"]) == 0
    saved = json.load(open(os.path.join(out, "config.json")))["options"]
    assert sorted(saved) == sorted(RUN_FORMAT_1_KEYS + ADDED_KEYS)
    opts = saved_fit_options(saved, "config.json")
    assert opts.flat() == saved and opts.data.limit == 200 and opts.model.cost_per_1000 == 2.0
    old = saved_fit_options({k: v for k, v in saved.items() if k not in ADDED_KEYS}, "c.json")
    assert old.tuner.patience is None and old.data.limit == 200
    assert opts.run.evaluate is False and opts.tuner.scores == "logits"


def test_defaults_config_and_flags_merge_into_typed_groups():
    opts = resolve_options({"model": SPEC, "data": "d.npz", "out": "o", "epsilon": 4,
                            "model_options": {"a": 1, "b": 2}, "classes": "x, y"},
                           {"epsilon": 6.0, "model_options": ["b=3"], "per_image": False})
    assert opts.tuner.epsilon == 6.0 and opts.model.model_options == {"a": 1, "b": 3}
    assert opts.data.classes == ["x", "y"] and opts.tuner.per_image is False
    assert opts.run.cache is True and opts.seed == 0 and opts.data.val_fraction == 0.2
    assert FitOptions.from_flat(opts.flat()) == opts


@pytest.mark.parametrize("flat,kind", [
    ({"data": "d"}, CLASSIFICATION),
    ({"data": "d", "attribute_mode": "shared"}, CLASSIFICATION),
    ({"data": "d", "attribute_mode": "per_attribute"}, PER_ATTRIBUTE),
    ({"pairs": "p.txt", "image_root": "r"}, VERIFICATION),
])
def test_the_options_choose_the_kind(flat, kind):
    assert kind_for(FitOptions.from_flat(flat)) is kind


def test_each_kind_knows_its_tuner_files_and_evaluation_cost(tmp_path):
    run = RunFolder(str(tmp_path))
    assert set(KINDS) == {"classification", "per_attribute", "verification"}
    assert {k.tuner_class.__name__ for k in KINDS.values()} == {
        "DataFineTuner", "MultiAttributeTuner", "VerificationTuner"}
    assert [os.path.basename(f) for f in CLASSIFICATION.files(run)] == [
        "delta.npz", "report.json", "report.png"]
    assert [os.path.basename(f) for f in PER_ATTRIBUTE.files(run)] == [
        "deltas.npz", "report.json"]
    assert [os.path.basename(f) for f in VERIFICATION.files(run)] == [
        "delta.npz", "report.json", "report.png"]
    # before and after; per attribute: once clean, then once per attribute's perturbation
    assert CLASSIFICATION.eval_cost(100, 4) == VERIFICATION.eval_cost(100, 2) == 200
    assert PER_ATTRIBUTE.eval_cost(100, 3) == 400


@pytest.mark.parametrize("command", ["resume", "evaluate", "apply", "info"])
def test_a_run_of_an_unknown_kind_is_refused_in_one_line(tmp_path, data, capsys, command):
    out = str(tmp_path / "run")
    os.makedirs(out)
    RunFolder(out).write_config({"command": "fit", "kind": "regression",
                                 "options": {"model": SPEC, "data": data}, "params": {}})
    argv = {"resume": ["resume", out], "info": ["info", out],
            "evaluate": ["evaluate", "--run", out, "--data", data],
            "apply": ["apply", "--run", out, "--input", str(tmp_path), "--output",
                      str(tmp_path / "o")]}[command]
    assert main(argv) == 2
    line = error_line(capsys)
    assert "kind is 'regression'" in line and "classification, per_attribute, verification" \
        in line and "altered" in line, line


def test_info_of_a_demo_run_names_its_task_and_mode(tmp_path, capsys):
    out = str(tmp_path / "demo")
    os.makedirs(out)
    RunFolder(out).write_config({"command": "demo", "options": {
        "task": "smiling", "shift": "blur:sigma=0.7", "epsilon": None, "budget": "600",
        "cost_per_1000": 2.0, "seed": 0, "out": out, "cache": True, "checkpoint_every": 10},
        "params": {"epsilon": 8.0, "query_budget": 600, "seed": 0}})
    assert main(["info", out]) == 0
    printed = capsys.readouterr().out
    assert "model: standin:smiling; task smiling under shift blur:sigma=0.7" in printed
    assert "mode: classification; epsilon 8.0 grey levels, budget 600 queries" in printed
    assert "status: not started; fit queries 0 of 600" in printed
    assert "projected total $1.20" in printed


def test_a_budget_below_one_step_names_the_minimum_for_every_kind(tmp_path, data, capsys):
    csv = write_attribute_csv(str(tmp_path / "attributes"), per_split=20)
    for name, extra in (("cls", ["--data", data, "--scores", "logits"]),
                        ("attr", ["--model", "python:cli_synthetic:predict_attributes",
                                  "--data", csv, "--attribute-mode", "per_attribute"])):
        argv = ["fit", "--model", SPEC, "--budget", "50", "--out", str(tmp_path / name),
                "--no-progress", *extra]
        assert main(argv) == 2
        line = error_line(capsys)
        assert "--budget too small: query_budget=50 is smaller than one step" in line, line
        assert "give query_budget >=" in line and "--force" in line, line


def test_evaluate_of_an_unfinished_per_attribute_run_says_resume(tmp_path, capsys):
    csv = write_attribute_csv(str(tmp_path / "attributes"), per_split=20)
    out = str(tmp_path / "run")
    assert main(["fit", "--model", "python:cli_synthetic:predict_attributes", "--data", csv,
                 "--attribute-mode", "per_attribute", "--budget", "800", "--no-evaluate",
                 "--out", out, "--no-progress"]) == 0
    os.unlink(os.path.join(out, "deltas.npz"))
    capsys.readouterr()
    assert main(["evaluate", "--run", out, "--data", csv, "--no-progress"]) == 2
    line = error_line(capsys)
    assert "no deltas.npz yet" in line and f"'blackbox-dft resume {out}'" in line, line
