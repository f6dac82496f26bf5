"""Misbehaving reward functions: one `error:` line naming the function and the problem (exit 2), checkpoints already
written intact; None for every completion behaves as TRL 1.16 documents (that reward is left out; a completion that
every reward leaves out gets advantage 0, with TRL's warning)."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file
from test_grpo import ROOT, error_line, run, tiny_args

from open_r1_egsw.errors import ConfigError, cli_entry
from open_r1_egsw.training.checkpoints import checkpoint_problem, last_complete_checkpoint
from open_r1_egsw.training.outputs import read_metrics
from open_r1_egsw.training.rewards import REWARD_FUNCS_REGISTRY, RewardError, check_rewards, get_reward_funcs

HELPER = ROOT / "tests/helpers/run_grpo.py"


def bad_run(assets, out, kind, *extra):
    return run(HELPER, "--bad-reward", kind, "--bad-from-call", "3", "--",
               *tiny_args(assets, out, "--reward_funcs", "accuracy", "bad", "--reward_weights", "1.0", "1.0", *extra))  # fmt: skip


@pytest.mark.parametrize(
    ("values", "expected", "message"),
    [
        (
            [0.1, math.nan],
            2,
            "reward function 'r' returned nan for completion 1 of 2; return a finite number, or None",
        ),
        ([0.1, math.inf], 2, "returned inf for completion 1 of 2"),
        ([0.1], 2, "reward function 'r' returned 1 values for 2 completions"),
        (0.5, 2, "reward function 'r' returned float, not a list of one value per completion"),
        ("0.5", 2, "returned str, not a list"),
        ([0.1, "x"], 2, "returned str 'x' for completion 1; a reward is a number, or None"),
        ([True, 0.0], 2, "returned bool True for completion 0"),
    ],
)
def test_check_rewards_names_function_and_problem(values, expected, message):
    with pytest.raises(RewardError) as err:
        check_rewards("r", values, expected)
    assert message in str(err.value)


def test_none_and_numbers_pass_through():
    assert check_rewards("r", [None, None], 2) == [None, None]
    assert check_rewards("r", (1, 0.5, None), 3) == [1, 0.5, None]


def test_a_raising_builtin_reward_is_named():
    """A data problem inside a built-in reward (a gold column of the wrong length) is a RewardError naming it."""
    (accuracy,) = get_reward_funcs(["accuracy"])
    with pytest.raises(RewardError, match=r"reward function 'accuracy' raised ValueError"):
        accuracy(completions=["a", "b"], answer=["1"])


@pytest.mark.parametrize(
    ("names", "params", "message"),
    [
        (["acuracy"], {}, "error: Unknown reward function 'acuracy'. Known: accuracy, format"),
        (["format", "format"], {}, "error: Reward functions selected more than once: format"),
        (
            ["format"],
            {"soft_punish_cach": 2},
            "error: Reward parameters accepted by no reward factory: soft_punish_cach",
        ),
        (["soft_overlong"], {"max_completion_len": 10}, "error: Reward 'soft_overlong' is built by get_soft_overlong"),
        (["soft_overlong"], {"max_completion_len": 0, "soft_punish_cache": 0}, "error: max_completion_len must be a"),
        (["soft_overlong"], {"max_completion_len": 10, "soft_punish_cache": 20}, "error: soft_punish_cache must be"),
    ],
)
def test_reward_configuration_errors_are_config_errors(capsys, names, params, message):
    """A wrong reward name or parameter is a ConfigError (not a ValueError told apart by the file that raised it):
    one `error:` line and exit 2 through cli_entry."""
    with pytest.raises(ConfigError) as err:
        get_reward_funcs(names, **params)
    assert type(err.value) is ConfigError

    @cli_entry
    def main(argv):
        get_reward_funcs(names, **params)
        return 0

    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), lines


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("raise", "reward function 'bad' raised ZeroDivisionError: division by zero (training step 3)"),
        ("nan", "reward function 'bad' returned nan for completion 7 of 8"),
        ("short", "reward function 'bad' returned 7 values for 8 completions (training step 3)"),
    ],
)
def test_bad_reward_stops_with_one_line_and_checkpoints_intact(tiny_assets, tmp_path, kind, message):
    """The reward misbehaves from its 3rd call (step 3): one line, exit 2; checkpoint-1 and -2 complete and loadable."""
    out = tmp_path / "o"
    line = error_line(bad_run(tiny_assets, out, kind, "--max_steps", "4", "--save_strategy", "steps", "--save_steps",
                              "1"))  # fmt: skip
    assert message in line, line
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert checkpoint_problem(out / "checkpoint-2") is None
    assert last_complete_checkpoint(out)[0] == out / "checkpoint-2"
    assert load_file(out / "checkpoint-2/model.safetensors")
    assert not (out / "model.safetensors").exists()  # no final model was written over anything


@pytest.mark.slow
def test_none_for_every_completion_is_trls_not_applicable(tiny_assets, tmp_path):
    """`bad` returns None for all completions from step 1, beside `chars` (len(text) / 64, a reward the random tiny
    model varies on): TRL leaves `bad` out, `rewards/bad/mean` is NaN (null in metrics.jsonl), `reward` is the chars
    reward alone, and the model trains. As the only reward, every completion is unscorable: TRL warns, advantages
    are 0, and with beta 0 and no weight decay the weights do not move at all."""
    out = tmp_path / "with_chars"
    proc = run(HELPER, "--chars-reward", "--bad-reward", "none", "--", *tiny_args(tiny_assets, out, "--reward_funcs",
               "chars", "bad", "--reward_weights", "1.0", "1.0", "--learning_rate", "1e-3"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [r for r in read_metrics(out) if "reward" in r]
    assert len(records) == 2
    for record in records:
        assert record["rewards/bad/mean"] is None
        assert record["reward"] == pytest.approx(record["rewards/chars/mean"], rel=1e-6)
    before = load_file(f"{tiny_assets.base_model}/model.safetensors")
    trained = load_file(out / "model.safetensors")
    assert any(not torch.equal(before[k], trained[k]) for k in before)

    alone = tmp_path / "alone"
    proc = run(HELPER, "--bad-reward", "none", "--", *tiny_args(tiny_assets, alone, "--reward_funcs", "bad",
               "--reward_weights", "1.0", "--weight_decay", "0.0", "--learning_rate", "1e-3"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "All reward functions returned None" in proc.stdout + proc.stderr
    after = load_file(alone / "model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text(max_size=200), min_size=1, max_size=4), st.text(max_size=40))
def test_builtin_rewards_never_raise_through_the_checks(texts, gold):
    """Every registered built-in reward, called as TRL calls it (through NamedReward's checks), on any completions
    and any gold: one finite number or None per completion, never a RewardError."""
    funcs = get_reward_funcs(sorted(REWARD_FUNCS_REGISTRY), max_completion_len=64, soft_punish_cache=16)
    for completions in (texts, [[{"role": "assistant", "content": t}] for t in texts]):
        kwargs = {"answer": [gold] * len(texts), "completion_ids": [list(range(len(t))) for t in texts],
                  "prompts": ["q"] * len(texts)}  # fmt: skip
        for func in funcs:
            values = func(completions=completions, **kwargs)
            assert len(values) == len(texts), func.__name__
            assert all(v is None or math.isfinite(v) for v in values), func.__name__
