"""Loading a data set from the hub or a local path, and mapping it to TRL's conversational prompt format."""

from __future__ import annotations

from pathlib import Path

import datasets

from open_r1_egsw.errors import ConfigError

# the system prompt of the embedded task: its SFT data, its GRPO recipes and the evaluation's embedded profile
SYSTEM_PROMPT = (
    "You are a helpful assistant. Think inside <think> </think> and give the final answer "
    "inside <answer> </answer> as \\boxed{}."
)


def load_dataset_any(name_or_path: str, config: str | None = None) -> datasets.DatasetDict:
    """Load `name_or_path`: a `save_to_disk` folder, a local folder of json/jsonl/parquet files, or a hub id.

    A value that looks like a path (starts with `.`, `/` or `~`) but does not exist is an error naming it, rather
    than a confusing hub look-up. What `datasets` refuses with a ValueError (a config or data file it cannot read)
    is a ConfigError naming the data set.
    """
    if not name_or_path:
        raise ConfigError("dataset_name is not set: give a hub data set id or a local path.")
    path = Path(name_or_path).expanduser()
    if not path.exists() and name_or_path.startswith((".", "/", "~")):
        raise FileNotFoundError(f"dataset_name: no such file or directory: {name_or_path}")
    try:
        if (path / "dataset_dict.json").exists():
            return datasets.load_from_disk(str(path))
        return datasets.load_dataset(str(path) if path.exists() else name_or_path, config)
    except ValueError as err:
        message = " ".join(str(err).split())
        raise ConfigError(f"dataset_name {name_or_path!r} (dataset_config {config!r}): {message}") from None


def require_columns(dataset: datasets.Dataset, columns: list[str], dataset_name: str, split: str) -> None:
    """Raise a ConfigError naming the missing column(s), the data set and the split."""
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        raise ConfigError(
            f"Data set {dataset_name!r} (split {split!r}) has no column {', '.join(map(repr, missing))}; "
            f"its columns are: {', '.join(dataset.column_names)}."
        )


def require_split(dataset: datasets.DatasetDict, split: str, dataset_name: str) -> datasets.Dataset:
    if split not in dataset:
        raise ConfigError(f"Data set {dataset_name!r} has no split {split!r}; its splits are: {', '.join(dataset)}.")
    return dataset[split]


def conversation_prompt(problem: str, system_prompt: str | None) -> list[dict[str, str]]:
    """The conversational prompt TRL's trainers expect: optional system message, then the user's question."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return messages + [{"role": "user", "content": problem}]


def to_prompt_dataset(dataset: datasets.Dataset, prompt_column: str, system_prompt: str | None) -> datasets.Dataset:
    """Add a `prompt` column (conversation) built from `prompt_column`; other columns stay (rewards read them)."""
    return dataset.map(lambda row: {"prompt": conversation_prompt(row[prompt_column], system_prompt)})
