"""EGSWConfig: documented fields agree with the code, and invalid values fail at config time naming the field."""

import ast
import inspect
import re
from dataclasses import MISSING, fields

import pytest
import trl

from open_r1_egsw.errors import ConfigError
from open_r1_egsw.training import configs
from open_r1_egsw.training.configs import EGSWConfig, GRPOScriptArguments, SFTScriptArguments

NEW_FIELDS = [f for f in fields(EGSWConfig) if f.name not in {g.name for g in fields(trl.GRPOConfig)}]


def docstring_entries(cls) -> dict[str, str]:
    """name -> "defaults to `X`" text of each `name (`type`, *optional*, defaults to `X`):` docstring entry."""
    entries = {}
    for match in re.finditer(r"^\s{8}(\w+) \(`[^`]+`, \*optional\*, defaults to `([^`]*)`\):", cls.__doc__, re.M):
        entries[match.group(1)] = match.group(2)
    return entries


def test_every_new_field_is_documented_with_its_default():
    """Each field EGSWConfig adds has a docstring entry whose stated default equals the code's default."""
    documented = docstring_entries(EGSWConfig)
    assert {f.name for f in NEW_FIELDS} == set(documented)
    for field in NEW_FIELDS:
        assert field.default is not MISSING
        stated = documented[field.name]
        expected = {"None": None, "True": True, "False": False}.get(stated, stated)
        if isinstance(field.default, str):
            assert stated == f'"{field.default}"', field.name
        elif isinstance(field.default, bool) or field.default is None:
            assert expected == field.default, field.name
        else:
            assert float(stated) == field.default, field.name


def test_every_new_field_has_help():
    """Every added field (config and script arguments) has a non-empty help string."""
    own = NEW_FIELDS + [
        f for cls in (GRPOScriptArguments, SFTScriptArguments) for f in fields(cls)
        if f.name not in {g.name for g in fields(trl.ScriptArguments)}
    ]  # fmt: skip
    for field in own:
        assert field.metadata.get("help"), field.name


def test_docstring_check_would_catch_a_drift():
    """The parser above reads real entries (a mutated default is detected)."""
    doc = EGSWConfig.__doc__.replace("defaults to `0.3`", "defaults to `0.4`")
    assert re.search(r"egsw_alpha \(`float`, \*optional\*, defaults to `0.4`\)", doc)
    assert docstring_entries(EGSWConfig)["egsw_alpha"] == "0.3"


def test_module_has_no_print():
    """Config code reports through exceptions, never print."""
    tree = ast.parse(inspect.getsource(configs))
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "print"]


def make(**kwargs):
    return EGSWConfig(output_dir="unused", report_to="none", bf16=False, **kwargs)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"egsw_alpha": -1.0}, "egsw_alpha"),
        ({"egsw_alpha": float("nan")}, "egsw_alpha"),
        ({"egsw_temperature": 0.0}, "egsw_temperature"),
        ({"egsw_granularity": "step"}, "egsw_granularity"),
        ({"egsw_entropy_normalization": "log2"}, "egsw_entropy_normalization"),
        ({"egsw_weight_scale": "sum"}, "egsw_weight_scale"),
        ({"entropy_clip": "clip_x"}, "entropy_clip"),
        ({"entropy_clip_mu": -2.0}, "entropy_clip_mu"),
        ({"entropy_clip_max_frac": 1.5}, "entropy_clip_max_frac"),
        ({"egsw_controller": "reward"}, "egsw_controller"),
        ({"egsw_controller": "entropy"}, "use_egsw"),
        ({"egsw_controller_lr": 0.0}, "egsw_controller_lr"),
        ({"max_prompt_length": 0}, "max_prompt_length"),
        ({"use_egsw": True, "egsw_controller": "ess", "egsw_controller_min": 2.0, "egsw_controller_max": 1.0},
         "egsw_controller_min"),
        ({"entropy_clip": "clip_b", "loss_type": "cispo"}, "loss_type"),
    ],
)  # fmt: skip
def test_invalid_values_raise_naming_the_field(kwargs, field):
    """Invalid values raise ConfigError (a ValueError) at construction, naming the offending field."""
    with pytest.raises(ConfigError, match=field):
        make(**kwargs)


def test_choice_errors_list_the_accepted_values():
    """A bad choice lists what is accepted."""
    with pytest.raises(ValueError, match="choose one of: none, clip_b, clip_v"):
        make(entropy_clip="clipb")


def test_clip_mu_defaults_follow_the_paper():
    """entropy_clip_mu null resolves to 2.5 for clip_b and 8.5 for clip_v; an explicit value wins."""
    assert make(entropy_clip="clip_b").resolved_entropy_clip_mu == 2.5
    assert make(entropy_clip="clip_v").resolved_entropy_clip_mu == 8.5
    assert make(entropy_clip="clip_v", entropy_clip_mu=3.0).resolved_entropy_clip_mu == 3.0


@pytest.mark.parametrize("loss_type", configs.EGSW_LOSS_TYPES)
def test_supported_loss_types_accept_egsw_and_clipping(loss_type):
    """grpo, bnpo, dr_grpo and dapo combine with EGSW and clipping."""
    config = make(use_egsw=True, entropy_clip="clip_b", loss_type=loss_type)
    assert config.use_egsw and config.loss_type == loss_type
