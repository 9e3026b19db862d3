# notiflow: `make demo` plays the demo end to end; `make test` runs ruff, mypy and pytest.
# Both set themselves up on a fresh Debian machine (venv, requirements, redis-server).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test run lint typecheck pytest system clean bench-faults

$(STAMP): requirements/base.txt requirements/dev.txt requirements/prod.txt
	./scripts/ensure-system.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements/dev.txt
	touch $(STAMP)

system:
	./scripts/ensure-system.sh

demo: $(STAMP) system
	$(BIN)/python -m webapp.stack demo

run: $(STAMP) system
	$(BIN)/python -m webapp.stack run

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy .

pytest: $(STAMP) system
	$(BIN)/python -m pytest

test: lint typecheck pytest

# Fault-injection drills at 1,000 events each (about 6 minutes); see bench/README.md.
bench-faults: $(STAMP) system
	$(BIN)/python -m bench.faults

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
