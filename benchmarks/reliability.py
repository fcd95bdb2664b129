"""Run the reliability suite and write what each promise is backed by: cases tried, outcomes.

    python benchmarks/reliability.py            # all of it (its results say how long)
    python benchmarks/reliability.py --only keys
    python benchmarks/reliability.py --quick    # the "files" promise only (smoke test)

Each promise of the README's Reliability section maps to the test files that try to break
it (misbehaving servers, bad files, kills, concurrent processes, fuzzed inputs). The script
runs them with pytest, counts the test cases per file and their outcomes, and writes
``benchmarks/results/reliability.json`` and ``reliability.md``. Nothing is hard-coded: a
failing case shows up as failed in the table.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import pytest
from common import ROOT, command_line, out_dir, parser, write_results

QUICK = ["files"]  # the promise a quick run checks: one test file, seconds

PROMISES: dict[str, tuple[str, list[str]]] = {
    "budget": ("Paid images never exceed the query budget, faults or not; spend.json, info "
               "and queries_ agree with what the model was sent",
               ["test_money.py", "test_server_faults.py", "test_resume_kill.py",
                "test_signals.py"]),
    "no_double_pay": ("Answers that came back are kept before an error propagates; one "
                      "process per run folder",
                      ["test_cache.py", "test_run_lock.py"]),
    "keys": ("Keys go only where the user sent them and never reach a message, log, file or "
             "exception chain",
             ["test_hostile_http.py"]),
    "bad_input": ("Bad input gets one line and the documented exit code, never a traceback "
                  "or silent garbage",
                  ["test_cli_hostile.py", "test_fuzz_api.py", "test_core_inputs.py"]),
    "files": ("The user's files are safe: image bombs refused before decoding, apply never "
              "writes into its input, atomic writes",
              ["test_files_hostile.py"]),
    "results": ("Results do not drift: every tuner's pinned output, bit for bit",
                ["test_golden.py"]),
}


class _Tally:
    """A pytest plugin: outcome of every test case, by file."""

    def __init__(self) -> None:
        self.by_file: dict[str, dict[str, int]] = {}

    def pytest_runtest_logreport(self, report: Any) -> None:
        if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
            name = os.path.basename(report.nodeid.split("::")[0])
            outcome = "xfailed" if hasattr(report, "wasxfail") else report.outcome
            counts = self.by_file.setdefault(name, {})
            counts[outcome] = counts.get(outcome, 0) + 1


def run(only: list[str]) -> dict[str, Any]:
    """Run the test files behind the ``only`` promises; cases and outcomes per file."""
    files = sorted({f for key in only for f in PROMISES[key][1]})
    tally = _Tally()
    start = time.perf_counter()
    code = pytest.main(["-q", "-p", "no:cacheprovider", *[os.path.join(ROOT, "tests", f)
                                                         for f in files]], plugins=[tally])
    seconds = time.perf_counter() - start
    promises = {}
    for key in only:
        text, names = PROMISES[key]
        per_file = {n: tally.by_file.get(n, {}) for n in names}
        total: dict[str, int] = {}
        for counts in per_file.values():
            for k, v in counts.items():
                total[k] = total.get(k, 0) + v
        promises[key] = {"promise": text, "files": per_file, "total": total}
    return {"pytest_exit_code": int(code), "pytest_seconds": round(seconds, 1),
            "promises": promises}


def markdown(result: dict[str, Any]) -> str:
    lines = [f"pytest exit code {result['pytest_exit_code']} after "
             f"{result['pytest_seconds']} s.", "",
             "| promise | test file | cases | passed | failed | skipped |",
             "|---|---|---|---|---|---|"]
    for key, p in result["promises"].items():
        for i, (name, c) in enumerate(p["files"].items()):
            label = f"**{key}**: {p['promise']}" if i == 0 else ""
            lines.append(f"| {label} | `tests/{name}` | {sum(c.values())} | "
                         f"{c.get('passed', 0)} | {c.get('failed', 0)} | "
                         f"{c.get('skipped', 0) + c.get('xfailed', 0)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = parser(__doc__, f"only the {', '.join(QUICK)} promise (smoke test)")
    ap.add_argument("--only", default=None,
                    help=f"comma-separated promises (default: all): {', '.join(PROMISES)}")
    args = ap.parse_args(argv)
    out = out_dir(ap, args, "reliability")
    only = ([k.strip() for k in args.only.split(",") if k.strip()] if args.only
            else QUICK if args.quick else list(PROMISES))
    unknown = [k for k in only if k not in PROMISES]
    if unknown:
        ap.error(f"unknown promise {unknown[0]!r}; choose from {', '.join(PROMISES)}")
    t0 = time.perf_counter()
    result = run(only)
    md = markdown(result)
    write_results(out, "reliability", result, md, command=command_line(__file__, argv),
                  quick=args.quick, seconds=time.perf_counter() - t0)
    return result["pytest_exit_code"]


if __name__ == "__main__":
    sys.exit(main())
