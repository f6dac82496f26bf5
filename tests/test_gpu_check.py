"""scripts/gpu_check.sh and its driver scripts/gpu_check.py: what can be checked without a GPU.

The check itself needs a CUDA device and TRL's Triton kernels; neither exists on this machine. Here: the script stops
first, in one line, when there is no CUDA device; and the driver's own logic (the statistics comparison through
token_stats' extra-forward source, the bf16 autocast check, finite losses, the fp32 surrogate that must fall) runs on
the CPU with exactly two checks FAKED as passed, the CUDA device and the Triton fused head, and with a smaller batch
and a test reward (completion length mod 7) so that the random tiny model has non-zero advantages in seconds.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import gpu_check  # noqa: E402

from open_r1_egsw.training.rewards import completion_text, register_reward  # noqa: E402

CPU_ONLY = pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present: run the check itself")


@CPU_ONLY
def test_gpu_check_refuses_without_a_cuda_device(tmp_path):
    """Not faked: this machine has no CUDA device. The check stops first, with one line naming torch, the CUDA it was
    built for and the driver, exit 2, before it creates its work directory; so does its Python driver."""
    work = tmp_path / "work"
    proc = subprocess.run(["bash", "scripts/gpu_check.sh", "--python", sys.executable, "--work", str(work)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)  # fmt: skip
    assert proc.returncode == 2 and proc.stdout == "", proc.stdout
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(
        f"gpu_check.sh: error: no CUDA device: torch {torch.__version__} (built for CUDA {torch.version.cuda}) sees "
        "none; "
    ) and (line.endswith("; nvidia-smi not found") or "; driver " in line), line
    assert not work.exists()
    proc = subprocess.run([sys.executable, "scripts/gpu_check.py", "--assets", str(work), "--out", str(work)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")})  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"gpu_check: error: no CUDA device (torch {torch.__version__}, CUDA {torch.version.cuda})"
    ]
    assert not work.exists()


@register_reward("test_len_mod7")
def len_mod7(completions, **kwargs):
    return [float(len(completion_text(c)) % 7) for c in completions]


@pytest.mark.slow
@CPU_ONLY
def test_gpu_check_driver_logic_on_the_cpu(tiny_assets, tmp_path, monkeypatch):
    """Clip_V (all four statistics) for 2 steps: both generation batches compared with the extra-forward source, the
    forward in bf16 (CPU autocast), finite losses, the surrogate lower after the step that trained on its batch; the
    only failed checks are the two faked ones, and they do fail here (they are not vacuous)."""
    assets = tmp_path / "assets"
    assets.mkdir()
    (assets / "data").symlink_to(tiny_assets.data)
    (assets / "sft-model").symlink_to(tiny_assets.base_model)
    from open_r1_egsw.cli import recipe_args

    parse = recipe_args.parse_recipe_args
    smaller = ["--use_cpu", "true", "--reward_funcs", "test_len_mod7", "--reward_weights", "1.0",
               "--per_device_train_batch_size", "16", "--max_completion_length", "16"]  # fmt: skip
    monkeypatch.setattr(recipe_args, "parse_recipe_args", lambda types, argv, **kw: parse(types, argv + smaller, **kw))
    failed = []
    real_check = gpu_check.check

    def check(condition, message):  # FAKED: the CUDA device and Triton checks are recorded, not raised
        if message.endswith(("not CUDA", "(is triton installed?)")):
            if not condition:
                failed.append(message)
        else:
            real_check(condition, message)

    monkeypatch.setattr(gpu_check, "check", check)
    result = gpu_check.run_recipe("clip_v", assets, tmp_path / "out", 2)
    assert failed == ["clip_v: the trainer runs on cpu, not CUDA",
                      "clip_v: TRL's Triton fused head is not in use (is triton installed?)"]  # fmt: skip
    assert result["statistics"] == ["S", "S_baseline", "entropy", "logp"] and result["batches_compared"] == 2
    assert all(diff <= 1.6e-2 for diff in result["max_abs_diff"].values()), result["max_abs_diff"]
    assert result["surrogate_after"] < result["surrogate_before"] and len(result["losses"]) == 2
