"""GRPO and GRPO+EGSW training from a YAML recipe.

    python src/open_r1_egsw/grpo.py --config recipes/tiny/egsw/config.yaml     # `make train`: CPU, no downloads
    accelerate launch --config_file recipes/accelerate_configs/zero3.yaml --num_processes 7 \\
        src/open_r1_egsw/grpo.py --config recipes/Qwen2.5-Math-7B/egsw/config.yaml --vllm_mode server

Recipe keys are fields of `GRPOScriptArguments`, `EGSWConfig` or TRL's `ModelConfig`; flags after `--config` override
the file. With `use_egsw: false` this is TRL's GRPOTrainer.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import datasets
from transformers import set_seed
from trl import ModelConfig, get_peft_config

from open_r1_egsw.cli.recipe_args import parse_recipe_args
from open_r1_egsw.errors import ConfigError, cli_entry
from open_r1_egsw.training.checkpoints import finished_step, resolve_checkpoint
from open_r1_egsw.training.configs import EGSWConfig, GRPOScriptArguments
from open_r1_egsw.training.data import load_dataset_any, require_columns, require_split, to_prompt_dataset
from open_r1_egsw.training.model_utils import apply_stop_tokens, load_model_and_tokenizer
from open_r1_egsw.training.outputs import MetricsJSONLCallback, check_output_dir, setup_logging
from open_r1_egsw.training.quick_eval import greedy_accuracy
from open_r1_egsw.training.rewards import get_reward_funcs

if TYPE_CHECKING:
    from open_r1_egsw.training.trainer import EGSWTrainer

logger = logging.getLogger(__name__)


def build_trainer(
    script_args: GRPOScriptArguments, training_args: EGSWConfig, model_args: ModelConfig
) -> tuple[EGSWTrainer, datasets.Dataset | None]:
    """Load data, rewards, model and tokenizer, and build the trainer; returns it and the test split (or None)."""
    ################
    # Load data set
    ################
    dataset = load_dataset_any(script_args.dataset_name, script_args.dataset_config)
    train_split = require_split(dataset, script_args.dataset_train_split, script_args.dataset_name)
    needed = [script_args.dataset_prompt_column]
    require_columns(train_split, needed, script_args.dataset_name, script_args.dataset_train_split)
    if "accuracy" in script_args.reward_funcs and not {"solution", "answer"} & set(train_split.column_names):
        raise ConfigError(
            f"Data set {script_args.dataset_name!r} has neither a 'solution' nor an 'answer' column, which the "
            f"accuracy reward needs; its columns are: {', '.join(train_split.column_names)}."
        )
    test_split = dataset.get(script_args.dataset_test_split)

    ##############################
    # Rewards, tokenizer and model
    ##############################
    reward_funcs = get_reward_funcs(script_args, max_completion_length=training_args.max_completion_length)
    model, tokenizer = load_model_and_tokenizer(model_args, training_args)
    if script_args.chat_template is not None:  # open-r1's field: replaces the tokenizer's template
        tokenizer.chat_template = script_args.chat_template
    apply_stop_tokens(model, tokenizer, training_args, script_args.stop_tokens)
    train_dataset = to_prompt_dataset(train_split, script_args.dataset_prompt_column, script_args.system_prompt)
    eval_dataset = None
    if training_args.eval_strategy != "no" and test_split is not None:
        eval_dataset = to_prompt_dataset(test_split, script_args.dataset_prompt_column, script_args.system_prompt)

    ##############################
    # Initialize the GRPO trainer
    ##############################
    from open_r1_egsw.training.trainer import (
        EGSWTrainer,  # TRL's trainer imports vLLM (~8 s): not on a bad recipe's path
    )

    trainer = EGSWTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        callbacks=[MetricsJSONLCallback(training_args.output_dir)],
    )
    return trainer, test_split


def main(script_args: GRPOScriptArguments, training_args: EGSWConfig, model_args: ModelConfig) -> dict:
    ###############
    # Setup logging
    ###############
    setup_logging(training_args)
    set_seed(training_args.seed)
    if training_args.resume_from_checkpoint in ("true", "True", "last"):
        done = finished_step(training_args.output_dir, training_args.max_steps)
        if done is not None:  # a re-queued job of a finished run: train nothing, keep the final model
            notice = f"notice: {training_args.output_dir} holds a finished run (step {done}): nothing to train."
            print(notice)  # noqa: T201
            return {"finished_step": done}
    checkpoint = resolve_checkpoint(training_args)
    check_output_dir(training_args.output_dir, script_args.overwrite_output_dir, resume=checkpoint is not None)
    logger.info(
        "Model %s, data %s, EGSW %s, clip %s",
        model_args.model_name_or_path,
        script_args.dataset_name,
        training_args.use_egsw,
        training_args.entropy_clip,
    )
    trainer, test_split = build_trainer(script_args, training_args, model_args)
    tokenizer = trainer.processing_class

    accuracy_rows = []
    if script_args.eval_accuracy_samples > 0:
        if test_split is None:
            raise ConfigError(
                f"eval_accuracy_samples > 0 needs the test split {script_args.dataset_test_split!r} of "
                f"{script_args.dataset_name!r}."
            )
        accuracy_rows = test_split.select(range(min(script_args.eval_accuracy_samples, len(test_split)))).to_list()

    def accuracy(tag: str) -> float:
        value = greedy_accuracy(
            trainer.model,
            tokenizer,
            accuracy_rows,
            script_args.dataset_prompt_column,
            script_args.system_prompt,
            max_new_tokens=script_args.eval_max_new_tokens,
        )
        if trainer.accelerator.is_main_process:
            line = f"accuracy {tag} training (greedy, {len(accuracy_rows)} test rows): {value:.3f}"
            print(line, flush=True)  # noqa: T201
        return value

    results = {}
    if accuracy_rows:
        results["accuracy_before"] = accuracy("before")

    ###############
    # Training loop
    ###############
    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    metrics = dict(train_result.metrics)
    metrics["train_samples"] = len(trainer.train_dataset)
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)

    ##################################
    # Save model and create model card
    ##################################
    trainer.save_model(training_args.output_dir)
    if trainer.accelerator.is_main_process:
        trainer.create_model_card(dataset_name=script_args.dataset_name, tags=["open-r1-egsw"])
        trainer.model.config.use_cache = True
        trainer.model.config.save_pretrained(training_args.output_dir)
    trainer.save_state()  # last: <output_dir>/trainer_state.json marks the run finished (checkpoints.finished_step)

    if accuracy_rows:
        results["accuracy_after"] = accuracy("after")
        results["accuracy_rows"] = len(accuracy_rows)
        if trainer.accelerator.is_main_process:
            Path(training_args.output_dir, "accuracy.json").write_text(json.dumps(results, indent=2))

    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset_name, tags=["open-r1-egsw"])
    return {**metrics, **results}


@cli_entry
def cli_main(argv: list[str] | None = None) -> int:
    main(*parse_recipe_args((GRPOScriptArguments, EGSWConfig, ModelConfig), argv))
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
