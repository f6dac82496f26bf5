#!/bin/bash
# The GPU check (issue 23): on one CUDA GPU, in under 10 minutes, with only what a bare CUDA machine with PyTorch has
# plus the wheels it is given, run the tiny EGSW, Clip_V and GRPO recipes in bf16 with TRL's transformers generation
# and TRL's Triton fused LM head, and check that every token statistic equals the extra-forward source within the
# bf16 tolerance and that the loss is finite and falls (scripts/gpu_check.py says exactly what is checked).
#
#   bash scripts/gpu_check.sh [--wheels DIR] [--python PYTHON] [--work DIR] [--steps N]
#
#   --wheels DIR   install the project's dependencies from these wheels only (pip --no-index --find-links DIR);
#                  without it, from the package index
#   --python PY    the machine's Python with CUDA PyTorch (default $PYTHON or python3)
#   --work DIR     where the environment, the tiny assets and the results go (default: a new temporary directory)
#   --steps N      training steps per recipe (default 20)
#
# Steps: (1) a CUDA device must be visible to PyTorch, else one `error:` line and exit 2, before anything is
# installed or written; (2) a venv in WORK with --system-site-packages (the machine's torch and triton are used as
# they are) and the project's install_requires from setup.py, less deepspeed, wandb and matplotlib, which the check
# does not import; the checkout is put on PYTHONPATH, nothing is written into it; (3) the embedded tiny assets and
# their SFT warm start under WORK; (4) scripts/gpu_check.py. Exit 0 when every check passes, 1 on a failed check.
set -euo pipefail

die() {
  echo "gpu_check.sh: error: $*" >&2
  exit 2
}

PYTHON="${PYTHON:-python3}" WHEELS="" WORK="" STEPS=20
while [ "$#" -gt 0 ]; do
  case "$1" in
    -h | --help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --wheels) [ "$#" -ge 2 ] || die "--wheels needs a directory"; WHEELS=$2; shift 2 ;;
    --python) [ "$#" -ge 2 ] || die "--python needs a path"; PYTHON=$2; shift 2 ;;
    --work) [ "$#" -ge 2 ] || die "--work needs a directory"; WORK=$2; shift 2 ;;
    --steps) [ "$#" -ge 2 ] || die "--steps needs a number"; STEPS=$2; shift 2 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done
[[ $STEPS =~ ^[1-9][0-9]*$ ]] || die "--steps must be a positive number, got: $STEPS"
[ -z "$WHEELS" ] || [ -d "$WHEELS" ] || die "--wheels: no such directory: $WHEELS"
command -v "$PYTHON" >/dev/null 2>&1 || die "python not found: $PYTHON (pass --python)"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# (1) a CUDA device, or one line naming what PyTorch and the driver say
driver="nvidia-smi not found"
if command -v nvidia-smi >/dev/null 2>&1; then
  driver="driver $(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n 1 || true)"
fi
if ! found=$("$PYTHON" -c '
import sys
try:
    import torch
except ImportError:
    sys.exit("PyTorch is not installed for " + sys.executable)
if not torch.cuda.is_available():
    sys.exit(f"no CUDA device: torch {torch.__version__} (built for CUDA {torch.version.cuda}) sees none")
print(torch.cuda.get_device_name(0))
' 2>&1); then
  die "$(echo "$found" | tail -n 1); $driver"
fi
echo "gpu_check.sh: $found ($driver)"

# (2) the environment: the machine's torch, the project's other dependencies
WORK=${WORK:-$(mktemp -d -t gpu-check.XXXXXX)}
mkdir -p "$WORK"
started=$SECONDS
if [ ! -x "$WORK/venv/bin/python" ]; then
  "$PYTHON" -m venv --system-site-packages "$WORK/venv"
fi
VPY="$WORK/venv/bin/python"
(cd "$ROOT" && "$VPY" -c '
import setuptools
captured = {}
setuptools.setup = lambda **kwargs: captured.update(kwargs)
exec(compile(open("setup.py").read(), "setup.py", "exec"))
skip = ("deepspeed", "wandb", "matplotlib")
print("\n".join(r for r in captured["install_requires"] if not r.startswith(skip)))
') >"$WORK/requirements.txt"
pip_args=(-q --disable-pip-version-check)
[ -n "$WHEELS" ] && pip_args+=(--no-index --find-links "$WHEELS")
echo "gpu_check.sh: installing $(tr '\n' ' ' <"$WORK/requirements.txt")into $WORK/venv"
"$VPY" -m pip install "${pip_args[@]}" -r "$WORK/requirements.txt"
"$VPY" -c 'import torch, triton; assert torch.cuda.is_available(); print("gpu_check.sh: torch", torch.__version__, "CUDA", torch.version.cuda, "triton", triton.__version__)'

# (3) + (4): the tiny assets with their warm start, then the check
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=disabled
export TOKENIZERS_PARALLELISM=false
(cd "$ROOT" && "$VPY" -m open_r1_egsw.experiments.embedded --root "$WORK/assets" --warm-start >/dev/null)
echo "gpu_check.sh: environment and warm start in $((SECONDS - started)) s"
status=0
(cd "$ROOT" && "$VPY" scripts/gpu_check.py --assets "$WORK/assets" --out "$WORK/out" --steps "$STEPS") || status=$?
echo "gpu_check.sh: $((SECONDS - started)) s in all; results in $WORK/out/gpu_check.json"
exit "$status"
