# medtwin: `make demo` runs the main job, `make test` the whole suite, `make bench` the benchmarks.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench bench-quick validate validate-quick lint typecheck clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/medtwin demo

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

bench-quick: $(STAMP)
	$(BIN)/python benchmarks/run.py --quick

# Validation against simglucose and ReplayBG (not part of `make test`): writes docs/validation.md.
VALIDATE_STAMP := $(VENV)/.validate-installed

$(VALIDATE_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[validate]'
	touch $(VALIDATE_STAMP)

validate: $(VALIDATE_STAMP)
	$(BIN)/python validation/run.py

# The small case CI runs: 2 patients, 2 days, no ReplayBG; report in build/validation-quick/.
validate-quick: $(STAMP)
	$(BIN)/pip install --quiet -e '.[validate-quick]'
	$(BIN)/python validation/run.py --quick

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks validation
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
