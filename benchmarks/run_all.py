"""Run every benchmark, or some of them: one command for all of benchmarks/results/.

    python benchmarks/run_all.py                                # all, full runs (hours)
    python benchmarks/run_all.py --only overhead,http_throughput   # some (or --only A --only B)
    python benchmarks/run_all.py --quick                        # the CI smoke test (seconds each)
    python benchmarks/run_all.py --list                         # the benchmarks' names

A benchmark is every ``benchmarks/*.py`` that runs as a script (it ends with an
``if __name__ == "__main__":`` block; helpers such as ``common.py`` have none), so a new
script is picked up without editing this file. Each runs in its own process, one after the
other, as ``python benchmarks/NAME.py [--quick] [--out DIR]``; a full run writes to
``benchmarks/results/`` and a quick run to a new temporary folder (or ``--out``), never to
the committed results. After each, one summary line: name, outcome, seconds, the results
files it wrote. The exit code is 1 when a benchmark failed (the summary names it).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")
# Run order: the README's order; default_search reads the limit query_efficiency wrote.
# Scripts not named here run after these, by name.
ORDER = ("standin_tasks", "query_efficiency", "default_search", "beyond_scores", "overhead",
         "http_throughput", "reliability", "deploy")


@dataclass
class Outcome:
    """How one benchmark's run went: exit code, wall seconds, results files written."""

    name: str
    returncode: int
    seconds: float
    files: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def line(self) -> str:
        status = "ok" if self.ok else f"FAILED (exit code {self.returncode})"
        files = ", ".join(self.files) if self.files else "no results files"
        return f"{self.name:18s} {status:8s} {self.seconds:8.1f} s   {files}"


def discover(folder: str = HERE) -> dict[str, str]:
    """Benchmark name -> script path for every script in ``folder`` (not this one)."""
    found = {}
    for entry in sorted(os.listdir(folder)):
        path = os.path.join(folder, entry)
        if not entry.endswith(".py") or os.path.abspath(path) == os.path.abspath(__file__):
            continue
        with open(path, encoding="utf-8") as fh:
            if 'if __name__ == "__main__":' in fh.read():
                found[entry[:-3]] = path
    rank = {name: i for i, name in enumerate(ORDER)}
    return dict(sorted(found.items(), key=lambda kv: (rank.get(kv[0], len(ORDER)), kv[0])))


def _files(folder: str) -> dict[str, tuple[int, int]]:
    if not os.path.isdir(folder):
        return {}
    return {e.name: (e.stat().st_mtime_ns, e.stat().st_size) for e in os.scandir(folder)
            if e.is_file()}


def run_one(name: str, script: str, quick: bool, out: str | None) -> Outcome:
    """Run one benchmark script in its own process; the files in ``out`` (default the
    results folder) that are new or changed afterwards are the ones it wrote."""
    folder = out or RESULTS
    before = _files(folder)
    cmd = [sys.executable, script, *(["--quick"] if quick else []),
           *(["--out", out] if out else [])]
    print(f"== {name}: {' '.join(['python', os.path.relpath(script, ROOT), *cmd[2:]])}",
          flush=True)
    t0 = time.perf_counter()
    code = subprocess.call(cmd, cwd=ROOT)
    seconds = time.perf_counter() - t0
    after = _files(folder)
    written = sorted(f for f, sig in after.items() if before.get(f) != sig)
    return Outcome(name, code, seconds, written)


def select(available: dict[str, str], only: list[str]) -> dict[str, str]:
    """The benchmarks named in ``only`` (each item a name or a comma list), in run order;
    all of them when ``only`` is empty. Raises ValueError naming an unknown one."""
    names = [n.strip() for item in only for n in item.split(",") if n.strip()]
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ValueError(f"unknown benchmark {unknown[0]!r}; choose from "
                         f"{', '.join(available)}")
    return {k: v for k, v in available.items() if not names or k in names}


def main(argv: list[str] | None = None, folder: str = HERE) -> int:
    """Run the benchmarks (the scripts in ``folder``); 0 when all succeeded, else 1."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", action="append", default=[], metavar="NAME[,NAME...]",
                    help="run these benchmarks only (repeatable, or a comma list)")
    ap.add_argument("--quick", action="store_true",
                    help="each benchmark's quick mode (smoke test), into a temporary folder")
    ap.add_argument("--out", default=None,
                    help="folder for the results (default: benchmarks/results; with --quick "
                         "a new temporary folder)")
    ap.add_argument("--list", action="store_true", help="print the benchmarks' names and exit")
    args = ap.parse_args(argv)
    available = discover(folder)
    if args.list:
        print("\n".join(available))
        return 0
    try:
        chosen = select(available, args.only)
    except ValueError as exc:
        ap.error(str(exc))
    out = args.out
    if args.quick:
        if out is not None and os.path.realpath(out) == os.path.realpath(RESULTS):
            ap.error(f"--quick writes smoke-test figures; --out {out} is the committed "
                     f"results folder: give another folder or leave --out out")
        out = out or tempfile.mkdtemp(prefix="benchmarks-quick-")
    outcomes = [run_one(name, script, args.quick, out) for name, script in chosen.items()]
    print(f"\nbenchmarks {'(quick) ' if args.quick else ''}-> {out or RESULTS}")
    for o in outcomes:
        print(o.line())
    failed = [o.name for o in outcomes if not o.ok]
    total = sum(o.seconds for o in outcomes)
    print(f"{len(outcomes) - len(failed)} of {len(outcomes)} benchmarks ok in {total:.0f} s"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
