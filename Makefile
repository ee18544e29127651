# The two commands a fresh machine needs: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: run test check setup models compiler browser screenshots proto proto-check bench soak clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and exactly pinned: any other spec pulls the CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[all,dev]'
	touch $(STAMP)

setup: $(STAMP)

models: $(STAMP) compiler
	$(BIN)/onnxkit pull smollm2-135m-instruct all-minilm-l6-v2

# Debian packages a target needs, installed when missing, as root or through sudo: $(call apt_install,
# PACKAGE,what happens without it). Where they cannot be, it says what that means and goes on.
define apt_install
if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO=sudo; else SUDO=none; fi; \
if [ "$$SUDO" != none ] && command -v apt-get >/dev/null 2>&1; then \
  $$SUDO apt-get install -y -q $(1) >/dev/null 2>&1 || \
  { $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q $(1) >/dev/null; } || \
  echo "could not install $(1): $(2)"; \
else echo "$(1) is missing and cannot be installed here (needs root or sudo, and apt-get): $(2)"; fi
endef

# onnxkit's BlockMatMul operator (src/onnxkit/export/kernels, C) is compiled on first use by the system's
# C compiler. Without one, GGUF models fall back to onnxruntime's MatMulNBits (the same answers, about
# half the decode speed) and the kernel's tests fail.
compiler:
	@command -v cc >/dev/null 2>&1 || command -v gcc >/dev/null 2>&1 || { \
	  $(call apt_install,gcc,GGUF models will use MatMulNBits); }

run: models
	$(BIN)/onnxkit serve

test: models proto-check browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The page's tests (tests/serve/test_ui_browser*.py) drive Debian's chromium with Playwright (never
# Playwright's own browser download), installed when missing (apt_install above); where it cannot be,
# those tests skip and say why (CI sets ONNXKIT_BROWSER_TESTS=required: there they fail).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  $(call apt_install,chromium,the browser tests will skip); }

# docs/img/*.png, the page's views on the default models (README shows them)
screenshots: models browser
	$(BIN)/python scripts/screenshots.py

check: $(STAMP)
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/mypy

proto: $(STAMP)
	$(BIN)/python scripts/gen_proto.py

proto-check: $(STAMP)
	@if [ -f scripts/gen_proto.py ]; then $(BIN)/python scripts/gen_proto.py --check; fi

bench: models browser
	for b in bench/bench_*.py; do [ $$b = bench/bench_soak.py ] && continue; echo "== $$b"; $(BIN)/python $$b || exit 1; done

# 10 minutes of 64 clients mixing good and bad requests over every protocol (issue 10's targets)
soak: models
	$(BIN)/python bench/bench_soak.py

clean:
	rm -rf $(VENV) build *.egg-info
