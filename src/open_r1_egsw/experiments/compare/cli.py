"""Compare GRPO, EGSW, the entropy clips and TRL's entropy methods over seeds with the same compute, and sweep
EGSW's alpha x P grid; on the demo task (demo_task.py) by default, the embedded one with `--task tiny`.

    python -m open_r1_egsw.experiments.compare [--powered | --quick] [--seeds 0 1] [-- GRPO_ARGS...]
    python -m open_r1_egsw.experiments.compare sweep    # alpha x P on seed 0, then more seeds at the best cell
    python -m open_r1_egsw.experiments.compare report   # re-aggregate the runs already on disk
    python -m open_r1_egsw.experiments.compare power --seeds 10   # the differences 10 seeds can detect
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from open_r1_egsw.experiments.compare.report import (
    ci_table,
    compare_table,
    failures_text,
    paired_table,
    parse_setting,
    power_table,
    setting_label,
    sweep_table,
    write_compare_report,
    write_sweep_report,
)
from open_r1_egsw.experiments.compare.runs import RunSpec, execute, recipe_drift, recipe_hash, say, snapshot_recipes
from open_r1_egsw.experiments.compare.stats import aggregate

# One recipe per method, identical but for the method keys; grpo is the baseline of the paired differences.
# top_entropy and entropy_bonus are TRL's own (top_entropy_quantile, entropy_coef); egsw_alpha0 (the advantage
# softmax alone) and egsw_nats (entropy in nats, not divided by log |V|) are EGSW's ablations.
METHODS = "grpo egsw egsw_seq clip_b clip_v egsw_clip_b top_entropy entropy_bonus egsw_alpha0 egsw_nats".split()
# The powered comparison (`make compare-powered`): does the entropy term add anything beyond the reweighting?
POWERED = {"methods": ["grpo", "egsw", "egsw_alpha0", "egsw_nats"], "seeds": list(range(10))}
TASKS = {"demo": "demo task (demo_task.py)", "tiny": "embedded task (embedded.py)"}


def method_recipes(task: str = "tiny") -> dict[str, str]:
    """{method: its recipe} for `task`."""
    return {method: f"recipes/{task}/{method}/config.yaml" for method in METHODS}


METHOD_RECIPES = method_recipes("tiny")

# Only the number of steps is set here, the same for every method; batch, lengths and eval rows are the recipes'.
COMPARE_DEFAULTS = {"seeds": [0, 1, 2, 3, 4], "max_steps": 50}
SWEEP_DEFAULTS = {"seeds": [0, 1, 2], "max_steps": 50}
QUICK = {"seeds": [0, 1], "max_steps": 2, "eval_accuracy_samples": 8, "eval_max_new_tokens": 16}
# the steps-to-threshold column: the step at which the training accuracy reward reaches this, per task
REWARD_KEY = "rewards/accuracy/mean"
REWARD_THRESHOLDS = {"demo": 0.25, "tiny": 0.8}
# The EGSW paper's grid, alpha x P; its two reported settings (Qwen2.5-Math-7B, -Instruct) get the extra seeds too.
SWEEP_ALPHAS = [0.1, 0.3, 0.5, 0.8]
SWEEP_TEMPERATURES = [0.5, 1.0, 1.8]
PAPER_SETTINGS = [(0.3, 1.0), (0.8, 1.8)]


def fail(message: str) -> None:
    """Bad input: one `error: ...` line on stderr, exit code 2 (nothing has been written yet)."""
    sys.stderr.write(f"error: {message}\n")
    raise SystemExit(2)


def _common_options(parser: argparse.ArgumentParser, output_dir: str) -> None:
    parser.add_argument(
        "--task",
        choices=list(TASKS),
        default="demo",
        help="recipes/<task>/<method>/config.yaml: demo (default, demo_task.py) or tiny (embedded.py, make train's)",
    )
    parser.add_argument("--output_dir", help=f"where runs and reports go (default {output_dir}, -tiny for tiny)")
    parser.add_argument("--seeds", type=int, nargs="+", help="training seeds (--seed of grpo.py)")
    parser.add_argument("--max_steps", type=int, help="optimizer steps of every run (same for every method)")
    parser.add_argument(
        "--eval_accuracy_samples", type=int, help="held-out test rows of the accuracy; default: recipe's"
    )
    parser.add_argument("--eval_max_new_tokens", type=int, help="default: the recipe's")
    parser.add_argument("--logging_steps", type=int, default=1, help="log every N steps (default 1: every step)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 2 seeds, 2 steps, 8 eval rows")
    parser.add_argument(
        "--jobs", type=int, default=2, help="runs at once; each gets cpu_count/jobs threads (OMP_NUM_THREADS)"
    )
    parser.add_argument("--run_timeout", type=float, default=3600, help="seconds before a run is killed (failed)")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="keep runs whose compare_run.json shows the same command finished (resume)",
    )
    parser.add_argument(
        "--reward_threshold",
        type=float,
        help=f"threshold of the steps-to-reward column (default, per task: {REWARD_THRESHOLDS})",
    )
    parser.add_argument("--reward_key", default=REWARD_KEY, help="metric the threshold applies to")
    parser.add_argument("--smooth_window", type=int, default=5, help="trailing-mean window, in logged steps")
    parser.add_argument(
        "--allow_recipe_drift", action="store_true", help="run even if the recipes differ in non-method keys"
    )


def _budget(args, defaults: dict, output_dir: str) -> None:
    if args.output_dir is None:
        args.output_dir = output_dir if args.task == "demo" else f"{output_dir}-{args.task}"
    preset = {**defaults, "reward_threshold": REWARD_THRESHOLDS[args.task], **(QUICK if args.quick else {})}
    for key, value in preset.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)


def _overrides(args) -> list[str]:
    overrides = ["--max_steps", str(args.max_steps), "--logging_steps", str(args.logging_steps)]
    for key in ("eval_accuracy_samples", "eval_max_new_tokens"):  # default: the recipe's
        if getattr(args, key) is not None:
            overrides += [f"--{key}", str(getattr(args, key))]
    return overrides


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for package in ("torch", "transformers", "trl"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def _config(args, extra: list[str], recipes: dict[str, str], argv: list[str], wall_s: float) -> dict:
    """`recipes`: {source path: snapshot path}; the hashes are the snapshots' (= the sources' at launch)."""
    return {
        "command": "python -m open_r1_egsw.experiments.compare " + " ".join(argv),
        "task": TASKS[args.task],
        "versions": _versions(),
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
            fail(f"{message}\nAlign the recipes, or pass --allow_recipe_drift.")
        say(f"warning: {message}")
    return present


def main_compare(argv: list[str], extra: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m open_r1_egsw.experiments.compare", description=__doc__.split("\n\n")[0]
    )
    _common_options(parser, "reports/compare")
    parser.add_argument("--methods", nargs="+", choices=list(METHOD_RECIPES), help="default: all (--powered: its 4)")
    parser.add_argument(
        "--powered",
        action="store_true",
        help=f"{' '.join(POWERED['methods'])} x seeds 0-{POWERED['seeds'][-1]} -> reports/compare-powered",
    )
    args = parser.parse_args(argv)
    if args.powered:
        args.methods = args.methods or POWERED["methods"]
        args.seeds = args.seeds or POWERED["seeds"]
    args.methods = args.methods or list(METHOD_RECIPES)
    _budget(args, COMPARE_DEFAULTS, "reports/compare-powered" if args.powered else "reports/compare")
    recipes = _check_recipes({m: method_recipes(args.task)[m] for m in args.methods}, args.allow_recipe_drift)
    if not recipes:
        fail("none of the selected methods has a recipe.")
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
    say(ci_table(result))
    say(paired_table(result))
    say(failures_text(result))
    say(f"report: {report} ({config['wall_s'] / 60:.1f} min)")
    return 1 if any(r["returncode"] != 0 for r in records) else 0


def best_setting(result: dict, settings: Sequence[tuple[float, float]]) -> tuple[tuple[float, float], str]:
    """The grid cell with the best mean final accuracy (ties: higher reward AUC, then the paper's 7B setting's
    neighbourhood: smaller |alpha - 0.3| + |P - 1|)."""
    scored = []
    for name, data in result["groups"].items():
        setting = parse_setting(name)
        g = data["summary"]
        if setting in settings and g["final_accuracy_mean"] is not None:
            auc = g["ci"]["reward_auc"]["mean"] or 0.0
            distance = abs(setting[0] - PAPER_SETTINGS[0][0]) + abs(setting[1] - PAPER_SETTINGS[0][1])
            scored.append(((g["final_accuracy_mean"], auc, -distance), setting))
    if not scored:
        return PAPER_SETTINGS[0], f"no grid run finished: the paper's {setting_label(*PAPER_SETTINGS[0])}"
    score, setting = max(scored)
    return setting, f"best mean final accuracy of the grid ({score[0]:.3f})"


def main_sweep(argv: list[str], extra: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m open_r1_egsw.experiments.compare sweep",
        description="EGSW alpha x P grid on the first seed(s), then more seeds at the best cell and the paper's two.",
    )
    _common_options(parser, "reports/sweep")
    parser.add_argument("--alphas", type=float, nargs="+", default=SWEEP_ALPHAS)
    parser.add_argument("--temperatures", type=float, nargs="+", default=SWEEP_TEMPERATURES)
    parser.add_argument(
        "--grid_seeds",
        type=int,
        default=1,
        help="how many of --seeds every grid cell runs (stage 1); the rest go to stage 2",
    )
    args = parser.parse_args(argv)
    _budget(args, SWEEP_DEFAULTS, "reports/sweep")
    if not 1 <= args.grid_seeds <= len(args.seeds):
        fail(f"--grid_seeds must be between 1 and the number of --seeds ({len(args.seeds)}), not {args.grid_seeds}.")
    recipe = method_recipes(args.task)["egsw"]
    if not Path(recipe).exists():
        fail(f"the EGSW recipe {recipe} is missing.")
    out = Path(args.output_dir)
    source, recipe = recipe, snapshot_recipes({"egsw": recipe}, out)["egsw"]

    def specs_for(settings: list[tuple[float, float]], seeds: list[int]) -> list[RunSpec]:
        return [
            RunSpec(
                setting_label(a, p),
                s,
                recipe,
                out / setting_label(a, p) / f"seed{s}",
                _overrides(args) + ["--egsw_alpha", str(a), "--egsw_temperature", str(p)],
                meta={"egsw_alpha": a, "egsw_temperature": p},
            )
            for s in seeds
            for a, p in settings
        ]

    start = time.monotonic()
    grid = [(a, p) for a in args.alphas for p in args.temperatures]
    grid_seeds, more_seeds = args.seeds[: args.grid_seeds], args.seeds[args.grid_seeds :]
    records = execute(specs_for(grid, grid_seeds), extra, args.jobs, args.run_timeout, args.reuse)
    labels = [setting_label(a, p) for a, p in grid]
    best, reason = best_setting(
        aggregate(out, labels, args.reward_threshold, args.smooth_window, args.reward_key), grid
    )
    confirm = list(dict.fromkeys([best, *PAPER_SETTINGS]))
    say(f"stage 2: seeds {more_seeds} at {', '.join(setting_label(*c) for c in confirm)} (best: {reason})")
    records += execute(specs_for(confirm, more_seeds), extra, args.jobs, args.run_timeout, args.reuse)
    labels += [setting_label(*c) for c in confirm if c not in grid]
    command = ["sweep", *argv] + (["--", *extra] if extra else [])
    config = _config(args, extra, {source: recipe}, command, time.monotonic() - start)
    config.update(
        alphas=args.alphas,
        temperatures=args.temperatures,
        grid_seeds=grid_seeds,
        more_seeds=more_seeds,
        best=list(best),
        best_reason=reason,
        paper_settings=[list(c) for c in PAPER_SETTINGS],
    )
    result = aggregate(out, labels, args.reward_threshold, args.smooth_window, args.reward_key)
    report = write_sweep_report(result, config, out)
    say(sweep_table(result))
    say(failures_text(result))
    say(f"report: {report} ({config['wall_s'] / 60:.1f} min)")
    return 1 if any(r["returncode"] != 0 for r in records) else 0


def main_report(argv: list[str], extra: list[str]) -> int:
    """Re-aggregate what is on disk (e.g. after an interrupted run); the config block is read from the last JSON."""
    parser = argparse.ArgumentParser(prog="python -m open_r1_egsw.experiments.compare report")
    parser.add_argument("--kind", choices=["compare", "sweep"], default="compare")
    parser.add_argument("--output_dir", help="default: reports/<kind>")
    parser.add_argument("--reward_threshold", type=float, help="default: the value recorded in the last report")
    parser.add_argument("--reward_key", default=REWARD_KEY)
    parser.add_argument("--smooth_window", type=int, default=5)
    args = parser.parse_args(argv)
    out = Path(args.output_dir or f"reports/{args.kind}")
    if not out.is_dir():
        fail(f"no such directory: {out}")
    previous = out / f"{args.kind}.json"
    config = json.loads(previous.read_text())["config"] if previous.exists() else {}
    config.setdefault("command", "(report only)")
    config.setdefault("overrides", [])
    config.setdefault("recipe_sha256", {})
    config.setdefault("machine", "n/a")
    config.setdefault("wall_s", 0.0)
    config.setdefault("jobs", "n/a")
    if args.reward_threshold is None:
        args.reward_threshold = config.get("reward_threshold", REWARD_THRESHOLDS["tiny"])
    config.update(reward_key=args.reward_key, reward_threshold=args.reward_threshold, smooth_window=args.smooth_window)
    if args.kind == "compare":
        groups = [m for m in METHOD_RECIPES if (out / m).is_dir()]
        groups += sorted(p.name for p in out.iterdir() if p.is_dir() and p.name not in groups)
        result = aggregate(out, groups, args.reward_threshold, args.smooth_window, args.reward_key)
        config.setdefault("seeds", sorted({r["seed"] for d in result["groups"].values() for r in d["runs"]}))
        write_compare_report(result, config, out, args.smooth_window, args.reward_threshold)
        say(compare_table(result, args.reward_threshold))
    else:
        groups = sorted(
            (p.name for p in out.iterdir() if p.is_dir() and p.name.startswith("a") and "_p" in p.name),
            key=parse_setting,
        )
        result = aggregate(out, groups, args.reward_threshold, args.smooth_window, args.reward_key)
        config.setdefault("seeds", sorted({r["seed"] for d in result["groups"].values() for r in d["runs"]}))
        write_sweep_report(result, config, out)
        say(sweep_table(result))
    say(failures_text(result))
    return 0


def main_power(argv: list[str], extra: list[str]) -> int:
    """Before a run: the smallest difference N seeds would detect, from the per-seed spread of a saved comparison."""
    parser = argparse.ArgumentParser(
        prog="python -m open_r1_egsw.experiments.compare power", description=main_power.__doc__
    )
    parser.add_argument(
        "--from",
        dest="source",
        default="docs/results/compare/compare.json",
        help="a compare.json whose paired differences give the seed spread",
    )
    parser.add_argument("--seeds", type=int, default=len(POWERED["seeds"]), help="the planned number of seeds")
    args = parser.parse_args(argv)
    if extra:
        fail(f"power takes no grpo.py flags, got: {' '.join(extra)}")
    source = Path(args.source)
    if not source.is_file():
        fail(f"no such file: {source}")
    if args.seeds < 2:
        fail(f"--seeds must be >= 2, not {args.seeds}")
    try:
        paired = json.loads(source.read_text())["paired"]
    except (ValueError, KeyError):
        fail(f"{source} is not a compare.json (no `paired` section)")
    say(f"from {source}: smallest true difference {args.seeds} seeds detect 80% of the time at 95%")
    say(power_table(paired, args.seeds))
    return 0


COMMANDS: dict[str, Callable[[list[str], list[str]], int]] = {
    "sweep": main_sweep,
    "report": main_report,
    "power": main_power,
}


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
