"""Measure what a warm start gives EGSW to work with, on one sampled batch: token entropy, the spread of lengths and
entropies within groups, how far EGSW's weights at alpha 0.8 move from alpha 0, and greedy accuracy.

    python -m open_r1_egsw.experiments.task_stats --model .cache/demo/sft-model --data .cache/demo/data --out demo.json
    python -m open_r1_egsw.experiments.task_stats --model .cache/embedded/sft-model --data .cache/embedded/data
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

from open_r1_egsw.methods.egsw import compute_egsw_weights, egsw_weight_stats, normalize_entropy
from open_r1_egsw.training.data import SYSTEM_PROMPT, conversation_prompt
from open_r1_egsw.training.quick_eval import greedy_accuracy
from open_r1_egsw.training.rewards import get_reward_funcs


def load_rows(data: Path, split: str) -> list[dict]:
    """The rows of `data/<split>.jsonl`."""
    return [json.loads(line) for line in (data / f"{split}.jsonl").read_text().splitlines() if line.strip()]


@torch.no_grad()
def sample_batch(model, tokenizer, rows, num_generations: int, max_new_tokens: int, seed: int):
    """(completion ids (N, T), mask (N, T), entropies (N, T) in nats, texts): N = len(rows) * G, grouped."""
    torch.manual_seed(seed)
    tokenizer.padding_side = "left"
    prompts = [
        tokenizer.apply_chat_template(
            conversation_prompt(r["problem"], SYSTEM_PROMPT), tokenize=False, add_generation_prompt=True
        )
        for r in rows
    ]
    prompts = [p for p in prompts for _ in range(num_generations)]
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    sampling = {"do_sample": True, "temperature": 1.0, "top_p": 1.0, "top_k": 0, "max_new_tokens": max_new_tokens}
    out = model.generate(**enc, **sampling, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    prompt_len = enc["input_ids"].size(1)
    completion = out[:, prompt_len:]
    # mask: tokens up to and including the first eos (as TRL's completion_mask)
    is_eos = completion == tokenizer.eos_token_id
    first_eos = torch.where(
        is_eos.any(1), is_eos.float().argmax(1), torch.full((len(completion),), completion.size(1))
    )
    mask = (torch.arange(completion.size(1)).unsqueeze(0) <= first_eos.unsqueeze(1)).long()
    attention = torch.cat([enc["attention_mask"], mask], dim=1)
    logits = model(input_ids=out, attention_mask=attention).logits[:, prompt_len - 1 : -1].float()
    logp = torch.log_softmax(logits, dim=-1)
    entropies = -(logp.exp() * logp).sum(-1)
    texts = tokenizer.batch_decode(completion, skip_special_tokens=True)  # generate pads after the first eos
    return completion, mask, entropies, texts


def group_advantages(rewards: torch.Tensor, num_generations: int) -> torch.Tensor:
    """Rewards standardised within each group of `num_generations`, as TRL does."""
    grouped = rewards.view(-1, num_generations)
    return ((grouped - grouped.mean(1, keepdim=True)) / (grouped.std(1, keepdim=True) + 1e-4)).view(-1)


def measure(
    model_dir: Path, data: Path, prompts: int, num_generations: int, max_new_tokens: int, eval_rows: int, seed: int
) -> dict:
    """The statistics of one batch of `prompts` test prompts x `num_generations` completions, sampled at temperature 1.

    Entropies are in nats and divided by log |V|; spreads are means over groups; EGSW weights (P = 1) at alpha 0.8 and
    0 come from the same advantages (accuracy + 0.2 format) and entropies.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    test = load_rows(data, "test")
    completion, mask, entropies, texts = sample_batch(
        model, tokenizer, test[:prompts], num_generations, max_new_tokens, seed
    )
    golds = [r["solution"] for r in test[:prompts] for _ in range(num_generations)]
    accuracy, fmt = get_reward_funcs(["accuracy", "format"])
    acc = torch.tensor([a or 0.0 for a in accuracy(texts, solution=golds)])
    rewards = acc + 0.2 * torch.tensor(fmt(texts))
    advantages = group_advantages(rewards, num_generations)
    valid = mask.bool()
    lengths = mask.sum(1).float().view(-1, num_generations)
    per_completion = ((entropies * mask).sum(1) / mask.sum(1).clamp(min=1)).view(-1, num_generations)
    vocab = model.config.vocab_size
    result = {
        "model": str(model_dir),
        "prompts": prompts,
        "num_generations": num_generations,
        "seed": seed,
        "vocab_size": vocab,
        "log_vocab": math.log(vocab),
        "mean_token_entropy_nats": entropies[valid].mean().item(),
        "mean_token_entropy_normalized": entropies[valid].mean().item() / math.log(vocab),
        "length_mean": lengths.mean().item(),
        "length_cv_within_group": (lengths.std(1, correction=0) / lengths.mean(1)).mean().item(),
        "entropy_spread_within_group_nats": per_completion.std(1, correction=0).mean().item(),
        "sampled_accuracy": acc.mean().item(),
        "sampled_format": torch.tensor(fmt(texts)).mean().item(),
        "groups_with_reward_variance": (rewards.view(-1, num_generations).std(1) > 0).float().mean().item(),
    }
    for name, ent in (("log_vocab", normalize_entropy(entropies, vocab)), ("nats", entropies)):
        w0 = compute_egsw_weights(advantages, ent, mask, num_generations, alpha=0.0, temperature=1.0)
        w8 = compute_egsw_weights(advantages, ent, mask, num_generations, alpha=0.8, temperature=1.0)
        s0, s8 = egsw_weight_stats(w0, mask, num_generations), egsw_weight_stats(w8, mask, num_generations)
        result[f"weights_{name}"] = {
            "mean_abs_diff_alpha0.8_vs_0": (w8 - w0)[valid].abs().mean().item(),
            "max_abs_diff_alpha0.8_vs_0": (w8 - w0)[valid].abs().max().item(),
            "ess_alpha0": s0["ess"],
            "ess_alpha0.8": s8["ess"],
        }
    result["greedy_accuracy"] = greedy_accuracy(
        model, tokenizer, test[:eval_rows], "problem", SYSTEM_PROMPT, max_new_tokens
    )
    result["examples"] = texts[:num_generations]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m open_r1_egsw.experiments.task_stats", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--model", type=Path, default=Path(".cache/demo/sft-model"))
    parser.add_argument("--data", type=Path, default=Path(".cache/demo/data"))
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--num_generations", type=int, default=8)
    parser.add_argument("--max_new_tokens", type=int, default=80)  # the demo recipes' max_completion_length
    parser.add_argument("--eval_rows", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="JSON output (default: print only)")
    args = parser.parse_args(argv)
    for path in (args.model, args.data):
        if not path.exists():
            build = "python -m open_r1_egsw.experiments.demo_task --warm-start"
            sys.stderr.write(f"error: {path} does not exist (build it: {build})\n")
            return 2
    result = measure(
        args.model, args.data, args.prompts, args.num_generations, args.max_new_tokens, args.eval_rows, args.seed
    )
    text = json.dumps(result, indent=2)
    sys.stdout.write(text + "\n")
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
