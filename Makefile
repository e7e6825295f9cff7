# The two commands of the README: `make run` and `make test`. Both bootstrap .venv, the npm
# packages and (for the tests) the Debian packages they need, on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NPM_STAMP := node_modules/.installed
# Debian packages as COMMAND:PACKAGE: the browser tests drive chromium; the WebSocket proxy tests start
# tinyproxy; the benches compare with Redis.
TEST_SYSTEM_PACKAGES := chromium:chromium tinyproxy:tinyproxy
BENCH_SYSTEM_PACKAGES := redis-server:redis-server

.PHONY: run test test-fast lint bench clean emulator dist vendor-js system-packages venv npm

$(STAMP): pyproject.toml requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed: make PYTHON=python3.11 ...")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -e ".[relay,emulator,functions,otel,dev]"
	touch $(STAMP)

$(NPM_STAMP): package.json package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "error: npm is missing: install Node.js 20+ (apt-get install nodejs npm)" >&2; exit 1; }
	npm ci --no-audit --no-fund --loglevel=error
	touch $(NPM_STAMP)

venv: $(STAMP)

npm: $(NPM_STAMP)

system-packages:
	@scripts/ensure-system-packages $(TEST_SYSTEM_PACKAGES)

run: $(STAMP) $(NPM_STAMP)
	$(PY) -m local_stack

emulator: $(STAMP)
	$(PY) -m servicebus_emulator

test: system-packages $(STAMP) $(NPM_STAMP)
	$(PY) -m pytest -q

# the fast tests mostly wait on sockets and subprocesses, so 4 workers fit 2 cores; one test
# file per worker keeps each module's emulator/stack fixture in one process (~3.5 min vs ~10)
test-fast: system-packages $(STAMP) $(NPM_STAMP)
	$(PY) -m pytest -q -m "not slow" -n 4 --dist loadfile

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: $(STAMP) $(NPM_STAMP)
	@scripts/ensure-system-packages $(BENCH_SYSTEM_PACKAGES)
	$(PY) bench/manager_bench.py

# wheel + sdist in dist/, checked by twine
dist: $(STAMP)
	rm -rf dist build *.egg-info
	$(PY) -m build --outdir dist .
	$(VENV)/bin/twine check --strict dist/*

# copy the locked socket.io browser client into the relay node's package data
vendor-js: $(NPM_STAMP)
	cp node_modules/socket.io-client/dist/socket.io.min.js relay_node/static/vendor/socket.io.min.js
	cp node_modules/socket.io-client/LICENSE relay_node/static/vendor/socket.io-client.LICENSE

clean:
	rm -rf $(VENV) node_modules test-output .pytest_cache dist build *.egg-info
