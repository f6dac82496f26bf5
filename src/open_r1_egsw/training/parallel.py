"""Tensor-parallel sizes that vLLM can run for a model, checked before anything starts: the attention heads and the
MLP's intermediate size must split evenly over the ranks, and the key/value heads split or replicate. Used by the vLLM
server's `--vllm-tp` (cli/launch.py) and by evaluation's `--parallel tensor`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

from open_r1_egsw.errors import ConfigError

logger = logging.getLogger(__name__)

_HEADS_KEYS = ("num_attention_heads", "n_head", "num_heads")
_KV_KEYS = ("num_key_value_heads", "num_kv_heads", "n_head_kv")


def _read_config(config_or_path, revision: str | None = None) -> tuple[dict | None, str]:
    """(config dict, where it came from); (None, source) for a hub id whose config cannot be read here."""
    if isinstance(config_or_path, Mapping):
        return dict(config_or_path), "the model config"
    if hasattr(config_or_path, "to_dict"):  # a transformers PretrainedConfig
        return config_or_path.to_dict(), "the model config"
    text = str(config_or_path)
    path = Path(text).expanduser()
    if path.is_dir():
        path = path / "config.json"
    elif not path.exists() and (text.startswith((".", "/", "~")) or text.endswith(".json")):
        raise ConfigError(f"model config not found: {text}")
    if not path.exists():  # a hub id: its config.json from the HF cache or the hub
        try:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(text, "config.json", revision=revision))
        except Exception as exc:  # offline and not cached, gated, ...: vLLM will check it when it starts
            logger.warning("Cannot read %s's config.json (%s): tensor-parallel size not checked.", text, exc)
            return None, text
    try:
        config = json.loads(path.read_text())
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path} is not a JSON object")
    return config, str(path)


def split_sizes(config: Mapping) -> tuple[int, int, int | None] | None:
    """(attention heads, key/value heads, intermediate size or None) of a config dict (its `text_config` for a
    multimodal one), or None when it names no attention heads."""
    config = config.get("text_config") or config
    heads = next((config[k] for k in _HEADS_KEYS if isinstance(config.get(k), int)), None)
    if not heads:
        return None
    kv_heads = next((config[k] for k in _KV_KEYS if isinstance(config.get(k), int)), None)
    intermediate = config.get("intermediate_size")
    return heads, kv_heads or heads, intermediate if isinstance(intermediate, int) else None


def tensor_parallel_sizes(heads: int, kv_heads: int, intermediate: int | None = None) -> list[int]:
    """Every tensor-parallel size vLLM accepts for these sizes, ascending."""
    return [
        t
        for t in range(1, heads + 1)
        if heads % t == 0 and (kv_heads % t == 0 or t % kv_heads == 0) and (intermediate or t) % t == 0
    ]


def check_tensor_parallel(
    config_or_path, tp: int, gpus: int | None = None, *, flag: str = "tensor parallel size", revision=None
) -> None:
    """Raise ConfigError (one line naming `flag`) when vLLM cannot run the model with tensor-parallel size `tp`.

    Args:
        config_or_path: a config dict, a transformers config, a model directory, its config.json, or a hub id (read
            from the HF cache or the hub; when that fails here, only the GPU count is checked).
        tp: the tensor-parallel size.
        gpus: GPUs available to it (None: not checked).
        flag: how the user set `tp` (e.g. "--vllm-tp"), named in the message.
    """
    if not isinstance(tp, int) or tp < 1:
        raise ConfigError(f"{flag} must be a positive integer, got {tp!r}")
    if gpus is not None and tp > gpus:
        raise ConfigError(f"{flag} {tp} needs {tp} GPUs, {gpus} available")
    config, source = _read_config(config_or_path, revision)
    if config is None:
        return
    sizes = split_sizes(config)
    if sizes is None:
        logger.warning("%s has no num_attention_heads: tensor-parallel size not checked.", source)
        return
    heads, kv_heads, intermediate = sizes
    allowed = tensor_parallel_sizes(heads, kv_heads, intermediate)
    if tp not in allowed:
        usable = [t for t in allowed if gpus is None or t <= gpus]
        mlp = f", intermediate_size {intermediate}" if intermediate else ""
        raise ConfigError(
            f"{flag} {tp} does not fit the model (num_attention_heads {heads}, num_key_value_heads {kv_heads}{mlp} "
            f"in {source}): use {', '.join(map(str, usable))}"
        )
