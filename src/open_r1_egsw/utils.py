"""Small helpers shared by the entry points: output-dir safety, the per-step metrics file, CLI error handling."""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path

import datasets
import transformers
from transformers import TrainerCallback

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"


class ConfigError(ValueError):
    """A user error in a recipe, a flag or an input file: reported as one line, exit code 2.

    `mid_run`: raised while training, so a progress bar may hold the current line: the error starts a line of its own.
    `quiet` (set on an instance): the same error is reported by another rank, so this one prints nothing.
    """

    mid_run = False


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


def parse_recipe_args(dataclass_types: tuple, argv: list[str] | None = None, world_size=None) -> tuple:
    """Parse `--config <recipe.yaml>` plus flag overrides; every value is checked (recipe_args.py), open-r1 keys are
    mapped (recipe_compat.py), unknown keys are errors."""
    from .recipe_args import parse_recipe_args as parse

    return parse(dataclass_types, argv, world_size=world_size)


def cli_entry(main: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """Wrap an entry point: user errors become one `error: ...` line on stderr and exit code 2."""

    @functools.wraps(main)
    def wrapper(argv: list[str] | None = None) -> int:
        try:
            return main(argv)
        except (ConfigError, FileNotFoundError) as err:
            if not getattr(err, "quiet", False):
                newline = "\n" if getattr(err, "mid_run", False) else ""
                print(f"{newline}error: {err}", file=sys.stderr)  # noqa: T201
            raise SystemExit(2) from None
        except (ConnectionError, *_request_errors()) as err:
            # the vLLM server (server mode) is down, never came up or stopped answering: TRL's client raises after
            # its retries (vllm_server_timeout at start-up); checkpoints already written are left as they are
            # (on a line of its own: a training progress bar may be on the current one)
            print(f"\nerror: vLLM server: {_one_line(err)}", file=sys.stderr)  # noqa: T201
            raise SystemExit(1) from None
        except ValueError as err:
            # TRL/transformers validate their own fields in __post_init__ with ValueError; those are config errors.
            if _raised_by_config(err):
                print(f"error: {err}", file=sys.stderr)  # noqa: T201
                raise SystemExit(2) from None
            raise

    return wrapper


def _request_errors() -> tuple[type[BaseException], ...]:
    import requests

    return (requests.exceptions.ConnectionError, requests.exceptions.Timeout)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _raised_by_config(err: BaseException) -> bool:
    tb = err.__traceback__
    while tb is not None:
        name = tb.tb_frame.f_code.co_name
        filename = tb.tb_frame.f_code.co_filename
        if name in ("__post_init__", "parse_args_and_config", "parse_args_into_dataclasses") or filename.endswith(
            ("configs.py", "data.py", "rewards.py")
        ):
            return True
        tb = tb.tb_next
    return False
