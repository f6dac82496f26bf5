"""The methods on batches of a real model: sampling and one forward, no training (scripts/real_model_batches.py).

One batch of `num_generations` completions for each of `prompts` prompts, sampled with transformers `generate` at the
recipe's temperature from the full distribution (no top-k / top-p), prompted through the recipe's system prompt and
the model's own chat template; then one no-grad forward over prompt + completion per group, whose logits give every
completion token's statistics (`dynamics.token_statistics`: log p_k, H, S, E_p[S], at the same temperature).
Rewards are the recipe's (`rewards.get_reward_funcs`, weighted, None counting 0 as in TRL), advantages TRL's
group standardisation (`task_stats.group_advantages`). Everything measured goes through the trainer's own pure code:
`shaping.shape_advantages` (EGSW weights, Clip_B / Clip_V keep-masks, their metrics), `egsw.egsw_weight_stats`,
and `shaping.predicted_step_entropy_change`. Definitions:

- entropy spread within a group: std over its completions of their mean token entropy (ddof 0, nats), mean over
  groups (the demo task's warm-start table uses the same); token std: std over all tokens of the group.
- |w(alpha) - w(0)|: mean over valid tokens, the same P, the recipes' `group_size` scale (uniform weights = 1);
  w(0) is the advantage softmax alone. ESS: egsw_weight_stats' (sum w)^2 / (n sum w^2) per (group, step), averaged:
  in [1/G, 1], 1 for uniform weights.
- logit spread: at each (group, step) with >= 2 completions present, the std over them of alpha H / P and of A / P,
  averaged: how much the entropy term can move the softmax, against the advantage term.
- per step: clipping and the predicted entropy change are computed on consecutive blocks of `step_rows` completions
  (the recipe's generation batch, what one optimizer step sees), then averaged over the blocks. The predicted change
  is the trainer's `predicted_dH` (masked mean over the valid tokens of dH = -lr A_eff c (S - E_p[S]), c the loss
  type's token scale, ratio 1): first order in lr, for a tabular policy (docs/METHOD.md section 2).
"""

from __future__ import annotations

import math

import torch

from open_r1_egsw.methods.dynamics import masked_mean, token_statistics
from open_r1_egsw.methods.shaping import ShapingSettings, predicted_step_entropy_change, shape_advantages

SETTINGS = ((0.3, 1.0), (0.8, 1.8), (0.8, 1.0))  # the paper's two (Qwen2.5-Math-7B, -Instruct); the demo table's
NORMALIZATIONS = {"log_vocab": "log_vocab", "nats": "none"}  # report name -> egsw_entropy_normalization
CLIPS = {"clip_b": 2.5, "clip_v": 8.5}  # the paper's mu


@torch.no_grad()
def sample(
    model,
    tokenizer,
    prompts: list[str],
    num_generations: int,
    max_new_tokens: int,
    temperature: float,
    eos_ids: list[int],
    prompts_per_call: int = 4,
) -> tuple[list[list[int]], torch.Tensor, torch.Tensor]:
    """(prompt ids per group, completions (N, T) padded, mask (N, T)): N = len(prompts) * G, each group G rows.

    The mask keeps the tokens up to and including the first of `eos_ids` (TRL's completion mask)."""
    tokenizer.padding_side = "left"
    rows, prompt_ids = [], []
    for start in range(0, len(prompts), prompts_per_call):
        chunk = [p for p in prompts[start : start + prompts_per_call] for _ in range(num_generations)]
        enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
        out = model.generate(
            **enc,
            do_sample=True,
            temperature=temperature,
            top_k=0,
            top_p=1.0,
            max_new_tokens=max_new_tokens,
            eos_token_id=eos_ids,
            pad_token_id=tokenizer.pad_token_id,
        )
        rows += list(out[:, enc["input_ids"].size(1) :])
        prompt_ids += [
            ids[m.bool()].tolist()
            for ids, m in zip(enc["input_ids"][::num_generations], enc["attention_mask"][::num_generations])
        ]
    width = max(len(r) for r in rows)
    completions = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    for i, row in enumerate(rows):
        completions[i, : len(row)] = row
    is_eos = torch.isin(completions, torch.tensor(eos_ids))
    first = torch.where(is_eos.any(1), is_eos.long().argmax(1), torch.full((len(rows),), width))
    mask = (torch.arange(width).unsqueeze(0) <= first.unsqueeze(1)).long()  # (N, T)
    return prompt_ids, completions, mask


