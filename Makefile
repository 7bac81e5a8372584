# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export DEBUG ?= true

.PHONY: install services test lint demo

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip

$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install -r requirements.txt
	touch $@

install: $(VENV)/.installed

services:
	@bash .ci/services.sh

test: install services
	$(BIN)/python -m pytest --cov --cov-report=term --cov-fail-under=95 $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

demo: install services
	$(BIN)/python manage.py demo
