# Quick start: `make demo` and `make test`. Each sets up .venv on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The CPU build of torch lies on local disk on the project's machines; a bare
# `torch` requirement would pull a CUDA build of several GB instead.
TORCH_CPU ?= torch==2.13.0

.PHONY: demo test venv bench check-report clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	    echo "NVIDIA GPU found: installing the project with its GPU extra"; \
	    $(PY) -m pip install -q -e '.[dev,gpu]'; \
	else \
	    echo "no GPU: installing the CPU build of torch first"; \
	    $(PY) -m pip install -q "$(TORCH_CPU)" || $(PY) -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu; \
	    $(PY) -m pip install -q -e '.[dev]'; \
	fi
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/thagpu demo --out demo-out

test: $(STAMP)
	$(PY) -m pytest -q -m "not gpu" tests

bench: $(STAMP)
	$(PY) -m benchmarks.run_all

# Headless Chromium renders the dataset QC report (installs Debian's chromium when missing).
check-report: $(STAMP)
	command -v chromium >/dev/null 2>&1 || apt-get install -y -q chromium
	$(PY) tools/check_report_chromium.py

clean:
	rm -rf $(VENV) demo-out .pytest_cache