@torch.no_grad()
def score(
    model, prompt_ids: list[list[int]], completions: torch.Tensor, temperature: float
) -> dict[str, torch.Tensor]:
    """Token statistics (N, T) of the completions under `model`: one forward per group (its rows share the prompt)."""
    groups = len(prompt_ids)
    g = completions.size(0) // groups
    out: dict[str, list[torch.Tensor]] = {}
    for k, ids in enumerate(prompt_ids):
        block = completions[k * g : (k + 1) * g]  # (G, T)
        inputs = torch.cat([torch.tensor(ids).expand(g, -1), block], dim=1)
        logits = model(input_ids=inputs).logits[:, len(ids) - 1 : -1]  # (G, T, V): the next-token distributions
        for key, value in token_statistics(logits, block, temperature=temperature).items():
            out.setdefault(key, []).append(value)
    return {key: torch.cat(values) for key, values in out.items()}


def _group_std(values: torch.Tensor, present: torch.Tensor, num_generations: int) -> torch.Tensor:
    """Population std over each group's present members: (N, ...) -> (N/G, ...); NaN where fewer than 2 present."""
    v = values.reshape(-1, num_generations, *values.shape[1:]).double()
    p = present.reshape(v.shape).double()
    n = p.sum(1)
    mean = (v * p).sum(1) / n.clamp(min=1)
    var = (((v - mean.unsqueeze(1)) ** 2) * p).sum(1) / n.clamp(min=1)
    return torch.where(n >= 2, var.sqrt(), torch.full_like(var, math.nan))


def _nanmean(x: torch.Tensor) -> float:
    return x[~x.isnan()].mean().item()


