"""The GPUs of an allocation: how training and the vLLM server split them (`make_plan`, in positions within each
node), which ids those positions are (CUDA_VISIBLE_DEVICES, else SLURM_STEP_GPUS / SLURM_JOB_GPUS), and whether torch
sees them (`require_torch_gpus`: one error line otherwise, unless `--device cpu`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

from open_r1_egsw.errors import ConfigError

VLLM_MODES = ("server", "colocate", "none")
NO_DEVICES = ("", "-1", "NoDevFiles", "none")


@dataclass(frozen=True)
class Plan:
    """Where the trainer and the vLLM server run, for `nodes` nodes of `gpus_per_node` GPUs each."""

    vllm_mode: str  # "server" | "colocate" | "none"
    nodes: int
    gpus_per_node: int
    vllm_tp: int
    vllm_dp: int
    server_node_index: int  # index into the allocation's node list; -1 without a server
    server_gpu_ids: str  # positions of the server's GPUs within its node; "" without a server
    train_nodes: int  # the first `train_nodes` nodes train
    train_procs_per_node: int  # one process per training GPU (one per node on a CPU-only allocation)
    train_gpu_ids: str  # positions of each training node's GPUs; "" on a CPU-only allocation

    @property
    def num_processes(self) -> int:
        return self.train_nodes * self.train_procs_per_node

    def shell(self) -> dict[str, str | int]:
        """The plan as slurm/train.slurm's shell variables."""
        return {
            "USE_VLLM": int(self.vllm_mode != "none"),
            "VLLM_MODE": self.vllm_mode,
            "VLLM_TP": self.vllm_tp,
            "VLLM_DP": self.vllm_dp,
            "VLLM_GPUS": self.vllm_tp * self.vllm_dp if self.vllm_mode == "server" else 0,
            "SERVER_NODE_INDEX": self.server_node_index,
            "SERVER_GPU_IDS": self.server_gpu_ids,
            "TRAIN_NODES": self.train_nodes,
            "TRAIN_PROCS_PER_NODE": self.train_procs_per_node,
            "NUM_PROCESSES": self.num_processes,
            "TRAIN_GPU_IDS": self.train_gpu_ids,
        }


def _ids(start: int, stop: int) -> str:
    return ",".join(str(i) for i in range(start, stop))


def make_plan(vllm_mode: str, nodes: int, gpus_per_node: int, vllm_tp: int = 1, vllm_dp: int = 1) -> Plan:
    """Split `nodes` x `gpus_per_node` between training and the vLLM server; ConfigError when it cannot fit."""
    if nodes < 1:
        raise ConfigError(f"the allocation must have at least 1 node, got {nodes}.")
    if gpus_per_node < 0 or vllm_tp < 1 or vllm_dp < 1:
        raise ConfigError(
            f"GPUs per node must be >= 0 and vLLM TP/DP >= 1, got {gpus_per_node}, {vllm_tp}, {vllm_dp}."
        )
    if vllm_mode not in VLLM_MODES:
        raise ConfigError(f"vllm mode {vllm_mode!r} is not valid; choose one of: {', '.join(VLLM_MODES)}.")
    all_gpus = _ids(0, gpus_per_node)
    if vllm_mode != "server":
        if vllm_mode == "colocate" and gpus_per_node % vllm_tp:
            raise ConfigError(
                f"vLLM colocate mode with tensor parallel size {vllm_tp} needs a GPU count per node divisible by "
                f"it; this allocation has {gpus_per_node} GPU(s) per node."
            )
        return Plan(vllm_mode, nodes, gpus_per_node, vllm_tp, vllm_dp, -1, "", nodes, max(gpus_per_node, 1), all_gpus)
    server_gpus = vllm_tp * vllm_dp
    if gpus_per_node < 1:
        raise ConfigError("vLLM server mode needs GPUs, and this allocation has none (GPUs per node: 0).")
    if nodes == 1:
        train_gpus = gpus_per_node - server_gpus
        if train_gpus < 1:
            raise ConfigError(
                f"vLLM server mode on 1 node with {gpus_per_node} GPU(s): the server takes TPxDP={server_gpus} and "
                "no GPU is left for training; ask for more GPUs or a second node, or use --vllm-mode colocate."
            )
        server_ids = _ids(train_gpus, gpus_per_node)
        return Plan("server", 1, gpus_per_node, vllm_tp, vllm_dp, 0, server_ids, 1, train_gpus, _ids(0, train_gpus))
    if server_gpus > gpus_per_node:
        raise ConfigError(
            f"the vLLM server (TPxDP={server_gpus} GPUs) does not fit on one node of {gpus_per_node} GPU(s); "
            "lower --vllm-tp/--vllm-dp."
        )
    # the last node serves; the others train on all their GPUs
    server_ids = _ids(0, server_gpus)
    return Plan(
        "server", nodes, gpus_per_node, vllm_tp, vllm_dp, nodes - 1, server_ids, nodes - 1, gpus_per_node, all_gpus
    )


