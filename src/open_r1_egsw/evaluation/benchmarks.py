"""The four benchmarks: where their data lives, how a row becomes a prompt, and how a completion is scored.

`LIGHTEVAL_TASKS` is a registry without lighteval imports. Each task has lighteval 0.13's own prompt ("lighteval"
template) and the problem plus an optional instruction ("problem" template). GPQA's option order is seeded by the
question text. A local data directory holds `<local_dir>/<split>.jsonl` in the hub data set's columns.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from string import ascii_uppercase

from .scoring import score_choice, score_math
from .settings import QWEN_INSTRUCTION

GPQA_INSTRUCTION = (
    "Answer the following multiple choice question. The last line of your response should be of the following "
    "format: 'Answer: $LETTER' (without quotes) where LETTER is one of ABCD. Think step by step before answering."
)
GPQA_TEMPLATE = GPQA_INSTRUCTION + "\n\n{question}\n\nA) {A}\nB) {B}\nC) {C}\nD) {D}"

# lighteval 0.13's templates, verbatim: lighteval/tasks/tasks/math_500.py MATH_QUERY_TEMPLATE and aime.py
# MATH_PROMPT_TEMPLATE (a dedent of a string that starts and ends with a newline, so the query does too).
LIGHTEVAL_MATH_500_TEMPLATE = (
    "Solve the following problem. The final line of your response MUST be of the following format:\n"
    '"ANSWER: $ANSWER" (without quotes) where $ANSWER is the final answer. Think step by step before answering.\n\n'
    "{prompt}"
)
LIGHTEVAL_AIME_TEMPLATE = (
    "\nSolve the following math problem efficiently and clearly.  The last line of your response should be of the "
    "following format: 'Therefore, the final answer is: $\\boxed{{ANSWER}}$. I hope it is correct' (without quotes) "
    "where ANSWER is just the final number or expression that solves the problem. Think step by step before "
    "answering.\n\n{prompt}\n"
)


@dataclass(frozen=True)
class Prompt:
    """One row made ready for generation: the user message, the gold, and the row's gold as shown in the details."""

    query: str
    gold: str  # math: the answer as math-verify reads it; GPQA: the correct letter
    choices: tuple[str, ...] = ()  # GPQA: the options in the order shown
    instruction: str | None = None  # lighteval's Doc.instruction (its GPQA prompt sets it; the chat rendering uses it)


@dataclass(frozen=True)
class BenchmarkSpec:
    """A benchmark task: data location, columns, prompt and scorer."""

    name: str  # the task name users type (lighteval's own name for it)
    hub_repo: str
    hub_subset: str
    split: str
    local_dir: str  # sub-directory of a local data directory
    columns: tuple[str, ...]  # columns the prompt function reads
    make_prompt: Callable[[dict, str | None], Prompt]  # (row, math instruction or None) -> prompt ("problem")
    lighteval_prompt: Callable[[dict], Prompt]  # row -> lighteval 0.13's prompt of the task ("lighteval")
    score: Callable[[str, str], tuple[float, bool]]  # (gold, completion) -> (correct, answer found)
    kind: str  # "math" or "choice"
    extra_columns: tuple[str, ...] = field(default=())  # other columns of the hub schema (local data carries them)


def math_prompt(row: dict, instruction: str | None = QWEN_INSTRUCTION) -> Prompt:
    """MATH / AIME row -> prompt; the gold is the `answer` column.

    With an instruction: the stripped problem, a blank line, the instruction (Qwen, open-r1's early recipes). Without:
    the problem exactly as stored, which is the user message the trainer sent (`data.conversation_prompt`).
    """
    problem = row["problem"]
    query = f"{problem.strip()}\n\n{instruction}" if instruction else problem
    return Prompt(query=query, gold=str(row["answer"]).strip())


def lighteval_math_500_prompt(row: dict) -> Prompt:
    """lighteval 0.13's `math_500_prompt` query; the gold stays the `answer` column."""
    return Prompt(query=LIGHTEVAL_MATH_500_TEMPLATE.format(prompt=row["problem"]), gold=str(row["answer"]).strip())


def lighteval_aime_prompt(row: dict) -> Prompt:
    """lighteval 0.13's `aime_prompt` query (aime24 and aime25)."""
    return Prompt(query=LIGHTEVAL_AIME_TEMPLATE.format(prompt=row["problem"]), gold=str(row["answer"]).strip())


def gpqa_option_order(question: str) -> list[int]:
    """Deterministic permutation of the 4 options (0 = correct, 1-3 = incorrect answers 1-3) for a question.

    Seeded by the SHA-256 of the question text, not by Python's salted `hash()`, so it is the same on every run.
    """
    order = [0, 1, 2, 3]
    random.Random(int(hashlib.sha256(question.encode()).hexdigest()[:16], 16)).shuffle(order)
    return order


