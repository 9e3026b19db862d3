# notiflow: `make demo` plays the demo end to end; `make test` runs ruff, mypy and pytest.
# Both set themselves up on a fresh Debian machine (venv, requirements, redis-server; chromium for the tests).
# `make bench` runs the hot-path benchmark on SQLite and on a private PostgreSQL (installed when missing).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test run lint typecheck pytest system system-postgres clean bench bench-hotpath bench-hotpath-sqlite \
	bench-hotpath-postgres bench-faults bench-connections

$(STAMP): requirements/base.txt requirements/dev.txt requirements/prod.txt
	./scripts/ensure-system.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements/dev.txt
	touch $(STAMP)

system:
	./scripts/ensure-system.sh

# PostgreSQL's server binaries, for the private cluster of webapp/postgres.py (the benchmarks, `--postgres`).
system-postgres:
	./scripts/ensure-system.sh --postgres

demo: $(STAMP) system
	$(BIN)/python -m webapp.stack demo

run: $(STAMP) system
	$(BIN)/python -m webapp.stack run

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy .

# The browser tests drive Debian's chromium (/usr/bin/chromium) through Playwright: installed here.
pytest: $(STAMP)
	./scripts/ensure-system.sh --browser
	$(BIN)/python -m pytest

test: lint typecheck pytest

# Fault-injection drills at 1,000 events each (about 6 minutes); see bench/README.md.
bench-faults: $(STAMP) system
	$(BIN)/python -m bench.faults

# Idle WebSocket connections one daphne process holds, memory per connection, time for 1,000
# clients to connect; notiflow's relay against a bare ASGI app (about 5 minutes); see bench/README.md.
bench-connections: $(STAMP) system
	$(BIN)/python -m bench.connections

# The hot path (throughput, latency, emit cost, each against raw Celery / channel layer baselines from the
# same run) on SQLite, then on a private PostgreSQL; figures in var/bench/hotpath-<db>.json. See bench/README.md.
bench: bench-hotpath

bench-hotpath: bench-hotpath-sqlite bench-hotpath-postgres

bench-hotpath-sqlite: $(STAMP) system
	$(BIN)/python -m bench.hotpath --db sqlite

bench-hotpath-postgres: $(STAMP) system-postgres
	$(BIN)/python -m bench.hotpath --db postgres

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
