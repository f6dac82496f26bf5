"""Which checkpoint to resume from, and whether a run is already finished.

A checkpoint counts only when every file a resume reads is whole (trainer state, weights, optimizer, scheduler, RNG
and EGSW controller state), checked without loading tensors. `resume_from_checkpoint: last` takes the newest complete
one and names the ones it skipped; an explicit path to an incomplete one is an error naming the file.
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
import zipfile
from pathlib import Path

from open_r1_egsw.errors import ConfigError

logger = logging.getLogger(__name__)

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
TRAINER_STATE = "trainer_state.json"
CONTROLLER_STATE = "egsw_controller_state.json"


def checkpoint_problem(path: str | os.PathLike) -> str | None:
    """What makes checkpoint folder `path` unusable for a resume (one phrase naming the file), or None."""
    path = Path(path)
    if not path.is_dir():
        return f"{path} is not a directory"
    problem = _json_problem(path / TRAINER_STATE, required_key="global_step")
    if problem:
        return problem
    problem = _weights_problem(path)
    if problem:
        return problem
    deepspeed = any(p.is_dir() and p.name.startswith("global_step") for p in path.iterdir())
    required = [] if deepspeed else ["optimizer.pt", "scheduler.pt"]
    for name in required:
        if not (path / name).exists():
            return f"{path / name} is missing"
    for file in [path / n for n in required] + sorted(path.glob("rng_state*.pth")) + sorted(path.glob("scaler.pt")):
        problem = _zip_problem(file)
        if problem:
            return problem
    if (path / CONTROLLER_STATE).exists():
        return _json_problem(path / CONTROLLER_STATE)
    return None


def _json_problem(file: Path, required_key: str | None = None) -> str | None:
    if not file.exists():
        return f"{file} is missing"
    try:
        data = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return f"{file} is not valid JSON (truncated?)"
    if required_key and (not isinstance(data, dict) or required_key not in data):
        return f"{file} has no {required_key!r}"
    return None


def _weights_problem(path: Path) -> str | None:
    index = path / "model.safetensors.index.json"
    if index.exists():
        problem = _json_problem(index, required_key="weight_map")
        if problem:
            return problem
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return next((p for p in (_safetensors_problem(path / s) for s in shards) if p), None)
    for name in ("model.safetensors", "adapter_model.safetensors"):
        if (path / name).exists():
            return _safetensors_problem(path / name)
    for name in ("pytorch_model.bin", "adapter_model.bin"):
        if (path / name).exists():
            return _zip_problem(path / name)
    return f"{path} holds no model weights (model.safetensors)"


def _safetensors_problem(file: Path) -> str | None:
    """A safetensors file is 8 bytes of header length, the JSON header, then the data its offsets end at."""
    if not file.exists():
        return f"{file} is missing"
    size = file.stat().st_size
    try:
        with open(file, "rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            if header_len > size:
                raise ValueError
            header = json.loads(f.read(header_len))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except (struct.error, ValueError, KeyError, TypeError, UnicodeDecodeError):
        return f"{file} is truncated or corrupt (unreadable safetensors header)"
    expected = 8 + header_len + end
    if size != expected:
        return f"{file} is truncated ({size} of {expected} bytes)"
    return None


def _zip_problem(file: Path) -> str | None:
    if not file.exists():
        return f"{file} is missing"
    try:
        with zipfile.ZipFile(file) as archive:
            archive.infolist()
    except (zipfile.BadZipFile, OSError):
        return f"{file} is truncated or corrupt (not a complete torch.save archive)"
    return None


def checkpoints_newest_first(output_dir: str | os.PathLike) -> list[Path]:
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := CHECKPOINT_PATTERN.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found, reverse=True)]


def last_complete_checkpoint(output_dir: str | os.PathLike) -> tuple[Path | None, list[str]]:
    """The newest complete checkpoint in `output_dir` (or None), and the problems of the newer ones skipped."""
    skipped = []
    for path in checkpoints_newest_first(output_dir):
        problem = checkpoint_problem(path)
        if problem is None:
            return path, skipped
        skipped.append(problem)
    return None, skipped


def resolve_checkpoint(training_args) -> str | None:
    """`resume_from_checkpoint`: a path (must be complete), or `true`/`last` for the newest complete checkpoint."""
    value = training_args.resume_from_checkpoint
    if value in (None, "", "false", "False"):
        return None
    if value in ("true", "True", "last"):
        last, skipped = last_complete_checkpoint(training_args.output_dir)
        for problem in skipped:
            logger.warning("resume_from_checkpoint=%s skips an incomplete checkpoint: %s", value, problem)
        if last is None:
            detail = f" (incomplete: {'; '.join(skipped)})" if skipped else ""
            raise ConfigError(
                f"resume_from_checkpoint={value}, but {training_args.output_dir} holds no complete checkpoint{detail}."
            )
        return str(last)
    if not os.path.isdir(value):
        raise ConfigError(f"resume_from_checkpoint: no such checkpoint directory: {value}")
    problem = checkpoint_problem(value)
    if problem:
        raise ConfigError(f"resume_from_checkpoint: incomplete checkpoint: {problem}")
    return value


def finished_step(output_dir: str | os.PathLike, max_steps: int) -> int | None:
    """The step a finished run in `output_dir` ended at, or None when it has not finished.

    grpo.py writes `<output_dir>/trainer_state.json` as the last file of a finished run (after the final model): a
    run is finished when it exists and its `global_step` reached `max_steps` (the recipe's, when > 0; else the one
    the run recorded, for epoch-based runs).
    """
    state_file = Path(output_dir) / TRAINER_STATE
    if not state_file.exists() or _json_problem(state_file, required_key="global_step"):
        return None
    state = json.loads(state_file.read_text())
    target = max_steps if max_steps > 0 else state.get("max_steps", 0)
    step = state["global_step"]
    return step if target > 0 and step >= target else None
