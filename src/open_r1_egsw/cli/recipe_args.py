"""Reading a recipe (`--config R.yaml` plus flag overrides) into the entry point's dataclasses, every value checked.

TRL's `TrlParser` sets the YAML values as argparse defaults, and argparse converts only string defaults: a YAML
`null`, list or mapping would reach the dataclass untouched and fail deep in `__post_init__` with a raw TypeError.
So every value the user set (in the file or as a flag) is first checked against its field's type hint: numbers are
finite and >= 0 unless `RANGES` or `SIGNED` say otherwise, and a string takes the `choices` of its field's metadata,
or `CHOICES`. Then the classes are built, and what their own `__post_init__` refuses (TRL's, transformers' and
`EGSWConfig`'s checks) becomes one ConfigError naming the key: every error here is one line, exit 2 (`cli_entry`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import enum
import json
import math
import os
import sys
import types
import typing

import yaml

from open_r1_egsw.cli.recipe_compat import translate_open_r1
from open_r1_egsw.errors import ConfigError

INF = math.inf
# Ranges that TRL and transformers do not check when the config is built (a value outside fails later in training,
# or silently does something else): field -> (low, high, low_inclusive, high_inclusive). `num_generations` TRL does
# check, with a message that names no key (0: a ZeroDivisionError); the entry says what it accepts.
RANGES = {
    "max_steps": (-1, INF, True, True),  # -1: use num_train_epochs
    "local_rank": (-1, INF, True, True),  # -1: not distributed
    "seed": (0, 2**32 - 1, True, True),
    "data_seed": (0, 2**32 - 1, True, True),
    "per_device_train_batch_size": (1, INF, True, True),
    "per_device_eval_batch_size": (1, INF, True, True),
    "gradient_accumulation_steps": (1, INF, True, True),
    "num_generations": (2, INF, True, True),
    "num_generations_eval": (1, INF, True, True),
    "num_iterations": (1, INF, True, True),
    "steps_per_generation": (1, INF, True, True),
    "generation_batch_size": (1, INF, True, True),
    "max_completion_length": (1, INF, True, True),
    "eval_max_new_tokens": (1, INF, True, True),
    "vllm_tensor_parallel_size": (1, INF, True, True),
    "vllm_server_port": (1, 65535, True, True),
    "vllm_group_port": (1, 65535, True, True),
    "ref_model_sync_steps": (1, INF, True, True),
    "lora_r": (1, INF, True, True),
    "ddp_timeout": (1, INF, True, True),
    "save_steps": (0, INF, False, True),
    "temperature": (0, INF, False, True),
    "repetition_penalty": (0, INF, False, True),
    "delta": (0, INF, False, True),
    "top_p": (0, 1, False, True),
    "min_p": (0, 1, True, True),
    "adam_beta1": (0, 1, True, False),
    "adam_beta2": (0, 1, True, False),
    "lora_dropout": (0, 1, True, True),
    "label_smoothing_factor": (0, 1, True, True),
    "vllm_gpu_memory_utilization": (0, 1, False, True),
    "top_entropy_quantile": (0, 1, True, True),
    "ref_model_mixup_alpha": (0, 1, True, True),
}
SIGNED = {"reward_weights", "entropy_target", "entropy_coef_delta"}  # any finite number
# str fields whose values TRL checks only once training runs (or never), and whose metadata lists no `choices`.
CHOICES = {
    "loss_type": ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo"),
    "scale_rewards": ("group", "batch", "none", "true", "false", "True", "False"),
    "importance_sampling_level": ("token", "sequence"),
    "vllm_mode": ("server", "colocate"),
    "vllm_model_impl": ("transformers", "vllm"),
    "multi_objective_aggregation": ("sum_then_normalize", "normalize_then_sum"),
    "vllm_importance_sampling_mode": ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask"),
    "include_num_input_tokens_seen": ("all", "non_padding", "no"),
}
NOT_NULL = {"num_generations"}  # typed `int | None` in TRL 1.16, but None fails its checks with a TypeError


class _Parser:
    """Wraps TRL's TrlParser so that argparse's own errors are ConfigErrors, not usage dumps."""

    def __new__(cls, dataclass_types):
        from trl import TrlParser

        class Parser(TrlParser):
            def error(self, message):
                raise ConfigError(message.replace("argument --", "recipe key or flag "))

        return Parser(dataclass_types)


def parse_recipe_args(dataclass_types: tuple, argv: list[str] | None = None, world_size=None) -> tuple:
    """Parse `--config <recipe.yaml>` plus flag overrides into `dataclass_types` (see the module docstring).

    `world_size`: for a process that only inspects a recipe (launch.py), a function of the merged values (a dict)
    giving the number of training processes the run will have; the classes' batch-size checks then use it instead of
    this process's world size (1).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    specs = _field_specs(dataclass_types)
    config, source = {}, "the command line"
    if "--config" in argv:
        index = argv.index("--config")
        source = argv[index + 1] if index + 1 < len(argv) else ""
        del argv[index : index + 2]
        config = _load_recipe(source)
    config = translate_open_r1(config, set(specs), source)
    unknown = [key for key in config if key not in specs]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, specs, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(
            f"unknown recipe key {key!r} in {source}{hint}: it is a field of none of "
            f"{', '.join(t.__name__ for t in dataclass_types)}."
        )
    parser = _Parser(dataclass_types)
    parser.set_defaults_with_config(**config)
    namespace, remaining = parser.parse_known_args(argv)
    if remaining:
        raise ConfigError(f"unrecognized arguments: {' '.join(remaining)}")
    values = vars(namespace)
    flags = {token[2:].split("=")[0] for token in argv if token.startswith("--")}
    flags |= {flag[3:] for flag in flags if flag.startswith("no_")}
    for name, (field, hint) in specs.items():
        if name in values and (name in config or name in flags):  # what the user set, in the file or as a flag
            values[name] = check_value(field, hint, values[name])
    user_keys = [name for name in specs if name in config or name in flags]
    with _world_size(None if world_size is None else world_size(values)):
        try:
            return _build(dataclass_types, values)
        except Exception as err:  # noqa: BLE001 (building config objects fails only on their values)
            message = " ".join(str(err).split()) or type(err).__name__
            if not any(key in message for key in user_keys):
                culprit = _culprit(dataclass_types, values, specs, user_keys)
                if culprit:
                    field, hint = specs[culprit]
                    accepts = _describe(field, _field_options(field, hint))
                    message = f"recipe key {culprit}: {message} (it accepts {accepts})"
            raise ConfigError(message) from None


