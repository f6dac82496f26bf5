"""Greedy accuracy of a model on rows of a math data set, scored by the training `accuracy` reward: grpo.py's check
before and after training (`eval_accuracy_samples`). The benchmark evaluation is lighteval's (`make evaluate`).
"""

from __future__ import annotations

import torch

from open_r1_egsw.training.data import conversation_prompt
from open_r1_egsw.training.rewards import get_reward_funcs


@torch.no_grad()
def greedy_completions(
    model,
    tokenizer,
    rows: list[dict],
    prompt_column: str = "problem",
    system_prompt: str | None = None,
    max_new_tokens: int = 64,
    batch_size: int = 64,
) -> list[str]:
    """Greedy completions of `rows`, prompted exactly as the trainer prompts (`data.conversation_prompt` through the
    tokenizer's chat template, no special tokens added on top of it), left-padded in batches of `batch_size`."""
    was_training = model.training
    model.eval()
    padding_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    completions: list[str] = []
    try:
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            texts = [
                tokenizer.apply_chat_template(
                    conversation_prompt(row[prompt_column], system_prompt), tokenize=False, add_generation_prompt=True
                )
                for row in chunk
            ]
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            out = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            completions += tokenizer.batch_decode(out[:, enc["input_ids"].size(1) :], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = padding_side
        model.train(was_training)
    return completions


def greedy_accuracy(
    model,
    tokenizer,
    rows: list[dict],
    prompt_column: str = "problem",
    system_prompt: str | None = None,
    max_new_tokens: int = 64,
    batch_size: int = 64,
) -> float:
    """Mean `accuracy` reward of greedy completions of `rows` (rows whose gold does not parse are skipped)."""
    if not rows:
        return 0.0
    accuracy = get_reward_funcs(["accuracy"])[0]
    completions = greedy_completions(model, tokenizer, rows, prompt_column, system_prompt, max_new_tokens, batch_size)
    gold = {key: [row.get(key) for row in rows] for key in ("solution", "answer") if key in rows[0]}
    scores = [s for s in accuracy(completions, **gold) if s is not None]
    return sum(scores) / len(scores) if scores else 0.0
