"""The allocation's GPUs as launch.py uses them (allocation.py): a GPU allocation torch cannot use stops with one line
(no silent CPU run), the GPU ids Slurm assigned are the ones used, and vLLM's parallel sizes are checked against the
model's config and the GPUs before anything starts.

What cannot exist on this CPU machine is FAKED and each test says what: Slurm's GPU variables, an nvidia-smi, a torch
built for CUDA; everything else (launch.py, the recipe parser, parallel.check_tensor_parallel) is the real code.
"""

import os
import sys

import pytest
from test_launch import GPU8, SEVEN_B, TINY, flag, in_repo_root, one_error_line, render  # noqa: F401

# ---------------------------------------------------------------------------------------------------------------
# GPUs in the allocation: torch must see them; the ids Slurm assigned are the ones used
# ---------------------------------------------------------------------------------------------------------------

GPU_VARIABLES = ("CUDA_VISIBLE_DEVICES", "SLURM_GPUS_ON_NODE", "SLURM_JOB_GPUS", "SLURM_STEP_GPUS")


@pytest.fixture
def no_gpu_variables(monkeypatch):
    for name in GPU_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def gpu_node_torch_cannot_use(monkeypatch, tmp_path, no_gpu_variables):
    """FAKED: a Slurm allocation of 8 GPUs (its variables), an NVIDIA driver (an nvidia-smi script on PATH that prints
    535.183.01), a torch built for CUDA 13.0 (torch.version.cuda) that sees no GPU (torch.cuda.is_available, False on
    this machine anyway): what a driver older than torch's CUDA looks like. Everything else is real."""
    import torch

    smi = tmp_path / "bin" / "nvidia-smi"
    smi.parent.mkdir()
    smi.write_text('#!/bin/sh\n[ "$1" = --query-gpu=driver_version ] && echo 535.183.01\n')
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{smi.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_GPUS_ON_NODE", "8")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3,4,5,6,7")
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    return torch.__version__


@pytest.mark.parametrize(
    "argv",
    [["train", "--recipe", SEVEN_B[0]], ["serve", "--recipe", SEVEN_B[0]],
     ["slurm-plan", "--recipe", SEVEN_B[0], "--nodes", "1", "--gpus-per-node", "8"]],
    ids=["train", "serve", "slurm-plan"],
)  # fmt: skip
def test_gpus_torch_cannot_see_stop_with_one_line(capsys, gpu_node_torch_cannot_use, argv):
    """No silent CPU run on a GPU allocation: one line naming the GPUs, the driver and torch's CUDA; nothing printed."""
    line = one_error_line(capsys, *argv)
    assert line == (
        f"error: this allocation has 8 GPU(s) (SLURM_GPUS_ON_NODE=8) but torch {gpu_node_torch_cannot_use} sees "
        "none: NVIDIA driver 535.183.01 (nvidia-smi), torch built for CUDA 13.0; install a torch whose CUDA this "
        "driver supports or a newer driver (make install-gpu checks them), or pass --device cpu to run on the CPU "
        "on purpose."
    )
    assert capsys.readouterr().out == ""


def test_gpus_flag_torch_cannot_see_and_the_explicit_cpu_opt_in(capsys, gpu_node_torch_cannot_use, monkeypatch):
    """`--gpus 8` alone also names the GPUs torch should see; `--device cpu` is the one way to run on the CPU there."""
    monkeypatch.delenv("SLURM_GPUS_ON_NODE")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    line = one_error_line(capsys, "train", "--recipe", TINY, "--gpus", "8")
    assert line.startswith("error: this allocation has 8 GPU(s) (--gpus 8) but torch ")
    monkeypatch.setenv("SLURM_GPUS_ON_NODE", "8")
    assert render(capsys, "train", "--recipe", TINY, "--device", "cpu") == [
        sys.executable, "src/open_r1_egsw/grpo.py", "--config", TINY,
    ]  # fmt: skip


