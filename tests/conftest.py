"""Shared fixtures: tiny embedded assets built once per session in a temporary directory (no downloads)."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_assets(tmp_path_factory):
    """Data set + tokenizer + random tiny Qwen2 (base model), built with a small spec."""
    from open_r1_egsw.embedded import EmbeddedSpec, build_assets

    return build_assets(tmp_path_factory.mktemp("embedded"), EmbeddedSpec(num_train=64, num_test=16))


WARM_START_STEPS = 300  # measured: greedy accuracy about 0.19 on the embedded test rows (0 for the random model)


@pytest.fixture(scope="session")
def warm_model(tmp_path_factory):
    """A short SFT warm start of the full embedded assets: a model that is right on some rows and wrong on others,
    so sampled groups get different rewards (advantages not all 0). Built once per session (about 1-2 minutes)."""
    from open_r1_egsw.embedded import EmbeddedSpec, build_assets, warm_start

    paths = build_assets(tmp_path_factory.mktemp("embedded-full"), EmbeddedSpec())
    warm_start(paths, extra_args=["--max_steps", str(WARM_START_STEPS), "--logging_steps", "100"])
    return paths
