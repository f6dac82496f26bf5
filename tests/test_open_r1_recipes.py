"""open-r1 recipes run here (recipe_compat.py): renamed keys are mapped with one notice each, keys with no
equivalent stop with one line, chat_template and max_prompt_length keep open-r1's meaning, and launch.py checks a
recipe for the world size its run will have. The recipes are this repository's own (tests/data/open_r1), written
with open-r1's key names."""

import os
import shlex

import pytest
import yaml
from trl import ModelConfig

from open_r1_egsw.cli import launch
from open_r1_egsw.cli.recipe_args import parse_recipe_args
from open_r1_egsw.errors import ConfigError
from open_r1_egsw.training.configs import EGSWConfig, GRPOScriptArguments

DATA = os.path.join(os.path.dirname(__file__), "data", "open_r1")
QWEN = os.path.join(DATA, "qwen_math_7b_grpo.yaml")
DISTILL = os.path.join(DATA, "distill_chat_template.yaml")
CLASSES = (GRPOScriptArguments, EGSWConfig, ModelConfig)


@pytest.fixture(autouse=True)
def keep_wandb_env():
    """The wandb_* keys set WANDB_* variables (as open-r1 did): restore them after each test."""
    saved = {key: os.environ.get(key) for key in ("WANDB_PROJECT", "WANDB_ENTITY", "WANDB_RUN_GROUP")}
    for key in saved:
        os.environ.pop(key, None)
    yield
    for key, value in saved.items():
        os.environ.pop(key, None)
        if value is not None:
            os.environ[key] = value


def notices(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("notice: ")]


def test_open_r1_keys_are_mapped_once_each(capsys):
    argv = ["--config", QWEN, "--use_cpu", "true"]
    script_args, training_args, model_args = parse_recipe_args(CLASSES, argv, world_size=lambda values: 7)
    assert model_args.dtype == "bfloat16"  # torch_dtype
    assert training_args.warmup_steps == 0.1  # warmup_ratio: a float < 1 is a ratio in transformers 5.17
    assert training_args.get_warmup_steps(1000) == 100
    assert training_args.max_prompt_length == 650
    assert os.environ["WANDB_PROJECT"] == "open-r1-math-rl"
    lines = notices(capsys.readouterr().err)
    assert len(lines) == 3, lines
    assert lines[0].startswith("notice: recipe key torch_dtype is dtype in the pinned TRL/transformers")
    assert any(line.startswith("notice: recipe key warmup_ratio is warmup_steps as a ratio") for line in lines)
    assert any("WANDB_PROJECT" in line for line in lines)


def test_launch_renders_the_7b_recipe_for_8_gpus_with_7_trainers(capsys):
    """vLLM server on the 8th GPU, 7 training processes: the eval batch is 16 x 7 = 112, divisible by 7."""
    assert launch.main(["train", "--recipe", QWEN, "--device", "cuda", "--gpus", "8"]) == 0
    out, err = capsys.readouterr()
    command = shlex.split(out.strip().splitlines()[-1])
    assert command[command.index("--num_processes") + 1] == "7"
    assert "CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6" in command
    assert len(notices(err)) == 3  # one per mapping, not one per parse


def test_launch_still_refuses_a_world_size_that_cannot_work(capsys):
    """With 2 GPUs (1 trainer + the server) the same recipe is refused, for the world size of that run (1)."""
    with pytest.raises(SystemExit) as exit_info:
        launch.main(["train", "--recipe", QWEN, "--device", "cuda", "--gpus", "2"])
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "global eval batch size (16 * 1)" in errors[0], errors


