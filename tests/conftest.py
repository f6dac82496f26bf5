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
