# The README's two commands: `make run` and `make test`. Both work on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench install

# Debian's python3 lacks venv's ensurepip until python3-venv is installed (done as root, as CI runs).
# jemalloc (decision 0019) likewise, when missing and root; without root, runtime.allocator = "auto"
# falls back to the system allocator and says so.
# pip builds the C extensions (setup.py) too: a change to their source installs again. They need a C
# compiler and Python's headers: installed from Debian when one is missing and root, as python3-venv
# is.
$(STAMP): pyproject.toml setup.py src/edgecache/edge/_logcapture.c src/edgecache/edge/_originhead.c src/edgecache/edge/_reqhead.c src/edgecache/edge/_answerhead.c src/edgecache/edge/_fieldline.h src/edgecache/store/_fillring.c src/edgecache/_crc32c.h src/edgecache/store/_untrack.c src/edgecache/store/_links.c src/edgecache/cluster/_claims.c
	$(PY) -m venv $(VENV) || { [ "$$(id -u)" = 0 ] && rm -rf $(VENV) \
		&& apt-get update -q && apt-get install -y -q python3-venv && $(PY) -m venv $(VENV); }
	@if ! PATH="$$PATH:/sbin:/usr/sbin" ldconfig -p 2>/dev/null | grep -q libjemalloc.so.2; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			{ apt-get update -q && apt-get install -y -q libjemalloc2; } || echo "libjemalloc2: install failed"; \
		else echo "libjemalloc2 is not installed (needs root): edgecache runs on the system allocator"; fi; \
	fi
	@if ! { command -v cc >/dev/null \
		&& [ -f "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h" ]; }; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -q && apt-get install -y -q gcc python3-dev; \
		else echo "the C extensions need a C compiler and Python's headers (gcc python3-dev)"; fi; \
	fi
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/edgecache serve

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy src

test: $(STAMP) lint
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python bench/run.py
