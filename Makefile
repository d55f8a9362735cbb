# The two commands of the README:
#   make run    set up .venv, fetch the sample slide, run every pipeline, say where the results are
#   make test   set up .venv and run the test suite
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
SLIDES := data/01_raw/slides
# Kedro's and DVC's telemetry try the network; this project runs unattended and offline.
export KEDRO_DISABLE_TELEMETRY := 1
export DO_NOT_TRACK := 1
export DVC_NO_ANALYTICS := 1
# Tools the targets call (pre-commit's system hooks, kedro, dvc) come from the venv.
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: setup setup-dev sample run test test-fast lint viz bench clean-data

# The default install, all `make run` needs: the CPU pipeline, its nuclei network on
# onnxruntime, DVC and kedro-viz; no torch (docs/development.md, "Installs").
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

# The developer's install on top: test and lint tools, torch (training, export, the torch
# paths' tests), Cellpose, and the SpatialData export with scanpy and squidpy.
$(VENV)/.installed-dev: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[dev]"
	# SpatialData pins an older dask: installed on top (pip moves dask back), see pyproject.toml.
	$(PY) -m pip install --quiet -e ".[scverse]" "scanpy>=1.11" "squidpy>=1.8"
	touch $@

# The person's cluster names (git-ignored, like all of conf/local). Created empty so that
# `dvc repro` finds the classification stage's dependency on a fresh clone.
conf/local/cluster_labels.yml:
	printf '# Cluster names: `<cluster id>: <cell type>`, one per line (see docs/guide.md "Classification"),\n# or the file the report downloads (results/report.html, Galleries).\n# Apply with: kedro run --pipelines=relabel\n' > $@

setup: $(VENV)/.installed conf/local/cluster_labels.yml

setup-dev: setup $(VENV)/.installed-dev

sample: setup
	$(PY) scripts/get_sample_slide.py $(SLIDES)

run: sample
	$(VENV)/bin/kedro run
	$(PY) scripts/show_results.py

# pytest exits 5 when it collects no test: that is a broken suite, not a pass.
test: setup-dev
	@set +e; $(VENV)/bin/pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

# Unit and in-memory pipeline tests only (no end-to-end Kedro/DVC runs): under 2 minutes.
test-fast: setup-dev
	@set +e; $(VENV)/bin/pytest -m "not slow" -q $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

lint: setup-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/pre-commit run --all-files --show-diff-on-failure

viz: setup  ## the pipeline in kedro-viz: a static build served on http://127.0.0.1:4141 (Ctrl-C stops it)
	$(VENV)/bin/kedro viz build
	@echo 'kedro-viz: open http://127.0.0.1:4141 (a file:// page stays blank: the build needs a server)'
	$(PY) -m http.server 4141 --bind 127.0.0.1 --directory build

bench: sample
	$(PY) bench/bench_tiling.py $(SLIDES)/CMU-1-Small-Region.svs