# ---------------------------------------------------------------------------------------------------------------
# The GPUs assigned to this node
# ---------------------------------------------------------------------------------------------------------------


def _id_list(value: str | None) -> list[str] | None:
    if value is None or value.strip() in NO_DEVICES:
        return None
    return [part.strip() for part in value.split(",") if part.strip()]


def assigned_gpu_ids(env: Mapping[str, str] | None = None) -> tuple[list[str], str] | None:
    """(this node's GPU ids in order, the variable they came from), or None when nothing names any."""
    env = os.environ if env is None else env
    for name in ("CUDA_VISIBLE_DEVICES", "SLURM_STEP_GPUS", "SLURM_JOB_GPUS"):
        ids = _id_list(env.get(name))
        if ids:
            return ids, name
    return None


def allocation_gpus(env: Mapping[str, str] | None = None) -> tuple[int, str] | None:
    """(GPUs this allocation gives the node, how that is known), or None when it names none."""
    env = os.environ if env is None else env
    count = env.get("SLURM_GPUS_ON_NODE", "").strip()
    if count.isdigit() and int(count) > 0:
        return int(count), f"SLURM_GPUS_ON_NODE={count}"
    assigned = assigned_gpu_ids(env)
    if assigned:
        ids, name = assigned
        return len(ids), f"{name}={','.join(ids)}"
    return None


def gpu_ids_at(positions: str, env: Mapping[str, str] | None = None) -> str:
    """The assigned GPU ids at `positions` ("0,1,2": the plan's), e.g. "4,5,6" for a job given GPUs 4-7."""
    wanted = [int(p) for p in positions.split(",") if p.strip()]
    assigned = assigned_gpu_ids(env)
    if assigned is None:  # nothing assigned by name: the positions are the ids
        return ",".join(map(str, wanted))
    ids, name = assigned
    if wanted and max(wanted) >= len(ids):
        raise ConfigError(
            f"GPU positions {positions} do not fit the {len(ids)} GPU(s) assigned to this node "
            f"({name}={','.join(ids)})."
        )
    return ",".join(ids[p] for p in wanted)


# ---------------------------------------------------------------------------------------------------------------
# torch must see the allocation's GPUs
# ---------------------------------------------------------------------------------------------------------------


def nvidia_driver() -> str:
    """The NVIDIA driver version as nvidia-smi reports it, or why it is unknown."""
    if shutil.which("nvidia-smi") is None:
        return "NVIDIA driver unknown (nvidia-smi not found)"
    try:
        query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
        proc = subprocess.run(query, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"NVIDIA driver unknown (nvidia-smi: {exc})"
    lines = [line.strip() for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode != 0 or not lines:
        reason = " ".join((proc.stderr or proc.stdout).split())[:200] or f"exit {proc.returncode}"
        return f"NVIDIA driver unknown (nvidia-smi failed: {reason})"
    return f"NVIDIA driver {lines[0]} (nvidia-smi)"


def require_torch_gpus(gpus_flag: int | None = None, env: Mapping[str, str] | None = None) -> bool:
    """Whether torch sees CUDA; ConfigError (one line) when it does not but the allocation (or `--gpus`) has GPUs."""
    import torch

    if torch.cuda.is_available():
        return True
    found = (gpus_flag, f"--gpus {gpus_flag}") if gpus_flag else allocation_gpus(env)
    if not found:
        return False
    count, source = found
    built = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU build (torch.version.cuda: None)"
    raise ConfigError(
        f"this allocation has {count} GPU(s) ({source}) but torch {torch.__version__} sees none: {nvidia_driver()}, "
        f"torch {built}; install a torch whose CUDA this driver supports or a newer driver (make install-gpu checks "
        "them), or pass --device cpu to run on the CPU on purpose."
    )
