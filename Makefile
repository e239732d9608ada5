# Two commands for a newcomer (CPU only, no GPU or container engine needed):
#   make sample   set up .venv and run the container's job on the bundled sample cases
#   make test     set up .venv with the test extras, lint (ruff) and run the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SAMPLE_OUT := out/sample

.PHONY: sample test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.runtime: requirements-cpu.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements-cpu.txt
	touch $@

$(VENV)/.dev: requirements-dev.txt requirements-cpu.txt training/requirements.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@ $(VENV)/.runtime

sample: $(VENV)/.runtime
	@for case in test/cases/*/; do \
	  name=$$(basename $$case); \
	  echo "== $$name"; \
	  $(BIN)/python process.py --input $$case/input --output $(SAMPLE_OUT)/$$name --device cpu || exit 1; \
	done
	@echo "outputs in $(SAMPLE_OUT)/"

test: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q test

clean:
	rm -rf out .pytest_cache
