"""Recipe key `stop_tokens`: tokens that end a completion besides the tokenizer's EOS (model_utils.apply_stop_tokens).

Qwen2.5-Math-7B (the base model) has EOS `<|endoftext|>` while its chat template ends a turn with `<|im_end|>`
(recipes/Qwen2.5-Math-7B/*/config.yaml say where that was read): without this, `<|im_end|>` would end nothing. The
embedded tiny tokenizer is the mirror case (EOS `<|im_end|>`), so `<|endoftext|>` is the token added here; the code
path is the same. Real trainer construction on the tiny model; nothing is mocked.
"""

from types import SimpleNamespace

import pytest
from trl import ModelConfig

from open_r1_egsw.cli.recipe_args import parse_recipe_args
from open_r1_egsw.errors import ConfigError
from open_r1_egsw.grpo import build_trainer
from open_r1_egsw.training.configs import EGSWConfig, GRPOScriptArguments
from open_r1_egsw.training.model_utils import apply_stop_tokens

RECIPE = "recipes/tiny/egsw/config.yaml"


def tiny_recipe(assets, tmp_path, *extra):
    argv = ["--config", RECIPE, "--model_name_or_path", str(assets.base_model), "--dataset_name", str(assets.data),
            "--output_dir", str(tmp_path / "out"), "--use_vllm", "false", *extra]  # fmt: skip
    return parse_recipe_args((GRPOScriptArguments, EGSWConfig, ModelConfig), argv)


def test_stop_tokens_end_completions_in_trls_generation_and_masks(tiny_assets, tmp_path):
    script_args, training_args, model_args = tiny_recipe(tiny_assets, tmp_path, "--stop_tokens", "<|endoftext|>")
    assert script_args.stop_tokens == ["<|endoftext|>"]
    trainer, _ = build_trainer(script_args, training_args, model_args)
    tokenizer = trainer.processing_class
    im_end, end_of_text = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    assert tokenizer.eos_token_id == im_end != end_of_text
    assert trainer.eos_token_ids == [im_end, end_of_text]  # what TRL masks completions after
    assert trainer.generation_config.eos_token_id == [im_end, end_of_text]  # what transformers' generate stops on

    baseline, _ = build_trainer(*tiny_recipe(tiny_assets, tmp_path / "b"))
    assert baseline.eos_token_ids == [im_end]  # the key is what adds it


def test_stop_tokens_reach_vllm_sampling(tiny_assets):
    """With vLLM (server or colocate), TRL passes generation_kwargs to vLLM's SamplingParams / the server's request:
    stop_token_ids is where vLLM takes extra stop ids; the user's own generation_kwargs stay."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_assets.base_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_assets.base_model)
    args = SimpleNamespace(use_vllm=True, generation_kwargs={"top_k": 5, "stop_token_ids": [7]})
    ids = apply_stop_tokens(model, tokenizer, args, ["<|endoftext|>", "<|im_end|>"])
    im_end, end_of_text = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    assert ids == [im_end, end_of_text]
    assert args.generation_kwargs == {"top_k": 5, "stop_token_ids": [7, end_of_text, im_end]}
    with pytest.raises(ConfigError, match=r"^stop_tokens: '<\|nope\|>' is not a token of the tokenizer of "):
        apply_stop_tokens(model, tokenizer, args, ["<|nope|>"])
