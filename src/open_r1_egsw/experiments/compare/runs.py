"""Running a comparison: one grpo.py subprocess per (method or setting, seed), with the same overrides for every
method, from recipe copies taken at launch and checked to differ only in their method keys. Each run gets a
`compare_run.json` (command, exit code, wall time) beside the trainer's files.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from open_r1_egsw.training.outputs import METRICS_FILE

GRPO_SCRIPT = Path(__file__).resolve().parents[2] / "grpo.py"
RUN_RECORD = "compare_run.json"
# Recipe keys allowed to differ between the methods; every other key must match for a like-for-like comparison.
# top_entropy_quantile / entropy_coef are TRL's own entropy methods (GRPOConfig fields), compared as baselines.
METHOD_KEY_PREFIXES = (
    "use_egsw",
    "egsw_",
    "entropy_clip",
    "log_entropy_dynamics",
    "output_dir",
    "top_entropy_quantile",
    "entropy_coef",
)


def say(message: str) -> None:
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


@dataclass
class RunSpec:
    """One grpo.py run: `group` is the method (compare) or the setting label (sweep)."""

    group: str
    seed: int
    recipe: str
    output_dir: Path
    overrides: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def command(self, extra: Sequence[str] = ()) -> list[str]:
        return [
            sys.executable,
            str(GRPO_SCRIPT),
            "--config",
            self.recipe,
            "--seed",
            str(self.seed),
            "--output_dir",
            str(self.output_dir),
            "--overwrite_output_dir",
            "true",
            *self.overrides,
            *extra,
        ]


def recipe_hash(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


def snapshot_recipes(recipes: dict[str, str], out: Path) -> dict[str, str]:
    """Copy each recipe to <out>/recipes/<name>.yaml and return those paths: every run of the comparison then reads
    the recipe as it was at launch, even if someone edits recipes/ while it runs."""
    folder = out / "recipes"
    folder.mkdir(parents=True, exist_ok=True)
    snapshots = {}
    for name, path in recipes.items():
        snapshots[name] = str(folder / f"{name}.yaml")
        shutil.copyfile(path, snapshots[name])
    return snapshots


def recipe_drift(recipes: dict[str, str]) -> list[str]:
    """Keys, other than the method keys, whose values differ between the recipes (empty: like for like)."""

    def shared(path: str) -> dict:
        config = yaml.safe_load(Path(path).read_text()) or {}
        return {k: v for k, v in config.items() if not k.startswith(METHOD_KEY_PREFIXES)}

    configs = {name: shared(path) for name, path in recipes.items()}
    if len(configs) < 2:
        return []
    (first, reference), *others = configs.items()
    problems = []
    for name, config in others:
        for key in sorted(set(reference) | set(config)):
            if reference.get(key, "<absent>") != config.get(key, "<absent>"):
                ours, theirs = reference.get(key, "<absent>"), config.get(key, "<absent>")
                problems.append(f"{key}: {ours!r} in {first} vs {theirs!r} in {name}")
    return problems


def _child_env(jobs: int) -> dict[str, str]:
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[3])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    for key, value in (("HF_HUB_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "1"), ("TOKENIZERS_PARALLELISM", "false")):
        env.setdefault(key, value)
    if jobs > 1 and "OMP_NUM_THREADS" not in env:  # share the cores between the concurrent runs
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    return env


def _clear_run_dir(path: Path) -> None:
    """Remove a previous run's files, so that a crash cannot leave a stale accuracy.json looking fresh."""
    if not path.exists():
        return
    if any(path.iterdir()) and not ((path / RUN_RECORD).exists() or (path / METRICS_FILE).exists()):
        raise RuntimeError(f"{path} exists and does not look like a compare run; move it away or pick --output_dir.")
    shutil.rmtree(path)


def run_one(spec: RunSpec, extra: Sequence[str], timeout: float, reuse: bool, jobs: int) -> dict:
    """Run grpo.py for `spec` (log in <output_dir>/train.log), write its compare_run.json; a crash does not raise."""
    command = spec.command(extra)
    record_path = spec.output_dir / RUN_RECORD
    if reuse and record_path.exists():
        previous = json.loads(record_path.read_text())
        if previous.get("returncode") == 0 and previous.get("args") == command[1:]:
            return {**previous, "reused": True}
    _clear_run_dir(spec.output_dir)
    spec.output_dir.mkdir(parents=True)
    start = time.monotonic()
    error = None
    with open(spec.output_dir / "train.log", "w") as log:
        try:
            returncode = subprocess.run(
                command, stdout=log, stderr=subprocess.STDOUT, env=_child_env(jobs), timeout=timeout
            ).returncode
        except subprocess.TimeoutExpired:
            returncode, error = -9, f"killed after the {timeout:.0f} s run timeout"
    record = {
        "group": spec.group,
        "seed": spec.seed,
        "recipe": spec.recipe,
        "recipe_sha256": recipe_hash(spec.recipe),
        "args": command[1:],
        "returncode": returncode,
        "wall_s": round(time.monotonic() - start, 1),
        **spec.meta,
    }
    if returncode != 0:
        tail = (spec.output_dir / "train.log").read_text(errors="replace").strip().splitlines()[-3:]
        record["error"] = error or " | ".join(tail)[-500:]
    record_path.write_text(json.dumps(record, indent=2))
    return record


def execute(specs: list[RunSpec], extra: Sequence[str], jobs: int, timeout: float, reuse: bool) -> list[dict]:
    """Run every spec, `jobs` at a time; a failed run is recorded and the others go on."""
    done = []

    def task(index_spec: tuple[int, RunSpec]) -> dict:
        index, spec = index_spec
        say(f"[{index + 1}/{len(specs)}] {spec.group} seed {spec.seed}: start -> {spec.output_dir}")
        record = run_one(spec, extra, timeout, reuse, jobs)
        state = "reused" if record.get("reused") else ("ok" if record["returncode"] == 0 else "FAILED")
        say(
            f"[{index + 1}/{len(specs)}] {spec.group} seed {spec.seed}: {state} in {record['wall_s']:.0f} s"
            + (f" ({record['error']})" if record.get("error") else "")
        )
        return record

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        done = list(pool.map(task, enumerate(specs)))
    return done
