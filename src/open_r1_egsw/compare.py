"""Compare GRPO, EGSW, Clip_B and Clip_V on the embedded task over seeds, and sweep EGSW's alpha and P.

    python -m open_r1_egsw.embedded --warm-start     # once: data, base model, SFT warm start (`make compare` does it)
    python -m open_r1_egsw.compare                   # 4 methods x seeds 0 1 2          -> reports/compare/
    python -m open_r1_egsw.compare --quick           # 2 seeds, 2 steps, 8 eval rows: a smoke test of the pipeline
    python -m open_r1_egsw.compare sweep             # EGSW alpha sweep, then P sweep   -> reports/sweep/
    python -m open_r1_egsw.compare report            # re-aggregate the runs already on disk (`--kind sweep` too)
    python -m open_r1_egsw.compare --seeds 0 1 -- --learning_rate 1e-4   # flags after `--` go to every grpo.py run

Every run is a subprocess `grpo.py --config <recipe> --seed <k> --output_dir <out>/<method>/seed<k> ...`, and
every method gets the same overrides (steps, batch, eval rows), so all spend the same compute. The four tiny recipes
must agree on every key but their method keys; compare refuses to start otherwise (`--allow_recipe_drift`). Runs go
two at a time by default (`--jobs 2`, one torch thread each): on 2 shared cores that was several times faster than
one run after the other with two threads each.

Nothing is logged twice: the numbers are read back from the files the trainer writes, `metrics.jsonl`
(`utils.read_metrics`) and `accuracy.json`. compare adds only `compare_run.json` per run (command, exit code, wall
time), so that a crashed run is reported as such while the finished runs are still aggregated.

Definitions used in the tables (compare.md / sweep.md; the same numbers in compare.json / sweep.json):
- final accuracy: `accuracy_after` of accuracy.json (greedy decoding on the first `eval_accuracy_samples` rows of
  the held-out synthetic test split); mean ± sample std (ddof 1) over seeds, and min-max.
- steps to threshold: the first logged step whose smoothed `reward_key` (default the training accuracy reward) is
  >= the threshold (default 0.8), "smoothed" being the trailing mean of the last `smooth_window` logged values; steps
  before the window is full do not count. A run may not reach it; the table gives the mean step over the seeds that
  did and how many did.
- mean completion length: mean of `completions/mean_length` (tokens) over every logged training step of a run.
- final reward / final entropy: the smoothed `reward_key` / TRL `entropy` (nats) at the last logged step; tokens
  clipped: `entropy_dynamics/clip_frac` averaged over the run (clip runs only).
- weight statistics (sweep): `egsw/weight_min|max|std|ess` averaged over the logged steps of a run (each step's
  value is already the min / max / std / mean ESS over that generation batch), then over seeds.
- the curves (PNG): per method, the smoothed metric against step, mean over seeds as a line, min-max as a band.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .utils import METRICS_FILE, read_metrics

GRPO_SCRIPT = Path(__file__).with_name("grpo.py")
METHOD_RECIPES = {
    "grpo": "recipes/tiny/grpo/config.yaml",
    "egsw": "recipes/tiny/egsw/config.yaml",
    "clip_b": "recipes/tiny/clip_b/config.yaml",
    "clip_v": "recipes/tiny/clip_v/config.yaml",
}
# Recipe keys allowed to differ between the methods; every other key must match for a like-for-like comparison.
METHOD_KEY_PREFIXES = ("use_egsw", "egsw_", "entropy_clip", "log_entropy_dynamics", "output_dir")
RUN_RECORD = "compare_run.json"
ACCURACY_FILE = "accuracy.json"

# Default budgets, measured on the 2-core CPU machine with 2 runs at a time (README "Results"): each stays under
# ~30 minutes. Batch, completion length, learning rate and eval rows are the recipes' own (read at run time); only
# the number of steps is cut, the same for every method. The sweep has 7 settings, hence fewer seeds.
COMPARE_DEFAULTS = {"seeds": [0, 1, 2], "max_steps": 50}
SWEEP_DEFAULTS = {"seeds": [0, 1], "max_steps": 50}
QUICK = {"seeds": [0, 1], "max_steps": 2, "eval_accuracy_samples": 8, "eval_max_new_tokens": 16}
# steps-to-threshold column: the training accuracy reward (the warm start samples ~0.6 right; ~0.84 after 50 steps)
REWARD_KEY, REWARD_THRESHOLD = "rewards/accuracy/mean", 0.8
SWEEP_ALPHAS = [0.1, 0.3, 0.5, 0.8]  # the EGSW paper's recommended ranges, at P = 1.0 first
SWEEP_TEMPERATURES = [0.5, 1.0, 1.5, 2.0]
SWEEP_BASE_TEMPERATURE = 1.0
SWEEP_FALLBACK_ALPHA = 0.3  # the paper's Qwen2.5-Math-7B value, used when no alpha run finished

CURVE_KEYS = [  # (metric in metrics.jsonl, file stem, title, y label)
    ("reward", "reward", "training reward (weighted sum)", "reward"),
    ("rewards/accuracy/mean", "accuracy_reward", "training accuracy reward", "fraction correct"),
    ("entropy", "entropy", "token entropy of the policy (TRL `entropy`)", "nats"),
    ("completions/mean_length", "completion_length", "mean completion length", "tokens"),
    ("egsw/ess", "ess", "EGSW weight ESS (EGSW runs only)", "ESS in (0, 1]"),
    ("entropy_dynamics/clip_frac", "clip_frac", "fraction of tokens clipped (clip runs only)", "fraction"),
]
WEIGHT_KEYS = ["egsw/weight_min", "egsw/weight_max", "egsw/weight_std", "egsw/ess"]


def say(message: str) -> None:
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------------------------


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
            sys.executable, str(GRPO_SCRIPT), "--config", self.recipe, "--seed", str(self.seed),
            "--output_dir", str(self.output_dir), "--overwrite_output_dir", "true", *self.overrides, *extra,
        ]  # fmt: skip


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
    src = str(Path(__file__).resolve().parents[1])
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
            returncode = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=_child_env(jobs),
                                        timeout=timeout).returncode  # fmt: skip
        except subprocess.TimeoutExpired:
            returncode, error = -9, f"killed after the {timeout:.0f} s run timeout"
    record = {
        "group": spec.group, "seed": spec.seed, "recipe": spec.recipe, "recipe_sha256": recipe_hash(spec.recipe),
        "args": command[1:], "returncode": returncode, "wall_s": round(time.monotonic() - start, 1), **spec.meta,
    }  # fmt: skip
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
        say(f"[{index + 1}/{len(specs)}] {spec.group} seed {spec.seed}: {state} in {record['wall_s']:.0f} s"
            + (f" ({record['error']})" if record.get("error") else ""))  # fmt: skip
        return record

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        done = list(pool.map(task, enumerate(specs)))
    return done


# ---------------------------------------------------------------------------------------------------------------
# Reading runs back
# ---------------------------------------------------------------------------------------------------------------


def trailing_mean(values: Sequence[float | None], window: int) -> list[float | None]:
    """Mean of the last `window` values (fewer at the start; None values skipped; None if all skipped)."""
    out = []
    for i in range(len(values)):
        recent = [v for v in values[max(0, i - window + 1) : i + 1] if v is not None]
        out.append(sum(recent) / len(recent) if recent else None)
    return out


def steps_to_threshold(steps: Sequence[int], values: Sequence[float | None], threshold: float, window: int):
    """The first step whose trailing mean over a full window is >= threshold, or None ("not reached").

    Steps before the window fills do not count: one lucky batch at step 1 is not "reached".
    """
    for i, (step, value) in enumerate(zip(steps, trailing_mean(values, window))):
        if i >= window - 1 and value is not None and value >= threshold:
            return step
    return None


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def load_run(run_dir: str | Path) -> dict:
    """Training records, accuracy.json and compare_run.json of one run, and its status (ok / failed / missing)."""
    run_dir = Path(run_dir)
    records = read_metrics(run_dir) if (run_dir / METRICS_FILE).exists() else []
    accuracy_path, record_path = run_dir / ACCURACY_FILE, run_dir / RUN_RECORD
    run = {
        "dir": str(run_dir),
        "train": [r for r in records if "reward" in r],  # per-step training logs; the end-of-run summary has none
        "summary": next((r for r in reversed(records) if "train_runtime" in r), {}),
        "accuracy": json.loads(accuracy_path.read_text()) if accuracy_path.exists() else None,
        "record": json.loads(record_path.read_text()) if record_path.exists() else None,
    }
    if run["record"] is not None and run["record"].get("returncode") != 0:
        run["status"] = "failed"
    elif not run["train"]:
        run["status"] = "missing"
    else:
        run["status"] = "ok"
    return run


def summarize_run(run: dict, threshold: float, window: int, reward_key: str = "reward") -> dict:
    """The per-run numbers of the tables (see the module docstring for their definitions)."""
    train = run["train"]
    steps = [r["step"] for r in train]
    rewards = [r.get(reward_key) for r in train]
    smoothed = trailing_mean(rewards, window)
    accuracy = run["accuracy"] or {}
    summary = {
        "dir": run["dir"],
        "status": run["status"],
        "steps": steps[-1] if steps else 0,
        "final_accuracy": accuracy.get("accuracy_after"),
        "accuracy_before": accuracy.get("accuracy_before"),
        "accuracy_rows": accuracy.get("accuracy_rows"),
        "steps_to_threshold": steps_to_threshold(steps, rewards, threshold, window),
        "mean_completion_length": _mean(r.get("completions/mean_length") for r in train),
        "final_reward": smoothed[-1] if smoothed else None,
        "final_entropy": trailing_mean([r.get("entropy") for r in train], window)[-1] if train else None,
        "clip_frac": _mean(r.get("entropy_dynamics/clip_frac") for r in train),
        "train_runtime_s": run["summary"].get("train_runtime"),
    }
    for key in WEIGHT_KEYS:
        summary[key] = _mean(r.get(key) for r in train)
    if run["record"]:
        summary["wall_s"] = run["record"].get("wall_s")
        summary["recipe_sha256"] = run["record"].get("recipe_sha256")
        if run["record"].get("error"):
            summary["error"] = run["record"]["error"]
    return summary


def summarize_group(runs: list[dict]) -> dict:
    """Aggregate the per-run summaries of one method (or sweep setting) over seeds; failed runs only counted."""
    ok = [r for r in runs if r["status"] == "ok"]
    accuracies = [r["final_accuracy"] for r in ok if r["final_accuracy"] is not None]
    reached = [r["steps_to_threshold"] for r in ok if r["steps_to_threshold"] is not None]
    group = {
        "runs": len(runs),
        "runs_ok": len(ok),
        "final_accuracy_mean": _mean(accuracies),
        "final_accuracy_std": statistics.stdev(accuracies) if len(accuracies) > 1 else (0.0 if accuracies else None),
        "final_accuracy_min": min(accuracies) if accuracies else None,
        "final_accuracy_max": max(accuracies) if accuracies else None,
        "accuracy_before_mean": _mean(r["accuracy_before"] for r in ok),
        "steps_to_threshold_reached": len(reached),
        "steps_to_threshold_mean": _mean(reached),
        "mean_completion_length": _mean(r["mean_completion_length"] for r in ok),
        "final_reward_mean": _mean(r["final_reward"] for r in ok),
        "final_entropy_mean": _mean(r["final_entropy"] for r in ok),
        "clip_frac_mean": _mean(r["clip_frac"] for r in ok),
        "train_runtime_s_mean": _mean(r["train_runtime_s"] for r in ok),
    }
    for key in WEIGHT_KEYS:
        group[key] = _mean(r[key] for r in ok)
    return group


def discover_runs(root: Path, groups: Sequence[str] | None = None) -> dict[str, list[Path]]:
    """{group: [run dirs]} for every <root>/<group>/seed<k>/ (groups in the given order, else sorted)."""
    names = list(groups) if groups is not None else sorted(p.name for p in root.iterdir() if p.is_dir())
    found = {}
    for name in names:
        seeds = sorted((root / name).glob("seed*"), key=lambda p: int(p.name[4:]) if p.name[4:].isdigit() else -1)
        if seeds:
            found[name] = seeds
    return found


def aggregate(root: str | Path, groups: Sequence[str] | None, threshold: float, window: int,
              reward_key: str = "reward") -> dict:  # fmt: skip
    """Read every run under `root` back and summarise it per run and per group; lists the failures."""
    root = Path(root)
    result = {"groups": {}, "failures": [], "warnings": []}
    for name, dirs in discover_runs(root, groups).items():
        runs = [load_run(d) for d in dirs]
        hashes = sorted({r["record"]["recipe_sha256"] for r in runs if r["record"] and "recipe_sha256" in r["record"]})
        if len(hashes) > 1:
            result["warnings"].append(f"{name}: its runs used different recipes (sha256[:12] {', '.join(hashes)})")
        per_run = [summarize_run(run, threshold, window, reward_key) for run in runs]
        for run_dir, summary in zip(dirs, per_run):
            summary["seed"] = int(run_dir.name[4:]) if run_dir.name[4:].isdigit() else run_dir.name
            if summary["status"] != "ok":
                result["failures"].append({"group": name, "seed": summary["seed"], "status": summary["status"],
                                           "dir": summary["dir"], "error": summary.get("error", "")})  # fmt: skip
        result["groups"][name] = {"runs": per_run, "summary": summarize_group(per_run), "_loaded": runs}
    return result


def curve(runs: list[dict], key: str, window: int) -> tuple[list, list, list, list] | None:
    """(steps, mean, min, max) over the ok runs of the smoothed `key`, on the union of their logged steps."""
    by_step: dict[int, list[float]] = {}
    for run in runs:
        if run["status"] != "ok":
            continue
        series = [(r["step"], r.get(key)) for r in run["train"]]
        smoothed = trailing_mean([v for _, v in series], window)
        for (step, raw), value in zip(series, smoothed):
            if raw is not None and value is not None:
                by_step.setdefault(step, []).append(value)
    if not by_step:
        return None
    steps = sorted(by_step)
    return (steps, [sum(by_step[s]) / len(by_step[s]) for s in steps], [min(by_step[s]) for s in steps],
            [max(by_step[s]) for s in steps])  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------------------------


def _fmt(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _percent(value) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def _accuracy_cell(group: dict) -> str:
    if group["final_accuracy_mean"] is None:
        return "n/a"
    return f"{group['final_accuracy_mean']:.3f} ± {group['final_accuracy_std']:.3f}"


def _range_cell(group: dict) -> str:
    if group["final_accuracy_min"] is None:
        return "n/a"
    return f"{group['final_accuracy_min']:.3f} – {group['final_accuracy_max']:.3f}"


def _threshold_cell(group: dict) -> str:
    reached, n = group["steps_to_threshold_reached"], group["runs_ok"]
    if reached == 0:
        return f"not reached (0/{n})"
    return f"{group['steps_to_threshold_mean']:.1f} ({reached}/{n})"


def compare_table(result: dict, threshold: float) -> str:
    """The markdown table of the method comparison, one row per method."""
    lines = [
        "| method | runs ok | final accuracy (mean ± std) | min – max | accuracy before | "
        f"steps to reward ≥ {threshold:g} (seeds reaching it) | mean completion length | final reward | "
        "final entropy | tokens clipped | train time (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, data in result["groups"].items():
        g = data["summary"]
        lines.append(
            f"| {name} | {g['runs_ok']}/{g['runs']} | {_accuracy_cell(g)} | {_range_cell(g)} | "
            f"{_fmt(g['accuracy_before_mean'])} | {_threshold_cell(g)} | {_fmt(g['mean_completion_length'], 1)} | "
            f"{_fmt(g['final_reward_mean'])} | {_fmt(g['final_entropy_mean'])} | {_percent(g['clip_frac_mean'])} | "
            f"{_fmt(g['train_runtime_s_mean'], 0)} |"
        )
    return "\n".join(lines)


def sweep_table(result: dict) -> str:
    """The markdown table of the EGSW sweep, one row per (alpha, P) setting, with run-averaged weight statistics."""
    lines = [
        "| alpha | P | runs ok | final accuracy (mean ± std) | weight min | weight max | weight std | ESS "
        "| final reward |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, data in result["groups"].items():
        g, (alpha, temperature) = data["summary"], parse_setting(name)
        lines.append(
            f"| {alpha:g} | {temperature:g} | {g['runs_ok']}/{g['runs']} | {_accuracy_cell(g)} | "
            f"{_fmt(g['egsw/weight_min'])} | {_fmt(g['egsw/weight_max'])} | {_fmt(g['egsw/weight_std'])} | "
            f"{_fmt(g['egsw/ess'])} | {_fmt(g['final_reward_mean'])} |"
        )
    return "\n".join(lines)


def failures_text(result: dict) -> str:
    lines = [f"Warning: {w}" for w in result.get("warnings", [])]
    if not result["failures"]:
        return "\n\n".join(lines + ["No failed runs."])
    lines += ["Failed or missing runs (not in the numbers above):", ""]
    for f in result["failures"]:
        lines.append(f"- {f['group']} seed {f['seed']}: {f['status']} ({f['dir']}) {f['error']}".rstrip())
    return "\n".join(lines)


def _json_ready(result: dict, config: dict) -> dict:
    groups = {name: {"summary": d["summary"], "runs": d["runs"]} for name, d in result["groups"].items()}
    return {"config": config, "groups": groups, "failures": result["failures"], "warnings": result.get("warnings", [])}


# ---------------------------------------------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------------------------------------------


def write_curves(result: dict, out_dir: Path, window: int) -> list[Path]:
    """One PNG per curve metric plus `curves.png` with all of them (mean over seeds, min-max band)."""
    from .plots import method_colors, plot_curve_grid, plot_curves

    colors = method_colors(list(result["groups"]))
    panels, paths = [], []
    for key, stem, title, ylabel in CURVE_KEYS:
        curves = {}
        for name, data in result["groups"].items():
            c = curve(data["_loaded"], key, window)
            if c is not None:
                curves[name] = c
        full_title = f"{title}, trailing mean over {window} logged steps" if window > 1 else title
        paths.append(plot_curves(curves, out_dir / f"{stem}.png", full_title, ylabel, colors))
        panels.append((title, ylabel, curves))
    seeds = max((d["summary"]["runs_ok"] for d in result["groups"].values()), default=0)
    suptitle = f"mean over seeds (line) and min-max (band), up to {seeds} seeds; trailing mean over {window} steps"
    paths.append(plot_curve_grid(panels, out_dir / "curves.png", suptitle, colors))
    return paths


def config_block(config: dict) -> str:
    hashes = ", ".join(f"{Path(p).parent.name} `{h}`" for p, h in config["recipe_sha256"].items())
    return "\n".join([
        f"- command: `{config['command']}`",
        f"- seeds: {' '.join(map(str, config['seeds']))}; overrides for every run: `{' '.join(config['overrides'])}`",
        f"- recipes (sha256[:12]): {hashes}",
        f"- machine: {config['machine']}; total wall time {config['wall_s'] / 60:.1f} min (jobs={config['jobs']})",
    ])  # fmt: skip


def write_compare_report(result: dict, config: dict, out_dir: Path, window: int, threshold: float) -> Path:
    figures = write_curves(result, out_dir, window)
    text = "\n\n".join([
        "# GRPO vs EGSW vs Clip_B vs Clip_V on the embedded task",
        config_block(config),
        compare_table(result, threshold),
        f"Steps to threshold: first logged step whose trailing mean of `{config['reward_key']}` over {window} logged "
        "steps is >= the threshold; the mean is over the seeds that reached it. Final accuracy: greedy, held-out test "
        "split (accuracy.json). Mean completion length: mean of `completions/mean_length` over the run.",
        failures_text(result), "Figures: " + ", ".join(f"`{p.name}`" for p in figures),
    ])  # fmt: skip
    (out_dir / "compare.md").write_text(text + "\n")
    (out_dir / "compare.json").write_text(json.dumps(_json_ready(result, config), indent=2))
    return out_dir / "compare.md"


def setting_label(alpha: float, temperature: float) -> str:
    return f"a{alpha:g}_p{temperature:g}"


def parse_setting(label: str) -> tuple[float, float]:
    alpha, temperature = label[1:].split("_p")
    return float(alpha), float(temperature)


def write_sweep_report(result: dict, config: dict, out_dir: Path) -> Path:
    from .plots import plot_heatmap

    cells = {parse_setting(name): (d["summary"]["final_accuracy_mean"], d["summary"]["final_accuracy_std"])
             for name, d in result["groups"].items()}  # fmt: skip
    alphas = sorted(set(config.get("alphas", SWEEP_ALPHAS)) | {a for a, _ in cells})
    temperatures = sorted(set(config.get("temperatures", SWEEP_TEMPERATURES)) | {p for _, p in cells})
    title = f"EGSW final accuracy, mean over {len(config['seeds'])} seed(s); blank: not run"
    heatmap = plot_heatmap(alphas, temperatures, cells, out_dir / "sweep_heatmap.png", title)
    text = "\n\n".join([
        "# EGSW alpha / P sweep on the embedded task", config_block(config),
        f"Stage 1: alpha in {config.get('alphas')} at P = {SWEEP_BASE_TEMPERATURE:g}. Stage 2: P in "
        f"{config.get('temperatures')} at alpha = {config.get('stage2_alpha')} ({config.get('stage2_reason', '')}).",
        sweep_table(result),
        "Weight statistics: the per-step `egsw/weight_min|max|std|ess` averaged over the logged steps of each run, "
        "then over seeds. Final accuracy: greedy, held-out test split (accuracy.json).",
        failures_text(result), f"Figure: `{heatmap.name}`",
    ])  # fmt: skip
    (out_dir / "sweep.md").write_text(text + "\n")
    (out_dir / "sweep.json").write_text(json.dumps(_json_ready(result, config), indent=2))
    return out_dir / "sweep.md"


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------


def _common_options(parser: argparse.ArgumentParser, output_dir: str) -> None:
    parser.add_argument("--output_dir", default=output_dir, help=f"where runs and reports go (default {output_dir})")
    parser.add_argument("--seeds", type=int, nargs="+", help="training seeds (--seed of grpo.py)")
    parser.add_argument("--max_steps", type=int, help="optimizer steps of every run (same for every method)")
    parser.add_argument(
        "--eval_accuracy_samples", type=int, help="held-out test rows of the accuracy; default: recipe's"
    )
    parser.add_argument("--eval_max_new_tokens", type=int, help="default: the recipe's")
    parser.add_argument("--logging_steps", type=int, default=1, help="log every N steps (default 1: every step)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 2 seeds, 2 steps, 8 eval rows")
    parser.add_argument("--jobs", type=int, default=2,
                        help="runs at once; each gets cpu_count/jobs threads (OMP_NUM_THREADS)")  # fmt: skip
    parser.add_argument("--run_timeout", type=float, default=3600, help="seconds before a run is killed (failed)")
    parser.add_argument("--reuse", action="store_true",
                        help="keep runs whose compare_run.json shows the same command finished (resume)")  # fmt: skip
    parser.add_argument("--reward_threshold", type=float, default=REWARD_THRESHOLD,
                        help="threshold of the steps-to-reward column")  # fmt: skip
    parser.add_argument("--reward_key", default=REWARD_KEY, help="metric the threshold applies to")
    parser.add_argument("--smooth_window", type=int, default=5, help="trailing-mean window, in logged steps")
    parser.add_argument("--allow_recipe_drift", action="store_true",
                        help="run even if the recipes differ in non-method keys")  # fmt: skip


def _budget(args, defaults: dict) -> None:
    preset = {**defaults, **(QUICK if args.quick else {})}
    for key, value in preset.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)


def _overrides(args) -> list[str]:
    overrides = ["--max_steps", str(args.max_steps), "--logging_steps", str(args.logging_steps)]
    for key in ("eval_accuracy_samples", "eval_max_new_tokens"):  # default: the recipe's
        if getattr(args, key) is not None:
            overrides += [f"--{key}", str(getattr(args, key))]
    return overrides


def _config(args, extra: list[str], recipes: dict[str, str], argv: list[str], wall_s: float) -> dict:
    """`recipes`: {source path: snapshot path}; the hashes are the snapshots' (= the sources' at launch)."""
    return {
        "command": "python -m open_r1_egsw.compare " + " ".join(argv),
        "seeds": args.seeds,
        "overrides": _overrides(args) + extra,
        "recipe_sha256": {source: recipe_hash(snapshot) for source, snapshot in recipes.items()},
        "reward_key": args.reward_key,
        "reward_threshold": args.reward_threshold,
        "smooth_window": args.smooth_window,
        "jobs": args.jobs,
        "machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
        "wall_s": wall_s,
    }


def _check_recipes(recipes: dict[str, str], allow_drift: bool) -> dict[str, str]:
    present = {}
    for name, path in recipes.items():
        if Path(path).exists():
            present[name] = path
        else:
            say(f"skipping {name}: recipe {path} not found")
    drift = recipe_drift(present)
    if drift:
        message = "the recipes differ in non-method keys, so the runs would not compare like for like:\n  " + (
            "\n  ".join(drift)
        )
        if not allow_drift:
            raise SystemExit(f"error: {message}\nAlign the recipes, or pass --allow_recipe_drift.")
        say(f"warning: {message}")
    return present


def main_compare(argv: list[str], extra: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m open_r1_egsw.compare", description=__doc__.split("\n\n")[0])
    _common_options(parser, "reports/compare")
    parser.add_argument("--methods", nargs="+", default=list(METHOD_RECIPES), choices=list(METHOD_RECIPES))
    args = parser.parse_args(argv)
    _budget(args, COMPARE_DEFAULTS)
    recipes = _check_recipes({m: METHOD_RECIPES[m] for m in args.methods}, args.allow_recipe_drift)
    if not recipes:
        raise SystemExit("error: none of the selected methods has a recipe.")
    out = Path(args.output_dir)
    snapshots = snapshot_recipes(recipes, out)
    # seed-major order: if the budget runs out, every method has the same seeds done
    specs = [RunSpec(m, s, snapshots[m], out / m / f"seed{s}", _overrides(args)) for s in args.seeds for m in recipes]
    start = time.monotonic()
    records = execute(specs, extra, args.jobs, args.run_timeout, args.reuse)
    sources = {recipes[m]: snapshots[m] for m in recipes}
    config = _config(args, extra, sources, argv + (["--", *extra] if extra else []), time.monotonic() - start)
    result = aggregate(out, list(recipes), args.reward_threshold, args.smooth_window, args.reward_key)
    report = write_compare_report(result, config, out, args.smooth_window, args.reward_threshold)
    say(compare_table(result, args.reward_threshold))
    say(failures_text(result))
    say(f"report: {report} ({config['wall_s'] / 60:.1f} min)")
    return 1 if any(r["returncode"] != 0 for r in records) else 0


def best_alpha(result: dict, alphas: Sequence[float]) -> tuple[float, str]:
    """The stage-1 alpha with the best mean final accuracy (ties: higher final reward, then closer to 0.3)."""
    scored = []
    for name, data in result["groups"].items():
        alpha, temperature = parse_setting(name)
        g = data["summary"]
        if alpha in alphas and temperature == SWEEP_BASE_TEMPERATURE and g["final_accuracy_mean"] is not None:
            scored.append(((g["final_accuracy_mean"], g["final_reward_mean"] or 0.0, -abs(alpha - 0.3)), alpha))
    if not scored:
        return SWEEP_FALLBACK_ALPHA, f"no alpha run finished: the paper's {SWEEP_FALLBACK_ALPHA}"
    score, alpha = max(scored)
    return alpha, f"best final accuracy of stage 1 ({score[0]:.3f})"


def main_sweep(argv: list[str], extra: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m open_r1_egsw.compare sweep", description="EGSW alpha, then P.")
    _common_options(parser, "reports/sweep")
    parser.add_argument("--alphas", type=float, nargs="+", default=SWEEP_ALPHAS)
    parser.add_argument("--temperatures", type=float, nargs="+", default=SWEEP_TEMPERATURES)
    parser.add_argument("--stage2_alpha", default="best",
                        help="alpha of the P sweep: 'best' (of stage 1) or a number, e.g. 0.3")  # fmt: skip
    args = parser.parse_args(argv)
    _budget(args, SWEEP_DEFAULTS)
    recipe = METHOD_RECIPES["egsw"]
    if not Path(recipe).exists():
        raise SystemExit(f"error: the EGSW recipe {recipe} is missing.")
    out = Path(args.output_dir)
    source, recipe = recipe, snapshot_recipes({"egsw": recipe}, out)["egsw"]

    def specs_for(settings: list[tuple[float, float]]) -> list[RunSpec]:
        return [
            RunSpec(setting_label(a, p), s, recipe, out / setting_label(a, p) / f"seed{s}",
                    _overrides(args) + ["--egsw_alpha", str(a), "--egsw_temperature", str(p)],
                    meta={"egsw_alpha": a, "egsw_temperature": p})
            for s in args.seeds for a, p in settings
        ]  # fmt: skip

    start = time.monotonic()
    stage1 = [(a, SWEEP_BASE_TEMPERATURE) for a in args.alphas]
    records = execute(specs_for(stage1), extra, args.jobs, args.run_timeout, args.reuse)
    labels = [setting_label(a, p) for a, p in stage1]
    if args.stage2_alpha == "best":
        result = aggregate(out, labels, args.reward_threshold, args.smooth_window, args.reward_key)
        alpha, reason = best_alpha(result, args.alphas)
    else:
        alpha, reason = float(args.stage2_alpha), "fixed by --stage2_alpha"
    say(f"stage 2: P sweep at alpha = {alpha:g} ({reason})")
    stage2 = [(alpha, p) for p in args.temperatures if (alpha, p) not in stage1]
    records += execute(specs_for(stage2), extra, args.jobs, args.run_timeout, args.reuse)
    labels += [setting_label(a, p) for a, p in stage2]
    command = ["sweep", *argv] + (["--", *extra] if extra else [])
    config = _config(args, extra, {source: recipe}, command, time.monotonic() - start)
    config.update(alphas=args.alphas, temperatures=args.temperatures, stage2_alpha=alpha, stage2_reason=reason)
    result = aggregate(out, labels, args.reward_threshold, args.smooth_window, args.reward_key)
    report = write_sweep_report(result, config, out)
    say(sweep_table(result))
    say(failures_text(result))
    say(f"report: {report} ({config['wall_s'] / 60:.1f} min)")
    return 1 if any(r["returncode"] != 0 for r in records) else 0


def main_report(argv: list[str], extra: list[str]) -> int:
    """Re-aggregate what is on disk (e.g. after an interrupted run); the config block is read from the last JSON."""
    parser = argparse.ArgumentParser(prog="python -m open_r1_egsw.compare report")
    parser.add_argument("--kind", choices=["compare", "sweep"], default="compare")
    parser.add_argument("--output_dir", help="default: reports/<kind>")
    parser.add_argument("--reward_threshold", type=float, default=REWARD_THRESHOLD)
    parser.add_argument("--reward_key", default=REWARD_KEY)
    parser.add_argument("--smooth_window", type=int, default=5)
    args = parser.parse_args(argv)
    out = Path(args.output_dir or f"reports/{args.kind}")
    if not out.is_dir():
        raise SystemExit(f"error: no such directory: {out}")
    previous = out / f"{args.kind}.json"
    config = json.loads(previous.read_text())["config"] if previous.exists() else {}
    config.setdefault("command", "(report only)")
    config.setdefault("overrides", [])
    config.setdefault("recipe_sha256", {})
    config.setdefault("machine", "n/a")
    config.setdefault("wall_s", 0.0)
    config.setdefault("jobs", "n/a")
    config.update(reward_key=args.reward_key, reward_threshold=args.reward_threshold, smooth_window=args.smooth_window)
    if args.kind == "compare":
        groups = [m for m in METHOD_RECIPES if (out / m).is_dir()]
        groups += sorted(p.name for p in out.iterdir() if p.is_dir() and p.name not in groups)
        result = aggregate(out, groups, args.reward_threshold, args.smooth_window, args.reward_key)
        config.setdefault("seeds", sorted({r["seed"] for d in result["groups"].values() for r in d["runs"]}))
        write_compare_report(result, config, out, args.smooth_window, args.reward_threshold)
        say(compare_table(result, args.reward_threshold))
    else:
        groups = sorted((p.name for p in out.iterdir() if p.is_dir() and p.name.startswith("a") and "_p" in p.name),
                        key=parse_setting)  # fmt: skip
        result = aggregate(out, groups, args.reward_threshold, args.smooth_window, args.reward_key)
        config.setdefault("seeds", sorted({r["seed"] for d in result["groups"].values() for r in d["runs"]}))
        write_sweep_report(result, config, out)
        say(sweep_table(result))
    say(failures_text(result))
    return 0


COMMANDS: dict[str, Callable[[list[str], list[str]], int]] = {"sweep": main_sweep, "report": main_report}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:  # everything after `--` is passed to every grpo.py run
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    if argv and argv[0] in COMMANDS:
        return COMMANDS[argv[0]](argv[1:], extra)
    return main_compare(argv, extra)


if __name__ == "__main__":
    sys.exit(main())
