# Two entry points, both doing their own set-up on a fresh machine:
#   make quickstart   the main job on the embedded defaults (digits preset, embedded Ray and MLflow)
#   make test         every check CI runs, in CI's order (.ci/run calls `make ci`, the same thing):
#                     lint, typecheck, layers, test-fast, then test-rest (the tests the fast tier leaves out)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0
# The test sessions share the trained digits preset (tests/conftest.py; keyed by a hash of its recipe).
export OVIT_RAY_TEST_PRESETS := $(CURDIR)/.pytest_cache/presets
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: quickstart test ci lint typecheck layers test-fast test-rest bench clean chromium screenshots

# torch/torchvision are not pinned: the resolver must pick the registry's default build (see README).
# pip's and the build backend's chatter goes to a log, shown only when the install fails.
$(STAMP): pyproject.toml
	@$(PYTHON) -m venv $(VENV)
	@echo "setting up $(VENV) (a few minutes the first time; log: $(VENV)/install.log)"
	@{ $(BIN)/pip install --quiet --upgrade pip && $(BIN)/pip install --quiet -e '.[dev]'; } \
		> $(VENV)/install.log 2>&1 || { cat $(VENV)/install.log; exit 1; }
	@$(BIN)/python -c "import timm, torch, ray, mlflow, optuna; print('environment ready: torch', torch.__version__, 'ray', ray.__version__)"
	@rm -f $(VENV)/.installed-*; touch $@

# A second `make quickstart` resumes (finished trials are kept) instead of starting over.
quickstart: $(STAMP)
	@$(BIN)/ovit-ray sweep sweeps/quickstart.yaml --out runs/quickstart \
		$$(test -f runs/quickstart/sweep.json && echo --resume)
	@$(BIN)/ovit-ray report runs/quickstart

# Debian's headless Chromium renders the MLflow UI for tests/test_mlflow_ui.py and docs/screenshots.py
# (a system package: no browser download from anywhere else).
chromium:
	@command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update -q && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }

# One torch thread per test process: on 2 shared cores, two threads per process made training the
# digits preset ~7x slower (BENCHMARKS.md); Ray workers get one thread each anyway.
test-fast test-rest layers: export OMP_NUM_THREADS := 1

# Order matters (no -j): the cheap checks fail first. Each pytest step fails on "no tests ran" (exit 5).
test: lint typecheck layers test-fast test-rest
ci: test

# The fast tier: no Ray, no MLflow server, no browser (math, pruner, configs, schedules, CLI
# validation, results, report); under 3 minutes on 2 cores.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not ray and not slow" --durations=10

# The rest of the suite: everything the fast tier leaves out, so no test runs twice.
test-rest: $(STAMP) chromium
	$(BIN)/python -m pytest -q -m "ray or slow" --durations=15

# The import-layer check alone (also part of the fast tier: one second twice).
layers: $(STAMP)
	$(BIN)/python -m pytest -q tests/test_layers.py

typecheck: $(STAMP)
	$(BIN)/mypy

# The README's MLflow screenshots (docs/img/), from the quickstart sweep in runs/quickstart.
screenshots: $(STAMP) chromium
	$(BIN)/python docs/screenshots.py --out runs/quickstart

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) runs
