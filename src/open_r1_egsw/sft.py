"""Supervised warm start with TRL's SFTTrainer, before GRPO.

    python src/open_r1_egsw/sft.py --config recipes/tiny/sft/config.yaml

Rows become TRL's prompt/completion conversations (`dataset_prompt_column` with the recipe's system prompt, then
`dataset_completion_column`); the loss is on the completion only.
"""

from __future__ import annotations

import sys

from transformers import set_seed
from trl import ModelConfig, SFTConfig, SFTTrainer, get_peft_config

from open_r1_egsw.cli.recipe_args import parse_recipe_args
from open_r1_egsw.errors import cli_entry
from open_r1_egsw.training.configs import SFTScriptArguments
from open_r1_egsw.training.data import conversation_prompt, load_dataset_any, require_columns, require_split
from open_r1_egsw.training.model_utils import load_model_and_tokenizer
from open_r1_egsw.training.outputs import MetricsJSONLCallback, check_output_dir, setup_logging


def main(script_args: SFTScriptArguments, training_args: SFTConfig, model_args: ModelConfig) -> dict:
    setup_logging(training_args)
    set_seed(training_args.seed)
    check_output_dir(training_args.output_dir, script_args.overwrite_output_dir)

    dataset = load_dataset_any(script_args.dataset_name, script_args.dataset_config)
    split = require_split(dataset, script_args.dataset_train_split, script_args.dataset_name)
    columns = [script_args.dataset_prompt_column, script_args.dataset_completion_column]
    require_columns(split, columns, script_args.dataset_name, script_args.dataset_train_split)
    train_dataset = split.map(
        lambda row: {
            "prompt": conversation_prompt(row[script_args.dataset_prompt_column], script_args.system_prompt),
            "completion": [{"role": "assistant", "content": row[script_args.dataset_completion_column]}],
        },
        remove_columns=split.column_names,
    )

    model, tokenizer = load_model_and_tokenizer(model_args, training_args)
    if script_args.chat_template is not None:  # open-r1's field: replaces the tokenizer's template
        tokenizer.chat_template = script_args.chat_template
    trainer = SFTTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        callbacks=[MetricsJSONLCallback(training_args.output_dir)],
    )
    train_result = trainer.train()
    metrics = dict(train_result.metrics)
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    trainer.save_state()
    trainer.save_model(training_args.output_dir)
    if trainer.accelerator.is_main_process:
        trainer.model.generation_config.save_pretrained(training_args.output_dir)
    return metrics


@cli_entry
def cli_main(argv: list[str] | None = None) -> int:
    main(*parse_recipe_args((SFTScriptArguments, SFTConfig, ModelConfig), argv))
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