def measure(
    rewards: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    ended: torch.Tensor,
    stats: dict[str, torch.Tensor],
    num_generations: int,
    vocab_size: int,
    lr: float,
    loss_type: str,
    max_completion_length: int,
    step_rows: int,
) -> dict:
    """Every number of the report from one sampled batch (module docstring): rewards and advantages (N,), mask (N, T),
    ended (N,) bool (the completion stopped at an eos), stats (N, T) each (`score`)."""
    g, present = num_generations, mask.bool()
    n = mask.size(0)
    if n % g or step_rows % g or n % step_rows:
        raise ValueError(
            f"rows ({n}) and step_rows ({step_rows}) must be multiples of num_generations ({g}), "
            f"and rows a multiple of step_rows"
        )
    lengths = mask.sum(1).double()
    entropy = stats["entropy"]
    per_completion = (entropy * mask).sum(1) / mask.sum(1).clamp(min=1)  # (N,) mean token entropy, nats
    grouped_rewards, grouped_lengths = rewards.view(-1, g), lengths.view(-1, g)
    result = {
        "completions": n,
        "tokens": int(mask.sum()),
        "vocab_size": vocab_size,
        "log_vocab": math.log(vocab_size),
        "length_mean": lengths.mean().item(),
        "length_cv_within_group": (grouped_lengths.std(1, correction=0) / grouped_lengths.mean(1)).mean().item(),
        "ended_share": ended.double().mean().item(),
        "reward_mean": rewards.mean().item(),
        "groups_with_reward_variance": (grouped_rewards.std(1) > 0).double().mean().item(),
        "negative_advantage_token_share": (present & (advantages < 0).unsqueeze(1)).sum().item() / mask.sum().item(),
        "entropy": {
            "mean_nats": masked_mean(entropy, mask).item(),
            "mean_normalized": masked_mean(entropy, mask).item() / math.log(vocab_size),
            "spread_within_group_nats": _group_std(per_completion, torch.ones(n, dtype=torch.bool), g).mean().item(),
            "token_std_within_group_nats": _token_std_within_group(entropy, present, g),
        },
    }
    base = {"num_generations": g, "vocab_size": vocab_size}
    blocks = [slice(i, i + step_rows) for i in range(0, n, step_rows)]

    def per_step(settings: ShapingSettings) -> dict:
        """Shaping and the predicted entropy change on each block of `step_rows` rows, averaged over the blocks."""
        dH, dropped, shares = [], 0, []
        for rows in blocks:
            block = {k: v[rows] for k, v in stats.items()}
            shaped = shape_advantages(advantages[rows], mask[rows], block, settings)
            args = (advantages[rows], mask[rows], block, shaped, lr, loss_type, max_completion_length)
            dH.append(predicted_step_entropy_change(*args))
            if shaped.keep is not None:
                dropped += int(shaped.metrics["entropy_dynamics/clip_count"])
                shares.append(shaped.metrics["entropy_dynamics/clip_frac"])
        out = {"predicted_dH": sum(dH) / len(dH)}
        if shares:
            out.update(dropped=dropped, dropped_share=sum(shares) / len(shares))
        return out

    grpo = per_step(ShapingSettings(**base))
    result["predicted_dH_grpo"] = grpo["predicted_dH"]
    result["egsw"] = {}
    for alpha, temperature in SETTINGS:
        for name, normalization in NORMALIZATIONS.items():
            settings = ShapingSettings(
                **base, use_egsw=True, alpha=alpha, temperature=temperature, entropy_normalization=normalization
            )
            at_zero = ShapingSettings(**base, use_egsw=True, alpha=0.0, temperature=temperature)
            w = shape_advantages(advantages, mask, stats, settings)
            w0 = shape_advantages(advantages, mask, stats, at_zero)
            h = entropy / math.log(vocab_size) if normalization == "log_vocab" else entropy
            result["egsw"][f"alpha{alpha}_P{temperature}_{name}"] = {
                "alpha": alpha,
                "P": temperature,
                "entropy": name,
                "mean_abs_diff_vs_alpha0": (w.weights - w0.weights)[present].abs().mean().item(),
                "max_abs_diff_vs_alpha0": (w.weights - w0.weights)[present].abs().max().item(),
                "ess": w.metrics["egsw/ess"],
                "ess_alpha0": w0.metrics["egsw/ess"],
                "mean_abs_w0_minus_1": (w0.weights - 1)[present].abs().mean().item(),
                "logit_std_entropy_term": _nanmean(_group_std(alpha * h / temperature, present, g)),
                "logit_std_advantage_term": _nanmean(
                    _group_std(advantages.unsqueeze(1).expand_as(h) / temperature, present, g)
                ),
                "predicted_dH": per_step(settings)["predicted_dH"],
                "predicted_dH_alpha0": per_step(at_zero)["predicted_dH"],
            }
    result["clip"] = {}
    for clip, mu in CLIPS.items():
        whole = shape_advantages(advantages, mask, stats, ShapingSettings(**base, entropy_clip=clip, clip_mu=mu))
        uncapped = ShapingSettings(**base, entropy_clip=clip, clip_mu=mu, clip_max_frac=1.0)
        result["clip"][clip] = {
            "mu": mu,
            "max_frac": 1e-4 if clip == "clip_v" else None,
            "per_step": per_step(ShapingSettings(**base, entropy_clip=clip, clip_mu=mu)),
            "whole_batch_dropped": int(whole.metrics["entropy_dynamics/clip_count"]),
            "whole_batch_dropped_share": whole.metrics["entropy_dynamics/clip_frac"],
        }
        if clip == "clip_v":  # how many tokens pass the mu test, before the max_frac cap
            capless = shape_advantages(advantages, mask, stats, uncapped)
            result["clip"][clip]["whole_batch_candidates"] = int(capless.metrics["entropy_dynamics/clip_count"])
        result["clip"][clip]["mu_to_first_drop"] = {
            "whole_batch": _mu_to_first_drop(clip, stats, advantages, mask),
            "per_step_max": max(
                (
                    m
                    for rows in blocks
                    if (
                        m := _mu_to_first_drop(
                            clip, {k: v[rows] for k, v in stats.items()}, advantages[rows], mask[rows]
                        )
                    )
                    is not None
                ),
                default=None,
            ),
        }
    s_valid = stats["S"][present].double()
    result["S"] = {"mean": s_valid.mean().item(), "std": s_valid.std(correction=0).item(), "min": s_valid.min().item()}
    return result


def _mu_to_first_drop(
    clip: str, stats: dict[str, torch.Tensor], advantages: torch.Tensor, mask: torch.Tensor
) -> float:
    """The largest mu at which the rule still has a candidate: over the negative-advantage tokens, the largest
    (m - S) / s (Clip_B) or D / s_D (Clip_V), with the batch statistics the rules use (population std over the valid
    tokens, clipping.clip_b_mask / clip_v_mask). A rule at mu below it has a candidate; at mu above, none.
    None when no token has a negative advantage."""
    present = mask.bool()
    negative = present & (advantages < 0).unsqueeze(1)
    if not negative.any():
        return None
    if clip == "clip_b":
        x = stats["S"].double()
        score = (x[present].mean() - x) / x[present].std(correction=0)
    else:
        x = (stats["S_baseline"] - stats["S"]).double()
        score = x / x[present].std(correction=0)
    return score[negative].max().item()


def _token_std_within_group(entropy: torch.Tensor, present: torch.Tensor, g: int) -> float:
    """Population std of the token entropies of each group (all its completions' tokens), mean over groups (nats)."""
    stds = []
    for k in range(0, entropy.size(0), g):
        stds.append(entropy[k : k + g][present[k : k + g]].double().std(correction=0).item())
    return sum(stds) / len(stds)
