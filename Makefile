# The README's commands. Every target that needs services starts them (or reuses running ones)
# through scripts/services.sh, which honours DATABASE_URL / REDIS_URL when they are set and
# writes what it uses to .dev/env (read by run.sh and by the flowgate command).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SERVICES = eval "$$(scripts/services.sh up)"

.PHONY: install upgrade audit run logs test lint bench bench-cpu soak stop clean

# Dependencies come from uv.lock (exact versions and hashes, runtime and dev), never from the
# ranges in pyproject.toml, which stay for people who install flowgate as a package. uv itself
# is bootstrapped from the lock's hashes; `uv sync --locked` then makes the venv exactly the
# lock (it removes what the lock lacks) and fails when pyproject.toml and uv.lock disagree.
UV = UV_PROJECT_ENVIRONMENT=$(VENV) UV_PYTHON_DOWNLOADS=never $(BIN)/uv
INSTALLED := $(VENV)/.installed

$(INSTALLED): uv.lock pyproject.toml scripts/uv-requirement.py
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@mkdir -p .dev && $(PYTHON) scripts/uv-requirement.py > .dev/uv-requirement.txt
	@[ "$$($(BIN)/uv --version 2>/dev/null | cut -d' ' -f2)" = "$$(cut -d' ' -f1 .dev/uv-requirement.txt | cut -c5-)" ] \
		|| $(BIN)/python -m pip install --quiet --require-hashes -r .dev/uv-requirement.txt
	$(UV) sync --locked --extra dev --quiet
	@touch $@

install: $(INSTALLED)

# Refresh the lock to the newest versions pyproject's ranges allow, install it, run everything.
upgrade:
	@test -x $(BIN)/uv || $(MAKE) install
	$(UV) lock --upgrade
	$(MAKE) test

# Known vulnerabilities in the locked set (PyPI's advisory data); exceptions in audit-ignore.toml.
audit: install
	@$(UV) export --frozen --format requirements-txt --no-emit-project --extra dev --quiet \
		-o .dev/audit-requirements.txt
	$(BIN)/python scripts/audit.py .dev/audit-requirements.txt audit-ignore.toml

run: install
	@$(SERVICES) && scripts/run.sh

# The web server's and the worker's logs of `make run` (JSON lines), as they come.
logs:
	@mkdir -p .dev/logs && touch .dev/logs/web.log .dev/logs/worker.log
	tail -n 50 -F .dev/logs/web.log .dev/logs/worker.log

lint: install
	$(UV) lock --check --quiet
	$(BIN)/ruff check web worker tests
	$(BIN)/ruff format --check web worker tests
	$(BIN)/mypy web worker

test: lint audit
	@scripts/ensure-chromium.sh
	@$(SERVICES) && $(BIN)/pytest $(PYTEST_ARGS)

# Benchmarks (bench/README.md): own database and Redis DB, servers started and stopped here.
bench: install
	@$(SERVICES) && $(BIN)/python bench/run.py $(BENCH_ARGS)

# CPU per request of status and execute, in process, against the baselines (--profile …).
bench-cpu: install
	@$(SERVICES) && $(BIN)/python bench/request_cpu.py $(BENCH_ARGS)

# 60 s of mixed traffic against 2 web processes and 2 workers (scripts/soak.py).
soak: install
	@$(SERVICES) && $(BIN)/python scripts/soak.py

stop:
	@scripts/services.sh down

clean: stop
	rm -rf .dev $(VENV)
