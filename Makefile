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

demo: setup
	$(BIN)/tadsr --help
	$(BIN)/tadsr models list

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q tests

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info
