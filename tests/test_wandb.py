"""`report_to: wandb`, offline, for real: a few tiny steps write a wandb run inside tmp, and reading its run file
back (tests/helpers/wandb_records.py, with wandb's own protobuf Record) shows the EGSW and entropy-dynamics
metrics at every logged step and the EGSW fields in the run config. No network: WANDB_MODE=offline."""

import os

import pytest
from helpers.wandb_records import config, history, read_records
from test_grpo import GRPO, ROOT, run, tiny_args

from open_r1_egsw.training.outputs import read_metrics

STEPS = 3


def run_offline(assets, out, wandb_dir, *extra):
    env_keys = {"WANDB_MODE": "offline", "WANDB_DIR": str(wandb_dir), "WANDB_PROJECT": "egsw-test",
                "WANDB_SILENT": "true", "WANDB_CONSOLE": "off"}  # fmt: skip
    saved = {key: os.environ.get(key) for key in env_keys}
    os.environ.update(env_keys)
    try:
        return run(GRPO, *tiny_args(assets, out, "--max_steps", str(STEPS), "--report_to", "wandb", *extra))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def the_run_file(wandb_dir):
    files = list(wandb_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1, files
    return files[0]


@pytest.mark.slow
def test_wandb_offline_egsw_and_clip_metrics_every_step(tiny_assets, tmp_path):
    """EGSW + clip_b with diagnostics: egsw/* and entropy_dynamics/* at steps 1..3, config holds the EGSW fields."""
    wandb_dir = tmp_path / "wb"
    wandb_dir.mkdir()
    extra = ("--entropy_clip", "clip_b", "--log_entropy_dynamics", "true", "--egsw_alpha", "0.7")
    proc = run_offline(tiny_assets, tmp_path / "out", wandb_dir, *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert str(ROOT) not in str(the_run_file(wandb_dir))  # the run stays inside the test's tmp dir
    records = read_records(the_run_file(wandb_dir))
    rows = [row for row in history(records) if "train/egsw/ess" in row or "train/loss" in row]
    assert [row["train/global_step"] for row in rows] == list(range(1, STEPS + 1))
    for row in rows:
        for key in ("train/egsw/ess", "train/egsw/entropy_mean", "train/egsw/alpha", "train/entropy_dynamics/clip_frac",
                    "train/entropy_dynamics/S_mean", "train/entropy_dynamics/S_minus_baseline_mean"):  # fmt: skip
            assert isinstance(row.get(key), (int, float)), (key, row)
        assert row["train/egsw/alpha"] == 0.7
    measured = [row for row in rows if "train/entropy_dynamics/measured_dH" in row]
    assert [row["train/global_step"] for row in measured] == list(range(2, STEPS + 1))  # needs a previous step
    cfg = config(records)  # TrainingArguments.to_dict(), as the Trainer's WandbCallback sends it
    assert cfg["use_egsw"] is True and cfg["egsw_alpha"] == 0.7
    assert cfg["entropy_clip"] == "clip_b" and cfg["egsw_granularity"] == "token"
    for key in ("egsw_temperature", "egsw_entropy_normalization", "egsw_weight_scale", "entropy_clip_mu",
                "egsw_controller", "log_entropy_dynamics"):  # fmt: skip
        assert key in cfg, key
    # the same numbers as metrics.jsonl, step by step
    jsonl = [r for r in read_metrics(tmp_path / "out") if "loss" in r]
    assert [r["egsw/ess"] for r in jsonl] == [row["train/egsw/ess"] for row in rows]