def test_cpu_host_without_gpus_renders_cpu(capsys, no_gpu_variables, monkeypatch):
    """No GPU anywhere (this machine, no Slurm GPU variables): auto renders the CPU command, no error."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # FAKED only on a machine that has CUDA
    assert render(capsys, "train", "--recipe", TINY)[1:] == ["src/open_r1_egsw/grpo.py", "--config", TINY]


def test_gpu_ids_are_the_ones_slurm_assigned(capsys, no_gpu_variables, monkeypatch):
    """FAKED allocation: Slurm gave this job GPUs 4-7 of a node (CUDA_VISIBLE_DEVICES=4,5,6,7, as on a cluster without
    device cgroups). The plan's positions map onto them: the trainer gets 4,5,6 and the server 7, not 0-2 and 3."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    cuda4 = ["--device", "cuda", "--gpus", "4"]
    assert render(capsys, "train", "--recipe", SEVEN_B[0], *cuda4)[1] == "CUDA_VISIBLE_DEVICES=4,5,6"
    assert render(capsys, "serve", "--recipe", SEVEN_B[0], *cuda4)[2] == "CUDA_VISIBLE_DEVICES=7"
    # what train.slurm passes: positions (--gpu-slots), mapped in the task; --gpu-ids stays literal
    assert (
        render(capsys, "train", "--recipe", SEVEN_B[0], *cuda4, "--gpu-slots", "0,1")[1] == "CUDA_VISIBLE_DEVICES=4,5"
    )
    assert render(capsys, "train", "--recipe", SEVEN_B[0], *cuda4, "--gpu-ids", "0,1")[1] == "CUDA_VISIBLE_DEVICES=0,1"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setenv("SLURM_JOB_GPUS", "2,3")  # no CUDA_VISIBLE_DEVICES: Slurm's job GPU list
    assert render(capsys, "serve", "--recipe", SEVEN_B[0], *cuda4, "--gpu-slots", "1")[2] == "CUDA_VISIBLE_DEVICES=3"
    line = one_error_line(capsys, "serve", "--recipe", SEVEN_B[0], *cuda4, "--gpu-slots", "2")
    assert line == "error: GPU positions 2 do not fit the 2 GPU(s) assigned to this node (SLURM_JOB_GPUS=2,3)."


# ---------------------------------------------------------------------------------------------------------------
# vLLM parallel sizes against the model's config and the GPUs
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture
def qwen_7b_config(tmp_path):
    """Qwen2.5-Math-7B's parallel-relevant config.json values (28 heads, 4 KV heads, MLP 18944), in a local dir."""
    (tmp_path / "config.json").write_text(
        '{"model_type": "qwen2", "num_attention_heads": 28, "num_key_value_heads": 4, "intermediate_size": 18944}'
    )
    return str(tmp_path)


@pytest.mark.parametrize(
    "argv",
    [["serve", "--recipe", SEVEN_B[0], *GPU8, "--vllm-tp", "8", "--gpu-slots", "0,1,2,3,4,5,6,7"],
     ["slurm-plan", "--recipe", SEVEN_B[0], "--device", "cuda", "--nodes", "2", "--gpus-per-node", "8",
      "--vllm-tp", "8"]],
    ids=["serve", "slurm-plan"],
)  # fmt: skip
def test_vllm_tp_that_does_not_fit_the_model(capsys, no_gpu_variables, qwen_7b_config, argv):
    """--vllm-tp 8 for a 7B Qwen: one line naming the flag, the heads and the sizes that work; nothing rendered."""
    line = one_error_line(capsys, *argv, "--", "--model_name_or_path", qwen_7b_config)
    assert line == (
        "error: --vllm-tp 8 does not fit the model (num_attention_heads 28, num_key_value_heads 4, intermediate_size "
        f"18944 in {qwen_7b_config}/config.json): use 1, 2, 4"
    )


def test_vllm_tp_dp_need_the_gpus(capsys, no_gpu_variables, qwen_7b_config):
    extra = ["--", "--model_name_or_path", qwen_7b_config]
    line = one_error_line(capsys, "serve", "--recipe", SEVEN_B[0], *GPU8, "--vllm-tp", "2", "--gpu-slots", "7", *extra)
    assert line == "error: --vllm-tp 2 x --vllm-dp 1 needs 2 GPUs; the server has 1 (CUDA_VISIBLE_DEVICES=7)."
    serve = render(capsys, "serve", "--recipe", SEVEN_B[0], *GPU8, "--vllm-tp", "4", "--vllm-dp", "1", *extra)
    assert serve[2] == "CUDA_VISIBLE_DEVICES=4,5,6,7" and flag(serve, "--tensor-parallel-size") == "4"
