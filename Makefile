# open-r1-egsw. Two commands set up a fresh machine (python3 only):
#   make train   # the embedded default: tiny Qwen2 + synthetic math, SFT warm start then GRPO+EGSW, on CPU
#   make test    # the whole test suite, slow end-to-end tests included (what CI runs)
# Both create .venv and install the pinned CPU stack into it when it is absent or older than setup.py.

.PHONY: install train test test-fast quality style bench clean

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

RECIPE ?=
ARGS ?=
TINY_RECIPE := recipes/tiny/egsw/config.yaml

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# CPU path: the CPU wheel of torch first (an unpinned torch pulls a multi-GB CUDA build)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

train: $(STAMP)
ifeq ($(RECIPE),)
	$(PY) -m open_r1_egsw.embedded --warm-start
	$(PY) src/open_r1_egsw/grpo.py --config $(TINY_RECIPE) $(ARGS)
else
	$(PY) src/open_r1_egsw/grpo.py --config $(RECIPE) $(ARGS)
endif

test: $(STAMP)
	$(PY) -m pytest -q -ra

test-fast: $(STAMP)
	$(PY) -m pytest -q -ra -m "not slow"

quality: $(STAMP)
	$(VENV)/bin/ruff check src tests scripts
	$(VENV)/bin/ruff format --check src tests scripts

style: $(STAMP)
	$(VENV)/bin/ruff check --fix src tests scripts
	$(VENV)/bin/ruff format src tests scripts

clean:
	rm -rf .cache/embedded data results reports .pytest_cache

bench: $(STAMP)
	$(PY) scripts/bench_egsw.py $(ARGS)
