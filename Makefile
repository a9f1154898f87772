# Two entry points on a fresh machine: `make demo` and `make test`. Both create .venv themselves.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint setup clean

$(BIN)/tadsr: pyproject.toml
	$(PY) -m venv $(VENV)
	# CPU build of torch first, pinned, so the unpinned dependency below never pulls a CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	touch $(BIN)/tadsr

setup: $(BIN)/tadsr

# The main job: upscale the bundled sample with the embedded default model (writes sample_x4.png next to it).
demo: setup
	$(BIN)/tadsr upscale tadsr_cli/assets/sample.png --overwrite
	@echo "wrote tadsr_cli/assets/sample_x4.png"

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q tests

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info
