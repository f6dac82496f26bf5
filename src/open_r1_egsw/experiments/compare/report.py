"""compare.py, reporting: markdown tables, compare.json / sweep.json and the PNG figures (drawn by plots.py)."""

from __future__ import annotations

import json
from pathlib import Path

from open_r1_egsw.experiments.compare.stats import BASELINE, STAT_METRICS, curve, detectable_difference

CURVE_KEYS = [  # (metric in metrics.jsonl, file stem, title, y label)
    ("reward", "reward", "training reward (weighted sum)", "reward"),
    ("rewards/accuracy/mean", "accuracy_reward", "training accuracy reward", "fraction correct"),
    ("entropy", "entropy", "token entropy of the policy (TRL `entropy`)", "nats"),
    ("completions/mean_length", "completion_length", "mean completion length", "tokens"),
    ("egsw/ess", "ess", "EGSW weight ESS (EGSW runs only)", "ESS in (0, 1]"),
    ("entropy_dynamics/clip_frac", "clip_frac", "fraction of tokens clipped (clip runs only)", "fraction"),
]


def _fmt(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _percent(value) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def _clip_cell(group: dict) -> str:
    """Share of tokens dropped, and tokens dropped per generation batch (`entropy_dynamics/clip_count`)."""
    if group["clip_frac_mean"] is None:
        return "n/a"
    return f"{_percent(group['clip_frac_mean'])} ({_fmt(group.get('clip_count_mean'), 2)}/step)"


def digits(key: str) -> int:
    """Decimals of a metric's cells: 1 for lengths and steps, else 3."""
    return 1 if "length" in key or "steps" in key else 3


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
        "final entropy | tokens dropped (per step) | train time (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, data in result["groups"].items():
        g = data["summary"]
        lines.append(
            f"| {name} | {g['runs_ok']}/{g['runs']} | {_accuracy_cell(g)} | {_range_cell(g)} | "
            f"{_fmt(g['accuracy_before_mean'])} | {_threshold_cell(g)} | {_fmt(g['mean_completion_length'], 1)} | "
            f"{_fmt(g['final_reward_mean'])} | {_fmt(g['final_entropy_mean'])} | {_clip_cell(g)} | "
            f"{_fmt(g['train_runtime_s_mean'], 0)} |"
        )
    return "\n".join(lines)


def sweep_table(result: dict) -> str:
    """The markdown table of the EGSW sweep, one row per (alpha, P) setting: final accuracy and reward AUC (mean and
    95% t interval over the cell's seeds), and the run-averaged weight statistics."""
    lines = [
        "| alpha | P | runs ok | final greedy accuracy | reward AUC | final entropy (nats) | weight min | weight max "
        "| weight std | ESS |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, data in result["groups"].items():
        g, (alpha, temperature) = data["summary"], parse_setting(name)
        ci = g["ci"]
        lines.append(
            f"| {alpha:g} | {temperature:g} | {g['runs_ok']}/{g['runs']} | {ci_cell(ci['final_accuracy'])} | "
            f"{ci_cell(ci['reward_auc'])} | {ci_cell(ci['final_entropy'])} | {_fmt(g['egsw/weight_min'])} | "
            f"{_fmt(g['egsw/weight_max'])} | {_fmt(g['egsw/weight_std'])} | {_fmt(g['egsw/ess'])} |"
        )
    return "\n".join(lines)


def ci_cell(ci: dict, digits: int = 3, signed: bool = False, show_n: bool = True) -> str:
    """`mean [low, high] (n=N)`, bold when a paired interval excludes 0 (`beyond_noise`); the mean and n alone without
    an interval; n/a without a mean. `signed` prints the mean's sign, `show_n=False` leaves n off an interval."""
    if ci.get("mean") is None:
        return "n/a"
    mean = f"{ci['mean']:+.{digits}f}" if signed else f"{ci['mean']:.{digits}f}"
    if ci.get("low") is None:
        return f"{mean} (n={ci['n']})"
    cell = f"{mean} [{ci['low']:.{digits}f}, {ci['high']:.{digits}f}]"
    if ci.get("beyond_noise"):
        cell = f"**{cell}**"
    return f"{cell} (n={ci['n']})" if show_n else cell


def ci_table(result: dict) -> str:
    """Per method: mean and 95% t interval over seeds of each of STAT_METRICS."""
    lines = [
        "| method | " + " | ".join(label for _, label in STAT_METRICS) + " |",
        "|---" * (len(STAT_METRICS) + 1) + "|",
    ]
    for name, data in result["groups"].items():
        cells = [ci_cell(data["summary"]["ci"][key], digits(key)) for key, _ in STAT_METRICS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_table(result: dict, baseline: str = BASELINE) -> str:
    """Per method: method - baseline paired by seed, mean and 95% t interval of the differences."""
    if not result.get("paired"):
        return f"No paired differences: no `{baseline}` runs, or no other method."
    header = "| method - " + baseline + " | " + " | ".join(label for _, label in STAT_METRICS) + " |"
    lines = [header, "|---" * (len(STAT_METRICS) + 1) + "|"]
    for name, metrics in result["paired"].items():
        cells = [ci_cell(metrics[key], digits(key)) for key, _ in STAT_METRICS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def power_table(paired: dict, seeds: int, baseline: str = BASELINE) -> str:
    """Per method and metric: the std of the measured per-seed differences to the baseline (n seeds) and the
    smallest true difference `seeds` seeds detect 80% of the time at 95% (`detectable_difference`)."""
    if not paired:
        return f"No paired differences: no `{baseline}` runs, or no other method."
    header = f"| method - {baseline} | " + " | ".join(label for _, label in STAT_METRICS) + " |"
    lines = [header, "|---" * (len(STAT_METRICS) + 1) + "|"]
    for name, metrics in paired.items():
        cells = []
        for key, _ in STAT_METRICS:
            m, places = metrics.get(key, {}), digits(key) + (1 if digits(key) == 3 else 0)
            if m.get("std") is None:
                cells.append("n/a")
            else:
                found = detectable_difference(m["std"], seeds)
                cells.append(f"{found:.{places}f} (std {m['std']:.{places}f}, n={m['n']})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
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
    return {
        "config": config,
        "groups": groups,
        "paired": result.get("paired", {}),
        "failures": result["failures"],
        "warnings": result.get("warnings", []),
    }


def write_curves(result: dict, out_dir: Path, window: int) -> list[Path]:
    """One PNG per curve metric plus `curves.png` with all of them (mean over seeds, 95% t-interval band)."""
    from open_r1_egsw.experiments.compare.plots import method_colors, plot_curve_grid, plot_curves

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
    suptitle = (
        f"mean over seeds (line), 95% t interval of the mean (band), up to {seeds} seeds; "
        f"trailing mean over {window} steps"
    )
    paths.append(plot_curve_grid(panels, out_dir / "curves.png", suptitle, colors))
    return paths


def config_block(config: dict) -> str:
    hashes = ", ".join(f"{Path(p).parent.name} `{h}`" for p, h in config["recipe_sha256"].items())
    return "\n".join(
        [
            f"- command: `{config['command']}`",
            f"- seeds: {' '.join(map(str, config['seeds']))}; "
            f"overrides for every run: `{' '.join(config['overrides'])}`",
            f"- recipes (sha256[:12]): {hashes}",
            f"- machine: {config['machine']}; total wall time {config['wall_s'] / 60:.1f} min (jobs={config['jobs']})",
        ]
        + ([f"- task: {config['task']}"] if config.get("task") else [])
        + (
            [f"- versions: {', '.join(f'{k} {v}' for k, v in config['versions'].items())}"]
            if config.get("versions")
            else []
        )
    )


def write_compare_report(result: dict, config: dict, out_dir: Path, window: int, threshold: float) -> Path:
    figures = write_curves(result, out_dir, window)
    text = "\n\n".join(
        [
            f"# {' vs '.join(result['groups']) or 'Method comparison'} ({config.get('task', 'embedded task')})",
            config_block(config),
            compare_table(result, threshold),
            "Per method, mean over seeds and its 95% t interval [low, high] (n = seeds):",
            ci_table(result),
            f"Paired by seed, method - {BASELINE} (mean difference and its 95% t interval; **bold**: the interval "
            "excludes 0 on its unrounded bounds, a difference beyond seed noise at this number of seeds; steps to "
            "threshold over the seeds where both runs reached it):",
            paired_table(result),
            f"Smallest true difference these {len(config['seeds'])} seeds detect 80% of the time (95% interval), from "
            "the measured std of the per-seed differences (std and n in brackets):",
            power_table(result.get("paired", {}), len(config["seeds"])),
            f"Reward AUC: trapezoidal area under `{config['reward_key']}` against step divided by the span of steps "
            "(the time-averaged training reward). Final entropy: trailing mean of TRL's `entropy` (nats) at the last "
            "logged step. Steps to threshold: first logged step whose trailing mean of "
            f"`{config['reward_key']}` over {window} logged steps is >= the threshold; the mean is over the seeds "
            "that reached it. Tokens dropped: Clip_B / Clip_V's `entropy_dynamics/clip_frac` and `clip_count` (per "
            "generation batch), averaged over the run. Final accuracy: greedy, held-out test split (accuracy.json). "
            "Mean completion length: mean of `completions/mean_length` over the run.",
            failures_text(result),
            "Figures: " + ", ".join(f"`{p.name}`" for p in figures),
        ]
    )
    (out_dir / "compare.md").write_text(text + "\n")
    (out_dir / "compare.json").write_text(json.dumps(_json_ready(result, config), indent=2))
    return out_dir / "compare.md"


def setting_label(alpha: float, temperature: float) -> str:
    return f"a{alpha:g}_p{temperature:g}"


def parse_setting(label: str) -> tuple[float, float]:
    alpha, temperature = label[1:].split("_p")
    return float(alpha), float(temperature)


def write_sweep_report(result: dict, config: dict, out_dir: Path) -> Path:
    from open_r1_egsw.experiments.compare.plots import plot_heatmap

    cells = {
        parse_setting(name): (d["summary"]["final_accuracy_mean"], d["summary"]["final_accuracy_std"])
        for name, d in result["groups"].items()
    }
    alphas = sorted(set(config.get("alphas", [])) | {a for a, _ in cells})
    temperatures = sorted(set(config.get("temperatures", [])) | {p for _, p in cells})
    more = ", ".join(map(str, config.get("more_seeds", []))) or "none"
    title = "EGSW final greedy accuracy, mean ± std over the cell's seeds"
    heatmap = plot_heatmap(alphas, temperatures, cells, out_dir / "sweep_heatmap.png", title)
    best = config.get("best")
    text = "\n\n".join(
        [
            f"# EGSW alpha x P sweep ({config.get('task', 'embedded task')})",
            config_block(config),
            f"Stage 1: every cell of alpha in {config.get('alphas')} x P in {config.get('temperatures')} at seed(s) "
            f"{', '.join(map(str, config.get('grid_seeds', config['seeds'])))}. Stage 2: seeds {more} at the best "
            "cell "
            f"({setting_label(*best) if best else 'n/a'}: {config.get('best_reason', 'n/a')}) and at the paper's "
            f"settings {', '.join(setting_label(*c) for c in config.get('paper_settings', []))}. The best cell is "
            "picked on stage 1 alone, so its stage-1 number is optimistic (a maximum over cells); its stage-2 seeds "
            "are not.",
            sweep_table(result),
            "Final greedy accuracy: held-out test split (accuracy.json). Reward AUC: time-averaged training accuracy "
            "reward. Intervals: 95% t over the cell's seeds (none with one seed). Weight statistics: the per-step "
            "`egsw/weight_min|max|std|ess` averaged over the logged steps of each run, then over seeds.",
            failures_text(result),
            f"Figure: `{heatmap.name}`",
        ]
    )
    (out_dir / "sweep.md").write_text(text + "\n")
    (out_dir / "sweep.json").write_text(json.dumps(_json_ready(result, config), indent=2))
    return out_dir / "sweep.md"
