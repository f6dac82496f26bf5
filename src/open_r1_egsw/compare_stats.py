"""compare.py, aggregating: runs read back from the trainer's files, summarised per run and per group over seeds.

Nothing is logged twice: the numbers come from `metrics.jsonl` (`utils.read_metrics`), `accuracy.json` and
compare's `compare_run.json`. Definitions (the tables of compare.md / sweep.md; the same numbers in the JSON):
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

import json
import statistics
from collections.abc import Sequence
from pathlib import Path

from .compare_runs import RUN_RECORD
from .utils import METRICS_FILE, read_metrics

ACCURACY_FILE = "accuracy.json"
WEIGHT_KEYS = ["egsw/weight_min", "egsw/weight_max", "egsw/weight_std", "egsw/ess"]


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
