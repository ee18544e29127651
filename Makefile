# The two commands a fresh machine needs: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: run test check setup models proto proto-check bench soak clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and exactly pinned: any other spec pulls the CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[all,dev]'
	touch $(STAMP)

setup: $(STAMP)

models: $(STAMP)
	$(BIN)/onnxkit pull smollm2-135m-instruct all-minilm-l6-v2

run: models
	$(BIN)/onnxkit serve

test: models proto-check
	$(BIN)/python -m pytest $(PYTEST_ARGS)

check: $(STAMP)
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/mypy

proto: $(STAMP)
	$(BIN)/python scripts/gen_proto.py

proto-check: $(STAMP)
	@if [ -f scripts/gen_proto.py ]; then $(BIN)/python scripts/gen_proto.py --check; fi

bench: models
	for b in bench/bench_*.py; do [ $$b = bench/bench_soak.py ] && continue; echo "== $$b"; $(BIN)/python $$b || exit 1; done

# 10 minutes of 64 clients mixing good and bad requests over every protocol (issue 10's targets)
soak: models
	$(BIN)/python bench/bench_soak.py

clean:
	rm -rf $(VENV) build *.egg-info
