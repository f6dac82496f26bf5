"""`python -m open_r1_egsw.evaluation.run`: evaluate one model on MATH-500, AIME 2024, AIME 2025 and GPQA Diamond.

Results go to `OUTPUT_DIR/<model-name>/`: `<task>.json` as each task finishes, `run.json` (the invocation and every
task's status), `details/<task>.jsonl` and lighteval's `lighteval/results_*.json`. Bad input is one `error:` line and
exit status 2, before lighteval is imported; a failed task is recorded, the others still run, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from .benchmarks import LIGHTEVAL_TASKS, resolve_tasks, task_slug
from .inputs import InputError, ModelSpec, resolve_data_dir, resolve_model
from .local_data import DEFAULT_ROOT as LOCAL_DATA_ROOT
from .pipeline import build_model, run_task, write_json
from .settings import DATA_DIR_ENV, PROFILES, prompt_from_recipe

logger = logging.getLogger(__name__)

BACKENDS = ("accelerate", "vllm")
CACHE_DIRNAME = ".generation-cache"


def _gpus_available() -> int | None:
    """GPUs this process can use: the allocation's (SLURM_GPUS_ON_NODE) or torch's count; None on a CPU machine."""
    value = os.environ.get("SLURM_GPUS_ON_NODE", "")
    if value.isdigit() and int(value) > 0:
        return int(value)
    import torch

    return torch.cuda.device_count() or None


def _gpu_count() -> int:
    """GPUs of the allocation (SLURM_GPUS_ON_NODE), else those torch sees, at least 1."""
    return _gpus_available() or 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m open_r1_egsw.evaluation.run",
        description="Evaluate a model on math_500, aime24, aime25 and gpqa:diamond with lighteval (offline-safe).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--model",
        help="local model directory or hub id; default: the embedded tiny model (data/tiny/egsw if trained, else "
        ".cache/embedded/sft-model) with the embedded profile, MATH-500 = the embedded test split, synthetic rows for "
        "the other tasks",
    )
    parser.add_argument("--revision", help="hub revision of --model (keys the generation cache)")
    parser.add_argument(
        "--tasks", "--task", default="all", help=f"comma-separated: {', '.join(LIGHTEVAL_TASKS)}, or all"
    )
    parser.add_argument(
        "--backend", choices=BACKENDS, default="accelerate", help="accelerate = transformers (CPU/GPU)"
    )
    parser.add_argument("--output-dir", default="results", help="results go to OUTPUT_DIR/<model-name>/")
    parser.add_argument("--model-name", help="results sub-directory (default: from the model path or hub id)")
    parser.add_argument(
        "--data-dir",
        help=f"local data directory replacing the hub data sets (default: ${DATA_DIR_ENV}; for the embedded default, "
        f"synthetic rows written to {LOCAL_DATA_ROOT})",
    )
    parser.add_argument("--max-samples", type=int, help="evaluate only the first N rows of each task (partial scores)")
    parser.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        help="generation profile (default: embedded without --model, else benchmark: lighteval's prompts; qwen: "
        "Qwen's 'Please reason step by step' prompt; see settings.py)",
    )
    generation = parser.add_argument_group("generation (override single fields of the profile, see settings.py)")
    generation.add_argument("--num-samples", type=int, help="completions per problem (k) for pass@1")
    generation.add_argument("--temperature", type=float)
    generation.add_argument("--top-p", type=float)
    generation.add_argument("--max-new-tokens", type=int)
    generation.add_argument("--max-model-length", type=int, help="prompt + completion tokens")
    generation.add_argument("--seed", type=int)
    generation.add_argument("--system-prompt", help='system message ("" for none)')
    prompt = parser.add_argument_group("prompt (default: the profile's; see settings.py)")
    prompt.add_argument(
        "--recipe",
        help="training recipe whose prompt the model was trained with: its system_prompt, the problem alone, the chat "
        "template (flags below still override single fields)",
    )
    instruction = prompt.add_mutually_exclusive_group()
    instruction.add_argument(
        "--instruction", help="text appended to each math problem (instead of lighteval's prompt)"
    )
    instruction.add_argument(
        "--no-instruction", action="store_true", help="send each math problem alone (as the trainer does)"
    )
    prompt.add_argument(
        "--chat-template",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="format prompts with the tokenizer's chat template (default: when the tokenizer has one)",
    )
    hardware = parser.add_argument_group("hardware")
    hardware.add_argument("--num-gpus", type=int, default=None, help="vllm: GPUs to use (default: SLURM_GPUS_ON_NODE)")
    hardware.add_argument("--parallel", choices=("data", "tensor"), default="data", help="vllm: how GPUs are used")
    hardware.add_argument("--gpu-memory-utilization", type=float, default=0.8)
    hardware.add_argument(
        "--enforce-eager",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="vllm: eager mode, no CUDA graphs (default: eager, as lighteval 0.13)",
    )
    hardware.add_argument("--dtype", help="default: bfloat16 on GPU, float32 on CPU")
    hardware.add_argument("--batch-size", type=int, help="accelerate: default 16 on CPU, automatic on GPU")
    parser.add_argument("--no-cache", action="store_true", help="do not reuse cached generations")
    args = parser.parse_args(argv)
    if args.num_gpus is None:
        args.num_gpus = _gpu_count() if args.backend == "vllm" else 1
    return args


def _effective_settings(args, spec: ModelSpec):
    """The profile, then --recipe, then single-field flags; max_model_length capped at the model's positions."""
    profile = PROFILES[args.profile or ("embedded" if args.model is None else "benchmark")]
    if args.recipe:
        profile = replace(profile, **prompt_from_recipe(args.recipe))
    if args.no_instruction or args.instruction is not None:  # an instruction goes after the problem alone
        profile = replace(profile, prompt_template="problem", instruction=args.instruction)
    settings = profile.override(
        chat_template=args.chat_template,
        num_samples=args.num_samples,
        temperature=args.temperature,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        max_model_length=args.max_model_length,
        seed=args.seed,
        system_prompt=args.system_prompt,
    )
    if spec.max_positions and settings.max_model_length > spec.max_positions:
        if settings.max_new_tokens >= spec.max_positions:
            raise InputError(
                f"max_new_tokens ({settings.max_new_tokens}) does not fit in the model's {spec.max_positions} "
                "positions: pass a smaller --max-new-tokens (or --profile embedded for the tiny embedded models)"
            )
        logger.warning(
            "max_model_length %d exceeds the model's %d positions: using %d.",
            settings.max_model_length,
            spec.max_positions,
            spec.max_positions,
        )
        settings = settings.override(max_model_length=spec.max_positions)
    return settings


