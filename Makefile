# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export DEBUG ?= true

.PHONY: install services test lint demo

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip

# Development installs everything (runtime + tests, linter, browser driver); the image only requirements.txt.
$(VENV)/.installed: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

services:
	@bash .ci/services.sh

test: install services
	$(BIN)/python -m pytest --cov --cov-report=term --cov-fail-under=95 $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

demo: install services
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0
	$(BIN)/python manage.py demo
