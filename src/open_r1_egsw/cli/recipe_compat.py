"""open-r1 recipes, read by the pinned TRL 1.16 / transformers 5.17: keys renamed or removed since, mapped or refused.

open-r1 pinned trl 0.18 and transformers 4.52; its GRPO recipes use keys that no longer exist in the pinned classes
(checked against the field set of `GRPOScriptArguments`, `EGSWConfig` and TRL's `ModelConfig`):

- `torch_dtype` -> `dtype` (ModelConfig, transformers 5 renamed it);
- `warmup_ratio` -> `warmup_steps` given as the ratio: transformers 5.17's `warmup_steps` is a float, and a value in
  [0, 1) is a ratio of the total steps (`TrainingArguments.get_warmup_steps`);
- `activation_checkpointing` -> `gradient_checkpointing`, for a user who brings the newer name (5.17 has only
  `gradient_checkpointing`);
- `evaluation_strategy` -> `eval_strategy`, `use_liger` -> `use_liger_kernel` (older transformers / TRL names);
- `dataset_configs: [one]` -> `dataset_config` (open-r1's early distill recipes);
- the reward name `soft_overlong_punishment` in `reward_funcs` -> `soft_overlong`;
- `wandb_entity`, `wandb_project`, `wandb_run_group` -> the WANDB_ENTITY / WANDB_PROJECT / WANDB_RUN_GROUP
  environment variables (what open-r1's `init_wandb_training` did with them), unless already set.

`chat_template`, `max_prompt_length` and the soft_overlong reward's `max_completion_len` and `soft_punish_cache` are
fields of this repository's classes with open-r1's meaning (configs.py), so they need no mapping. Each mapping is reported once per parse as one `notice:` line on stderr; a key that has no
equivalent here stops with one line naming it and what to do (`NO_EQUIVALENT`).
"""

from __future__ import annotations

import os
import sys

from open_r1_egsw.errors import ConfigError

# old key -> new key (the value is kept as it is)
RENAMED = {
    "torch_dtype": "dtype",
    "activation_checkpointing": "gradient_checkpointing",
    "evaluation_strategy": "eval_strategy",
    "use_liger": "use_liger_kernel",
}
# open-r1's reward names -> this repository's (in a recipe's reward_funcs list)
REWARD_NAMES = {"soft_overlong_punishment": "soft_overlong"}
WANDB_ENV = {"wandb_entity": "WANDB_ENTITY", "wandb_project": "WANDB_PROJECT", "wandb_run_group": "WANDB_RUN_GROUP"}
_REWARD_PARAM = (
    "is a parameter of one of open-r1's reward functions (cosine, repetition_penalty, code), which this repository "
    "does not have (see rewards.py): delete the key"
)
NO_EQUIVALENT = {
    "vllm_device": "was removed from TRL (0.18): the vLLM server chooses its GPUs (`python -m open_r1_egsw.cli.launch "
    "serve`, or vllm_mode: colocate); delete the key",
    "dataset_mixture": "is not supported here: build the mixture with `datasets` (concatenate_datasets + "
    "save_to_disk) and point dataset_name at the saved folder",
    "callbacks": "names open-r1's hub callbacks, which this repository does not have; delete the key "
    "(push_to_hub and hub_strategy still work)",
    "benchmarks": "names open-r1's post-training evaluation jobs; run `make evaluate` after training instead",
    "hub_model_revision": "is open-r1's branch for pushes; use hub_revision",
    **{
        key: _REWARD_PARAM
        for key in (
            "cosine_min_value_wrong",
            "cosine_max_value_wrong",
            "cosine_min_value_correct",
            "cosine_max_value_correct",
            "cosine_max_len",
            "repetition_n_grams",
            "repetition_max_penalty",
            "code_language",
            "code_eval_test_batch_size",
            "code_eval_scoring_mode",
            "parallel_code_exec_per_proc",
            "code_provider",
            "ioi_provider",
            "e2b_router_url",
            "morph_router_url",
            "enforce_same_language",
        )
    },
}


def notice(message: str) -> None:
    """One `notice:` line on stderr, from the main process only (RANK/LOCAL_RANK unset or 0)."""
    if os.environ.get("RANK", "0") == "0" and os.environ.get("LOCAL_RANK", "0") == "0":
        print(f"notice: {message}", file=sys.stderr, flush=True)  # noqa: T201


def translate_open_r1(config: dict, known: set[str], source: str) -> dict:
    """Map the open-r1 keys of a recipe mapping to this repository's (see the module docstring).

    Args:
        config: the recipe's top-level mapping, as loaded from YAML.
        known: every field name of the dataclasses the recipe is parsed into.
        source: the recipe's path, for messages.

    Returns a new mapping; raises ConfigError for a key with no equivalent, or an old key given beside its new one.
    """
    out = {}
    for key, value in config.items():
        if key == "reward_funcs" and isinstance(value, list) and set(value) & set(REWARD_NAMES):
            out[key] = [REWARD_NAMES.get(name, name) for name in value]
            for name in sorted(set(value) & set(REWARD_NAMES)):
                notice(f"reward function {name} is {REWARD_NAMES[name]} here: read as {REWARD_NAMES[name]}")
        elif key in known:
            out[key] = value
        elif key in NO_EQUIVALENT:
            raise ConfigError(f"recipe key {key} ({source}) {NO_EQUIVALENT[key]}.")
        elif key in RENAMED and RENAMED[key] in known:
            new = RENAMED[key]
            _set_once(out, config, key, new, value, source)
            notice(f"recipe key {key} is {new} in the pinned TRL/transformers: read as {new}: {value!r}")
        elif key == "warmup_ratio" and "warmup_steps" in known:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ConfigError(f"recipe key warmup_ratio ({source}): got {value!r}; it accepts a ratio in [0, 1).")
            _set_once(out, config, key, "warmup_steps", float(value), source)
            notice(
                f"recipe key warmup_ratio is warmup_steps as a ratio in transformers 5 (a value < 1 is a fraction of "
                f"the total steps): read as warmup_steps: {float(value)!r}"
            )
        elif key == "dataset_configs" and "dataset_config" in known:
            if not (isinstance(value, list) and len(value) == 1 and isinstance(value[0], str)):
                raise ConfigError(
                    f"recipe key dataset_configs ({source}): got {value!r}; only a list of one data set config "
                    "is supported here (dataset_config: NAME)."
                )
            _set_once(out, config, key, "dataset_config", value[0], source)
            notice(f"recipe key dataset_configs is dataset_config here: read as dataset_config: {value[0]!r}")
        elif key in WANDB_ENV:
            variable = WANDB_ENV[key]
            if not isinstance(value, str):
                raise ConfigError(f"recipe key {key} ({source}): got {value!r}; it accepts a string.")
            if variable in os.environ and os.environ[variable] != value:
                notice(f"recipe key {key}: {variable} is already set ({os.environ[variable]!r}), which wins")
            else:
                os.environ[variable] = value
                notice(f"recipe key {key} is the environment variable {variable} here: set to {value!r}")
        else:
            out[key] = value  # unknown: the parser names it
    return out


def _set_once(out: dict, config: dict, old: str, new: str, value, source: str) -> None:
    if new in config:
        raise ConfigError(f"recipe keys {old} and {new} ({source}) set the same thing; keep only {new}.")
    out[new] = value