def gpqa_prompt(row: dict, instruction: str | None = None) -> Prompt:
    """GPQA row -> multiple-choice prompt; the gold is the letter at which the correct answer is shown.

    The template carries its own instruction; the math instruction does not apply.
    """
    question = row["Question"].strip()
    answers = [row["Correct Answer"], row["Incorrect Answer 1"], row["Incorrect Answer 2"], row["Incorrect Answer 3"]]
    answers = [str(answer).strip() for answer in answers]
    order = gpqa_option_order(question)
    shown = [answers[i] for i in order]
    letters = ascii_uppercase[:4]
    query = GPQA_TEMPLATE.format(question=question, **dict(zip(letters, shown)))
    return Prompt(query=query, gold=letters[order.index(0)], choices=tuple(shown))


def lighteval_gpqa_prompt(row: dict) -> Prompt:
    """lighteval 0.13's `gpqa_instruct_prompt` (gpqa:diamond): incorrect answers 1-3 in order, the correct one inserted
    at the gold position, which is `gpqa_option_order`'s (lighteval draws it from the global `random`)."""
    gold_index = gpqa_option_order(row["Question"].strip()).index(0)
    choices = [str(row[f"Incorrect Answer {i}"]) for i in (1, 2, 3)]
    choices.insert(gold_index, str(row["Correct Answer"]))
    choices = [choice.strip() for choice in choices]
    query = GPQA_TEMPLATE.format(question=row["Question"].strip(), **dict(zip(ascii_uppercase[:4], choices)))
    return Prompt(query=query, gold=ascii_uppercase[gold_index], choices=tuple(choices), instruction=GPQA_INSTRUCTION)


LIGHTEVAL_TASKS: dict[str, BenchmarkSpec] = {}


def register_lighteval_task(spec: BenchmarkSpec) -> BenchmarkSpec:
    """Add a benchmark to `LIGHTEVAL_TASKS`; a taken name is refused."""
    if spec.name in LIGHTEVAL_TASKS:
        raise ValueError(f"Benchmark task {spec.name!r} is already registered.")
    LIGHTEVAL_TASKS[spec.name] = spec
    return spec


register_lighteval_task(
    BenchmarkSpec(
        name="math_500",
        hub_repo="HuggingFaceH4/MATH-500",
        hub_subset="default",
        split="test",
        local_dir="math_500",
        columns=("problem", "answer"),
        extra_columns=("solution", "subject", "level", "unique_id"),
        make_prompt=math_prompt,
        lighteval_prompt=lighteval_math_500_prompt,
        score=score_math,
        kind="math",
    )
)
register_lighteval_task(
    BenchmarkSpec(
        name="aime24",
        hub_repo="HuggingFaceH4/aime_2024",
        hub_subset="default",
        split="train",
        local_dir="aime24",
        columns=("problem", "answer"),
        extra_columns=("id", "solution", "url", "year"),
        make_prompt=math_prompt,
        lighteval_prompt=lighteval_aime_prompt,
        score=score_math,
        kind="math",
    )
)
register_lighteval_task(
    BenchmarkSpec(
        name="aime25",
        hub_repo="yentinglin/aime_2025",
        hub_subset="default",
        split="train",
        local_dir="aime25",
        columns=("problem", "answer"),  # the two columns lighteval 0.13's own aime25 task reads
        make_prompt=math_prompt,
        lighteval_prompt=lighteval_aime_prompt,
        score=score_math,
        kind="math",
    )
)
register_lighteval_task(
    BenchmarkSpec(
        name="gpqa:diamond",
        hub_repo="Idavidrein/gpqa",  # gated: accept the terms on the hub and log in (HF_TOKEN) once, on the cluster
        hub_subset="gpqa_diamond",
        split="train",
        local_dir="gpqa_diamond",
        columns=("Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3"),
        extra_columns=("Record ID", "High-level domain", "Subdomain"),
        make_prompt=gpqa_prompt,
        lighteval_prompt=lighteval_gpqa_prompt,
        score=score_choice,
        kind="choice",
    )
)

ALL = "all"


def task_slug(name: str) -> str:
    """File-system name of a task ("gpqa:diamond" -> "gpqa_diamond")."""
    return name.replace(":", "_").replace("|", "_")


def resolve_tasks(spec: str) -> list[str]:
    """Comma-separated task names (or "all") -> registered names, in the order given, without duplicates.

    Raises:
        ValueError: one line naming the unknown task(s) and every valid name.
    """
    names: list[str] = []
    for part in (p.strip() for p in spec.split(",")):
        expanded = list(LIGHTEVAL_TASKS) if part == ALL else [part]
        names += [n for n in expanded if n not in names]
    unknown = [n for n in names if n not in LIGHTEVAL_TASKS]
    if unknown or not names:
        valid = ", ".join([*LIGHTEVAL_TASKS, ALL])
        raise ValueError(f"unknown task {', '.join(map(repr, unknown)) or repr(spec)}; valid tasks: {valid}")
    return names
