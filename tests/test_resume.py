"""Kill and resume: a run SIGKILLed between checkpoints and resumed with `last` ends bit-exactly where an
uninterrupted run ends; partial checkpoints are never picked; a finished run is not retrained.

The tiny runs use TRL's buffered generations (steps_per_generation 2: one generation batch serves two optimizer
steps) and the adaptive EGSW controller, so that both the buffer and the controller's state cross the kill.
"""

import hashlib
import json
import shutil
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_grpo import GRPO, ROOT, error_line, run, tiny_args

from open_r1_egsw.cli.recipe_args import parse_recipe_args
from open_r1_egsw.errors import ConfigError
from open_r1_egsw.training.checkpoints import checkpoint_problem, last_complete_checkpoint, resolve_checkpoint
from open_r1_egsw.training.configs import EGSWConfig, GRPOScriptArguments
from open_r1_egsw.training.outputs import read_metrics

HELPER = ROOT / "tests/helpers/run_grpo.py"
RECIPE = ROOT / "recipes/tiny/egsw/config.yaml"
TIMING = ("step_time", "train_runtime", "train_samples_per_second", "train_steps_per_second", "epoch")


def resume_args(assets, out, *extra):
    return tiny_args(assets, out, "--max_steps", "6", "--save_strategy", "steps", "--save_steps", "2",
                     "--steps_per_generation", "2", "--egsw_controller", "entropy", "--seed", "7",
                     "--reward_funcs", "chars", "--reward_weights", "1.0", "--learning_rate", "1e-3", *extra)  # fmt: skip


def helper(*args):
    """grpo.py's CLI plus the `chars` reward (tests/helpers/run_grpo.py), so that the tiny random model learns."""
    if "--" not in args:
        args = ("--", *args)
    return run(HELPER, "--chars-reward", *args)


def train_records(out):
    return [r for r in read_metrics(out) if "loss" in r]


def same_without_timing(a: dict, b: dict) -> bool:
    return {k: v for k, v in a.items() if k not in TIMING} == {k: v for k, v in b.items() if k not in TIMING}


def assert_same_state(a: Path, b: Path):
    """Weights, optimizer, scheduler, RNG and EGSW controller state of two checkpoints are bit-identical."""
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key
    oa, ob = torch.load(a / "optimizer.pt", weights_only=False), torch.load(b / "optimizer.pt", weights_only=False)
    assert oa["param_groups"] == ob["param_groups"]
    for index, state in oa["state"].items():
        for key, value in state.items():
            assert torch.equal(value, ob["state"][index][key]), (index, key)
    assert json.loads((a / "egsw_controller_state.json").read_text()) == json.loads(
        (b / "egsw_controller_state.json").read_text()
    )
    ra, rb = torch.load(a / "rng_state.pth", weights_only=False), torch.load(b / "rng_state.pth", weights_only=False)
    assert torch.equal(ra["cpu"], rb["cpu"])


