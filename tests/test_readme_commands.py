"""The README's first commands, run as a user runs them: `make train`, `make evaluate`, `make report` and
`make evaluate BACKEND=vllm`, through the Makefile with no other variable, in a temporary copy of the working tree.

The copy holds the repository's files (`git ls-files`, untracked ones not ignored included) and two things a user's
checkout has after its first `make train`: a `.venv` (this interpreter's environment, linked entry by entry, with its
own fresh CPU install stamp, so the install rule does not fire) and `.cache/embedded`, the embedded assets and SFT
warm start, copied from the session's `embedded_default` (built by the same command `make train` runs first), so the
copy's `make train` finds them up to date and goes straight to GRPO.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from open_r1_egsw.training.outputs import read_metrics

ROOT = Path(__file__).resolve().parents[1]
MAKE_VARIABLES = ("TASK", "EXP_TASK", "MODEL", "BACKEND", "RECIPE", "ARGS", "OUTPUT_DIR", "NUM_SAMPLES", "EVAL_ARGS")


def user_checkout(dest: Path, embedded_root: str | None = None) -> Path:
    """A copy of the working tree with a linked .venv (module docstring) and, if given, the cached embedded assets."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():  # a file deleted in the working tree is still listed by --cached
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    venv = dest / ".venv"
    venv.mkdir()
    for entry in Path(sys.prefix).iterdir():
        if not entry.name.startswith(".installed"):
            (venv / entry.name).symlink_to(entry)
    (venv / ".installed-cpu").touch()  # newer than the copied setup.py: the CPU stack is installed
    if embedded_root:
        shutil.copytree(embedded_root, dest / ".cache" / "embedded")
    return dest


def make(checkout: Path, *args: str, timeout: int) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in (*MAKE_VARIABLES, "MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    env["PYTHONPATH"] = str(checkout / "src")  # the copy's code, whatever the editable install points at
    started = time.time()
    proc = subprocess.run(["make", *args], cwd=checkout, env=env, capture_output=True, text=True, timeout=timeout)
    print(f"make {' '.join(args)}: {time.time() - started:.0f} s")  # noqa: T201  (the measured time, with -s)
    return proc


def test_make_evaluate_renders_every_task(tmp_path):
    """Plain `make evaluate` evaluates every benchmark task (it once rendered compare's TASK=demo: exit 2)."""
    checkout = user_checkout(tmp_path)
    proc = subprocess.run(["make", "-n", "evaluate"], cwd=checkout, capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items() if k not in (*MAKE_VARIABLES, "MAKEFLAGS")})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (line,) = [x for x in proc.stdout.splitlines() if "-m open_r1_egsw.evaluation.run" in x]
    assert '--tasks "all" --backend accelerate --output-dir "results"' in line
    assert "pip install" not in proc.stdout  # the linked .venv counts as installed


@pytest.mark.slow
def test_readme_train_evaluate_report(embedded_default, tmp_path):
    """`make train`, `make evaluate`, `make report`, `make evaluate BACKEND=vllm`: each exits 0; `make train` learns
    (greedy accuracy on the 200 held-out rows up by at least 0.2, measured 0.58 -> 0.99; the training accuracy
    reward up); and the evaluation's pass@1 on the embedded test rows (MATH-500 of the embedded default) equals, on
    both backends, the greedy accuracy the trainer printed and wrote to accuracy.json (the same 200 rows, prompt,
    decoding and token budget)."""
    checkout = user_checkout(tmp_path / "checkout", embedded_default["root"])

    proc = make(checkout, "train", timeout=1800)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "SFT warm start up to date" in proc.stderr  # the cached warm start was reused, not retrained
    trained = json.loads((checkout / "data/tiny/egsw/accuracy.json").read_text())
    accuracy = trained["accuracy_after"]
    assert trained["accuracy_rows"] == 200
    assert accuracy >= trained["accuracy_before"] + 0.2, trained  # the guard that the whole pipeline learns
    train = [r for r in read_metrics(checkout / "data/tiny/egsw") if "rewards/accuracy/mean" in r]
    assert train[-1]["rewards/accuracy/mean"] > train[0]["rewards/accuracy/mean"], (train[0], train[-1])
    assert f"accuracy after training (greedy, 200 test rows): {accuracy:.3f}" in proc.stdout

    def evaluation(backend: str) -> dict:
        results = checkout / "results" / "egsw"
        run = json.loads((results / "run.json").read_text())
        assert {task: s["status"] for task, s in run["tasks"].items()} == dict.fromkeys(run["tasks"], "ok")
        assert len(run["tasks"]) == 4 and run["model"] == str((checkout / "data/tiny/egsw").resolve())
        result = json.loads((results / "math_500.json").read_text())
        assert result["backend"] == backend and result["num_rows"] == 200 and result["num_skipped_too_long"] == 0
        assert result["generation"]["temperature"] == 0.0 and result["generation"]["max_new_tokens"] == 64
        return result

    proc = make(checkout, "evaluate", timeout=1800)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert evaluation("accelerate")["metrics"]["pass@1"] == pytest.approx(accuracy, abs=1e-12)

    (checkout / "results" / "report.json").unlink()  # written by make evaluate: make report must write it again
    proc = make(checkout, "report", timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads((checkout / "results" / "report.json").read_text())
    (row,) = [r for r in report["rows"] if (r["model"], r["task"]) == ("egsw", "math_500")]
    assert row["pass@1"] == pytest.approx(accuracy, abs=1e-12)
    assert (checkout / "results" / "report.md").exists() and (checkout / "results" / "report.png").exists()

    proc = make(checkout, "evaluate", "BACKEND=vllm", timeout=1800)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "samples are cached" not in proc.stderr  # vLLM generated them: none came from the accelerate run's cache
    assert evaluation("vllm")["metrics"]["pass@1"] == pytest.approx(accuracy, abs=1e-12)
