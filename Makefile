# zhizhi — the two commands of the README live here. `.venv` is created on demand.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: demo test lint serve bench clean
# The console's front-end libraries (ECharts) come from npm at setup, never from a CDN or the repository.
NODE_STAMP := node_modules/.package-lock.json

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $(NODE_STAMP)

## Set up, create the SQLite database, load the demo city, replay a day, serve http://127.0.0.1:8000
demo: $(STAMP) $(NODE_STAMP)
	$(BIN)/zhizhi demo

## Set up and run the whole test suite (lint first). CI runs exactly this.
test: $(STAMP) $(NODE_STAMP)
	bash scripts/ensure-browser.sh
	$(BIN)/ruff check src tests bench
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

serve: $(STAMP) $(NODE_STAMP)
	$(BIN)/zhizhi serve

## Every benchmark, figures printed as `name: value unit`.
bench: $(STAMP)
	$(BIN)/python bench/locate.py
	$(BIN)/python bench/report_dispatch.py
	$(BIN)/python bench/import_hotline.py
	$(BIN)/python bench/live.py
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/dispatch.py
	$(BIN)/python bench/access.py
	$(BIN)/python bench/indicators.py

clean:
	rm -rf var .pytest_cache .ruff_cache
