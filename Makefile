# The README's commands. Every target that needs services starts them (or reuses running ones)
# through scripts/services.sh, which honours DATABASE_URL / REDIS_URL when they are set.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SERVICES = eval "$$(scripts/services.sh up)"

.PHONY: install run test lint bench bench-cpu soak stop clean

$(BIN)/flowgate: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/flowgate

run: install
	@$(SERVICES) && scripts/run.sh

lint: install
	$(BIN)/ruff check web worker tests
	$(BIN)/ruff format --check web worker tests
	$(BIN)/mypy web worker

test: lint
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
