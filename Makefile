# The README's two commands: `make demo` (install + the built-in default job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: install demo test lint pytest bench clean kserve

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml requirements-standins.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install -e ".[standins,test,server,bench,proxy]"
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

# KServe's ModelServer for tests/test_oip_kserve.py and tests/test_kserve_transformer.py, in
# an environment of its own (its fastapi/starlette pins conflict with mlserver's): this project
# with its `kserve` extra (`blackbox-dft transformer` runs there), ~780 MB installed, 2-7 min.
# CI makes it (.ci/run); without it those tests are skipped.
KSERVE_VENV ?= .venv-kserve

kserve: $(KSERVE_VENV)/.installed

$(KSERVE_VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(KSERVE_VENV)
	$(KSERVE_VENV)/bin/python -m pip install -e ".[kserve]"
	touch $@

# Every benchmark (hours; see benchmarks/run_all.py): `make bench`, a subset with
# `make bench BENCH="--only overhead,http_throughput"`, the smoke test with BENCH=--quick.
bench: install
	$(PY) benchmarks/run_all.py $(BENCH)

clean:
	rm -rf $(VENV) $(KSERVE_VENV) build *.egg-info
