"""Evaluate one model on MATH-500, AIME 2024, AIME 2025 and GPQA Diamond with lighteval 0.13's Python API.

    # the embedded default: the trained tiny model (data/tiny/egsw) if present, else the SFT warm start
    # (.cache/embedded/sft-model), offline on CPU, on synthetic local rows in each benchmark's schema
    python -m open_r1_egsw.evaluation.run

    # a real model on the real benchmarks (GPU; vLLM through vllm_model.py, in the training environment)
    python -m open_r1_egsw.evaluation.run --model Qwen/Qwen2.5-Math-7B --tasks all --backend vllm --num-samples 4

    # a model trained with a recipe, prompted as it was trained (the recipe's system prompt, no instruction)
    python -m open_r1_egsw.evaluation.run --model data/tiny/egsw --recipe recipes/tiny/egsw/config.yaml

Results go to `OUTPUT_DIR/<model-name>/`: one `<task>.json` per task, written as soon as that task finishes (a task
that crashes later loses nothing already written), `run.json` (the invocation and every task's status),
`details/<task>.jsonl` (prompts, completions, per-problem scores) and lighteval's own `lighteval/results_*.json`.

How lighteval is driven, and why:

1. No lighteval CLI and no lighteval Registry loading: both import every built-in task module, one of which downloads
   a file at import time and another (mt_bench) raises TypeError with huggingface_hub 2.x. The Registry's loader is
   replaced, for the duration of `Pipeline(...)`, by one that returns only our task configs (`_only_these_tasks`).
2. One model for all tasks: the lighteval model is built once and handed to one `Pipeline` per task, so each task's
   results are written when it ends. `Pipeline` frees the model after every run (`model.cleanup()`); that call is
   deferred to the end.
3. The generation cache is keyed by checkpoint: lighteval caches completions by a hash of the model *config* (path,
   generation settings) under `<cache_dir>/<model path>` (for an absolute path, inside the model directory itself), so
   a checkpoint retrained into the same directory would be served the old model's answers. Here the cache lives in
   `OUTPUT_DIR/<model-name>/.generation-cache/<checkpoint fingerprint>/`, where the fingerprint hashes the name, size
   and modification time of every file of a local model directory (the commit of a cached hub snapshot, or the
   `--revision`, for a hub id). `--no-cache` uses a throwaway directory instead.
4. Sampling on the transformers backend: lighteval 0.13 passes the temperature but not `do_sample`, so the model's
   own generation config decides; it is set to sample when the temperature is > 0. The torch seed is set before each
   task.
5. No truncation: `GenerationParameters.max_new_tokens` stays unset. lighteval 0.13's transformers backend uses it as
   the tokenizer's `max_length` and cuts every prompt to its last max_new_tokens tokens (measured: with the embedded
   profile's 48 the question was gone and every row got the same completion); the task's `generation_size` bounds
   the completion instead. A prompt that does not fit max_model_length with max_new_tokens is skipped and counted
   (`num_skipped_too_long`, tasks.py), so lighteval's own left-truncation of the longest prompts never runs.
6. The prompt is the settings' (settings.py): system prompt, math instruction, chat template (lighteval's
   `override_chat_template`). With a chat template no special tokens are added on top of it (the template writes its
   own, as the trainer's `apply_chat_template` does); plain-text prompts get the tokenizer's. The vLLM backend is
   `vllm_model.VLLMModel`, lighteval's class adapted to vllm 0.31.

Bad input (unknown task, missing model, missing local data) ends with one line on stderr and exit status 2 before
lighteval is imported; a task that fails is logged, recorded in run.json, the other tasks still run, and the exit
status is 1.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from .benchmarks import LIGHTEVAL_TASKS, resolve_tasks, task_slug
from .local_data import DEFAULT_ROOT as LOCAL_DATA_ROOT
from .local_data import write_embedded_default_data
from .settings import DATA_DIR_ENV, PROFILES, prompt_from_recipe

logger = logging.getLogger(__name__)

TRAINED_TINY_MODEL = Path("data/tiny/egsw")  # `make train` writes the GRPO+EGSW tiny model here
EMBEDDED_SFT_MODEL = Path(".cache/embedded/sft-model")  # `python -m open_r1_egsw.experiments.embedded --warm-start`
BACKENDS = ("accelerate", "vllm")
CACHE_DIRNAME = ".generation-cache"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class InputError(ValueError):
    """Bad command-line input: reported as one line, exit status 2."""


# ---------------------------------------------------------------------------------------------------------------
# Model resolution
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    source: str  # what lighteval loads: an absolute directory or a hub id
    local: bool
    name: str  # results sub-directory
    fingerprint: str  # changes whenever the checkpoint does
    max_positions: int | None  # the model's max_position_embeddings, when known


def default_model() -> Path:
    """The embedded default: the trained tiny model if `make train` ran, else the SFT warm start."""
    return TRAINED_TINY_MODEL if (TRAINED_TINY_MODEL / "config.json").exists() else EMBEDDED_SFT_MODEL


def checkpoint_fingerprint(model_dir: Path) -> str:
    """Hash of (name, size, mtime) of every file directly in `model_dir`: any re-save of the weights changes it."""
    digest = hashlib.sha256()
    for path in sorted(p for p in model_dir.iterdir() if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _max_positions(config_path: Path) -> int | None:
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError):
        return None
    config = config.get("text_config", config)
    value = config.get("max_position_embeddings") or config.get("n_positions")
    return int(value) if value else None


def default_model_name(source: str, local: bool) -> str:
    """Results sub-directory of a model: its directory name (parent-checkpoint-N for a checkpoint), or the hub name."""
    if not local:
        return source.rstrip("/").split("/")[-1]
    path = Path(source)
    return f"{path.parent.name}-{path.name}" if path.name.startswith("checkpoint-") else path.name


def resolve_model(model: str | None, name: str | None = None, revision: str | None = None) -> ModelSpec:
    """Check that the model exists (a local directory, or a hub id, which offline must be in the HF cache)."""
    if model is None:
        path = default_model()
        if not (path / "config.json").exists():
            raise InputError(
                f"model not found: the embedded default {path} does not exist; build it with "
                "`python -m open_r1_egsw.experiments.embedded --warm-start` (or `make train` for data/tiny/egsw), or pass --model"
            )
        model = str(path)
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise InputError(f"model path {model} is not a model directory (no config.json)")
        source = str(path.resolve())
        return ModelSpec(
            source=source,
            local=True,
            name=name or default_model_name(source, True),
            fingerprint=checkpoint_fingerprint(path),
            max_positions=_max_positions(path / "config.json"),
        )
    looks_like_path = model.startswith((".", "/", "~")) or model.count("/") > 1 or not _HUB_ID.match(model)
    if looks_like_path or path.exists():
        raise InputError(f"model path not found: {model}")
    from huggingface_hub import constants, try_to_load_from_cache

    cached = try_to_load_from_cache(model, "config.json", revision=revision)
    if not isinstance(cached, str) and constants.HF_HUB_OFFLINE:
        raise InputError(
            f"model not found: {model} is neither a local directory nor in the Hugging Face cache (HF_HUB_OFFLINE=1)"
        )
    # A cached snapshot lives in .../snapshots/<commit>/config.json: key the cache by that commit.
    commit = Path(cached).parent.name if isinstance(cached, str) else (revision or "main")
    return ModelSpec(
        source=model,
        local=False,
        name=name or default_model_name(model, False),
        fingerprint=hashlib.sha256(f"{model}@{commit}".encode()).hexdigest()[:16],
        max_positions=_max_positions(Path(cached)) if isinstance(cached, str) else None,
    )


def resolve_data_dir(data_dir: str | None, tasks: list[str], embedded_default: bool) -> Path | None:
    """The local data directory (checked to hold every task's split), or None for the hub data sets."""
    data_dir = data_dir or os.environ.get(DATA_DIR_ENV) or None
    if data_dir is None and embedded_default:
        data_dir = write_embedded_default_data(LOCAL_DATA_ROOT)
    if data_dir is None:
        return None
    root = Path(data_dir)
    for task in tasks:
        spec = LIGHTEVAL_TASKS[task]
        task_dir = root / spec.local_dir
        if not any(task_dir.glob(f"{spec.split}.*")):
            raise InputError(
                f"no local data for task {task}: expected {task_dir / (spec.split + '.jsonl')} "
                f"(or .parquet/.json) in the {spec.hub_repo} columns"
            )
    return root


# ---------------------------------------------------------------------------------------------------------------
# lighteval
# ---------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _only_these_tasks(configs: dict):
    """Make lighteval's Registry load `configs` instead of importing every built-in task module (docstring, 1.)."""
    from unittest import mock

    from lighteval.tasks.registry import Registry

    def load_all_task_configs(custom_tasks=None, load_multilingual=False):
        return dict(configs)

    with mock.patch.object(Registry, "load_all_task_configs", staticmethod(load_all_task_configs)):
        yield


def build_model(spec: ModelSpec, backend: str, settings, args, cache_dir: Path):
    """The lighteval model (built once for all tasks), its generation cache moved to `cache_dir` (docstring, 3.)."""
    from lighteval.models.model_input import GenerationParameters
    from lighteval.models.model_loader import load_model
    from lighteval.utils.cache_management import SampleCache

    # max_new_tokens is left unset: lighteval 0.13's transformers backend would use it as the tokenizer's max_length
    # and cut every prompt to its last max_new_tokens tokens (docstring, 5.); the task's generation_size (the same
    # settings.max_new_tokens, tasks.py) bounds the completion on both backends.
    generation = GenerationParameters(temperature=settings.temperature, top_p=settings.top_p, seed=settings.seed)
    scratch = Path(tempfile.mkdtemp(prefix="lighteval-cache-"))
    common = {
        "model_name": spec.source,
        "generation_parameters": generation,
        "system_prompt": settings.system_prompt,
        "cache_dir": str(scratch),
        "override_chat_template": settings.chat_template,
        # the chat template writes its own special tokens; plain-text prompts get the tokenizer's (docstring, 6.)
        "add_special_tokens": settings.chat_template is False,
    }
    if args.revision:
        common["revision"] = args.revision
    import torch

    on_gpu = torch.cuda.is_available()
    if backend == "vllm":
        from .vllm_model import VLLMModelConfig

        tensor = args.parallel == "tensor"
        config = VLLMModelConfig(
            **common,
            dtype=args.dtype or ("bfloat16" if on_gpu else "float32"),
            max_model_length=settings.max_model_length,
            gpu_memory_utilization=args.gpu_memory_utilization,
            tensor_parallel_size=args.num_gpus if tensor else 1,
            data_parallel_size=1 if tensor else args.num_gpus,
            seed=settings.seed,
            **({} if args.enforce_eager is None else {"enforce_eager": args.enforce_eager}),
        )
    else:
        from lighteval.models.transformers.transformers_model import TransformersModelConfig

        config = TransformersModelConfig(
            **common,
            dtype=args.dtype or ("bfloat16" if on_gpu else "float32"),
            batch_size=args.batch_size or (None if on_gpu else 16),
            max_length=settings.max_model_length,
            model_parallel=False,
        )
    # lighteval creates its own cache directory while loading: <cache_dir>/<model_name>/<hash>. For an absolute
    # model path that is inside the model directory; note whether it already existed, to remove only our own.
    stray = Path(scratch) / spec.source / SampleCache.get_model_hash(None, config)
    stray_existed = stray.exists()
    if backend == "vllm":
        from .vllm_model import VLLMModel

        model = VLLMModel(config)
    else:
        model = load_model(config)
    if not stray_existed and stray.is_dir() and not any(stray.iterdir()):
        stray.rmdir()
    shutil.rmtree(scratch, ignore_errors=True)

    model._cache = SampleCache(config.model_copy(update={"model_name": spec.name, "cache_dir": str(cache_dir)}))
    if backend == "accelerate":
        model.model.generation_config.do_sample = settings.temperature > 0  # docstring, 4.
    return model


def prompt_length_function(model):
    """Doc -> number of prompt tokens exactly as the lighteval model will send them (chat template, special tokens)."""

    def prompt_length(doc) -> int:
        text = model.prompt_manager.prepare_prompt(doc)
        return len(model.tokenizer(text, add_special_tokens=model.add_special_tokens)["input_ids"])

    return prompt_length


def _write_json(path: Path, data: dict) -> None:
    """Write JSON atomically (a crash never leaves half a results file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)


def _write_details(path: Path, details: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for detail in details:
            doc, response = detail.doc, detail.model_response
            record = {
                "id": doc.id,
                "query": doc.query,
                "gold": (doc.specific or {}).get("gold"),
                "options": (doc.specific or {}).get("options") or None,
                "completions": list(response.final_text),  # what was scored (lighteval drops <think>...</think>)
                "raw_completions": list(response.text),  # what the model generated
                "metrics": detail.metric,
            }
            f.write(json.dumps(record, default=str) + "\n")


def run_task(model, task: str, spec: ModelSpec, backend: str, settings, data_dir: Path | None, args, out_dir: Path):
    """Evaluate one task with a fresh Pipeline on the shared model; write and return its results record."""
    import lighteval
    import torch
    from lighteval.logging.evaluation_tracker import EvaluationTracker
    from lighteval.pipeline import ParallelismManager, Pipeline, PipelineParameters

    from .tasks import TaskStats, build_task_config, data_source

    started = time.time()
    stats = TaskStats()
    config = build_task_config(task, settings, data_dir, stats, prompt_length=prompt_length_function(model))
    tracker = EvaluationTracker(
        output_dir=str(out_dir / "lighteval"), results_path_template="{output_dir}", save_details=False
    )
    launcher = ParallelismManager.VLLM if backend == "vllm" else ParallelismManager.ACCELERATE
    parameters = PipelineParameters(launcher_type=launcher, max_samples=args.max_samples)
    with _only_these_tasks({config.name: config}):
        pipeline = Pipeline(tasks=config.name, pipeline_parameters=parameters, evaluation_tracker=tracker, model=model)
    torch.manual_seed(settings.seed)
    pipeline.evaluate()
    pipeline.save_and_push_results()
    metrics = tracker.metrics_logger.metric_aggregated[config.full_name]
    details = tracker.details_logger.details[config.full_name]
    _write_details(out_dir / "details" / f"{task_slug(task)}.jsonl", details)
    record = {
        "task": task,
        "model": spec.source,
        "model_name": spec.name,
        "checkpoint": spec.fingerprint,
        "backend": backend,
        "data": data_source(task, data_dir)[0],
        "split": LIGHTEVAL_TASKS[task].split,
        "metrics": {key: float(value) for key, value in metrics.items()},
        "num_rows": len(details),
        "num_skipped_gold": stats.skipped_gold,
        "num_skipped_too_long": stats.skipped_too_long,
        "max_samples": args.max_samples,
        "generation": settings.to_dict(),
        "lighteval_version": lighteval.__version__,
        "seconds": round(time.time() - started, 1),
        "finished_at": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    _write_json(out_dir / f"{task_slug(task)}.json", record)
    return record


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------


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
    _write_json(out_dir / "run.json", run_record)
    logger.info(
        "Evaluating %s (%s) on %s with %s; results in %s", spec.source, spec.fingerprint, tasks, settings, out_dir
    )

    cache_dir = Path(tempfile.mkdtemp(prefix="egsw-eval-")) if args.no_cache else out_dir / CACHE_DIRNAME
    model = None
    try:
        model = build_model(spec, args.backend, settings, args, cache_dir / spec.fingerprint)
        # Pipeline calls model.cleanup() after every task; the model serves all of them (docstring, 2.)
        release, model.cleanup = model.cleanup, lambda: None
        for task in tasks:
            try:
                record = run_task(model, task, spec, args.backend, settings, data_dir, args, out_dir)
                run_record["tasks"][task] = {"status": "ok", "result": f"{task_slug(task)}.json", **record["metrics"],
                                             "num_skipped_too_long": record["num_skipped_too_long"]}  # fmt: skip
                logger.info("%s: %s", task, record["metrics"])
            except Exception as exc:
                logger.exception("Task %s failed", task)
                run_record["tasks"][task] = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
            _write_json(out_dir / "run.json", run_record)
        release()
    except Exception as exc:
        logger.exception("Evaluation of %s failed", spec.source)
        for status in run_record["tasks"].values():
            if status["status"] == "pending":
                status.update(status="failed", error=f"{type(exc).__name__}: {exc}")
        _write_json(out_dir / "run.json", run_record)
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
