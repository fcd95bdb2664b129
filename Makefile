# The README's two commands: `make demo` (install + the built-in default job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: install demo test lint pytest bench clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml requirements-standins.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install -e ".[standins,test,server,bench]"
	$(PIP) install --no-deps -r requirements-standins.txt
	touch $@

demo: install
	$(VENV)/bin/blackbox-dft demo

lint: install
	$(VENV)/bin/ruff check blackbox_dft adapters tests benchmarks
	$(VENV)/bin/mypy blackbox_dft
	$(VENV)/bin/lint-imports

pytest: install
	$(PY) -m pytest

test: lint pytest

# Every benchmark (hours; see benchmarks/run_all.py): `make bench`, a subset with
# `make bench BENCH="--only overhead,http_throughput"`, the smoke test with BENCH=--quick.
bench: install
	$(PY) benchmarks/run_all.py $(BENCH)

clean:
	rm -rf $(VENV) build *.egg-info
