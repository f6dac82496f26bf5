"""Two CPU processes train the tiny recipes for real, with the commands launch.py renders (gloo; no GPU needed).

Each run goes through `python -m open_r1_egsw.cli.launch train` (the path `make train RECIPE=...` and slurm/train.slurm
take); the rendered command is executed with tests/scripts/distributed_grpo.py in place of grpo.py, which runs
grpo.py's own `cli_main` and then saves each rank's world size and parameters. PITFALLS: on CPU a wrong flag
silently gives one process, or two processes that each train alone; both are caught by the world-size and
rank-agreement checks. The DDP and ZeRO-3 runs train the clip_v recipe from a short SFT warm start (rewards differ
within groups) and check every logged clip metric against a one-process computation of the same batches;
`entropy_coef` adds TRL's entropy bonus so that every step has a gradient even where a group's rewards are equal.
"""

import math
import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM

from open_r1_egsw.methods.shaping import ShapingSettings, shape_advantages
from open_r1_egsw.training.outputs import read_metrics

ROOT = Path(__file__).resolve().parents[1]
RECIPE = "recipes/tiny/egsw/config.yaml"
CLIP_RECIPE = "recipes/tiny/clip_v/config.yaml"
HELPER = ROOT / "tests" / "scripts" / "distributed_grpo.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}


def tiny_overrides(assets, out_dir, *extra, model=None, steps=2, completion_length=8) -> list[str]:
    return [
        "--model_name_or_path", str(model or assets.base_model), "--dataset_name", str(assets.data), "--output_dir",
        str(out_dir), "--max_steps", str(steps), "--per_device_train_batch_size", "8", "--num_generations", "4",
        "--max_completion_length", str(completion_length), "--eval_accuracy_samples", "0", "--logging_steps", "1",
        "--warmup_steps", "0", "--learning_rate", "1e-3", "--entropy_coef", "0.05", *extra,
    ]  # fmt: skip


def warm_overrides(warm, out_dir, *extra) -> list[str]:
    """The clip_v recipe on the warm-started model: completions long enough to be right or wrong (rewards differ
    within groups), Clip_V at mu 1 so that tokens are dropped, and the entropy-dynamics diagnostics."""
    return tiny_overrides(warm, out_dir, "--log_entropy_dynamics", "true", "--entropy_clip_mu", "1.0", *extra,
                          model=warm.sft_model, steps=3, completion_length=48)  # fmt: skip


