"""Write small synthetic stand-ins for the four benchmarks, in each hub data set's columns, for offline runs.

    python -m open_r1_egsw.evaluation.local_data --out .cache/eval-data [--rows 4] [--seed 0]

The rows are additions in the embedded model's style, with the real sets' gold formats; the same seed writes the same
files. The embedded default replaces MATH-500 with the embedded test split.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
from pathlib import Path

from .benchmarks import LIGHTEVAL_TASKS

logger = logging.getLogger(__name__)

DEFAULT_ROOT = Path(".cache/eval-data")
EMBEDDED_TEST_SPLIT = Path(".cache/embedded/data/test.jsonl")  # embedded.DEFAULT_ROOT / "data" (no heavy import here)


def _pairs(rng: random.Random, n: int, high: int = 50) -> list[tuple[int, int]]:
    return [(rng.randint(1, high), rng.randint(1, high)) for _ in range(n)]


def math_500_rows(rng: random.Random, n: int) -> list[dict]:
    """MATH-500 columns: problem, solution, answer, subject, level, unique_id (the last row has a fraction answer)."""
    rows = []
    for i, (a, b) in enumerate(_pairs(rng, n)):
        if i == n - 1 and n > 1:
            problem, answer = f"What is $\\frac{{{a}}}{{{2 * a}}}$ in lowest terms?", "\\frac{1}{2}"
            solution = f"$\\frac{{{a}}}{{{2 * a}}} = \\boxed{{\\frac{{1}}{{2}}}}$."
        else:
            problem, answer = f"What is {a} + {b}?", str(a + b)
            solution = f"{a} + {b} = {a + b}, so the answer is $\\boxed{{{a + b}}}$."
        rows.append(
            {
                "problem": problem,
                "solution": solution,
                "answer": answer,
                "subject": "Prealgebra",
                "level": 1,
                "unique_id": f"synthetic/prealgebra/{i}.json",
            }
        )
    return rows


def aime24_rows(rng: random.Random, n: int) -> list[dict]:
    """HuggingFaceH4/aime_2024 columns: id, problem, solution, answer, url, year (one answer zero-padded, "007")."""
    rows = []
    for i, (a, b) in enumerate(_pairs(rng, n)):
        if i == 0:
            a, b = 3, 4  # 7, stored as "007" like some AIME copies do
        answer = f"{a + b:03d}" if i == 0 else str(a + b)
        rows.append(
            {
                "id": 60 + i,
                "problem": f"What is {a} + {b}?",
                "solution": f"{a} + {b} = {a + b}. The answer is $\\boxed{{{a + b}}}$.",
                "answer": answer,
                "url": f"https://example.invalid/synthetic/aime24/{i}",
                "year": "2024",
            }
        )
    return rows


def aime25_rows(rng: random.Random, n: int) -> list[dict]:
    """yentinglin/aime_2025 columns as lighteval 0.13 reads them: problem, answer."""
    return [{"problem": f"What is {a} + {b}?", "answer": str(a + b)} for a, b in _pairs(rng, n)]


def gpqa_diamond_rows(rng: random.Random, n: int) -> list[dict]:
    """Idavidrein/gpqa (gpqa_diamond) columns: Question, Correct Answer, Incorrect Answer 1-3, Record ID, domains."""
    rows = []
    for i, (a, b) in enumerate(_pairs(rng, n)):
        wrong = [a + b + d for d in (-2, 1, 3)]
        rows.append(
            {
                "Question": f"What is {a} + {b}?",
                "Correct Answer": str(a + b),
                "Incorrect Answer 1": str(wrong[0]),
                "Incorrect Answer 2": str(wrong[1]),
                "Incorrect Answer 3": str(wrong[2]),
                "Record ID": f"synthetic{i:04d}",
                "High-level domain": "Mathematics",
                "Subdomain": "Arithmetic",
            }
        )
    return rows


ROW_BUILDERS = {
    "math_500": math_500_rows,
    "aime24": aime24_rows,
    "aime25": aime25_rows,
    "gpqa:diamond": gpqa_diamond_rows,
}


def make_rows(task: str, rows: int = 4, seed: int = 0) -> list[dict]:
    """The synthetic rows of one task (seeded per task, so adding a task leaves the others unchanged)."""
    return ROW_BUILDERS[task](random.Random(f"{seed}-{task}"), rows)


def _write_if_changed(path: Path, text: str) -> bool:
    """Write `text` unless the file already holds it (its mtime, and so the datasets cache, then stay valid)."""
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return True


def write_local_data(root: Path = DEFAULT_ROOT, rows: int = 4, seed: int = 0, tasks: list[str] | None = None) -> Path:
    """Write (or keep, when unchanged) the synthetic data of `tasks` (default: all) under `root`; return `root`."""
    root = Path(root)
    for task in tasks or list(LIGHTEVAL_TASKS):
        spec = LIGHTEVAL_TASKS[task]
        path = root / spec.local_dir / f"{spec.split}.jsonl"
        if _write_if_changed(path, "".join(json.dumps(row) + "\n" for row in make_rows(task, rows, seed))):
            logger.info("Wrote %d synthetic %s rows to %s", rows, task, path)
    return root


def write_embedded_default_data(root: Path = DEFAULT_ROOT, test_split: Path = EMBEDDED_TEST_SPLIT) -> Path:
    """The embedded default's data under `root`: synthetic rows, MATH-500 replaced by the embedded test split (the rows
    `make train` measures its greedy accuracy on) when it exists."""
    if not Path(test_split).is_file():
        logger.warning("No embedded test split at %s: MATH-500 holds synthetic rows.", test_split)
        return write_local_data(root)
    root = write_local_data(root, tasks=[task for task in LIGHTEVAL_TASKS if task != "math_500"])
    spec = LIGHTEVAL_TASKS["math_500"]
    if _write_if_changed(root / spec.local_dir / f"{spec.split}.jsonl", Path(test_split).read_text()):
        logger.info("MATH-500 of the embedded default: the embedded test split %s", test_split)
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(DEFAULT_ROOT), help="directory to write (default: %(default)s)")
    parser.add_argument("--rows", type=int, default=4, help="rows per task (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.stdout.write(str(write_local_data(Path(args.out), args.rows, args.seed)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
