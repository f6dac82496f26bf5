"""Collect every evaluation results directory into one table: `report.md`, `report.json` and `report.png`.

    python -m open_r1_egsw.experiments.report [--results-dir results] [--output-dir RESULTS_DIR]     # `make report`

One row per (model, task) from `RESULTS_DIR/<model-name>/<task>.json` (pass@1, standard error, answer rate, rows,
samples, prompt, settings, checkpoint), then a model x task pass@1 table; other JSON files are ignored.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

TASK_ORDER = ["math_500", "aime24", "aime25", "gpqa:diamond"]
COLUMNS = [
    ("model", "model"),
    ("task", "task"),
    ("pass@1", "pass@1"),
    ("stderr", "stderr"),
    ("answer_rate", "answer rate"),
    ("rows", "rows"),
    ("k", "k"),
    ("prompt", "prompt"),
    ("temperature", "temperature"),
    ("top_p", "top_p"),
    ("max_new_tokens", "max new tokens"),
    ("max_model_length", "max model length"),
    ("backend", "backend"),
    ("checkpoint", "checkpoint"),
]


# Qwen2.5-Math's instruction (evaluation/settings.py QWEN_INSTRUCTION; not imported: this module stays light)
QWEN_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


def prompt_label(generation: dict) -> str | None:
    """Which prompt a results file's `generation` records: "lighteval" (each task's lighteval 0.13 prompt), "qwen"
    (the problem + Qwen's instruction), "problem" (the problem alone) or "problem + instruction" (another one),
    "+ system prompt" when one was sent; None when the file predates the prompt fields."""
    template, instruction = generation.get("prompt_template"), generation.get("instruction")
    if template == "lighteval":
        label = "lighteval"
    elif instruction == QWEN_INSTRUCTION:
        label = "qwen"
    elif instruction:
        label = "problem + instruction"
    elif template == "problem" or "instruction" in generation:
        label = "problem"
    else:
        return None
    return label + (" + system prompt" if generation.get("system_prompt") else "")


def _task_key(task: str) -> tuple[int, str]:
    return (TASK_ORDER.index(task), task) if task in TASK_ORDER else (len(TASK_ORDER), task)


def collect(results_dir: Path) -> list[dict]:
    """One row per results file `results_dir/<model>/<task>.json`, sorted by model then task."""
    rows = []
    for path in sorted(Path(results_dir).glob("*/*.json")):
        if path.parent.name.startswith("."):
            continue
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            logger.warning("Skipping unreadable %s: %s", path, exc)
            continue
        if not isinstance(record, dict) or "task" not in record or "metrics" not in record:
            continue
        metrics, generation = record["metrics"], record.get("generation", {})
        rows.append(
            {
                "model": record.get("model_name") or path.parent.name,
                "task": record["task"],
                "pass@1": metrics.get("pass@1"),
                "stderr": metrics.get("pass@1_stderr"),
                "answer_rate": metrics.get("answer_rate"),
                "rows": record.get("num_rows"),
                "k": generation.get("num_samples"),
                "prompt": prompt_label(generation),
                "temperature": generation.get("temperature"),
                "top_p": generation.get("top_p"),
                "max_new_tokens": generation.get("max_new_tokens"),
                "max_model_length": generation.get("max_model_length"),
                "backend": record.get("backend"),
                "checkpoint": record.get("checkpoint"),
                "partial": record.get("max_samples") is not None,
                "source": str(path),
            }
        )
    rows.sort(key=lambda row: (row["model"], _task_key(row["task"])))
    return rows


def pivot(rows: list[dict]) -> dict[str, dict[str, float | None]]:
    """model -> task -> pass@1."""
    table: dict[str, dict[str, float | None]] = {}
    for row in rows:
        table.setdefault(row["model"], {})[row["task"]] = row["pass@1"]
    return table


def _fmt(value, key: str) -> str:
    if value is None:
        return "-"
    if key in ("pass@1", "stderr", "answer_rate") and isinstance(value, (int, float)):
        return f"{value:.4f}"
    return str(value)


def to_markdown(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(title for _, title in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        cells = [_fmt(row[key], key) for key, _ in COLUMNS]
        if row["partial"]:
            cells[1] += " (partial)"
        lines.append("| " + " | ".join(cells) + " |")
    table = pivot(rows)
    tasks = sorted({row["task"] for row in rows}, key=_task_key)
    lines += [
        "",
        "pass@1, model x task:",
        "",
        "| model | " + " | ".join(tasks) + " |",
        "|" + "---|" * (len(tasks) + 1),
    ]
    for model, scores in table.items():
        lines.append(f"| {model} | " + " | ".join(_fmt(scores.get(task), "pass@1") for task in tasks) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    """Grouped bar chart: tasks on the x axis, one bar per model, standard-error whiskers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({row["task"] for row in rows}, key=_task_key)
    models = sorted({row["model"] for row in rows})
    by_key = {(row["model"], row["task"]): row for row in rows}
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(tasks) * max(1, len(models) / 2)), 4.0))
    for i, model in enumerate(models):
        xs, ys, errs = [], [], []
        for j, task in enumerate(tasks):
            row = by_key.get((model, task))
            if row is None or row["pass@1"] is None:
                continue
            xs.append(j - 0.4 + width * (i + 0.5))
            ys.append(row["pass@1"])
            errs.append(row["stderr"] or 0.0)
        ax.bar(xs, ys, width=width, yerr=errs, capsize=3, label=model)
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_ylim(0, 1)
    ax.set_ylabel("pass@1")
    ax.set_title("Benchmark pass@1 (mean of k samples per problem)")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(results_dir: Path, output_dir: Path | None = None) -> dict[str, Path]:
    """Write report.md, report.json and report.png; raise FileNotFoundError when there is no result."""
    results_dir = Path(results_dir)
    rows = collect(results_dir)
    if not rows:
        raise FileNotFoundError(
            f"no evaluation results under {results_dir}/ (expected <model>/<task>.json from "
            "`python -m open_r1_egsw.evaluation.run`)"
        )
    output_dir = Path(output_dir or results_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {"md": output_dir / "report.md", "json": output_dir / "report.json", "png": output_dir / "report.png"}
    paths["md"].write_text(to_markdown(rows))
    paths["json"].write_text(json.dumps({"rows": rows, "pivot": pivot(rows)}, indent=2) + "\n")
    plot(rows, paths["png"])
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m open_r1_egsw.experiments.report", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--results-dir", default="results", help="directory holding <model>/<task>.json")
    parser.add_argument("--output-dir", help="where report.{md,json,png} go (default: the results directory)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        paths = write_report(Path(args.results_dir), Path(args.output_dir) if args.output_dir else None)
    except FileNotFoundError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    sys.stdout.write(paths["md"].read_text())
    sys.stdout.write("Wrote " + ", ".join(str(p) for p in paths.values()) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