def _build(dataclass_types, values: dict) -> tuple:
    outputs = []
    for dtype in dataclass_types:
        inputs = {f.name: values[f.name] for f in dataclasses.fields(dtype) if f.init and f.name in values}
        outputs.append(dtype(**inputs))
    return tuple(outputs)


def _culprit(dataclass_types, values: dict, specs: dict, user_keys: list[str]) -> str | None:
    """The first user-set key whose reverting to its default lets the classes build (an error that names no key)."""
    for key in user_keys:
        default = _default(specs[key][0])
        if default is dataclasses.MISSING:
            continue
        try:
            _build(dataclass_types, {**values, key: default})
        except Exception:  # noqa: BLE001
            continue
        return key
    return None


def _default(field):
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


@contextlib.contextmanager
def _world_size(size: int | None):
    """Make `TrainingArguments.world_size` return `size` meanwhile (None: leave it)."""
    if size is None:
        yield
        return
    from transformers import TrainingArguments

    original = TrainingArguments.__dict__["world_size"]
    TrainingArguments.world_size = property(lambda self: size)
    try:
        yield
    finally:
        TrainingArguments.world_size = original


def _load_recipe(path: str) -> dict:
    if not os.path.isfile(path):
        raise ConfigError(f"recipe not found: {path!r} (--config)")
    try:
        with open(path) as f:
            config = yaml.safe_load(f)
    except yaml.YAMLError as err:
        raise ConfigError(f"recipe {path} is not valid YAML: {' '.join(str(err).split())}") from None
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise ConfigError(f"recipe {path} must be a YAML mapping of key: value, got a {type(config).__name__}.")
    env = config.pop("env", {})
    if not isinstance(env, dict):
        raise ConfigError(f"recipe key env ({path}) must be a mapping of environment variables.")
    for key, value in env.items():
        os.environ[str(key)] = str(value)
    return config


def _field_specs(dataclass_types) -> dict[str, tuple]:
    specs = {}
    for dtype in dataclass_types:
        hints = typing.get_type_hints(dtype)
        for field in dataclasses.fields(dtype):
            if field.init:
                specs[field.name] = (field, hints[field.name])
    return specs


# ---------------------------------------------------------------------------------------------------------------
# One value against its field's type and range
# ---------------------------------------------------------------------------------------------------------------


def check_value(field: dataclasses.Field, hint, value):
    """The value to use for `field`, or ConfigError naming the key and what it accepts."""
    options = _field_options(field, hint)
    if value is None:
        if type(None) in options:
            return None
        raise ConfigError(f"recipe key {field.name}: got null; it accepts {_describe(field, options)}.")
    for option in options:
        ok, converted = _try(field, option, value)
        if ok:
            return converted
    raise ConfigError(f"recipe key {field.name}: got {_show(value)}; it accepts {_describe(field, options)}.")


