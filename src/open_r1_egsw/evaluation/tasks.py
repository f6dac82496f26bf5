"""lighteval 0.13 task configs for the four benchmarks, from `benchmarks.LIGHTEVAL_TASKS` and `GenerationSettings`.

The metric samples `num_samples` completions per problem and reports `pass@1` (mean correctness) and `answer_rate`
(share of samples that state an answer). A row whose prompt does not fit `max_model_length` with `max_new_tokens` is
skipped and counted, never truncated. `TASKS_TABLE` makes this file a lighteval custom tasks module as well.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from lighteval.metrics.metrics_sample import SampleLevelComputation, SamplingMetric
from lighteval.metrics.utils.metric_utils import SampleLevelMetricGrouping
from lighteval.tasks.lighteval_task import LightevalTaskConfig
from lighteval.tasks.requests import Doc, SamplingMethod

from open_r1_egsw.training.answers import parse_gold

from .benchmarks import LIGHTEVAL_TASKS, BenchmarkSpec, task_slug
from .settings import BENCHMARK, DATA_DIR_ENV, GenerationSettings

logger = logging.getLogger(__name__)

PASS_AT_1 = "pass@1"
ANSWER_RATE = "answer_rate"
CHOICE_LETTERS = ["A", "B", "C", "D"]


@dataclass
class TaskStats:
    """Counts kept while a task's rows are turned into prompts."""

    skipped_gold: int = 0  # math rows dropped because their gold answer does not parse (a data problem)
    skipped_too_long: int = 0  # rows dropped because prompt + max_new_tokens exceeds max_model_length


class PassAt1FromSamples(SamplingMetric, SampleLevelComputation):
    """Per problem: the share of its `n` sampled completions that are correct, and the share that has an answer.

    A `SamplingMetric`, so lighteval generates `n` completions per problem (`num_samples()`).
    """

    def __init__(self, score, n: int):
        super().__init__()
        self.score = score  # (gold, completion) -> (correct, answer found); see benchmarks.BenchmarkSpec.score
        self.n = n

    def compute(self, doc: Doc, model_response, **kwargs) -> dict[str, float]:
        texts = list(model_response.final_text[: self.n])
        if len(texts) < self.n:
            logger.warning("Problem %s got %d of %d completions.", doc.id, len(texts), self.n)
        if not texts:
            return {PASS_AT_1: 0.0, ANSWER_RATE: 0.0}
        scored = [self.score(doc.specific["gold"], text) for text in texts]
        return {
            PASS_AT_1: float(np.mean([correct for correct, _ in scored])),
            ANSWER_RATE: float(np.mean([found for _, found in scored])),
        }

    def num_samples(self) -> int:
        return self.n


class _CorpusMean:
    """np.mean with a stable repr.

    lighteval keys its generation cache by the text of the task config, where a plain function shows its memory
    address (a new key on every run, so never a cache hit); lighteval picks the analytic standard error for an
    aggregation whose `__name__` contains "mean".
    """

    __name__ = "mean"

    def __call__(self, values) -> float:
        return float(np.mean(values))

    def __repr__(self) -> str:
        return "mean"


CORPUS_MEAN = _CorpusMean()


def pass_at_1_metric(spec: BenchmarkSpec, num_samples: int) -> SampleLevelMetricGrouping:
    return SampleLevelMetricGrouping(
        metric_name=[PASS_AT_1, ANSWER_RATE],
        higher_is_better={PASS_AT_1: True, ANSWER_RATE: True},
        category=SamplingMethod.GENERATIVE,
        sample_level_fn=PassAt1FromSamples(spec.score, num_samples),
        corpus_level_fn={PASS_AT_1: CORPUS_MEAN, ANSWER_RATE: CORPUS_MEAN},
    )


def data_source(name: str, data_dir: str | os.PathLike | None) -> tuple[str, str]:
    """(hf_repo, hf_subset) of a task: the hub data set, or its sub-directory of a local data directory."""
    spec = LIGHTEVAL_TASKS[name]
    if data_dir:
        return str(Path(data_dir).resolve() / spec.local_dir), "default"
    return spec.hub_repo, spec.hub_subset