def render(*launch_args: str, overrides: list[str], recipe: str = RECIPE) -> list[str]:
    """The command `python -m open_r1_egsw.cli.launch train ...` prints (nothing is run)."""
    cmd = [
        sys.executable,
        "-m",
        "open_r1_egsw.cli.launch",
        "train",
        "--recipe",
        recipe,
        *launch_args,
        "--",
        *overrides,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env(), cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return shlex.split(proc.stdout.strip().splitlines()[-1])


def run_with_helper(command: list[str], record_dir: Path) -> subprocess.CompletedProcess:
    """Run the rendered command with the helper in place of grpo.py (same flags, same launcher)."""
    index = command.index("src/open_r1_egsw/grpo.py")
    command = command[:index] + [str(HELPER), str(record_dir)] + command[index + 1 :]
    return subprocess.run(command, capture_output=True, text=True, env=env(), cwd=ROOT, timeout=900)


def check_two_ranks_trained_together(record_dir: Path, initial_model: Path) -> None:
    missing = [r for r in range(2) if not (record_dir / f"rank{r}.pt").exists()]
    assert not missing, f"no record from rank(s) {missing}: the processes did not form one world of size 2"
    records = [torch.load(record_dir / f"rank{r}.pt") for r in range(2)]
    assert [r["world_size"] for r in records] == [2, 2]  # PITFALLS: not one process, not two lone ones
    assert [r["process_index"] for r in records] == [0, 1]
    rank0, rank1 = records[0]["params"], records[1]["params"]
    assert rank0.keys() == rank1.keys() and rank0
    for name in rank0:
        torch.testing.assert_close(rank0[name], rank1[name], rtol=0, atol=0, msg=f"ranks disagree on {name}")
    initial = load_file(str(initial_model / "model.safetensors"))
    changed = [name for name in rank0 if name in initial and not torch.equal(initial[name].float(), rank0[name])]
    assert changed, "no parameter moved: the steps had no gradient"


def padded_rows(parts: list[torch.Tensor]) -> torch.Tensor:
    """Rank-local (rows, width) tensors stacked in rank order, padded with 0 to the widest, as the trainer gathers."""
    if parts[0].dim() == 1:
        return torch.cat(parts)
    width = max(p.size(1) for p in parts)
    return torch.cat([torch.nn.functional.pad(p, (0, width - p.size(1))) for p in parts])


def check_logged_metrics_equal_one_process(record_dir: Path, out: Path, settings: ShapingSettings) -> None:
    """Every step's logged clip / EGSW / dynamics metrics equal shape_advantages on the whole generation batch,
    computed here in one process from each rank's own rows (recorded before any gather)."""
    records = [torch.load(record_dir / f"rank{r}.pt") for r in range(2)]
    logged = [r for r in read_metrics(out) if "loss" in r]
    assert len(logged) == len(records[0]["batches"]) == len(records[1]["batches"]) == 3
    dropped, moved = 0.0, 0
    for step, row in enumerate(logged):
        parts = [rec["batches"][step] for rec in records]
        advantages = padded_rows([p["advantages"] for p in parts])
        moved += int(advantages.abs().sum() > 0)
        mask = padded_rows([p["mask"] for p in parts])
        stats = {key: padded_rows([p["stats"][key] for p in parts]) for key in parts[0]["stats"]}
        expected = shape_advantages(advantages, mask, stats, settings).metrics
        assert "entropy_dynamics/clip_frac" in expected and "entropy_dynamics/S_minus_baseline_mean" in expected
        for key, value in expected.items():
            assert row[key] == pytest.approx(value, rel=1e-6, abs=1e-9), (step, key)
        if step > 0:  # the change of the previous step's batch, measured after that step
            assert math.isfinite(row["entropy_dynamics/predicted_dH"]) and math.isfinite(
                row["entropy_dynamics/measured_dH"]
            )
        dropped += expected["entropy_dynamics/clip_count"]
    assert moved > 0 and dropped > 0  # the warm start's rewards differ within groups; Clip_V really dropped tokens


def clip_settings(warm, use_egsw: bool) -> ShapingSettings:
    vocab = AutoConfig.from_pretrained(warm.sft_model).vocab_size
    return ShapingSettings(num_generations=4, use_egsw=use_egsw, vocab_size=vocab, entropy_clip="clip_v", clip_mu=1.0,
                           clip_max_frac=1e-4)  # fmt: skip


@pytest.mark.slow
def test_ddp_two_cpu_processes(warm_model, tmp_path):
    """DDP over gloo, the clip_v recipe with log_entropy_dynamics on the warm start: both ranks see world size 2 and
    train the same parameters, rank 0 saves a loadable model, and the logged clip metrics are the 1-process ones."""
    out = tmp_path / "out"
    command = render("--num-processes", "2", "--main-process-port", str(free_port()),
                     overrides=warm_overrides(warm_model, out), recipe=CLIP_RECIPE)  # fmt: skip
    assert command[1:3] == ["launch", "--config_file"] and command[3].endswith("ddp_cpu.yaml")
    assert "--multi_gpu" in command and command[command.index("--num_processes") + 1] == "2"
    assert "--use_cpu" in command  # without it each rank's trainer sees world size 1
    proc = run_with_helper(command, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    check_two_ranks_trained_together(tmp_path, Path(warm_model.sft_model))
    AutoModelForCausalLM.from_pretrained(out)
    losses = [r["loss"] for r in read_metrics(out) if "loss" in r]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    check_logged_metrics_equal_one_process(tmp_path, out, clip_settings(warm_model, use_egsw=False))


@pytest.mark.slow
def test_deepspeed_zero3_two_cpu_processes(warm_model, tmp_path):
    """DeepSpeed ZeRO-3 on CPU (DS_ACCELERATOR=cpu, gloo), with a reference model (beta > 0), EGSW + Clip_V and the
    dynamics diagnostics on the warm start: two ranks, one model, and the logged metrics are the 1-process ones.

    The first run on a machine compiles DeepSpeed's shm_comm op (about 60 s); later runs reuse it.
    """
    out = tmp_path / "out"
    command = render("--num-processes", "2", "--accelerate-config", "recipes/accelerate_configs/zero3_cpu.yaml",
                     "--main-process-port", str(free_port()), recipe=CLIP_RECIPE,
                     overrides=warm_overrides(warm_model, out, "--beta", "0.04", "--use_egsw", "true"))  # fmt: skip
    assert command[:2] == ["env", "DS_ACCELERATOR=cpu"] and command[5].endswith("zero3_cpu.yaml")
    assert command[command.index("--ddp_backend") + 1] == "gloo"  # else world size 1 -> DeepSpeed batch assertion
    proc = run_with_helper(command, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    check_two_ranks_trained_together(tmp_path, Path(warm_model.sft_model))
    AutoModelForCausalLM.from_pretrained(out)
    records = [r for r in read_metrics(out) if "loss" in r]
    assert len(records) == 3 and all(math.isfinite(r["loss"]) and math.isfinite(r["kl"]) for r in records)
    # EGSW ran under ZeRO-3 (entropies recorded while the gathered model generated): real, non-uniform weights
    assert all(0 < r["egsw/ess"] <= 1 and r["egsw/entropy_mean"] > 0 for r in records), records
    check_logged_metrics_equal_one_process(tmp_path, out, clip_settings(warm_model, use_egsw=True))


@pytest.mark.slow
def test_a_reward_failing_on_one_rank_stops_every_rank_with_one_line(tiny_assets, tmp_path):
    """Rank 1's reward raises at its 2nd call, rank 0's never does. Without the exchange after TRL's reward gather,
    rank 0 would wait in the next collective for the 30-minute timeout; here both ranks stop at the same step, and
    one `error:` line names the function and the rank."""
    command = render("--num-processes", "2", "--main-process-port", str(free_port()),
                     overrides=tiny_overrides(tiny_assets, tmp_path / "out", "--reward_funcs", "accuracy", "bad",
                                              "--reward_weights", "1.0", "1.0", steps=4))  # fmt: skip
    index = command.index("src/open_r1_egsw/grpo.py")
    bad = [str(ROOT / "tests/helpers/run_grpo.py"), "--bad-reward", "raise", "--bad-from-call", "2", "--bad-rank", "1"]
    command = command[:index] + [*bad, "--"] + command[index + 1 :]
    start = time.monotonic()
    proc = subprocess.run(command, capture_output=True, text=True, env=env(), cwd=ROOT, timeout=600)
    elapsed = time.monotonic() - start
    assert proc.returncode != 0
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("error:")]
    assert errors == [
        "error: reward function 'bad' raised ZeroDivisionError: division by zero (training step 2) on rank 1 of 2"
    ], proc.stderr[-3000:]
    assert elapsed < 300, elapsed  # both ranks stopped: nobody waited for the collective timeout
