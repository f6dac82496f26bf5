"""Shared fixtures: tiny embedded assets built once per session in a temporary directory (no downloads)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_assets(tmp_path_factory):
    """Data set + tokenizer + random tiny Qwen2 (base model), built with a small spec."""
    from open_r1_egsw.experiments.embedded import EmbeddedSpec, build_assets

    return build_assets(tmp_path_factory.mktemp("embedded"), EmbeddedSpec(num_train=64, num_test=16))


@pytest.fixture(scope="session")
def embedded_default(tmp_path_factory):
    """`python -m open_r1_egsw.experiments.embedded --warm-start`, the first step of `make train`, in a temporary root: the full
    default assets and the real SFT warm start (about 4 minutes on 2 idle cores; over 30 under a load average of 5),
    built once per session and shared by the slow tests that start from it. Returns its printed paths plus `root`."""
    root = tmp_path_factory.mktemp("embedded-default")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    build = subprocess.run([sys.executable, "-m", "open_r1_egsw.experiments.embedded", "--root", str(root), "--warm-start"],
                           capture_output=True, text=True, env=env, timeout=3600, cwd=ROOT)  # fmt: skip
    assert build.returncode == 0, build.stderr[-3000:]
    return {**json.loads(build.stdout.strip().splitlines()[-1]), "root": str(root)}


@pytest.fixture(scope="session")
def warm_model(embedded_default):
    """The same default warm start as `EmbeddedPaths`: a model that is right on some rows and wrong on others, so
    sampled groups get different rewards (advantages not all 0); no second SFT run."""
    from open_r1_egsw.experiments.embedded import EmbeddedPaths

    return EmbeddedPaths(Path(embedded_default["root"]))
