"""recipe_args checks only what TRL and transformers leave unchecked, and turns their own refusals into one line.

When a TRL upgrade starts checking a field that `RANGES` lists, or changes the values a `CHOICES` field takes, a test
here fails: the entry then goes, or follows TRL.
"""

import dataclasses
import math
import re
import typing
import warnings

import pytest
import yaml
from trl import GRPOConfig, ModelConfig

from open_r1_egsw.cli.recipe_args import CHOICES, RANGES, parse_recipe_args
from open_r1_egsw.errors import ConfigError
from open_r1_egsw.training.configs import EGSWConfig, GRPOScriptArguments

CLASSES = (GRPOScriptArguments, EGSWConfig, ModelConfig)
BASE = {
    GRPOScriptArguments: {"dataset_name": "some/data"},
    GRPOConfig: {"output_dir": "unused", "report_to": "none", "use_cpu": True},
    ModelConfig: {"model_name_or_path": "some/model"},
}
TRL_CHECKS = {"num_generations"}  # TRL refuses < 2 itself; the entry only says what the key accepts


def owner(name: str):
    """The class (GRPOConfig for TRL's and transformers' training fields) that declares field `name`."""
    for cls in BASE:
        if name in {f.name for f in dataclasses.fields(cls)}:
            return cls
    raise AssertionError(name)


def outside(name: str) -> list:
    """Values just outside the field's range in RANGES, as the field's type takes them."""
    low, high, low_in, high_in = RANGES[name]
    values = [low - 1 if low_in else low] + ([high + 1 if high_in else high] if high != math.inf else [])
    hint = typing.get_type_hints(owner(name))[name]
    return [int(v) for v in values] if float not in typing.get_args(hint) + (hint,) else [float(v) for v in values]


@pytest.mark.parametrize("name", sorted(set(RANGES) - TRL_CHECKS))
def test_every_range_is_one_the_classes_do_not_check(name):
    """Built directly, TRL's and transformers' classes accept each value RANGES refuses: the entry is needed."""
    cls = owner(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for value in outside(name):
            cls(**{**BASE[cls], name: value})


def test_num_generations_is_checked_by_trl():
    with pytest.raises(ValueError, match="at least 2 generations"):
        GRPOConfig(**BASE[GRPOConfig], num_generations=1)


@pytest.mark.parametrize("name", sorted(CHOICES))
def test_choices_are_the_values_trl_documents(name):
    """Each CHOICES entry lists the values the field's help quotes (TRL checks them only once training runs)."""
    help_text = next(f for f in dataclasses.fields(EGSWConfig) if f.name == name).metadata["help"]
    quoted = set(re.findall(r"[`']([a-z_]+)[`']", help_text))
    assert {c for c in CHOICES[name] if c.islower() and c not in ("true", "false")} <= quoted
    if name == "loss_type":
        supported = help_text.split("Supported values are")[1].split(".")[0]
        assert set(re.findall(r"'([a-z_]+)'", supported)) == set(CHOICES[name])


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ({"logging_steps": 0}, "logging_steps"),  # transformers: strategy "steps" needs a non-zero logging_steps
        ({"pad_to_multiple_of": "fuzz"}, "pad_to_multiple_of"),  # TRL parses the string itself
        ({"num_generations": 3}, "num_generations"),  # TRL: the generation batch holds whole groups
        ({"generation_batch_size": 12}, "generation_batch_size"),
        ({"egsw_temperature": 0}, "egsw_temperature"),  # EGSWConfig's own check
        ({"entropy_clip_max_frac": 2}, "entropy_clip_max_frac"),
    ],
)
def test_the_classes_own_refusals_are_one_line_naming_the_key(tmp_path, extra, key):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({**BASE[GRPOConfig], **BASE[ModelConfig], **BASE[GRPOScriptArguments], **extra}))
    with pytest.raises(ConfigError) as err:
        parse_recipe_args(CLASSES, ["--config", str(recipe)])
    assert key in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_values_transformers_gives_a_meaning_are_accepted(tmp_path):
    """eval_steps 0 with eval_strategy steps means "use logging_steps" in transformers; it is not refused here."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        yaml.safe_dump({**BASE[GRPOConfig], **BASE[ModelConfig], "eval_strategy": "steps", "eval_steps": 0})
    )
    _, training_args, _ = parse_recipe_args(CLASSES, ["--config", str(recipe)])
    assert training_args.eval_steps == training_args.logging_steps