def check_parallel(args, spec: ModelSpec) -> None:
    """vLLM's GPU split, checked before anything loads: the GPUs exist, and a tensor-parallel size fits the model's
    attention heads (parallel.check_tensor_parallel; ConfigError, one line)."""
    if args.backend != "vllm":
        return
    if args.num_gpus < 1:
        raise InputError(f"--num-gpus must be >= 1, got {args.num_gpus}")
    available = _gpus_available()
    if available is not None and args.num_gpus > available:
        raise InputError(f"--num-gpus {args.num_gpus}: only {available} GPU(s) available")
    if args.parallel == "tensor":
        from open_r1_egsw.training.parallel import check_tensor_parallel

        check_tensor_parallel(
            spec.source,
            args.num_gpus,
            available,
            flag="--parallel tensor --num-gpus",
            revision=args.revision,
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        tasks = resolve_tasks(args.tasks)
        spec = resolve_model(args.model, args.model_name, args.revision)
        settings = _effective_settings(args, spec)
        check_parallel(args, spec)
        data_dir = resolve_data_dir(args.data_dir, tasks, embedded_default=args.model is None)
    except ValueError as exc:  # InputError, unknown task, invalid generation settings
        sys.stderr.write(f"error: {exc}\n")
        return 2
    if spec.local and data_dir is not None:  # nothing needs the hub: never wait on it
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    if args.backend == "vllm":
        os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")

    out_dir = Path(args.output_dir) / spec.name
    run_record = {
        "model": spec.source,
        "model_name": spec.name,
        "checkpoint": spec.fingerprint,
        "backend": args.backend,
        "data_dir": str(data_dir) if data_dir else None,
        "generation": settings.to_dict(),
        "started_at": datetime.datetime.now().isoformat(timespec="seconds"),
        "tasks": {task: {"status": "pending"} for task in tasks},
    }
    for task in tasks:  # a result from an earlier run must not pass for this checkpoint's
        (out_dir / f"{task_slug(task)}.json").unlink(missing_ok=True)
    write_json(out_dir / "run.json", run_record)
    logger.info(
        "Evaluating %s (%s) on %s with %s; results in %s", spec.source, spec.fingerprint, tasks, settings, out_dir
    )

    # generations are cached per checkpoint fingerprint; --no-cache uses a throwaway directory
    cache_dir = Path(tempfile.mkdtemp(prefix="egsw-eval-")) if args.no_cache else out_dir / CACHE_DIRNAME
    model = None
    try:
        model = build_model(spec, args.backend, settings, args, cache_dir / spec.fingerprint)
        # Pipeline calls model.cleanup() after every task; the model serves all of them, so it is released at the end
        release, model.cleanup = model.cleanup, lambda: None
        for task in tasks:
            try:
                record = run_task(model, task, spec, args.backend, settings, data_dir, args, out_dir)
                run_record["tasks"][task] = {
                    "status": "ok",
                    "result": f"{task_slug(task)}.json",
                    **record["metrics"],
                    "num_skipped_too_long": record["num_skipped_too_long"],
                }
                logger.info("%s: %s", task, record["metrics"])
            except Exception as exc:
                logger.exception("Task %s failed", task)
                run_record["tasks"][task] = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
            write_json(out_dir / "run.json", run_record)
        release()
    except Exception as exc:
        logger.exception("Evaluation of %s failed", spec.source)
        for status in run_record["tasks"].values():
            if status["status"] == "pending":
                status.update(status="failed", error=f"{type(exc).__name__}: {exc}")
        write_json(out_dir / "run.json", run_record)
    finally:
        if args.no_cache:
            shutil.rmtree(cache_dir, ignore_errors=True)

    failed = [task for task, status in run_record["tasks"].items() if status["status"] != "ok"]
    for task, status in run_record["tasks"].items():
        if status["status"] != "ok":
            line = f"{task}: {status['error']}"
        else:
            line = f"{task}: pass@1={status['pass@1']:.4f} answer_rate={status['answer_rate']:.4f}"
            if status["num_skipped_too_long"]:
                line += f" ({status['num_skipped_too_long']} row(s) skipped: prompt too long)"
        sys.stdout.write(f"{line}\n")
    if failed:
        sys.stderr.write(f"error: task(s) failed: {', '.join(failed)} (see {out_dir / 'run.json'})\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
