"""grpo.py / sft.py as a user runs them: bad input gives one clear line, and the tiny pipeline trains end to end."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM

from open_r1_egsw.errors import ConfigError
from open_r1_egsw.training.data import load_dataset_any
from open_r1_egsw.training.outputs import read_metrics

ROOT = Path(__file__).resolve().parents[1]
GRPO = ROOT / "src/open_r1_egsw/grpo.py"
SFT = ROOT / "src/open_r1_egsw/sft.py"
RECIPE = ROOT / "recipes/tiny/egsw/config.yaml"


def run(script, *args, timeout=600):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=ROOT)  # fmt: skip


def tiny_args(assets, out_dir, *extra):
    """The tiny EGSW recipe, pointed at the session's assets, a few small steps."""
    return [
        "--config", RECIPE, "--model_name_or_path", assets.base_model, "--dataset_name", assets.data,
        "--output_dir", out_dir, "--max_steps", "2", "--per_device_train_batch_size", "8", "--num_generations", "4",
        "--max_completion_length", "8", "--eval_accuracy_samples", "0", "--logging_steps", "1", *extra,
    ]  # fmt: skip


def error_line(proc):
    """The single `error: ...` line a user error must produce."""
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    return lines[0]


def test_unknown_recipe_path():
    """A recipe that does not exist is named."""
    assert "recipe not found: 'recipes/nope.yaml'" in error_line(run(GRPO, "--config", "recipes/nope.yaml"))


def test_unknown_reward_lists_known(tiny_assets, tmp_path):
    """An unknown reward name lists the registered ones."""
    line = error_line(run(GRPO, *tiny_args(tiny_assets, tmp_path / "o", "--reward_funcs", "acuracy")))
    assert "Unknown reward function 'acuracy'" in line and "accuracy" in line and "format" in line


def test_missing_column_names_column_and_dataset(tiny_assets, tmp_path):
    """A prompt column the data set lacks is named with the data set and its real columns."""
    line = error_line(run(GRPO, *tiny_args(tiny_assets, tmp_path / "o", "--dataset_prompt_column", "question")))
    assert "'question'" in line and str(tiny_assets.data) in line and "problem" in line


def test_missing_dataset_path(tmp_path, tiny_assets):
    """A local data set path that does not exist is named."""
    line = error_line(run(GRPO, *tiny_args(tiny_assets, tmp_path / "o", "--dataset_name", "./no/such/data")))
    assert "dataset_name: no such file or directory: ./no/such/data" in line


def test_dataset_config_the_loader_refuses_is_one_error(tmp_path):
    """What `datasets` refuses with a ValueError (here an unknown config) is a ConfigError naming the data set."""
    (tmp_path / "train.jsonl").write_text('{"problem": "1 + 1", "solution": "2"}\n')
    with pytest.raises(ConfigError, match=r"dataset_config 'nope'\): BuilderConfig 'nope' not found"):
        load_dataset_any(str(tmp_path), "nope")


def test_non_numeric_hyper_parameter(tiny_assets, tmp_path):
    """A non-numeric learning rate in the recipe names the key."""
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(RECIPE.read_text().replace("learning_rate:", "learning_rate: fast  #"))
    args = tiny_args(tiny_assets, tmp_path / "o")
    args[1] = recipe
    proc = run(GRPO, *args)
    assert proc.returncode != 0
    assert "learning_rate" in proc.stderr and "invalid float value: 'fast'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_egsw_value_names_the_field(tiny_assets, tmp_path):
    """EGSW validation reaches the user as one line naming the field."""
    assert "egsw_temperature" in error_line(
        run(GRPO, *tiny_args(tiny_assets, tmp_path / "o", "--egsw_temperature", "0"))
    )


def test_existing_output_dir_is_not_overwritten(tiny_assets, tmp_path):
    """A non-empty output_dir is refused without overwrite_output_dir, and its files survive."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    line = error_line(run(GRPO, *tiny_args(tiny_assets, out, "--overwrite_output_dir", "false")))
    assert "overwrite_output_dir" in line and str(out) in line
    assert (out / "keep.txt").read_text() == "precious"


@pytest.mark.slow
def test_tiny_pipeline_end_to_end(tiny_assets, tmp_path):
    """SFT warm start, then GRPO+EGSW a few steps: checkpoint reloads, metrics are finite, accuracy is reported."""
    sft_out = tmp_path / "sft"
    proc = run(SFT, "--config", ROOT / "recipes/tiny/sft/config.yaml", "--model_name_or_path", tiny_assets.base_model,
               "--dataset_name", tiny_assets.data, "--output_dir", sft_out, "--max_steps", "3")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    grpo_out = tmp_path / "grpo"
    args = tiny_args(tiny_assets, grpo_out, "--save_strategy", "steps", "--save_steps", "2", "--eval_accuracy_samples",
                     "4", "--eval_max_new_tokens", "8")  # fmt: skip
    args[3] = sft_out  # model_name_or_path: the warm start
    proc = run(GRPO, *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "accuracy before training (greedy, 4 test rows):" in proc.stdout
    assert "accuracy after training (greedy, 4 test rows):" in proc.stdout
    for path in (grpo_out, grpo_out / "checkpoint-2"):
        model = AutoModelForCausalLM.from_pretrained(path)
        assert model.config.model_type == "qwen2"
    records = [r for r in read_metrics(grpo_out) if "reward" in r]
    assert len(records) == 2
    for record in records:
        for key in ("reward", "rewards/accuracy/mean", "entropy", "egsw/ess", "egsw/entropy_mean"):
            assert record[key] is not None and math.isfinite(record[key]), key
    accuracy = json.loads((grpo_out / "accuracy.json").read_text())
    assert 0.0 <= accuracy["accuracy_before"] <= 1.0 and accuracy["accuracy_rows"] == 4
