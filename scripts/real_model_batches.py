"""The methods on batches of a real pretrained model: sampling and one forward, no training (CPU, one process).

    make real-model-batches   # python scripts/real_model_batches.py --out docs/results/real_model/real_model_batches.json
    python scripts/real_model_batches.py --prompts 16 --num_generations 8 --seed 0 --out /tmp/batches.json

The recipe (default: recipes/SmolLM2-135M-Instruct/egsw/config.yaml, read with the trainer's parser) gives the model,
data, system prompt, rewards, temperature, completion length, learning rate, loss type and the generation batch of
one step; --model / --data override its paths. Writes the JSON (command, seed, versions, wall time, load average)
and, beside it, a markdown table that sets it beside the demo task's warm-start table
(docs/results/demo_task_warm_start.json). What is measured, and how: src/open_r1_egsw/experiments/real_batches.py.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import torch

from open_r1_egsw.experiments.real_batches import measure, sample, score

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RECIPE = Path("recipes/SmolLM2-135M-Instruct/egsw/config.yaml")
DEMO_TABLE = Path("docs/results/demo_task_warm_start.json")


def fail(message: str) -> int:
    sys.stderr.write(f"error: {message}\n")
    return 2


def read_recipe(path: Path):
    from trl import ModelConfig

    from open_r1_egsw.cli.recipe_args import parse_recipe_args
    from open_r1_egsw.training.configs import EGSWConfig, GRPOScriptArguments

    return parse_recipe_args(
        (GRPOScriptArguments, EGSWConfig, ModelConfig), ["--config", str(path), "--use_cpu", "true"]
    )


def rewards_of(script_args, training_args, rows, texts, completion_ids, prompts) -> tuple[torch.Tensor, dict]:
    """The recipe's weighted reward sum per completion (None counts 0, as TRL's nansum), and each reward's mean."""
    from open_r1_egsw.training.rewards import get_reward_funcs

    funcs = get_reward_funcs(script_args, max_completion_length=training_args.max_completion_length)
    weights = training_args.reward_weights or [1.0] * len(funcs)
    golds = {key: [row[key] for row in rows] for key in ("solution", "answer") if key in rows[0]}
    total, means = torch.zeros(len(texts), dtype=torch.float64), {}
    for name, func, weight in zip(script_args.reward_funcs, funcs, weights, strict=True):
        values = torch.tensor(
            [0.0 if v is None else v for v in func(texts, completion_ids=completion_ids, prompts=prompts, **golds)],
            dtype=torch.float64,
        )
        total += weight * values
        means[name] = values.mean().item()
    return total, means


def versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "transformers", "trl", "math-verify"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def run(args) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from open_r1_egsw.experiments.task_stats import group_advantages, load_rows
    from open_r1_egsw.training.data import conversation_prompt

    script_args, training_args, model_args = read_recipe(args.recipe)
    model_dir = Path(args.model or model_args.model_name_or_path)
    data_dir = Path(args.data or script_args.dataset_name)
    for path, what in ((model_dir, "model"), (data_dir, "data")):
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist (the recipe's {what}; build it: make smollm2)")
    g = args.num_generations or training_args.num_generations
    max_new_tokens = args.max_new_tokens or training_args.max_completion_length
    step_rows = min(args.step_rows or training_args.generation_batch_size, args.prompts * g)
    temperature = training_args.temperature
    load_before, started = os.getloadavg(), time.time()

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    rows = load_rows(data_dir, args.split)[: args.prompts]
    if len(rows) < args.prompts:
        raise ValueError(f"--prompts {args.prompts}: the {args.split} split of {data_dir} has {len(rows)} rows")
    prompts = [
        tokenizer.apply_chat_template(
            conversation_prompt(row[script_args.dataset_prompt_column], script_args.system_prompt),
            tokenize=False,
            add_generation_prompt=True,
        )
        for row in rows
    ]
    stop = [tokenizer.convert_tokens_to_ids(token) for token in script_args.stop_tokens]
    eos_ids = list(dict.fromkeys([tokenizer.eos_token_id, *stop]))
    torch.manual_seed(args.seed)
    prompt_ids, completions, mask = sample(
        model, tokenizer, prompts, g, max_new_tokens, temperature, eos_ids, args.prompts_per_call
    )
    sampled = time.time()
    stats = score(model, prompt_ids, completions, temperature)
    scored = time.time()

    ids = [row[m.bool()].tolist() for row, m in zip(completions, mask)]
    texts = tokenizer.batch_decode(ids, skip_special_tokens=True)
    per_row = [row for row in rows for _ in range(g)]
    rewards, reward_means = rewards_of(
        script_args, training_args, per_row, texts, ids, [p for p in prompts for _ in range(g)]
    )
    advantages = group_advantages(rewards.float(), g)
    ended = torch.tensor([bool(seq) and seq[-1] in eos_ids for seq in ids])
    vocab = model.config.get_text_config().vocab_size
    result = measure(
        rewards,
        advantages,
        mask,
        ended,
        stats,
        g,
        vocab,
        training_args.learning_rate,
        training_args.loss_type,
        max_new_tokens,
        step_rows,
    )
    return {
        "command": "python scripts/real_model_batches.py " + shlex.join(args.argv),
        "recipe": str(args.recipe),
        "model": str(model_dir),
        "data": f"{data_dir} ({args.split}, first rows)",
        "prompts": args.prompts,
        "num_generations": g,
        "max_new_tokens": max_new_tokens,
        "temperature": temperature,
        "seed": args.seed,
        "step_rows": step_rows,
        "learning_rate": training_args.learning_rate,
        "loss_type": training_args.loss_type,
        "reward_funcs": script_args.reward_funcs,
        "reward_weights": training_args.reward_weights,
        "sampler": "transformers generate, float32, full distribution (top_k 0, top_p 1)",
        "versions": versions(),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "wall_time_s": {
            "sampling": round(sampled - started, 1),
            "forward": round(scored - sampled, 1),
            "total": round(time.time() - started, 1),
        },
        "load_average_1_5_15": {
            "before": [round(x, 2) for x in load_before],
            "after": [round(x, 2) for x in os.getloadavg()],
        },
        **result,
        "reward_means": reward_means,
        "examples": texts[:g],
    }


def render_markdown(real: dict, demo: dict) -> str:
    """The table of the real model's batch beside the demo task's warm start (same definitions where both exist)."""

    def f(x, digits=3):
        return "-" if x is None else f"{x:.{digits}g}"

    e = real["egsw"]
    at = {norm: e[f"alpha0.8_P1.0_{norm}"] for norm in ("log_vocab", "nats")}
    rows = [
        (
            "vocabulary |V| (log |V|)",
            f"{demo['vocab_size']} ({demo['log_vocab']:.2f})",
            f"{real['vocab_size']} ({real['log_vocab']:.2f})",
        ),
        ("mean token entropy, nats", f(demo["mean_token_entropy_nats"]), f(real["entropy"]["mean_nats"])),
        ("... divided by log |V|", f(demo["mean_token_entropy_normalized"]), f(real["entropy"]["mean_normalized"])),
        (
            "entropy spread within a group, nats",
            f(demo["entropy_spread_within_group_nats"]),
            f(real["entropy"]["spread_within_group_nats"]),
        ),
        ("mean completion length, tokens", f(demo["length_mean"]), f(real["length_mean"])),
        ("sampled accuracy (accuracy reward)", f(demo["sampled_accuracy"]), f(real["reward_means"].get("accuracy"))),
        (
            "groups with reward variance",
            f(demo["groups_with_reward_variance"]),
            f(real["groups_with_reward_variance"]),
        ),
        (
            "mean abs(w(0.8) - w(0)), P = 1, log_vocab",
            f(demo["weights_log_vocab"]["mean_abs_diff_alpha0.8_vs_0"]),
            f(at["log_vocab"]["mean_abs_diff_vs_alpha0"]),
        ),
        (
            "mean abs(w(0.8) - w(0)), P = 1, nats",
            f(demo["weights_nats"]["mean_abs_diff_alpha0.8_vs_0"]),
            f(at["nats"]["mean_abs_diff_vs_alpha0"]),
        ),
        (
            "ESS alpha 0 / 0.8, P = 1, log_vocab",
            f"{f(demo['weights_log_vocab']['ess_alpha0'])} / {f(demo['weights_log_vocab']['ess_alpha0.8'])}",
            f"{f(at['log_vocab']['ess_alpha0'])} / {f(at['log_vocab']['ess'])}",
        ),
        (
            "ESS alpha 0 / 0.8, P = 1, nats",
            f"{f(demo['weights_nats']['ess_alpha0'])} / {f(demo['weights_nats']['ess_alpha0.8'])}",
            f"{f(at['nats']['ess_alpha0'])} / {f(at['nats']['ess'])}",
        ),
    ]
    lines = [
        f"# The methods on real-model batches ({real['model']})",
        "",
        f"`{real['command']}`: {real['prompts']} prompts x {real['num_generations']} completions, temperature "
        f"{real['temperature']}, <= {real['max_new_tokens']} tokens, seed {real['seed']}; {real['sampler']}. Wall "
        f"time {real['wall_time_s']['total']} s (sampling {real['wall_time_s']['sampling']} s, forward "
        f"{real['wall_time_s']['forward']} s) at load average {real['load_average_1_5_15']['before'][0]} -> "
        f"{real['load_average_1_5_15']['after'][0]} on {real['cpu_count']} cores. Demo column: "
        f"{DEMO_TABLE} ({demo['prompts']} prompts x {demo['num_generations']}).",
        "",
        "| | demo task warm start (tiny, trained from scratch) | real pretrained model |",
        "| --- | --- | --- |",
        *[f"| {name} | {a} | {b} |" for name, a, b in rows],
        "",
        "EGSW at the paper's settings and the demo's, on the real batch (P: softmax temperature; dH: the trainer's "
        f"predicted first-order entropy change per token of one step at lr {real['learning_rate']:g}, "
        f"{real['step_rows']} completions a step, nats; GRPO: {f(real['predicted_dH_grpo'])}):",
        "",
        "| alpha, P, entropy | mean abs(w - w(0)) | ESS (alpha 0) | std of alpha H / P | std of A / P | dH EGSW "
        "| dH w(0) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for v in e.values():
        lines.append(
            f"| {v['alpha']}, {v['P']}, {v['entropy']} | {f(v['mean_abs_diff_vs_alpha0'])} | {f(v['ess'])} "
            f"({f(v['ess_alpha0'])}) | {f(v['logit_std_entropy_term'])} | {f(v['logit_std_advantage_term'])} "
            f"| {f(v['predicted_dH'])} | {f(v['predicted_dH_alpha0'])} |"
        )
    lines += [
        "",
        "Clipping at the paper's mu (Clip_V: max_frac 1e-4, at least one token when a candidate exists); "
        "first-drop mu: the largest mu at which the rule would still find a candidate (per step: the largest "
        f"over the {real['prompts'] * real['num_generations'] // real['step_rows']} steps):",
        "",
        "| rule | dropped per step (share of valid tokens) | dropped over the whole batch | candidates before "
        "the cap | first-drop mu, per step / whole batch | dH |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, c in real["clip"].items():
        step, first = c["per_step"], c["mu_to_first_drop"]
        lines.append(
            f"| {name} (mu {c['mu']}) | {step['dropped']} tokens ({f(step['dropped_share'])}) | "
            f"{c['whole_batch_dropped']} of {real['tokens']} | {c.get('whole_batch_candidates', '-')} | "
            f"{f(first['per_step_max'])} / {f(first['whole_batch'])} | {f(step['predicted_dH'])} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", type=Path, default=DEFAULT_RECIPE)
    parser.add_argument("--model", type=Path, help="model directory (default: the recipe's)")
    parser.add_argument("--data", type=Path, help="data directory with {train,test}.jsonl (default: the recipe's)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--num_generations", type=int, help="default: the recipe's")
    parser.add_argument("--max_new_tokens", type=int, help="default: the recipe's max_completion_length")
    parser.add_argument("--step_rows", type=int, help="completions per step (default: the recipe's generation batch)")
    parser.add_argument("--prompts_per_call", type=int, default=4, help="prompts per generate call")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--demo", type=Path, default=DEMO_TABLE, help="the demo task's warm-start JSON to set beside")
    parser.add_argument("--out", type=Path, help="JSON output; the markdown table goes beside it (.md)")
    args = parser.parse_args(argv)
    args.argv = argv
    for path, flag in ((args.recipe, "--recipe"), (args.demo, "--demo")):
        if not path.is_file():
            return fail(f"{path}: no such file ({flag})")
    if args.prompts < 1:
        return fail(f"--prompts must be >= 1, got {args.prompts}")
    try:
        result = run(args)
    except (FileNotFoundError, ValueError) as err:
        return fail(str(err))
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
        args.out.with_suffix(".md").write_text(render_markdown(result, json.loads(args.demo.read_text())))
    else:
        sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
