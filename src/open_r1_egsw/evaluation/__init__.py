"""Benchmark evaluation with lighteval 0.13: MATH-500, AIME 2024, AIME 2025, GPQA Diamond.

Modules (only `tasks` and `run`'s evaluation path import lighteval):

- `settings`: `GenerationSettings`, the one place generation parameters and the prompt are set (profiles
  `BENCHMARK` (lighteval 0.13's prompts), `QWEN`, `EMBEDDED`; `prompt_from_recipe`).
- `benchmarks`: the task registry `LIGHTEVAL_TASKS` (data sets, prompts, scorers), `resolve_tasks`.
- `scoring`: math scoring through `open_r1_egsw.training.answers`, GPQA letter extraction, the pass@k estimator.
- `tasks`: the lighteval task configs and the pass@1-from-k-samples metric (also a lighteval custom tasks module).
- `local_data`: synthetic rows in each benchmark's schema for offline runs.
- `vllm_model`: the vLLM backend, a lighteval model of this project's own for vllm 0.31 (pinned versions).
- `run`: `python -m open_r1_egsw.evaluation.run`, the entry point (`make evaluate`).
"""
