"""Every recipe key, given a wrong value, is one `error:` line naming the key (recipe_args.py).

A generated fuzz over every init field of the three classes grpo.py parses into (GRPOScriptArguments, EGSWConfig,
ModelConfig), in-process so that it stays fast: each field gets null, a list, a mapping, a string, nan, 1e30 and a
negative number in an otherwise valid recipe. The outcome must be either a ConfigError whose one-line message names
the key, or acceptance, and acceptance only where the field's type admits that kind of value (derived from its type
hint, independently of the checker's code). Any other exception (the raw TypeError of `egsw_alpha: null` before
recipe_args existed) fails the test.
"""

import dataclasses
import math
import os
import subprocess
import sys
import types
import typing
from pathlib import Path

import pytest
import yaml
from trl import ModelConfig

from open_r1_egsw.cli.recipe_args import CHOICES, RANGES, SIGNED, parse_recipe_args
from open_r1_egsw.errors import ConfigError
from open_r1_egsw.training.configs import EGSWConfig, GRPOScriptArguments

ROOT = Path(__file__).resolve().parents[1]
CLASSES = (GRPOScriptArguments, EGSWConfig, ModelConfig)
WRONG = {"null": None, "list": [1, "x"], "mapping": {"a": 1}, "string": "fuzz", "nan": math.nan, "huge": 1e30,
         "negative": -3}  # fmt: skip
FIELDS = [(cls, f) for cls in CLASSES for f in dataclasses.fields(cls) if f.init]


def base_recipe(tmp_path) -> dict:
    return {"model_name_or_path": "some/model", "dataset_name": "some/data", "output_dir": str(tmp_path / "out"),
            "report_to": "none", "use_cpu": True}  # fmt: skip


def hint_options(cls, name) -> list:
    def flatten(hint):
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            return [o for a in typing.get_args(hint) for o in flatten(a)]
        return [hint]

    return flatten(typing.get_type_hints(cls)[name])


def admits(options: list, name: str, kind: str) -> bool:
    """Whether a field with these type options may accept the wrong-looking value of `kind`."""
    origins = {typing.get_origin(o) or o for o in options}
    if kind == "null":
        return type(None) in options
    if kind == "list":
        return list in origins
    if kind == "mapping":
        return dict in origins
    if kind == "string":
        return (str in options and name not in CHOICES) or list in origins  # a string is a list of one for lists
    if kind == "nan":
        return False
    low = RANGES.get(name, (0,))[0]
    if kind == "huge":
        return float in options and RANGES.get(name, (0, math.inf))[1] == math.inf
    if kind == "negative":
        return (float in options or int in options) and (name in SIGNED or low <= -3)
    raise AssertionError(kind)


def test_every_field_every_wrong_value(tmp_path):
    """No traceback for any (field, wrong value); errors name the key; acceptance only where the type admits it."""
    recipe = tmp_path / "r.yaml"
    accepted, refused = [], 0
    for cls, field in FIELDS:
        options = hint_options(cls, field.name)
        for kind, value in WRONG.items():
            recipe.write_text(yaml.safe_dump({**base_recipe(tmp_path), field.name: value}))
            try:
                parse_recipe_args(CLASSES, ["--config", str(recipe)])
            except ConfigError as err:
                message = str(err)
                assert field.name in message and "\n" not in message, (field.name, kind, message)
                refused += 1
                continue
            assert admits(options, field.name, kind), f"{field.name}={value!r} ({kind}) was accepted"
            accepted.append((field.name, kind))
    assert len(FIELDS) > 200  # all three classes, TRL's and transformers' fields included
    # Most combinations are wrong for their field; every field refuses at least nan.
    assert refused > 5 * len(FIELDS)
    assert not [name for name, kind in accepted if kind == "nan"]


@pytest.mark.parametrize(
    ("key", "value", "accepts"),
    [
        ("egsw_alpha", None, "a number >= 0"),
        ("egsw_alpha", math.nan, "a number >= 0"),
        ("gradient_accumulation_steps", [1, 2], "an integer >= 1"),
        ("num_generations", -1, "an integer >= 2"),
        ("learning_rate", {"a": 1}, "a number >= 0"),
        ("loss_type", "grpoo", "one of: grpo, dr_grpo"),
        ("top_p", 1e30, "in (0, 1]"),
        ("use_egsw", "maybe", "use_egsw"),
    ],
)
def test_message_says_what_the_key_accepts(tmp_path, key, value, accepts):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({**base_recipe(tmp_path), key: value}))
    with pytest.raises(ConfigError) as err:
        parse_recipe_args(CLASSES, ["--config", str(recipe)])
    assert key in str(err.value) and accepts in str(err.value), str(err.value)


def test_flags_are_checked_like_recipe_keys(tmp_path):
    """A flag override is checked too: `--egsw_alpha nan` is refused, `--egsw_alpha 0.5` is taken."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(base_recipe(tmp_path)))
    with pytest.raises(ConfigError, match="egsw_alpha"):
        parse_recipe_args(CLASSES, ["--config", str(recipe), "--egsw_alpha", "nan"])
    _, training_args, _ = parse_recipe_args(CLASSES, ["--config", str(recipe), "--egsw_alpha", "0.5"])
    assert training_args.egsw_alpha == 0.5


def test_yaml_strings_that_are_numbers_still_work(tmp_path):
    """PyYAML reads `3e-5` (no dot) as a string; argparse converts it, as before."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(base_recipe(tmp_path)) + "learning_rate: 3e-5\nreward_funcs: accuracy\n")
    script_args, training_args, _ = parse_recipe_args(CLASSES, ["--config", str(recipe)])
    assert training_args.learning_rate == 3e-5 and script_args.reward_funcs == ["accuracy"]


@pytest.mark.parametrize(("line", "key"), [("egsw_alpha: null", "egsw_alpha"),
                                           ("gradient_accumulation_steps: [1, 2]", "gradient_accumulation_steps"),
                                           ("num_generations: null", "num_generations")])  # fmt: skip
def test_grpo_cli_one_error_line_exit_2(tmp_path, line, key):
    """The three inputs of the issue, through grpo.py as a user runs it: exit 2, one `error:` line, no traceback."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(base_recipe(tmp_path)) + line + "\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([sys.executable, str(ROOT / "src/open_r1_egsw/grpo.py"), "--config", str(recipe)],
                          capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [x for x in proc.stderr.splitlines() if x.startswith("error: ")]
    assert len(errors) == 1 and key in errors[0] and "Traceback" not in proc.stderr, proc.stderr[-2000:]
