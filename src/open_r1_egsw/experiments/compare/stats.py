"""Aggregating a comparison: each run read back from `metrics.jsonl`, `accuracy.json` and `compare_run.json`,
summarised per run (final accuracy, steps to a reward threshold, reward AUC, final entropy, completion length, clip
and EGSW weight statistics) and per group over seeds (mean, 95% t interval, paired differences to the baseline).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path

from open_r1_egsw.experiments.compare.runs import RUN_RECORD
from open_r1_egsw.training.outputs import METRICS_FILE, read_metrics

ACCURACY_FILE = "accuracy.json"
WEIGHT_KEYS = ["egsw/weight_min", "egsw/weight_max", "egsw/weight_std", "egsw/ess"]
# per-run numbers that get a 95% CI over seeds and a paired difference to the baseline: (key, label)
STAT_METRICS = [
    ("final_accuracy", "final greedy accuracy"),
    ("reward_auc", "reward AUC (mean training reward over steps)"),
    ("final_entropy", "final entropy (nats)"),
    ("mean_completion_length", "mean completion length (tokens)"),
    ("steps_to_threshold", "steps to reward >= threshold (seeds reaching it)"),
]
BASELINE = "grpo"
# t_{0.975, df} for df = 1..30 (scipy.stats.t.ppf(0.975, df), 6 decimals); beyond 30 the Cornish-Fisher expansion
T975 = (
    12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004, 2.262157, 2.228139,
    2.200985, 2.178813, 2.160369, 2.144787, 2.131450, 2.119905, 2.109816, 2.100922, 2.093024, 2.085963,
    2.079614, 2.073873, 2.068658, 2.063899, 2.059539, 2.055529, 2.051831, 2.048407, 2.045230, 2.042272,
)  # fmt: skip
Z975 = 1.959963984540054  # the normal quantile
# t_{0.80, df} for df = 1..30 (scipy.stats.t.ppf(0.8, df)): the power term of the detectable difference
T80 = (
    1.376382, 1.060660, 0.978472, 0.940965, 0.919544, 0.905703, 0.896030, 0.888890, 0.883404, 0.879058,
    0.875530, 0.872609, 0.870152, 0.868055, 0.866245, 0.864667, 0.863279, 0.862049, 0.860951, 0.859964,
    0.859074, 0.858266, 0.857530, 0.856855, 0.856236, 0.855665, 0.855137, 0.854647, 0.854192, 0.853767,
)  # fmt: skip
Z80 = 0.8416212335729143


def t_critical(df: int) -> float:
    """Two-sided 95% Student t critical value t_{0.975, df}: the table up to df 30, then the Cornish-Fisher
    expansion in 1/df around the normal quantile (Abramowitz & Stegun 26.7.5; error < 1e-7 for df > 30)."""
    return _t_quantile(df, T975, Z975)


def detectable_difference(std: float, n: int) -> float:
    """The smallest true mean paired difference that n seeds detect with a two-sided 95% t interval excluding 0,
    80% of the time, given the sample std of the per-seed differences: (t_{0.975, n-1} + t_{0.80, n-1}) * std /
    sqrt(n) (the usual approximation; it treats std as known)."""
    return (t_critical(n - 1) + _t_quantile(n - 1, T80, Z80)) * std / math.sqrt(n)


def _t_quantile(df: int, table: tuple[float, ...], z: float) -> float:
    if df < 1:
        raise ValueError(f"a t quantile needs df >= 1, got {df}")
    if df <= len(table):
        return table[df - 1]
    terms = [
        (z**3 + z) / 4,
        (5 * z**5 + 16 * z**3 + 3 * z) / 96,
        (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384,
        (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160,
    ]
    return z + sum(g / df ** (k + 1) for k, g in enumerate(terms))


def mean_ci(values: Sequence[float | None]) -> dict:
    """{n, mean, std, half_width, low, high}: the 95% t interval of the mean (None values dropped; no interval
    with fewer than 2 values)."""
    values = [float(v) for v in values if v is not None]
    n = len(values)
    out = {"n": n, "mean": None, "std": None, "half_width": None, "low": None, "high": None}
    if n == 0:
        return out
    out["mean"] = sum(values) / n
    if n >= 2:
        out["std"] = statistics.stdev(values)
        out["half_width"] = t_critical(n - 1) * out["std"] / math.sqrt(n)
        out["low"], out["high"] = out["mean"] - out["half_width"], out["mean"] + out["half_width"]
    return out


def paired_difference(values: dict, baseline: dict) -> dict:
    """`values[seed] - baseline[seed]` over the seeds present (and not None) in both, with their 95% t interval;
    `beyond_noise`: the interval excludes 0 on its unrounded bounds (None without an interval)."""
    seeds = sorted(s for s in values.keys() & baseline.keys() if values[s] is not None and baseline[s] is not None)
    differences = [values[s] - baseline[s] for s in seeds]
    out = {"seeds": seeds, "differences": differences, **mean_ci(differences)}
    out["beyond_noise"] = None if out["low"] is None else bool(out["low"] > 0 or out["high"] < 0)
    return out


def reward_auc(steps: Sequence[int], values: Sequence[float | None]) -> float | None:
    """Trapezoidal area under (step, value) divided by the step span: the time-averaged value (None skipped)."""
    points = [(s, v) for s, v in zip(steps, values) if v is not None]
    if not points:
        return None
    if len(points) == 1:
        return float(points[0][1])
    area = sum((s1 - s0) * (v0 + v1) / 2 for (s0, v0), (s1, v1) in zip(points, points[1:]))
    return area / (points[-1][0] - points[0][0])


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
    """The per-run numbers of the tables: final accuracy (accuracy.json's `accuracy_after`), steps to threshold and
    reward AUC of `reward_key`, means over the run of completion length and clip statistics, the smoothed reward and
    entropy at the last logged step, and the EGSW weight statistics averaged over the run."""
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
        "reward_auc": reward_auc(steps, rewards),
        "mean_completion_length": _mean(r.get("completions/mean_length") for r in train),
        "final_reward": smoothed[-1] if smoothed else None,
        "final_entropy": trailing_mean([r.get("entropy") for r in train], window)[-1] if train else None,
        "clip_frac": _mean(r.get("entropy_dynamics/clip_frac") for r in train),
        "clip_count": _mean(r.get("entropy_dynamics/clip_count") for r in train),
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
        "clip_count_mean": _mean(r["clip_count"] for r in ok),
        "train_runtime_s_mean": _mean(r["train_runtime_s"] for r in ok),
    }
    for key in WEIGHT_KEYS:
        group[key] = _mean(r[key] for r in ok)
    group["ci"] = {key: mean_ci(r[key] for r in ok) for key, _ in STAT_METRICS}
    return group


def paired_vs_baseline(groups: dict, baseline: str = BASELINE) -> dict:
    """{method: {metric: paired_difference(method, baseline)}} for every group but the baseline ({} without it)."""
    if baseline not in groups:
        return {}

    def by_seed(runs: list[dict], key: str) -> dict:
        return {r["seed"]: r[key] for r in runs if r["status"] == "ok"}

    base = groups[baseline]["runs"]
    return {
        name: {key: paired_difference(by_seed(data["runs"], key), by_seed(base, key)) for key, _ in STAT_METRICS}
        for name, data in groups.items()
        if name != baseline
    }


def discover_runs(root: Path, groups: Sequence[str] | None = None) -> dict[str, list[Path]]:
    """{group: [run dirs]} for every <root>/<group>/seed<k>/ (groups in the given order, else sorted)."""
    names = list(groups) if groups is not None else sorted(p.name for p in root.iterdir() if p.is_dir())
    found = {}
    for name in names:
        seeds = sorted((root / name).glob("seed*"), key=lambda p: int(p.name[4:]) if p.name[4:].isdigit() else -1)
        if seeds:
            found[name] = seeds
    return found


def aggregate(
    root: str | Path, groups: Sequence[str] | None, threshold: float, window: int, reward_key: str = "reward"
) -> dict:
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
                result["failures"].append(
                    {
                        "group": name,
                        "seed": summary["seed"],
                        "status": summary["status"],
                        "dir": summary["dir"],
                        "error": summary.get("error", ""),
                    }
                )
        result["groups"][name] = {"runs": per_run, "summary": summarize_group(per_run), "_loaded": runs}
    result["paired"] = paired_vs_baseline(result["groups"])
    return result


def curve(runs: list[dict], key: str, window: int, band: str = "ci") -> tuple[list, list, list, list] | None:
    """(steps, mean, low, high) over the ok runs of the smoothed `key`, on the union of their logged steps.

    band "ci": low/high are the 95% t interval of the mean over the runs logged at that step (the mean itself where
    only one run is); "minmax": their min and max.
    """
    if band not in ("ci", "minmax"):
        raise ValueError(f"band must be 'ci' or 'minmax', got {band!r}")
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
    means = [sum(by_step[s]) / len(by_step[s]) for s in steps]
    if band == "minmax":
        return steps, means, [min(by_step[s]) for s in steps], [max(by_step[s]) for s in steps]
    intervals = [mean_ci(by_step[s]) for s in steps]
    low = [c["low"] if c["low"] is not None else m for c, m in zip(intervals, means)]
    high = [c["high"] if c["high"] is not None else m for c, m in zip(intervals, means)]
    return steps, means, low, high
