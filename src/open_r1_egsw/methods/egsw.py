"""Entropy-Guided Sequence Weighting (EGSW, arXiv 2503.22456): the weights of docs/METHOD.md section 1.

Per group, a temperature-P softmax of A + alpha * H over the completions present, per step ("token") or per
completion ("sequence", registered in `GRANULARITY_REGISTRY`), in shifted (logsumexp) form; detached, 0 at padding.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

WEIGHT_SCALES = ("group_size", "none")
ENTROPY_NORMALIZATIONS = ("log_vocab", "none")

# name -> function(advantages (N, T), entropies (N, T), present (N, T) bool, num_generations, alpha, temperature,
#                  scale_by_count) -> weights (N, T)
GRANULARITY_REGISTRY: dict[str, Callable[..., torch.Tensor]] = {}


def register_granularity(name: str) -> Callable:
    """Register a weighting granularity under `name`; a name can be registered once."""

    def decorator(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        if name in GRANULARITY_REGISTRY:
            raise ValueError(f"EGSW granularity {name!r} is already registered.")
        GRANULARITY_REGISTRY[name] = fn
        return fn

    return decorator


def get_granularity_fn(name: str) -> Callable[..., torch.Tensor]:
    """Look up a granularity by name; the error lists the registered names."""
    if name not in GRANULARITY_REGISTRY:
        raise ValueError(f"Unknown EGSW granularity {name!r}. Known: {', '.join(sorted(GRANULARITY_REGISTRY))}.")
    return GRANULARITY_REGISTRY[name]


def normalize_entropy(entropies: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Divide entropies (nats) by log |V|, the entropy of the uniform distribution, so they lie in [0, 1]."""
    if vocab_size < 2:
        raise ValueError(f"vocab_size must be >= 2 to normalise entropies, got {vocab_size}.")
    return entropies / math.log(vocab_size)


def _masked_group_softmax(logits: torch.Tensor, present: torch.Tensor, scale_by_count: bool) -> torch.Tensor:
    """Softmax over dim 1 of (groups, G, ...) restricted to `present` members, in shifted (logsumexp) form.

    Returns weights of the same shape, 0 where not present; each softmax sums to 1, or to the number of members
    present when `scale_by_count`.
    """
    neg_inf = torch.tensor(float("-inf"), dtype=logits.dtype, device=logits.device)
    shifted_in = torch.where(present, logits, neg_inf)
    count = present.sum(dim=1, keepdim=True)  # (groups, 1, ...)
    z_max = shifted_in.amax(dim=1, keepdim=True)
    z_max = torch.where(count > 0, z_max, torch.zeros_like(z_max))  # an all-absent column: avoid -inf - -inf
    exp = torch.where(present, torch.exp(shifted_in - z_max), torch.zeros_like(logits))  # <= 1, no overflow
    total = exp.sum(dim=1, keepdim=True)  # >= 1 wherever count > 0 (the max member contributes exp(0) = 1)
    numerator = count.to(logits.dtype) if scale_by_count else torch.ones_like(total)
    factor = torch.where(count > 0, numerator / total.clamp(min=1.0), torch.zeros_like(total))
    return exp * factor


