"""A real Slurm cluster on this machine for tests, and helpers to submit a job and wait for it (no conftest magic).

The cluster is this repository's own harness, `tests/local_slurm.py` (Debian slurm-wlm + munge, installed with
apt-get when missing; emulated nodes n1..nN with placeholder GPUs; jobs run on the CPU), started by the tests
themselves and stopped when they end. Facts it imposes: the partition is `cpu`, there is no accounting (`sacct` is
off), so a job is followed with `scontrol show job` (kept 5 minutes) and, after that, the jobcomp log.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import local_slurm

ROOT = Path(__file__).resolve().parents[1]
JOBCOMP_LOG = local_slurm.JOBCOMP_LOG
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL"}


def unavailable_reason() -> str | None:
    """Why the local cluster cannot be started here (not root; no Slurm and no apt-get), or None."""
    return local_slurm.unavailable_reason()


@contextlib.contextmanager
def local_cluster(nodes: int = 2, gpus: int = 8):
    """`local_slurm.up(NODES, GPUS)` for the duration of the block; `down()` afterwards, whatever happened."""
    try:
        local_slurm.up(nodes, gpus)
        yield
    finally:
        local_slurm.down()


@dataclass
class Job:
    id: str
    state: str  # Slurm's JobState: COMPLETED, FAILED, ...
    exit_code: int  # the batch script's exit status
    seconds: float  # from submission to the end, as seen by the poller
    log: str  # the job's --output file

    def lines(self, prefix: str = "") -> list[str]:
        return [line for line in self.log.splitlines() if line.startswith(prefix)]


def _scontrol_state(job_id: str) -> tuple[str, int] | None:
    proc = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, timeout=30)
    state = re.search(r"\bJobState=(\S+)", proc.stdout)
    code = re.search(r"\bExitCode=(\d+):(\d+)", proc.stdout)
    if proc.returncode != 0 or not state:
        return None
    return state.group(1), int(code.group(1)) if code else -1


def _jobcomp_state(job_id: str) -> tuple[str, int] | None:
    if not JOBCOMP_LOG.exists():
        return None
    for line in reversed(JOBCOMP_LOG.read_text(errors="replace").splitlines()):
        if re.match(rf"JobId={job_id}\b", line):
            state = re.search(r"\bJobState=(\S+)", line)
            code = re.search(r"\bExitCode=(\d+):(\d+)", line)
            return (state.group(1) if state else "UNKNOWN"), int(code.group(1)) if code else -1
    return None


def submit(script: str, *script_args: str, sbatch_args: list[str], log: Path, env: dict | None = None) -> str:
    """sbatch from the repository root; returns the job id."""
    cmd = ["sbatch", "--parsable", f"--output={log}", *sbatch_args, script, *script_args]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"sbatch failed: {' '.join(cmd)}\n{proc.stderr}")
    return proc.stdout.strip().split(";")[0]


def wait(job_id: str, log: Path, timeout: float, started: float | None = None) -> Job:
    """Poll until the job ends (every second); on time-out cancel it and fail with the log's tail."""
    started = started or time.monotonic()
    while True:
        status = _scontrol_state(job_id) or _jobcomp_state(job_id)
        if status and status[0] in TERMINAL:
            break
        if time.monotonic() - started > timeout:
            subprocess.run(["scancel", job_id], timeout=30)
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
            raise AssertionError(f"job {job_id} still {status} after {timeout:.0f} s; cancelled. Log tail:\n{tail}")
        time.sleep(1)
    seconds = time.monotonic() - started
    for _ in range(10):  # the output file is flushed by slurmd just before/after the state change
        if log.exists():
            break
        time.sleep(0.5)
    return Job(job_id, status[0], status[1], seconds, log.read_text(errors="replace") if log.exists() else "")


def run(script: str, *script_args: str, sbatch_args: list[str], log: Path, env: dict | None = None,
        timeout: float = 300) -> Job:  # fmt: skip
    started = time.monotonic()
    return wait(submit(script, *script_args, sbatch_args=sbatch_args, log=log, env=env), log, timeout, started)


def steps_of(job_id: str) -> list[str]:
    """The job's steps still known to Slurm (`squeue --steps`), e.g. ['12.0 vllm-server']."""
    proc = subprocess.run(["squeue", "-h", "-s", "-j", job_id, "-o", "%i %j"], capture_output=True, text=True,
                          timeout=30)  # fmt: skip
    return [line for line in proc.stdout.splitlines() if line.strip()]
