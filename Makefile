# Two commands do all set-up on a fresh clone: `make test` and `make demo`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

# One XLA host device per NUTS chain, a writable PyTensor compile dir (tests run in a fresh clone).
TEST_ENV := XLA_FLAGS=--xla_force_host_platform_device_count=4 \
            PYTENSOR_FLAGS=compiledir=$(CURDIR)/.cache/pytensor

.PHONY: install browser test test-slow test-study lint demo clean

install: $(STAMP)

# torch first, pinned: the machine's local CPU wheel. A bare `torch` would pull GBs of CUDA.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[measure,ray,nutpie,dev]'
	touch $(STAMP)

lint: install
	$(BIN)/ruff check src tests benchmarks notebooks

# Debian's chromium renders the HTML report in a test (headless). As root (CI) apt installs it.
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
		echo "chromium could not be installed: the report's browser test will fail under CI=true"

test: install lint browser
	$(TEST_ENV) $(BIN)/pytest

# CI runs the slow checks that fit its time limit; the studies (hours on 2 cores in all) are
# rerun by hand before their benchmark results are committed.
test-slow: install
	$(TEST_ENV) $(BIN)/pytest -m 'slow and not study'

test-study: install
	$(TEST_ENV) $(BIN)/pytest -m study

# The main job on the measured curves shipped in data/curves: the Llama bases (3 sizes, 9 domains)
# merged by all four methods (TIES's curves rise with k: the signed tail), fitted with 4 chains x
# 1000/1000 (about 2 minutes on 2 cores), then planning, the method comparison and the HTML report.
DEMO_FIT := build/demo/lab-llama.nc
LLAMA_L  := 0.004229568

demo: install
	$(BIN)/mergelaw validate data/curves/lab.parquet
	$(BIN)/mergelaw fit data/curves/lab.parquet --arch llama --chains 4 --tune 1000 --draws 1000 \
		--seed 0 --no-progress --out $(DEMO_FIT)
	$(BIN)/mergelaw plan $(DEMO_FIT) stop --size $(LLAMA_L) --epsilon 0.005 \
		--family llama/average/code
	$(BIN)/mergelaw plan $(DEMO_FIT) stop --size $(LLAMA_L) --epsilon 0.005 --family llama/ties/code
	$(BIN)/mergelaw plan $(DEMO_FIT) target --loss 4.2 --size $(LLAMA_L) \
		--family llama/task_arithmetic/code
	$(BIN)/mergelaw plan $(DEMO_FIT) forecast --size $(LLAMA_L) --family llama/average/medical \
		--pool with_own --k 1,2,4,8
	$(BIN)/mergelaw compare $(DEMO_FIT) --methods task_arithmetic,average --pooled-only
	$(BIN)/mergelaw compare $(DEMO_FIT) --methods ties,average --pooled-only
	$(BIN)/mergelaw report $(DEMO_FIT) --out build/demo/report.html
	@echo "demo done: open build/demo/report.html"

clean:
	rm -rf build .cache .pytest_cache .ruff_cache .hypothesis
