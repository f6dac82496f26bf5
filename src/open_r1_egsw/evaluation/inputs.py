"""The evaluation's inputs, checked before lighteval is imported: the model (a local directory or a hub id, with a
fingerprint that keys the generation cache) and the local data directory. Bad input raises `InputError`."""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .benchmarks import LIGHTEVAL_TASKS
from .local_data import DEFAULT_ROOT as LOCAL_DATA_ROOT
from .local_data import write_embedded_default_data
from .settings import DATA_DIR_ENV

TRAINED_TINY_MODEL = Path("data/tiny/egsw")  # `make train` writes the GRPO+EGSW tiny model here
EMBEDDED_SFT_MODEL = Path(".cache/embedded/sft-model")  # `python -m open_r1_egsw.experiments.embedded --warm-start`
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class InputError(ValueError):
    """Bad command-line input: reported as one line, exit status 2."""


@dataclass(frozen=True)
class ModelSpec:
    source: str  # what lighteval loads: an absolute directory or a hub id
    local: bool
    name: str  # results sub-directory
    fingerprint: str  # changes whenever the checkpoint does
    max_positions: int | None  # the model's max_position_embeddings, when known


def default_model() -> Path:
    """The embedded default: the trained tiny model if `make train` ran, else the SFT warm start."""
    return TRAINED_TINY_MODEL if (TRAINED_TINY_MODEL / "config.json").exists() else EMBEDDED_SFT_MODEL


def checkpoint_fingerprint(model_dir: Path) -> str:
    """Hash of (name, size, mtime) of every file directly in `model_dir`: any re-save of the weights changes it."""
    digest = hashlib.sha256()
    for path in sorted(p for p in model_dir.iterdir() if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _max_positions(config_path: Path) -> int | None:
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError):
        return None
    config = config.get("text_config", config)
    value = config.get("max_position_embeddings") or config.get("n_positions")
    return int(value) if value else None


def default_model_name(source: str, local: bool) -> str:
    """Results sub-directory of a model: its directory name (parent-checkpoint-N for a checkpoint), or the hub name."""
    if not local:
        return source.rstrip("/").split("/")[-1]
    path = Path(source)
    return f"{path.parent.name}-{path.name}" if path.name.startswith("checkpoint-") else path.name


def resolve_model(model: str | None, name: str | None = None, revision: str | None = None) -> ModelSpec:
    """Check that the model exists (a local directory, or a hub id, which offline must be in the HF cache).

    A local model's fingerprint hashes its files; a hub id's, the commit of its cached snapshot (or the revision).
    """
    if model is None:
        path = default_model()
        if not (path / "config.json").exists():
            raise InputError(
                f"model not found: the embedded default {path} does not exist; build it with "
                "`python -m open_r1_egsw.experiments.embedded --warm-start` (or `make train` for data/tiny/egsw), "
                "or pass --model"
            )
        model = str(path)
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise InputError(f"model path {model} is not a model directory (no config.json)")
        source = str(path.resolve())
        return ModelSpec(
            source=source,
            local=True,
            name=name or default_model_name(source, True),
            fingerprint=checkpoint_fingerprint(path),
            max_positions=_max_positions(path / "config.json"),
        )
    looks_like_path = model.startswith((".", "/", "~")) or model.count("/") > 1 or not _HUB_ID.match(model)
    if looks_like_path or path.exists():
        raise InputError(f"model path not found: {model}")
    from huggingface_hub import constants, try_to_load_from_cache

    cached = try_to_load_from_cache(model, "config.json", revision=revision)
    if not isinstance(cached, str) and constants.HF_HUB_OFFLINE:
        raise InputError(
            f"model not found: {model} is neither a local directory nor in the Hugging Face cache (HF_HUB_OFFLINE=1)"
        )
    # A cached snapshot lives in .../snapshots/<commit>/config.json: key the cache by that commit.
    commit = Path(cached).parent.name if isinstance(cached, str) else (revision or "main")
    return ModelSpec(
        source=model,
        local=False,
        name=name or default_model_name(model, False),
        fingerprint=hashlib.sha256(f"{model}@{commit}".encode()).hexdigest()[:16],
        max_positions=_max_positions(Path(cached)) if isinstance(cached, str) else None,
    )


def resolve_data_dir(data_dir: str | None, tasks: list[str], embedded_default: bool) -> Path | None:
    """The local data directory (checked to hold every task's split), or None for the hub data sets."""
    data_dir = data_dir or os.environ.get(DATA_DIR_ENV) or None
    if data_dir is None and embedded_default:
        data_dir = write_embedded_default_data(LOCAL_DATA_ROOT)
    if data_dir is None:
        return None
    root = Path(data_dir)
    for task in tasks:
        spec = LIGHTEVAL_TASKS[task]
        task_dir = root / spec.local_dir
        if not any(task_dir.glob(f"{spec.split}.*")):
            raise InputError(
                f"no local data for task {task}: expected {task_dir / (spec.split + '.jsonl')} "
                f"(or .parquet/.json) in the {spec.hub_repo} columns"
            )
    return root
