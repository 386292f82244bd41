# tfdarts: `make run` and `make test` set everything up themselves.
PYTHON_VERSION := 3.10
VENV := .venv
PY := $(VENV)/bin/python
DATA_DIR ?= ../shared/data/fashion-mnist
RUN_ARGS ?=

.PHONY: run test setup clean

$(VENV)/.installed: setup.py
	@./scripts/ensure_venv.sh $(VENV) $(PYTHON_VERSION)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

setup: $(VENV)/.installed

run: setup
	@if [ -d "$(DATA_DIR)" ]; then \
	  $(PY) -m pipeline.run --dataset fashion_mnist --override data.data_dir=$(abspath $(DATA_DIR)) $(RUN_ARGS); \
	else \
	  $(PY) -m pipeline.run --dataset fashion_mnist $(RUN_ARGS); \
	fi

# test files run on TEST_WORKERS processes (one per core here); a file stays on one worker,
# so its module fixtures are built once
TEST_WORKERS ?= 2

test: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile tests

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
