"""What a run writes besides checkpoints: logging set-up, the output-dir check and the per-step metrics file."""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from pathlib import Path

import datasets
import transformers
from transformers import TrainerCallback

from open_r1_egsw.errors import ConfigError

METRICS_FILE = "metrics.jsonl"


def setup_logging(training_args) -> None:
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    log_level = training_args.get_process_log_level()
    logging.getLogger("open_r1_egsw").setLevel(log_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)


def check_output_dir(output_dir: str, overwrite: bool, resume: bool = False) -> None:
    """Refuse a non-empty output_dir unless `overwrite_output_dir` or resuming from a checkpoint in it."""
    path = Path(output_dir)
    if path.is_file():
        raise ConfigError(f"output_dir {output_dir} is a file, not a directory.")
    if path.is_dir() and any(path.iterdir()) and not (overwrite or resume):
        raise ConfigError(
            f"output_dir {output_dir} exists and is not empty; set overwrite_output_dir: true (or "
            "--overwrite_output_dir true) to write into it, or resume_from_checkpoint to continue the run."
        )


class MetricsJSONLCallback(TrainerCallback):
    """Append every `log` event of the main process to `<output_dir>/metrics.jsonl` (one JSON object a line).

    This is the single per-step metrics record: plots and the comparison tables read it back (compare.py).
    Non-finite floats are written as null so the file stays valid JSON. On a resume, the records of steps after the
    checkpoint (logged by the run that was killed) are dropped first, so every step appears once.
    """

    def __init__(self, output_dir: str):
        self.path = Path(output_dir) / METRICS_FILE

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not args.resume_from_checkpoint and self.path.exists():
                self.path.unlink()  # a fresh run in an overwritable dir starts a fresh file
            elif self.path.exists():  # resumed: drop what the killed run logged after its checkpoint
                lines = self.path.read_text().splitlines()
                kept = [line for line in lines if line.strip() and json.loads(line)["step"] <= state.global_step]
                if len(kept) != len(lines):
                    self.path.write_text("".join(line + "\n" for line in kept))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        record = {"step": state.global_step, "epoch": state.epoch}
        for key, value in logs.items():
            if isinstance(value, float) and not math.isfinite(value):
                value = None
            record[key] = value
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


def read_metrics(output_dir: str | os.PathLike) -> list[dict]:
    """The records of `<output_dir>/metrics.jsonl`, in order."""
    path = Path(output_dir) / METRICS_FILE
    if not path.exists():
        raise FileNotFoundError(f"No metrics file: {path}")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
