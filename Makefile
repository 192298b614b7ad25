# medtwin: `make demo` runs the main job, `make test` the whole suite, `make bench` the benchmarks.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench bench-quick validate validate-quick lint typecheck clean contracts hardhat

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

# Rebuild the compiled Vyper contracts shipped in src/medtwin/ledger/contracts (a test checks
# that they match their sources).
contracts: $(STAMP)
	$(BIN)/python -c "from medtwin.ledger._evm import build_artifacts; print(*build_artifacts(), sep='\n')"

# A Hardhat 2 node (npm) for the test that anchors on a real JSON-RPC chain; Hardhat 3 needs a
# newer Node than 20. Without npm the test is skipped and says so.
HARDHAT_DIR := build/hardhat
hardhat: $(HARDHAT_DIR)/node_modules/.bin/hardhat

$(HARDHAT_DIR)/node_modules/.bin/hardhat:
	mkdir -p $(HARDHAT_DIR)
	echo 'module.exports = {};' > $(HARDHAT_DIR)/hardhat.config.js
	cd $(HARDHAT_DIR) && npm install --silent --no-audit --no-fund hardhat@2.29.1

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks validation
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