def _field_options(field: dataclasses.Field, hint) -> list:
    """The types a field's value may take, from its hint, less those the classes reject anyway."""
    options = _options(hint)
    if any(isinstance(o, type) and issubclass(o, enum.Enum) for o in options):
        options = [o for o in options if o is not str]  # `SchedulerType | str`: the string must be a member's value
    if field.name in NOT_NULL:
        options = [o for o in options if o is not type(None)]
    return options


def _choices(field: dataclasses.Field) -> tuple:
    """The strings a str field accepts (empty: any): `CHOICES`, else the `choices` of its metadata."""
    return CHOICES.get(field.name) or tuple(field.metadata.get("choices", ()))


def _options(hint) -> list:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = []
        for arg in typing.get_args(hint):
            options += _options(arg)
        return options
    return [hint]


def _try(field: dataclasses.Field, option, value) -> tuple[bool, object]:
    name, origin = field.name, typing.get_origin(option)
    if option is type(None):
        return False, None
    if option is bool:
        return (isinstance(value, bool), value)
    if option is int:
        return (isinstance(value, int) and not isinstance(value, bool) and _in_range(name, value), value)
    if option is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and _in_range(name, value)
        return ok, float(value) if ok else None
    if option is str:
        choices = _choices(field)
        return (isinstance(value, str) and (not choices or value in choices), value)
    if origin is typing.Literal:
        return (value in typing.get_args(option), value)
    if isinstance(option, type) and issubclass(option, enum.Enum):
        values = [e.value for e in option]
        return (isinstance(value, (str, option)) and (value in values or value in list(option)), value)
    if origin is list:
        (item,) = typing.get_args(option) or (typing.Any,)
        if isinstance(value, str) and name != "reward_weights" and item is str:
            value = [value]  # `reward_funcs: accuracy` means a list of one
        if not isinstance(value, (list, tuple)):
            return False, None
        checked = []
        for element in value:
            ok, converted = (True, element) if item is typing.Any else _try(field, _options(item)[0], element)
            if not ok:
                return False, None
            checked.append(converted)
        return True, checked
    if origin is dict or option is dict:
        if isinstance(value, str):
            try:
                return isinstance(json.loads(value), dict), value
            except json.JSONDecodeError:
                return False, None
        return isinstance(value, dict), value
    return False, None  # an object type (ParallelismConfig, ...)


def _in_range(name: str, value) -> bool:
    if not math.isfinite(value):
        return False
    if name in SIGNED:
        return True
    low, high, low_in, high_in = RANGES.get(name, (0, INF, True, True))
    above = value >= low if low_in else value > low
    below = value <= high if high_in else value < high
    return above and below


def _describe(field: dataclasses.Field, options: list) -> str:
    name, words = field.name, []
    for option in options:
        origin = typing.get_origin(option)
        if option is type(None):
            words.append("null")
        elif option is bool:
            words.append("true or false")
        elif option in (int, float):
            kind = "an integer" if option is int else "a number"
            words.append(f"{kind} {_range_text(name)}" if name not in SIGNED else f"a finite {kind[2:]}")
        elif option is str:
            words.append(f"one of: {', '.join(_choices(field))}" if _choices(field) else "a string")
        elif origin is typing.Literal:
            words.append(" or ".join(map(repr, typing.get_args(option))))
        elif isinstance(option, type) and issubclass(option, enum.Enum):
            words.append(f"one of: {', '.join(str(e.value) for e in option)}")
        elif origin is list:
            (item,) = typing.get_args(option) or (typing.Any,)
            inner = {str: "strings", float: f"numbers {_range_text(name)}", int: "integers"}.get(item, "values")
            words.append(f"a list of {inner}")
        elif origin is dict or option is dict:
            words.append("a mapping (or its JSON string)")
        else:
            words.append(f"a {getattr(option, '__name__', option)} (an object, not from a recipe)")
    seen = []
    for word in words:
        if word not in seen:
            seen.append(word)
    return ", or ".join(seen)


def _range_text(name: str) -> str:
    if name in SIGNED:
        return "(finite)"
    low, high, low_in, high_in = RANGES.get(name, (0, INF, True, True))
    left = f"{'>=' if low_in else '>'} {low:g}"
    if high == INF:
        return left
    return f"in {'[' if low_in else '('}{low:g}, {high:g}{']' if high_in else ')'}"


def _show(value) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return f"a list {list(value)!r}"[:80]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return repr(value)[:80]