def test_slurm_plan_checks_the_planned_world_size(capsys):
    """slurm-plan, 2 nodes of 8 GPUs, server on the second node: 8 trainers; 16 x 8 = 128 is not divisible by 7,
    14 x 8 = 112 is."""
    with pytest.raises(SystemExit):
        launch.main(["slurm-plan", "--recipe", QWEN, "--nodes", "2", "--gpus-per-node", "8"])
    assert "global eval batch size (16 * 8)" in capsys.readouterr().err
    assert launch.main(["slurm-plan", "--recipe", QWEN, "--nodes", "2", "--gpus-per-node", "8", "--",
                        "--per_device_eval_batch_size", "14", "--per_device_train_batch_size", "14"]) == 0  # fmt: skip
    assert "NUM_PROCESSES=8" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"vllm_device": "auto"}, "recipe key vllm_device (%s) was removed from TRL (0.18): the vLLM server chooses"),
        ({"dataset_mixture": {"datasets": []}}, "recipe key dataset_mixture (%s) is not supported here"),
        ({"cosine_max_len": 1000}, "recipe key cosine_max_len (%s) is a parameter of one of open-r1's reward"),
        ({"dtype": "float16"}, "recipe keys torch_dtype and dtype (%s) set the same thing; keep only dtype"),
        ({"warmup_ratio": 1.5}, "recipe key warmup_ratio (%s): got 1.5; it accepts a ratio in [0, 1)"),
        ({"nonsense_key": 1}, "unknown recipe key 'nonsense_key' in %s"),
    ],
)
def test_keys_without_equivalent_stop_with_one_line(tmp_path, capsys, extra, message):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({**yaml.safe_load(open(QWEN)), **extra}))
    with pytest.raises(SystemExit) as exit_info:
        launch.main(["train", "--recipe", str(recipe), "--device", "cuda", "--gpus", "8"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert errors == [errors[0]] and (message % recipe) in errors[0], errors
    assert "Traceback" not in err


def test_chat_template_and_max_prompt_length_work_as_in_open_r1(tiny_assets, tmp_path, capsys):
    """The recipe's chat_template becomes the tokenizer's; prompts keep their last max_prompt_length tokens, as
    TRL 0.18's `prompt_ids[:, -max_prompt_length:]` did."""
    from open_r1_egsw.grpo import build_trainer

    recipe = tmp_path / "distill.yaml"
    text = (
        open(DISTILL)
        .read()
        .replace("model_name_or_path: PLACEHOLDER", f"model_name_or_path: {tiny_assets.base_model}")
    )
    text = text.replace("dataset_name: PLACEHOLDER", f"dataset_name: {tiny_assets.data}")
    recipe.write_text(text.replace("output_dir: PLACEHOLDER", f"output_dir: {tmp_path / 'out'}"))
    script_args, training_args, model_args = parse_recipe_args(CLASSES, ["--config", str(recipe)])
    assert script_args.dataset_config == "default" and training_args.gradient_checkpointing is False
    lines = notices(capsys.readouterr().err)
    assert {line.split()[3] for line in lines} == {"torch_dtype", "dataset_configs", "activation_checkpointing",
                                                   "warmup_ratio"}  # fmt: skip
    trainer, _ = build_trainer(script_args, training_args, model_args)
    tokenizer = trainer.processing_class
    assert tokenizer.chat_template == yaml.safe_load(open(DISTILL))["chat_template"]
    prompt = [{"role": "user", "content": "What is 12 + 35? Answer with the sum and nothing else, please."}]
    full = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)
    full_ids = list(full["input_ids"])
    assert tokenizer.decode(full_ids).startswith("<|user|>What is 12 + 35?")
    assert tokenizer.decode(full_ids).endswith("<|assistant|><think>\n")
    assert len(full_ids) > 12
    (ids,), _, _ = trainer._tokenize_prompts([prompt])
    assert list(ids) == full_ids[-12:]
    training_args.max_prompt_length = None
    (ids,), _, _ = trainer._tokenize_prompts([prompt])
    assert list(ids) == full_ids


def test_max_prompt_length_must_be_positive(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"output_dir: {tmp_path}\nreport_to: none\nuse_cpu: true\nmax_prompt_length: 0\n")
    with pytest.raises(ConfigError, match=r"max_prompt_length: got 0; it accepts an integer >= 1, or null"):
        parse_recipe_args(CLASSES, ["--config", str(recipe)])


def render_or_error(capsys, *argv: str) -> tuple[int, str]:
    """(exit code, everything printed, or the one error line) of launch.py, in-process."""
    try:
        code = launch.main(list(argv))
    except SystemExit as exit_info:
        code = exit_info.code
    out, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    return code, (errors[0] if errors else out)


def test_every_batch_check_uses_the_runs_world_size(capsys, monkeypatch):
    """open-r1's recipe (7 generations, eval batch 16, do_eval) on one 8-GPU node. Server mode: 7 trainers, so the
    training command, the Slurm plan and the server (its own recipe read) all accept it (16 x 7 = 112). Colocate: 8
    trainers; 16 x 8 = 128 is not divisible by 7, and every check says (16 * 8), as the run itself would. A server for
    8 trainers on other nodes (train.slurm passes --train-processes) is checked for those 8."""
    for name in ("CUDA_VISIBLE_DEVICES", "SLURM_GPUS_ON_NODE", "SLURM_JOB_GPUS", "SLURM_STEP_GPUS"):
        monkeypatch.delenv(name, raising=False)
    gpu8, plan = ["--device", "cuda", "--gpus", "8"], ["--device", "cuda", "--nodes", "1", "--gpus-per-node", "8"]
    code, command = render_or_error(capsys, "train", "--recipe", QWEN, *gpu8)
    assert code == 0 and "--num_processes 7" in command
    code, command = render_or_error(capsys, "slurm-plan", "--recipe", QWEN, *plan)
    assert code == 0 and "NUM_PROCESSES=7\n" in command
    code, command = render_or_error(capsys, "serve", "--recipe", QWEN, *gpu8)
    assert code == 0 and "CUDA_VISIBLE_DEVICES=7" in command
    code, command = render_or_error(capsys, "serve", "--recipe", QWEN, *gpu8, "--train-processes", "7")
    assert code == 0
    colocate_error = "global eval batch size (16 * 8) must be divisible by the number of generations used for " \
                     "evaluation (7)"  # fmt: skip
    for argv in (["train", "--recipe", QWEN, *gpu8, "--vllm-mode", "colocate"],
                 ["slurm-plan", "--recipe", QWEN, *plan, "--vllm-mode", "colocate"],
                 ["serve", "--recipe", QWEN, *gpu8, "--gpu-slots", "7", "--train-processes", "8"]):  # fmt: skip
        code, line = render_or_error(capsys, *argv)
        assert code == 2 and colocate_error in line, (argv, line)
    batch14 = ["--", "--per_device_eval_batch_size", "14", "--per_device_train_batch_size", "14"]
    code, command = render_or_error(capsys, "train", "--recipe", QWEN, *gpu8, "--vllm-mode", "colocate", *batch14)
    assert code == 0 and "--num_processes 8" in command  # 14 x 8 = 112


def test_soft_overlong_keys_configure_the_reward(tmp_path, capsys):
    """open-r1's max_completion_len and soft_punish_cache are recipe keys (file or flag) that reach the reward:
    L_max = 100 with L_cache 20 (free up to 80) or 40 (free up to 60), hand-computed on 60, 70, 90, 100, 101 tokens."""
    from open_r1_egsw.cli.recipe_compat import NO_EQUIVALENT
    from open_r1_egsw.training.rewards import get_reward_funcs

    assert not {"max_completion_len", "soft_punish_cache"} & set(NO_EQUIVALENT)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"output_dir: {tmp_path}\nreport_to: none\nuse_cpu: true\nmax_completion_length: 100\n"
        "reward_funcs: [accuracy, soft_overlong]\nmax_completion_len: 100\nsoft_punish_cache: 20\n"
    )
    ids = [[1] * n for n in (60, 70, 90, 100, 101)]
    expected = {20: [0.0, 0.0, -0.5, -1.0, -1.0], 40: [0.0, -0.25, -0.75, -1.0, -1.0]}
    for flags, cache in (([], 20), (["--soft_punish_cache", "40"], 40)):
        script_args, training_args, _ = parse_recipe_args(CLASSES, ["--config", str(recipe), *flags])
        assert (script_args.max_completion_len, script_args.soft_punish_cache) == (100, cache)
        accuracy, overlong = get_reward_funcs(script_args, max_completion_length=training_args.max_completion_length)
        assert overlong.__name__ == "soft_overlong"
        assert overlong(["x"] * len(ids), completion_ids=ids) == pytest.approx(expected[cache], abs=1e-12)
    assert not notices(capsys.readouterr().err)  # the keys need no mapping


