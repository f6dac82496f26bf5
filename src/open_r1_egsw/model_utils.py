"""Loading the policy model and its tokenizer from a hub id or a local directory."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import ModelConfig

from .utils import ConfigError


def load_model_and_tokenizer(model_args: ModelConfig, training_args):
    name = model_args.model_name_or_path
    if not name:
        raise ConfigError("model_name_or_path is not set.")
    if name.startswith((".", "/", "~")) and not Path(name).expanduser().exists():
        raise ConfigError(f"model_name_or_path: no such directory: {name}")
    tokenizer = AutoTokenizer.from_pretrained(
        name, revision=model_args.model_revision, trust_remote_code=getattr(training_args, "trust_remote_code", False)
    )
    dtype = model_args.dtype if model_args.dtype in ("auto", None) else getattr(torch, model_args.dtype)
    model = AutoModelForCausalLM.from_pretrained(
        name,
        revision=model_args.model_revision,
        trust_remote_code=getattr(training_args, "trust_remote_code", False),
        attn_implementation=model_args.attn_implementation,
        dtype=dtype,
        use_cache=not training_args.gradient_checkpointing,
    )
    return model, tokenizer