@pytest.mark.slow
def test_kill_and_resume_is_bit_exact(tiny_assets, tmp_path):
    """SIGKILL after step 3 (checkpoint-2 written, checkpoint-4 not), resume `last`: same state as no kill."""
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    proc = helper(*resume_args(tiny_assets, whole))
    assert proc.returncode == 0, proc.stderr[-3000:]
    moved = load_file(whole / "checkpoint-2/model.safetensors"), load_file(whole / "checkpoint-6/model.safetensors")
    assert any(not torch.equal(moved[0][k], moved[1][k]) for k in moved[0])  # the comparison below is not vacuous

    proc = helper("--kill-at-step", "3", "--", *resume_args(tiny_assets, killed))
    assert proc.returncode == -9, proc.stderr[-3000:]  # SIGKILL: no handler ran
    assert sorted(p.name for p in killed.glob("checkpoint-*")) == ["checkpoint-2"]
    assert [r["step"] for r in train_records(killed)] == [1, 2, 3]  # step 3 was logged, then the kill

    proc = helper(*resume_args(tiny_assets, killed, "--resume_from_checkpoint", "last"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("checkpoint-4", "checkpoint-6"):
        assert_same_state(whole / name, killed / name)
    final_a, final_b = load_file(whole / "model.safetensors"), load_file(killed / "model.safetensors")
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)  # the final model in output_dir
    # metrics.jsonl: every step once, in order, with the uninterrupted run's values
    a, b = train_records(whole), train_records(killed)
    assert [r["step"] for r in b] == [1, 2, 3, 4, 5, 6]
    for ra, rb in zip(a, b, strict=True):
        assert same_without_timing(ra, rb), (ra, rb)
    # one generation batch per two steps: TRL logs the generation's metrics (reward, egsw/*) at steps 1, 3, 5
    assert [r["step"] for r in b if r.get("egsw/ess") is not None] == [1, 3, 5]
    assert [r["egsw/alpha"] for r in a if "egsw/alpha" in r] == [r["egsw/alpha"] for r in b if "egsw/alpha" in r]

    # Re-submitting the finished run (a re-queued job): nothing trains, nothing is rewritten.
    digest = hashlib.sha256((killed / "model.safetensors").read_bytes()).hexdigest()
    metrics = (killed / "metrics.jsonl").read_text()
    proc = helper(*resume_args(tiny_assets, killed, "--resume_from_checkpoint", "last"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "holds a finished run (step 6): nothing to train" in proc.stdout
    assert hashlib.sha256((killed / "model.safetensors").read_bytes()).hexdigest() == digest
    assert (killed / "metrics.jsonl").read_text() == metrics
    assert not (killed / "checkpoint-7").exists()


@pytest.mark.slow
def test_resume_inside_a_generation_batch_is_inexact(tiny_assets, tmp_path):
    """Why checkpoints must fall on generation-batch boundaries: with the check bypassed, a checkpoint after step 3
    (inside the batch generated for steps 3-4) resumes into different weights at step 4, while the boundary
    checkpoint-2 resumes exactly (test above). TRL keeps the buffered batch in memory only, regenerates it on
    resume with the RNG state of step 3 and restarts its slicing at 0."""
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    args = ["--max_steps", "4", "--save_steps", "1"]
    proc = helper("--skip-alignment-check", "--", *resume_args(tiny_assets, whole, *args))
    assert proc.returncode == 0, proc.stderr[-3000:]
    resumed.mkdir()
    shutil.copytree(whole / "checkpoint-3", resumed / "checkpoint-3")
    proc = helper("--skip-alignment-check", "--", *resume_args(tiny_assets, resumed, *args,
                  "--resume_from_checkpoint", "last"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    wa, wb = load_file(whole / "checkpoint-4/model.safetensors"), load_file(resumed / "checkpoint-4/model.safetensors")
    assert any(not torch.equal(wa[k], wb[k]) for k in wa)


def test_save_steps_inside_a_generation_batch_is_refused(tmp_path):
    """save_steps x gradient_accumulation_steps must be a multiple of steps_per_generation x num_iterations."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"output_dir: {tmp_path}/o\nreport_to: none\nuse_cpu: true\nper_device_train_batch_size: 8\n"
                      "num_generations: 4\nsave_strategy: steps\nsteps_per_generation: 2\n")  # fmt: skip
    types = (GRPOScriptArguments, EGSWConfig)
    with pytest.raises(ConfigError, match=r"save_steps=3 puts checkpoints inside a generation batch.*multiple of 2"):
        parse_recipe_args(types, ["--config", str(recipe), "--save_steps", "3"])
    assert parse_recipe_args(types, ["--config", str(recipe), "--save_steps", "4"])[1].save_steps == 4
    # with gradient accumulation 2 every optimizer step ends a generation batch of 2 micro-batches
    parse_recipe_args(types, ["--config", str(recipe), "--save_steps", "3", "--gradient_accumulation_steps", "2"])


# ---------------------------------------------------------------- partial checkpoints (no training)


def fake_checkpoint(folder: Path, step: int) -> Path:
    """A checkpoint folder with the files a resume reads, written the way the Trainer writes them."""
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    save_file({"w": torch.arange(1000, dtype=torch.float32)}, path / "model.safetensors")
    torch.save({"state": {}, "param_groups": []}, path / "optimizer.pt")
    torch.save({"last_epoch": step}, path / "scheduler.pt")
    torch.save({"cpu": torch.get_rng_state()}, path / "rng_state.pth")
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step, "max_steps": 10}))
    return path


def test_last_skips_truncated_weights_and_missing_state(tmp_path):
    """checkpoint-6 lacks trainer_state.json, checkpoint-4 has truncated weights: `last` is checkpoint-2."""
    good = fake_checkpoint(tmp_path, 2)
    truncated = fake_checkpoint(tmp_path, 4)
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    (fake_checkpoint(tmp_path, 6) / "trainer_state.json").unlink()
    last, skipped = last_complete_checkpoint(tmp_path)
    assert last == good
    assert skipped == [f"{tmp_path}/checkpoint-6/trainer_state.json is missing",
                       f"{tmp_path}/checkpoint-4/model.safetensors is truncated ({len(data) // 2} of {len(data)} bytes)"]  # fmt: skip


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        (lambda p: (p / "optimizer.pt").write_bytes((p / "optimizer.pt").read_bytes()[:100]), "optimizer.pt"),
        (lambda p: (p / "trainer_state.json").write_text('{"global_step": 2'), "trainer_state.json"),
        (lambda p: (p / "model.safetensors").write_bytes(struct.pack("<Q", 10**9)), "model.safetensors"),
        (lambda p: (p / "scheduler.pt").unlink(), "scheduler.pt"),
        (lambda p: (p / "egsw_controller_state.json").write_text("{"), "egsw_controller_state.json"),
    ],
)
def test_each_damaged_file_is_named(tmp_path, damage, named):
    path = fake_checkpoint(tmp_path, 2)
    (path / "egsw_controller_state.json").write_text("{}")
    assert checkpoint_problem(path) is None
    damage(path)
    assert named in checkpoint_problem(path)


def test_explicit_broken_checkpoint_is_an_error_naming_the_file(tmp_path):
    path = fake_checkpoint(tmp_path, 2)
    (path / "trainer_state.json").unlink()

    class Args:
        output_dir = str(tmp_path)
        resume_from_checkpoint = str(path)

    with pytest.raises(ConfigError, match="incomplete checkpoint: .*checkpoint-2/trainer_state.json is missing"):
        resolve_checkpoint(Args)
    Args.resume_from_checkpoint = "last"
    with pytest.raises(ConfigError, match="holds no complete checkpoint"):
        resolve_checkpoint(Args)


def test_grpo_cli_broken_checkpoint_one_line(tiny_assets, tmp_path):
    """grpo.py with a path to a checkpoint whose weights are truncated: exit 2, one line naming the file."""
    path = fake_checkpoint(tmp_path / "run", 2)
    (path / "model.safetensors").write_bytes(b"\x00" * 3)
    line = error_line(run(GRPO,
                          *tiny_args(tiny_assets, tmp_path / "run", "--resume_from_checkpoint", path)))  # fmt: skip
    assert line.startswith("error: resume_from_checkpoint: incomplete checkpoint:")
    assert f"{path}/model.safetensors" in line
