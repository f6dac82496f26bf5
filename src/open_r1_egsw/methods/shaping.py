"""Advantage shaping of one whole generation batch: EGSW weights, a clipping rule's keep-mask, their metrics.

The trainer gathers the batch of every process, calls `shape_advantages` once and keeps its own rows: the weights
multiply the advantages, the keep-mask is ANDed into the loss mask. Pure torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from open_r1_egsw.methods.clipping import clip_fraction, get_clip_fn
from open_r1_egsw.methods.dynamics import masked_mean, predicted_entropy_change
from open_r1_egsw.methods.egsw import compute_egsw_weights, egsw_weight_stats, normalize_entropy

# The token statistics, in the one order every process packs and unpacks them (never a set's iteration order).
STATISTICS = ("entropy", "logp", "S", "S_baseline")


def needed_statistics(use_egsw: bool, entropy_clip: str, log_entropy_dynamics: bool) -> tuple[str, ...]:
    """The statistics a configuration needs, in `STATISTICS` order."""
    need = set()
    if use_egsw:
        need.add("entropy")
    if entropy_clip != "none":
        need.update(get_clip_fn(entropy_clip).needs)
    if log_entropy_dynamics:
        need.update(STATISTICS)
    return tuple(key for key in STATISTICS if key in need)


@dataclass(frozen=True)
class ShapingSettings:
    """The method keys of `EGSWConfig` that shaping reads (alpha and P as the controller currently holds them)."""

    num_generations: int
    use_egsw: bool = False
    alpha: float = 0.3
    temperature: float = 1.0
    granularity: str = "token"
    weight_scale: str = "group_size"
    entropy_normalization: str = "log_vocab"
    vocab_size: int = 2
    entropy_clip: str = "none"
    clip_mu: float = float("inf")
    clip_max_frac: float = 1e-4


@dataclass
class Shaped:
    """`weights` (N, T) or None without EGSW; `keep` (N, T) bool or None without clipping; logged `metrics`."""

    weights: torch.Tensor | None
    keep: torch.Tensor | None
    metrics: dict[str, float]


# The metric each `AdaptiveEGSWController` target reads.
CONTROLLER_METRICS = {"entropy": "egsw/entropy_mean", "ess": "egsw/ess"}


def shape_advantages(
    advantages: torch.Tensor, mask: torch.Tensor, stats: dict[str, torch.Tensor], settings: ShapingSettings
) -> Shaped:
    """Weights and keep-mask of a whole generation batch: `advantages` (N,), `mask` (N, T), `stats` (N, T) each."""
    metrics: dict[str, float] = {}
    keep = None
    if settings.entropy_clip != "none":
        clip = get_clip_fn(settings.entropy_clip)
        keep = clip(stats, advantages, mask, mu=settings.clip_mu, max_frac=settings.clip_max_frac)
        metrics["entropy_dynamics/clip_frac"] = clip_fraction(keep, mask)
        metrics["entropy_dynamics/clip_count"] = float(((mask != 0) & ~keep).sum())
    weights = None
    if settings.use_egsw:
        entropies = stats["entropy"]
        if settings.entropy_normalization == "log_vocab":
            entropies = normalize_entropy(entropies, settings.vocab_size)
        weights = compute_egsw_weights(
            advantages,
            entropies,
            mask,
            settings.num_generations,
            alpha=settings.alpha,
            temperature=settings.temperature,
            granularity=settings.granularity,
            weight_scale=settings.weight_scale,
        )
        weight_stats = egsw_weight_stats(weights, mask, settings.num_generations)
        metrics.update({f"egsw/{key}": value for key, value in weight_stats.items()})
        metrics["egsw/entropy_mean"] = masked_mean(entropies, mask).item()
        metrics["egsw/alpha"] = settings.alpha
        metrics["egsw/temperature"] = settings.temperature
    if "S" in stats:
        metrics["entropy_dynamics/S_mean"] = masked_mean(stats["S"], mask).item()
    if "S_baseline" in stats:
        metrics["entropy_dynamics/S_minus_baseline_mean"] = masked_mean(stats["S"] - stats["S_baseline"], mask).item()
        metrics["entropy_dynamics/entropy_mean"] = masked_mean(stats["entropy"], mask).item()
    return Shaped(weights=weights, keep=keep, metrics=metrics)


def loss_token_scale(loss_type: str, mask: torch.Tensor, max_completion_length: int) -> torch.Tensor | float:
    """d(loss)/d(per-token surrogate) of TRL's loss types over one optimizer step of N completions (mask (N, T)).

    grpo: 1 / (|o_i| N), shape (N, 1); bnpo and dapo: 1 / (valid tokens of the batch); dr_grpo:
    1 / (N * max_completion_length).
    """
    n = mask.size(0)
    if loss_type == "grpo":
        return 1.0 / (mask.sum(dim=1, keepdim=True).clamp(min=1) * n)
    if loss_type == "dr_grpo":
        return 1.0 / (n * max_completion_length)
    return 1.0 / mask.sum().clamp(min=1).item()


def predicted_step_entropy_change(
    advantages: torch.Tensor,
    mask: torch.Tensor,
    stats: dict[str, torch.Tensor],
    shaped: Shaped,
    lr: float,
    loss_type: str,
    max_completion_length: int,
) -> float:
    """Mean over `mask` of the predicted dH of one step on the shaped batch (the logged `predicted_dH`).

    The advantages are A_i * w_{i,t}, the tokens those `shaped.keep` keeps, the token scale the loss type's over them.
    """
    kept = mask if shaped.keep is None else mask * shaped.keep
    effective = advantages if shaped.weights is None else advantages.unsqueeze(1) * shaped.weights
    scale = loss_token_scale(loss_type, kept, max_completion_length)
    change = predicted_entropy_change(stats["S"], stats["S_baseline"], effective, kept, lr=lr, token_scale=scale)
    return masked_mean(change, mask).item()


def pack_rows(per_row: torch.Tensor, per_token: list[torch.Tensor]) -> torch.Tensor:
    """(B,) and K tensors (B, T) as one float64 (B, 1 + K, max(T, 1)) tensor: one collective moves them all.

    float64 holds 0/1 masks, integers below 2**53 and every float32 exactly, so `unpack_rows` restores the values bit
    for bit. `per_row` is broadcast over the last dimension (read back from position 0).
    """
    rows, width = per_row.size(0), max((t.size(1) for t in per_token), default=1)
    packed = torch.zeros(rows, 1 + len(per_token), max(width, 1), dtype=torch.float64, device=per_row.device)
    packed[:, 0] = per_row.to(torch.float64).unsqueeze(1)
    for channel, tensor in enumerate(per_token, start=1):
        packed[:, channel, : tensor.size(1)] = tensor.to(torch.float64)
    return packed


def unpack_rows(packed: torch.Tensor, per_row_dtype: torch.dtype, per_token_dtypes: list[torch.dtype]):
    """The inverse of `pack_rows` (after gathering): (N,) and K tensors (N, T), in their original dtypes."""
    per_row = packed[:, 0, 0].to(per_row_dtype)
    return per_row, [packed[:, channel].to(dtype) for channel, dtype in enumerate(per_token_dtypes, start=1)]
