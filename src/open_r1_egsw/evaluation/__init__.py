"""Benchmark evaluation with lighteval 0.13: MATH-500, AIME 2024, AIME 2025, GPQA Diamond.

`settings` (generation parameters and prompt), `benchmarks` (the task registry), `scoring`, `tasks` (lighteval task
configs), `local_data` (synthetic offline rows), `vllm_model` (the vLLM backend), `inputs` (model and data checks),
`pipeline` (lighteval runs) and `run`, the entry point (`make evaluate`).
"""