@register_granularity("token")
def _token_weights(advantages, entropies, present, num_generations, alpha, temperature, scale_by_count):
    n, t = present.shape
    logits = (advantages + alpha * entropies) / temperature  # (N, T)
    weights = _masked_group_softmax(
        logits.view(n // num_generations, num_generations, t),
        present.view(n // num_generations, num_generations, t),
        scale_by_count,
    )  # (N/G, G, T)
    return weights.view(n, t)


@register_granularity("sequence")
def _sequence_weights(advantages, entropies, present, num_generations, alpha, temperature, scale_by_count):
    n, t = present.shape
    lengths = present.sum(dim=1)  # (N,)
    nonempty = lengths > 0
    mean_entropy = (entropies * present).sum(dim=1) / lengths.clamp(min=1)  # (N,) mean over its own tokens
    # A_i: per-completion advantage; for (N, T) input, its mean over the completion's tokens.
    seq_advantage = (advantages * present).sum(dim=1) / lengths.clamp(min=1)  # (N,)
    logits = (seq_advantage + alpha * mean_entropy) / temperature  # (N,)
    weights = _masked_group_softmax(
        logits.view(n // num_generations, num_generations),
        nonempty.view(n // num_generations, num_generations),
        scale_by_count,
    )  # (N/G, G)
    return weights.view(n, 1) * present


@torch.no_grad()
def compute_egsw_weights(
    advantages: torch.Tensor,
    entropies: torch.Tensor,
    mask: torch.Tensor,
    num_generations: int,
    alpha: float,
    temperature: float,
    granularity: str = "token",
    weight_scale: str = "group_size",
) -> torch.Tensor:
    """(N, T) weights w_{i,t} = exp((A_{i,t} + alpha H_{i,t}) / P) / sum over the group's present completions.

    `advantages` (N,) or (N, T); `entropies` and `mask` (N, T); each consecutive block of `num_generations` rows is
    one group (TRL's order). "group_size" scales each softmax by its member count (uniform weights = 1), "none" keeps
    sums of 1. float32, detached, 0 where `mask` is 0.
    """
    if entropies.dim() != 2 or mask.shape != entropies.shape:
        raise ValueError(
            f"entropies and mask must both have shape (N, T); got {tuple(entropies.shape)} and {tuple(mask.shape)}."
        )
    n, t = mask.shape
    if num_generations < 1 or n % num_generations != 0:
        raise ValueError(
            f"The number of rows ({n}) must be a positive multiple of num_generations ({num_generations})."
        )
    if advantages.shape not in ((n,), (n, t)):
        raise ValueError(f"advantages must have shape ({n},) or ({n}, {t}); got {tuple(advantages.shape)}.")
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}.")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    if weight_scale not in WEIGHT_SCALES:
        raise ValueError(f"Unknown weight_scale {weight_scale!r}. Known: {', '.join(WEIGHT_SCALES)}.")
    granularity_fn = get_granularity_fn(granularity)

    present = mask.bool()
    adv = advantages.detach().float()
    adv = adv.unsqueeze(1).expand(n, t) if adv.dim() == 1 else adv
    ent = torch.where(present, entropies.detach().float(), torch.zeros((), device=entropies.device))
    adv = torch.where(present, adv, torch.zeros((), device=adv.device))
    weights = granularity_fn(
        adv, ent, present, num_generations, float(alpha), float(temperature), weight_scale == "group_size"
    )
    return weights * present


@torch.no_grad()
def egsw_weight_stats(weights: torch.Tensor, mask: torch.Tensor, num_generations: int) -> dict[str, float]:
    """Diagnostics of a weight tensor: min / max / std over valid tokens and the mean effective sample size.

    ESS of one group at one step is (sum w)^2 / (n * sum w^2) over the n completions present (1 for uniform
    weights, 1/n for one-hot); the returned `ess` averages it over every (group, step) with at least one present.
    """
    present = mask.bool()
    if not present.any():
        return {"weight_min": 0.0, "weight_max": 0.0, "weight_std": 0.0, "ess": 0.0}
    valid = weights[present].float()
    n, t = mask.shape
    w = (weights * present).float().view(n // num_generations, num_generations, t)
    count = present.view(n // num_generations, num_generations, t).sum(dim=1).float()  # (groups, T)
    sum_w = w.sum(dim=1)
    sum_w2 = (w * w).sum(dim=1)
    has = (count > 0) & (sum_w2 > 0)
    ess = (sum_w[has] ** 2) / (count[has] * sum_w2[has])
    return {
        "weight_min": valid.min().item(),
        "weight_max": valid.max().item(),
        "weight_std": valid.std(correction=0).item(),
        "ess": ess.mean().item() if ess.numel() else 0.0,
    }
