# Two entry points, both doing their own set-up on a fresh machine:
#   make quickstart   the main job on the embedded defaults (digits preset, embedded Ray and MLflow)
#   make test         the test suite (what .ci/run calls)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: quickstart test lint bench clean chromium screenshots

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch/torchvision are not pinned: the resolver must pick the registry's default build (see README).
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/python -c "import timm, torch, ray, mlflow, optuna; print('environment ready: torch', torch.__version__, 'ray', ray.__version__)"
	rm -f $(VENV)/.installed-*; touch $@

# A second `make quickstart` resumes (finished trials are kept) instead of starting over.
quickstart: $(STAMP)
	$(BIN)/ovit-ray sweep sweeps/quickstart.yaml --out runs/quickstart \
		$$(test -f runs/quickstart/sweep.json && echo --resume)
	$(BIN)/ovit-ray report runs/quickstart

# Debian's headless Chromium renders the MLflow UI for tests/test_mlflow_ui.py and docs/screenshots.py
# (a system package: no browser download from anywhere else).
chromium:
	@command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update -q && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }

test: $(STAMP) chromium
	$(BIN)/python -m pytest -q --durations=15

# The README's MLflow screenshots (docs/img/), from the quickstart sweep in runs/quickstart.
screenshots: $(STAMP) chromium
	$(BIN)/python docs/screenshots.py --out runs/quickstart

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) runs
