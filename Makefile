# Two commands do all set-up on a fresh clone: `make test` and `make demo`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

# One XLA host device per NUTS chain, a writable PyTensor compile dir (tests run in a fresh clone).
TEST_ENV := XLA_FLAGS=--xla_force_host_platform_device_count=4 \
            PYTENSOR_FLAGS=compiledir=$(CURDIR)/.cache/pytensor

.PHONY: install test test-slow lint demo clean

install: $(STAMP)

# torch first, pinned: the machine's local CPU wheel. A bare `torch` would pull GBs of CUDA.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[measure,ray,dev]'
	touch $(STAMP)

lint: install
	$(BIN)/ruff check src tests benchmarks

test: install lint
	$(TEST_ENV) $(BIN)/pytest

test-slow: install
	$(TEST_ENV) $(BIN)/pytest -m slow

demo: install
	$(BIN)/mergelaw simulate --out build/demo/curves.parquet --seed 0
	$(BIN)/mergelaw validate build/demo/curves.parquet
	$(BIN)/mergelaw fit-ls build/demo/curves.parquet --n-boot 100 --seed 0 \
		--out-csv build/demo/least_squares.csv --out-json build/demo/least_squares.json

clean:
	rm -rf build .cache .pytest_cache .ruff_cache .hypothesis