def _make_prompt_function(
    spec: BenchmarkSpec, settings: GenerationSettings, stats: TaskStats, prompt_length: Callable[[Doc], int] | None
):
    """lighteval prompt function (row, task name) -> Doc, or None for a math row whose gold does not parse or a row
    whose prompt does not fit `max_model_length` with `max_new_tokens` (both counted in `stats`).

    A closure (not a functools.partial): lighteval deep-copies task configs, which copies a partial's arguments but
    keeps a function, so `stats` stays the caller's object.
    """

    def prompt_function(line: dict, task_name: str | None = None) -> Doc | None:
        missing = [column for column in spec.columns if column not in line]
        if missing:
            raise KeyError(
                f"{spec.name}: the data has no column(s) {missing}; expected the {spec.hub_repo} columns "
                f"{list(spec.columns)}"
            )
        if settings.prompt_template == "lighteval":
            prompt = spec.lighteval_prompt(line)
        else:
            prompt = spec.make_prompt(line, settings.instruction)
        if spec.kind == "math":
            if not parse_gold(prompt.gold):
                stats.skipped_gold += 1
                logger.warning(
                    "%s: skipping row %s, its gold answer %r does not parse.",
                    spec.name,
                    line.get("__index"),
                    prompt.gold,
                )
                return None
            choices, gold_index = [prompt.gold], 0
        else:
            choices, gold_index = list(CHOICE_LETTERS), CHOICE_LETTERS.index(prompt.gold)
        doc = Doc(
            task_name=task_name,
            query=prompt.query,
            choices=choices,
            gold_index=gold_index,
            instruction=prompt.instruction,
            specific={"gold": prompt.gold, "options": list(prompt.choices)},
        )
        if prompt_length is not None:
            length = prompt_length(doc)
            if length + settings.max_new_tokens > settings.max_model_length:
                stats.skipped_too_long += 1
                logger.warning(
                    "%s: skipping row %s, its prompt has %d tokens: with max_new_tokens %d it exceeds "
                    "max_model_length %d (it would be truncated).",
                    spec.name,
                    line.get("__index"),
                    length,
                    settings.max_new_tokens,
                    settings.max_model_length,
                )
                return None
        return doc

    # lighteval keys its generation cache by the text of the task config, where this function shows by name: the name
    # carries the template and instruction (and the fit budget), so another prompt never reads this one's completions.
    prompt_key = (settings.prompt_template, settings.instruction, settings.max_model_length)
    key = hashlib.sha256(repr(prompt_key).encode()).hexdigest()[:8]
    prompt_function.__name__ = f"{task_slug(spec.name)}_prompt_{key}"
    return prompt_function


def build_task_config(
    name: str,
    settings: GenerationSettings,
    data_dir: str | os.PathLike | None = None,
    stats: TaskStats | None = None,
    prompt_length: Callable[[Doc], int] | None = None,
) -> LightevalTaskConfig:
    """The lighteval config of benchmark `name` under `settings`, reading `data_dir` instead of the hub if given.

    `prompt_length` (Doc -> prompt tokens) enables that fit check; without it (scoring-only
    use) every row is kept.
    """
    spec = LIGHTEVAL_TASKS[name]
    hf_repo, hf_subset = data_source(name, data_dir)
    return LightevalTaskConfig(
        name=name,
        prompt_function=_make_prompt_function(
            spec, settings, stats if stats is not None else TaskStats(), prompt_length
        ),
        hf_repo=hf_repo,
        hf_subset=hf_subset,
        hf_avail_splits=[spec.split],
        evaluation_splits=[spec.split],
        few_shots_split=None,
        few_shots_select=None,
        generation_size=settings.max_new_tokens,
        metrics=[pass_at_1_metric(spec, settings.num_samples)],
        stop_sequence=[],  # stop at the end-of-sequence token only
        version=1,
    )


TASKS_TABLE = [build_task_config(name, BENCHMARK, os.environ.get(DATA_DIR_ENV)) for name in LIGHTEVAL_TASKS]
