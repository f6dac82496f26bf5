"""Loading the policy model and its tokenizer from a hub id or a local directory."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import ModelConfig

from open_r1_egsw.errors import ConfigError


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


def apply_stop_tokens(model, tokenizer, training_args, tokens: list[str]) -> list[int]:
    """Make `tokens` end a completion (recipe key `stop_tokens`); returns every id that does.

    TRL 1.16 stops on the tokenizer's EOS plus the model's `generation_config.eos_token_id` (its transformers
    generation and the completion masks read them); vLLM stops on the EOS and the ids in the model directory's
    generation_config.json, plus `stop_token_ids` from the recipe's `generation_kwargs` (server and colocate mode).
    """
    if not tokens:
        return []
    ids = []
    for token in tokens:
        token_id = tokenizer.convert_tokens_to_ids(token)
        if token_id is None or (token_id == tokenizer.unk_token_id and token != tokenizer.unk_token):
            raise ConfigError(f"stop_tokens: {token!r} is not a token of the tokenizer of {tokenizer.name_or_path}.")
        ids.append(token_id)
    eos = model.generation_config.eos_token_id
    eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    if tokenizer.eos_token_id is not None:
        eos = [tokenizer.eos_token_id, *eos]
    model.generation_config.eos_token_id = list(dict.fromkeys([*eos, *ids]))
    if training_args.use_vllm:
        kwargs = dict(training_args.generation_kwargs or {})
        kwargs["stop_token_ids"] = list(dict.fromkeys([*kwargs.get("stop_token_ids", []), *ids]))
        training_args.generation_kwargs = kwargs
    return model.generation_config.eos_token_id
