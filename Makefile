# notiflow: `make demo` plays the demo end to end; `make test` runs ruff, mypy and pytest (on SQLite, then on PostgreSQL).
# Both set themselves up on a fresh Debian machine (venv, requirements, redis-server; chromium and postgresql for the tests).
# `make bench` runs the hot-path and fan-out benchmarks on SQLite and on a private PostgreSQL (installed when
# missing), then draws bench/figures/; `make bench-soak` (10+ minutes) is apart.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test run lint typecheck pytest pytest-postgres system system-postgres clean bench bench-hotpath bench-hotpath-sqlite \
	bench-hotpath-postgres bench-fanout bench-fanout-sqlite bench-fanout-postgres bench-faults bench-connections \
	bench-soak bench-store bench-email bench-trickle bench-plots

$(STAMP): requirements/base.txt requirements/dev.txt requirements/prod.txt
	./scripts/ensure-system.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements/dev.txt
	touch $(STAMP)

system:
	./scripts/ensure-system.sh

# PostgreSQL's server binaries, for the private cluster of webapp/postgres.py (tests, benchmarks, `--postgres`).
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

# The same suite on a private PostgreSQL (NOTIFLOW_TEST_DB=postgres, see tests/environment.py; about 5 minutes),
# but for tests/browser/test_client.py: the JavaScript client against scripted sockets, no database and no stack.
pytest-postgres: $(STAMP) system-postgres
	./scripts/ensure-system.sh --browser
	NOTIFLOW_TEST_DB=postgres $(BIN)/python -m pytest --ignore=tests/browser/test_client.py

test: lint typecheck pytest pytest-postgres

# Fault-injection drills at 10,000 events each (about 15 minutes); see bench/README.md.
bench-faults: $(STAMP) system
	$(BIN)/python -m bench.faults --size 10000

# Idle WebSocket connections one daphne process holds, memory per connection, time for 1,000
# clients to connect; notiflow's relay against a bare ASGI app (about 5 minutes); see bench/README.md.
bench-connections: $(STAMP) system
	$(BIN)/python -m bench.connections

# The hot path (throughput, latency, emit cost, each against raw Celery / channel layer baselines from the
# same run; throughput in 3 rounds, the median reported) on SQLite, then on a private PostgreSQL; figures in
# var/bench/hotpath-<db>.json; then the fan-out (below); then the figures (bench-plots) from whatever the
# benches wrote. See bench/README.md.
bench: bench-hotpath bench-fanout
	$(MAKE) --no-print-directory bench-plots

bench-hotpath: bench-hotpath-sqlite bench-hotpath-postgres

bench-hotpath-sqlite: $(STAMP) system
	$(BIN)/python -m bench.hotpath --db sqlite --rounds 3

bench-hotpath-postgres: $(STAMP) system-postgres
	$(BIN)/python -m bench.hotpath --db postgres --rounds 3

# One announcement to 1,000, 10,000 and 100,000 recipients (1,000 of them on a WebSocket): stored, last push,
# every delivery recorded, against raw group_send baselines; the channel-layer work per announcement. A few
# minutes per database; figures in var/bench/fanout-<db>.json. See bench/README.md.
bench-fanout: bench-fanout-sqlite bench-fanout-postgres

bench-fanout-sqlite: $(STAMP) system
	$(BIN)/python -m bench.fanout --db sqlite

bench-fanout-postgres: $(STAMP) system-postgres
	$(BIN)/python -m bench.fanout --db postgres

# PNGs in bench/figures/ from var/bench/hotpath-*.json and var/bench/fanout-*.json (missing ones skipped).
bench-plots: $(STAMP)
	$(BIN)/python -m bench.plots

# Storing one announcement to 100,000 users in-process, on a private PostgreSQL and on SQLite, with the
# database's statements and its own write floor (about 4 minutes; apart from `make bench`).
bench-store: $(STAMP) system-postgres
	$(BIN)/python -m bench.store --db postgres
	$(BIN)/python -m bench.store --db sqlite

# A batch of emails over one connection to the local SMTP server: notiflow's backend against Django's (seconds).
bench-email: $(STAMP)
	$(BIN)/python -m bench.emails

# Database transactions and CPU per event under a steady trickle on a private PostgreSQL, against bench.noop
# at the same rate (about a minute); see bench/README.md.
bench-trickle: $(STAMP) system-postgres
	$(BIN)/python -m bench.trickle

# Soak: the hot path's workload at half its sustained rate for SOAK_MINUTES (10; 12 to 13 minutes in all):
# RSS, queue lengths, pending events and latency every 10 s; var/bench/soak-<db>.json. Not part of `make bench`.
#   make bench-soak SOAK_DB=postgres SOAK_MINUTES=30
SOAK_DB      ?= sqlite
SOAK_MINUTES ?= 10
bench-soak: $(STAMP) system $(if $(filter postgres,$(SOAK_DB)),system-postgres)
	$(BIN)/python -m bench.soak --db $(SOAK_DB) --minutes $(SOAK_MINUTES)

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
