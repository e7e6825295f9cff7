# The two commands of the README: `make run` and `make test`. Both bootstrap .venv and npm packages.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NPM_STAMP := node_modules/.installed

.PHONY: run test test-fast lint bench clean emulator

$(STAMP): pyproject.toml requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -e ".[relay,functions,dev]"
	touch $(STAMP)

$(NPM_STAMP): package.json
	npm install --no-audit --no-fund --loglevel=error
	touch $(NPM_STAMP)

venv: $(STAMP)

npm: $(NPM_STAMP)

run: $(STAMP) $(NPM_STAMP)
	$(PY) -m local_stack

emulator: $(STAMP)
	$(PY) -m servicebus_emulator

test: $(STAMP) $(NPM_STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP) $(NPM_STAMP)
	$(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) node_modules test-output .pytest_cache
