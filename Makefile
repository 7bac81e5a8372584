# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export DEBUG ?= true
# The installer of the development venv, pinned (as .ci/runtime_check.py pins it).
UV := uv==0.13.9

.PHONY: install services test lint demo

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Development installs everything (runtime + tests, linter, browser driver); the image only requirements.txt.
# uv (from PyPI, into the venv) downloads and installs in parallel and keeps what it unpacked in its cache: a
# fresh venv takes seconds instead of minutes. It compiles the bytecode, as pip does, so that the tests' many
# processes need not each compile what they import (PYTHONDONTWRITEBYTECODE may forbid writing it then). Where
# uv cannot be had or fails, pip installs the same file.
$(VENV)/.installed: requirements.txt requirements-dev.txt | $(BIN)/python
	{ $(BIN)/pip install --quiet $(UV) \
		&& $(BIN)/uv pip install --compile-bytecode --python $(BIN)/python -r requirements-dev.txt; } \
		|| $(BIN)/pip install -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

services:
	@bash .ci/services.sh

# Parallel workers (pytest-xdist), each with its own test database and Redis database (tests/env.py); a test
# file stays on one worker (--dist loadfile), so module-scoped stacks are shared; the files that take minutes go
# out first, in tests/conftest.py's order (--no-loadscope-reorder). PYTEST_WORKERS=0 runs serially.
PYTEST_WORKERS ?= 3
test: install services
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=20 \
		--cov --cov-report=term --cov-fail-under=95 $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

demo: install services
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0
	$(BIN)/python manage.py demo
