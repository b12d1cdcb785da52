# One command to set up and run, one to set up and test. Both create .venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
# the DuckDB release tests/test_publish.py reads the published warehouse with
OLD_DUCKDB := 1.1.3
BIN := $(VENV)/bin
export DO_NOT_TRACK := 1

.PHONY: setup setup-spark run run-spark dev test test-spark lint sample bench docs dashboard clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11) and "Python 3.11 is required")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	# an older DuckDB, as BI tools bundle, for the test that it reads the published file
	$(BIN)/pip install --quiet --no-deps --target $(VENV)/old-duckdb duckdb==$(OLD_DUCKDB)
	touch $@

# the Dagster instance of `make dev` and `make run`: the UI shows the CLI's runs too
DAGSTER_HOME ?= $(CURDIR)/data/dagster_home

run: setup  ## land TIERS_RAW_DIR, build and publish the warehouse, print a summary
	mkdir -p $(DAGSTER_HOME)
	cp orchestration/dagster.yaml $(DAGSTER_HOME)/dagster.yaml
	DAGSTER_HOME=$(DAGSTER_HOME) $(BIN)/python -m orchestration run

dev: setup  ## the Dagster UI on http://localhost:3000 (runs and schedules kept in DAGSTER_HOME)
	mkdir -p $(DAGSTER_HOME)
	cp orchestration/dagster.yaml $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/python -c 'from orchestration.config import prepare_manifest; prepare_manifest()'
	PATH=$(CURDIR)/$(BIN):$$PATH DAGSTER_HOME=$(DAGSTER_HOME) $(BIN)/dagster dev -m orchestration.definitions

# test processes (pytest-xdist): one per core; a test module runs whole in one of them
TEST_WORKERS ?= 2

test: setup lint  ## every test: generator, landing, dbt build on clean and dirty data
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

# The Spark extra (dbt-spark, pyspark) on top of setup; Spark needs Java 17
setup-spark: $(VENV)/.spark-installed

$(VENV)/.spark-installed: $(VENV)/.installed
	@command -v java >/dev/null || { echo "Spark needs Java 17: apt-get install openjdk-17-jre-headless" >&2; exit 1; }
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev,spark]'
	touch $@

run-spark: setup-spark  ## land TIERS_RAW_DIR and build the marts and the audit on local Spark (docs/spark.md)
	$(BIN)/python -m orchestration.spark

test-spark: setup-spark  ## the committed sample and a dirty book on local Spark: marts and audit equal DuckDB's
	$(BIN)/python -m pytest -m spark tests/spark

lint: setup  ## ruff; sqlfluff over the dbt models and tests (compiled against an in-memory DuckDB)
	$(BIN)/ruff check .
	TIERS_WAREHOUSE=:memory: DBT_TARGET_PATH=$(CURDIR)/dbt_project/target/sqlfluff \
		$(BIN)/sqlfluff lint dbt_project/models dbt_project/tests

sample: setup  ## regenerate the committed sample landing folder in seeds/sample
	$(BIN)/python -m seeds.generate --out seeds/sample --customers 2000 --months 24

bench: setup  ## time and memory per stage at several sizes vs one DuckDB query and pandas (docs/performance.md)
	$(BIN)/python -m benchmarks.bench $(BENCH_ARGS)

# The dbt docs site is generated from a copy of the published warehouse: dbt opens its
# file for writing, and the published file may be held by a BI client or a run.
DOCS_WAREHOUSE := $(or $(TIERS_WAREHOUSE),data/warehouse.duckdb)
DOCS_DIR := dbt_project/target/docs
DOCS_COPY := $(DOCS_DIR)/warehouse/$(notdir $(DOCS_WAREHOUSE))

docs: setup  ## the dbt docs site of the published warehouse (TIERS_WAREHOUSE): every model and column
	@test -f "$(DOCS_WAREHOUSE)" || { echo "no warehouse at $(DOCS_WAREHOUSE): run 'make run' first" >&2; exit 1; }
	rm -rf $(DOCS_DIR) && mkdir -p $(dir $(DOCS_COPY))
	cp "$(DOCS_WAREHOUSE)" "$(DOCS_COPY)"
	TIERS_WAREHOUSE="$(CURDIR)/$(DOCS_COPY)" $(BIN)/dbt docs generate --static \
		--project-dir dbt_project --profiles-dir dbt_project --target-path target/docs; \
		status=$$?; rm -rf $(dir $(DOCS_COPY)); exit $$status
	@echo "Docs site: open $(DOCS_DIR)/static_index.html, or serve it on http://localhost:8080 with"
	@echo "  $(BIN)/dbt docs serve --project-dir dbt_project --profiles-dir dbt_project --target-path target/docs"

dashboard: setup  ## the tier dashboard of the published warehouse (TIERS_WAREHOUSE): one HTML file per run
	$(BIN)/python -m orchestration.dashboard

clean:
	rm -rf data dbt_project/target dbt_project/logs .pytest_cache
