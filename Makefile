# One command to set up and run, one to set up and test. Both create .venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
export DO_NOT_TRACK := 1

.PHONY: setup run dev test lint sample bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11) and "Python 3.11 is required")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

run: setup  ## land TIERS_RAW_DIR, build and publish the warehouse, print a summary
	$(BIN)/python -m orchestration run

dev: setup  ## the Dagster UI on http://localhost:3000 (runs and schedules kept in data/dagster_home)
	mkdir -p data/dagster_home
	cp orchestration/dagster.yaml data/dagster_home/dagster.yaml
	$(BIN)/python -c 'from orchestration.pipeline import prepare_manifest; prepare_manifest()'
	PATH=$(CURDIR)/$(BIN):$$PATH DAGSTER_HOME=$(CURDIR)/data/dagster_home $(BIN)/dagster dev -m orchestration.definitions

test: setup lint  ## every test: generator, landing, dbt build on clean and dirty data
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .

sample: setup  ## regenerate the committed sample landing folder in seeds/sample
	$(BIN)/python -m seeds.generate --out seeds/sample --customers 2000 --months 24

bench: setup  ## time and memory per stage at several sizes vs one DuckDB query and pandas (README "Benchmark")
	$(BIN)/python -m benchmarks.bench $(BENCH_ARGS)

clean:
	rm -rf data dbt_project/target dbt_project/logs .pytest_cache
