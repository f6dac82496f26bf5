"""Drive lighteval 0.13's Python API: build one lighteval model for all tasks, then run one `Pipeline` per task and
write its results (`<task>.json`), its details (`details/<task>.jsonl`) and lighteval's own results files."""

from __future__ import annotations

import contextlib
import datetime
import json
import shutil
import tempfile
import time
from pathlib import Path

from .benchmarks import LIGHTEVAL_TASKS, task_slug
from .inputs import ModelSpec


@contextlib.contextmanager
def _only_these_tasks(configs: dict):
    """Make lighteval's Registry load `configs` only.

    Its own loader imports every built-in task module, one of which downloads a file at import time and another of
    which fails to import with huggingface_hub 2.x.
    """
    from unittest import mock

    from lighteval.tasks.registry import Registry

    def load_all_task_configs(custom_tasks=None, load_multilingual=False):
        return dict(configs)

    with mock.patch.object(Registry, "load_all_task_configs", staticmethod(load_all_task_configs)):
        yield


def build_model(spec: ModelSpec, backend: str, settings, args, cache_dir: Path):
    """The lighteval model, built once for all tasks, with its generation cache in `cache_dir`.

    lighteval keys its cache by the model config (path, generation settings), so a checkpoint retrained into the same
    directory would get the old answers; `cache_dir` is per checkpoint fingerprint instead.
    """
    from lighteval.models.model_input import GenerationParameters
    from lighteval.models.model_loader import load_model
    from lighteval.utils.cache_management import SampleCache

    # max_new_tokens stays unset: lighteval 0.13's transformers backend would use it as the tokenizer's max_length
    # and cut every prompt to its last max_new_tokens tokens. The task's generation_size bounds the completion.
    generation = GenerationParameters(temperature=settings.temperature, top_p=settings.top_p, seed=settings.seed)
    scratch = Path(tempfile.mkdtemp(prefix="lighteval-cache-"))
    common = {
        "model_name": spec.source,
        "generation_parameters": generation,
        "system_prompt": settings.system_prompt,
        "cache_dir": str(scratch),
        "override_chat_template": settings.chat_template,
        # a chat template writes its own special tokens (as the trainer's apply_chat_template); plain text gets them
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
    if backend == "accelerate":  # lighteval 0.13 passes the temperature but not do_sample
        model.model.generation_config.do_sample = settings.temperature > 0
    return model


def prompt_length_function(model):
    """Doc -> number of prompt tokens exactly as the lighteval model will send them (chat template, special tokens)."""

    def prompt_length(doc) -> int:
        text = model.prompt_manager.prepare_prompt(doc)
        return len(model.tokenizer(text, add_special_tokens=model.add_special_tokens)["input_ids"])

    return prompt_length


def write_json(path: Path, data: dict) -> None:
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
    write_json(out_dir / f"{task_slug(task)}.json", record)
    return record
