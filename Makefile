# propensity: `make demo` runs the pipeline on generated data, `make test` runs the checks.
# Both set themselves up on a fresh machine (Python 3.11, Java 17, network to PyPI and Maven).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
DELTA_VERSION := 4.0.1
JARS := $(VENV)/share/propensity/jars
JARS_STAMP := $(JARS)/.fetched-$(DELTA_VERSION)
export PYSPARK_PYTHON := $(abspath $(PY))
export PYSPARK_DRIVER_PYTHON := $(abspath $(PY))

.PHONY: setup jars test lint unit test-cluster wheel docs demo bench clean

setup: $(INSTALLED) $(JARS_STAMP)

$(INSTALLED): requirements.txt constraints.txt setup.py libs/propensity/verbs.py
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required, found " + sys.version.split()[0])'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip wheel setuptools
	$(PY) -m pip install -q -c constraints.txt -r requirements.txt -e '.[dev]'
	touch $@

# Delta's jars into the venv, so Spark starts offline. Without Maven, Spark
# resolves spark.delta_package itself at the first session instead.
$(JARS_STAMP):
	mkdir -p $(JARS)
	@if command -v mvn >/dev/null 2>&1; then \
	  for a in io.delta:delta-spark_2.13:$(DELTA_VERSION) io.delta:delta-storage:$(DELTA_VERSION); do \
	    mvn -q dependency:copy -Dartifact=$$a -DoutputDirectory=$(JARS) || exit 1; \
	  done; \
	else echo "mvn not found: Spark will resolve Delta $(DELTA_VERSION) from Maven at first use"; fi
	touch $@

jars: $(JARS_STAMP)

lint: setup
	$(VENV)/bin/ruff check libs tests jobs benchmarks setup.py
	$(VENV)/bin/mypy

# Tests run in TEST_WORKERS pytest-xdist processes, one test file per process at a time (module fixtures are
# built once): much of a test's time is one JVM or Python process starting, which leaves the other core idle.
# TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= 2
PYTEST := $(VENV)/bin/pytest -q -n $(TEST_WORKERS) --dist loadfile

# The fast tier: no training processes, no Thrift server, no CLI subprocesses (pytest markers in pyproject.toml).
unit: setup
	$(PYTEST) --durations=15 -m "not slow and not distributed and not server"

# Every test, the cluster tier included: what CI (.ci/run) and the README run.
test: lint
	$(PYTEST) --durations=25

# The cluster tier alone: the wheel and every stage through spark-submit on local-cluster[2,1,1024],
# compared with a local run (tests/test_cluster.py; about 12 minutes on 2 cores).
test-cluster: setup
	$(VENV)/bin/pytest -q --durations=10 -m cluster

# The wheel for spark-submit --py-files, pip install on a cluster, or the Databricks bundle.
wheel: setup
	$(PY) -m pip wheel --no-deps --no-build-isolation -w dist .

# Regenerate the files made from the code: docs/*.md reference pages, conf/base.yml, jobs/*.py.
docs: setup
	$(PY) -m propensity.docgen

# The demo's pseudonym secret: a fixed, public one unless you export your own (never use it for real data).
demo: setup
	PROPENSITY_PSEUDONYM_KEY="$${PROPENSITY_PSEUDONYM_KEY:-demo-only-pseudonym-key-not-a-secret}" $(VENV)/bin/propensity demo

# Scoring throughput: ours vs mlflow spark_udf vs a plain torch loop, student vs teacher.
# Self-contained, about 40 minutes on 2 cores in all; e.g. make bench BENCH_ARGS="--users 5000 --rounds 1".
# Then training throughput against the matmul peak (TRAIN_ARGS), how ingest, features and scoring
# cost grows with the data (1x and 10x the demo's people, same days; e.g. SCALE_ARGS="--users 200"),
# and the files ten daily runs leave before and after `propensity maintain` (UPKEEP_ARGS).
# Every script's name=value lines are collected and printed again, together, as bench's last lines.
BENCH_LOG := var/bench.log
bench: SHELL := /bin/bash
bench: .SHELLFLAGS := -o pipefail -c
bench: setup
	@mkdir -p var && : > $(BENCH_LOG)
	$(PY) benchmarks/run_all.py $(BENCH_ARGS) | tee -a $(BENCH_LOG)
	$(PY) benchmarks/training_bench.py $(TRAIN_ARGS) | tee -a $(BENCH_LOG)
	$(PY) benchmarks/scale_bench.py $(SCALE_ARGS) | tee -a $(BENCH_LOG)
	$(PY) benchmarks/upkeep_bench.py $(UPKEEP_ARGS) | tee -a $(BENCH_LOG)
	@echo "== make bench: the ratios and rates of this run (also in $(BENCH_LOG)) =="
	@grep -E '^[a-z0-9_]+=' $(BENCH_LOG)

clean:
	rm -rf var build dist *.egg-info
