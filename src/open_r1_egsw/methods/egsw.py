"""Entropy-Guided Sequence Weighting (EGSW), arXiv 2503.22456: the weights, as pure tensor functions.

This module imports no trainer. `EGSWTrainer` (trainer.py) gathers a generation batch, calls
`compute_egsw_weights` on it and multiplies the advantages by the result.

Departures from GRPO as implemented in TRL 1.16 (numbered, so the code and the docs can point at them):

1. The per-token advantage becomes w_{i,t} * A_i, with w >= 0 and detached. Because w >= 0, multiplying the
   advantage is the same as multiplying the per-token clipped surrogate -min(r A, clip(r) A): the weights rescale
   the policy-gradient term only; the KL term (beta > 0) is left as TRL computes it.
2. Token granularity (the paper's "step-wise" weights): at step t, a temperature-scaled softmax of
   A_{i,t} + alpha * H_{i,t} over the completions of the group that still have a token at t. Padding never takes
   part; a step with a single completion left gets weight 1 (times the scale).
3. Sequence granularity (the paper's "trajectory-wise" weights): one weight per completion, the softmax over the
   group of A_i + alpha * mean_t H_{i,t}, broadcast over the completion's tokens.
4. Scale (`weight_scale`): "group_size" multiplies each softmax by the number of completions that take part in it,
   so uniform weights are exactly 1 and reproduce GRPO; "none" keeps the paper-literal sum-to-one weights, which
   shrink the gradient by about the group size G.
5. H is the entropy of the sampling policy (no grad), optionally divided by log |V| ("log_vocab") so that alpha
   means the same whatever the vocabulary.

Numerics: every softmax is taken as exp(z - max z) / sum exp(z - max z) over the members present (the logsumexp
shift), never exp() of raw values, so |A| up to 1e4 and tiny temperatures neither overflow nor give NaN. Equal
logits give weights of exactly scale/count (the shifted exponentials are exactly 1).
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


@torch.no_grad()
def token_entropy(logits: torch.Tensor, temperature: float = 1.0, chunk_size: int = 1024) -> torch.Tensor:
    """Entropy in nats of softmax(logits / temperature) over the last dimension: `(..., V)` -> `(...)`, float32.

    Rows are processed `chunk_size` at a time, so at most one `(chunk_size, V)` float32 copy exists at once (never a
    full `(B, T, V)` one). The trainer calls it on each decoding step's logits during generation (`(B, V)`).
    """
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite positive number, got {temperature!r}")
    flat = logits.detach().reshape(-1, logits.shape[-1])
    out = torch.empty(flat.shape[0], dtype=torch.promote_types(logits.dtype, torch.float32), device=logits.device)
    for start in range(0, flat.shape[0], chunk_size):
        logp = torch.log_softmax(flat[start : start + chunk_size].to(out.dtype) / temperature, dim=-1)
        out[start : start + chunk_size] = -torch.where(logp > -math.inf, logp.exp() * logp, 0.0).sum(-1)
    return out.reshape(logits.shape[:-1])


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
    """EGSW weights w_{i,t} = exp((A_{i,t} + alpha H_{i,t}) / P) / sum_{j in group, t < |o_j|} exp(...) (Sec. 3).

    Args:
        advantages: (N,) per completion, or (N, T) per token (then A_{i,t} is used as is for "token").
        entropies: (N, T) token entropies of the sampling policy (already normalised if wanted); values at
            padding positions are ignored.
        mask: (N, T) 1 for completion tokens, 0 for padding.
        num_generations: G. Rows are ordered so that each consecutive block of G rows is one group (TRL's
            gathered generation-batch order). N must be a multiple of G.
        alpha: entropy coefficient, >= 0.
        temperature: P > 0. P -> infinity gives uniform weights; P -> 0 puts all weight on the argmax.
        granularity: "token" (softmax over the completions present at each step) or "sequence" (one weight per
            completion from A_i and its mean entropy, broadcast over its tokens).
        weight_scale: "group_size" (multiply by the number of completions in each softmax, so uniform weights
            are 1 and reproduce GRPO) or "none" (paper-literal: weights sum to 1).

    Returns:
        (N, T) float32 weights, detached, 0 where `mask` is 0.
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