def test_open_r1_recipe_with_reward_keys_parses(tmp_path, capsys):
    """open-r1's recipe plus its soft overlong keys parses with no error and no extra notice; the keys' defaults are
    open-r1's (16384, 4096), which cannot punish the recipe's 1024-token completions: refused when selected."""
    from open_r1_egsw.training.rewards import get_reward_funcs

    recipe = tmp_path / "r.yaml"
    config = yaml.safe_load(open(QWEN))
    recipe.write_text(yaml.safe_dump({**config, "max_completion_len": 1024, "soft_punish_cache": 256}))
    argv = ["--config", str(recipe), "--use_cpu", "true"]
    script_args, training_args, _ = parse_recipe_args(CLASSES, argv, world_size=lambda values: 7)
    assert (script_args.max_completion_len, script_args.soft_punish_cache) == (1024, 256)
    assert len(notices(capsys.readouterr().err)) == 3  # torch_dtype, warmup_ratio, wandb_project: as before
    script_args.reward_funcs = ["accuracy", "soft_overlong"]
    assert len(get_reward_funcs(script_args, max_completion_length=training_args.max_completion_length)) == 2
    defaults = GRPOScriptArguments()
    assert (defaults.max_completion_len, defaults.soft_punish_cache) == (16384, 4096)
    script_args.max_completion_len, script_args.soft_punish_cache = 16384, 4096
    with pytest.raises(
        ConfigError, match="never punishes.*Set max_completion_len to 1024, with a positive soft_punish_cache"
    ):
        get_reward_funcs(script_args, max_completion_length=training_args.max_completion_length)


def test_open_r1_reward_name_is_mapped(tmp_path, capsys):
    """open-r1's `soft_overlong_punishment` in a recipe's reward_funcs is read as `soft_overlong`, with one notice,
    and builds the same reward as our name does."""
    from open_r1_egsw.training.rewards import get_reward_funcs

    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"output_dir: {tmp_path}\nreport_to: none\nuse_cpu: true\nmax_completion_length: 100\n"
        "reward_funcs: [accuracy, soft_overlong_punishment]\nreward_weights: [1.0, 0.5]\n"
        "max_completion_len: 100\nsoft_punish_cache: 20\n"
    )
    script_args, training_args, _ = parse_recipe_args(CLASSES, ["--config", str(recipe)])
    assert script_args.reward_funcs == ["accuracy", "soft_overlong"]
    assert notices(capsys.readouterr().err) == [
        "notice: reward function soft_overlong_punishment is soft_overlong here: read as soft_overlong"
    ]
    overlong = get_reward_funcs(script_args, max_completion_length=training_args.max_completion_length)[1]
    assert overlong(["x"] * 2, completion_ids=[[1] * 90, [1] * 80]) == pytest.approx([-0.5, 0.0], abs=1e-12)
