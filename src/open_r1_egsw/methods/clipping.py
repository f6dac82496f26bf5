"""Entropy-discriminator clipping (arXiv 2602.03392): keep-masks that drop negative-advantage tokens.

Clip_B and Clip_V as docs/METHOD.md section 2 defines them, registered by name in `CLIP_REGISTRY` (the recipe's
`entropy_clip`). A registered rule is called as `rule(stats, advantages, mask, mu=..., max_frac=...)` and returns an
(N, T) bool mask, True = keep; `rule.needs` names the token statistics it reads, `rule.default_mu` the paper's mu.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from open_r1_egsw.methods.dynamics import broadcast_advantages, masked_mean

ClipRule = Callable[..., Tensor]

CLIP_REGISTRY: dict[str, ClipRule] = {}


def register_clip(name: str, needs: tuple[str, ...], default_mu: float) -> Callable[[ClipRule], ClipRule]:
    """Register a clipping rule under `name` (once), reading the token statistics `needs`, with the paper's mu."""

    def decorator(fn: ClipRule) -> ClipRule:
        if name in CLIP_REGISTRY:
            raise ValueError(f"Entropy clip {name!r} is already registered.")
        fn.needs = needs
        fn.default_mu = default_mu
        CLIP_REGISTRY[name] = fn
        return fn

    return decorator


def get_clip_fn(name: str) -> ClipRule:
    """Look up a clipping rule by name; the error lists the registered names."""
    if name not in CLIP_REGISTRY:
        raise ValueError(f"Unknown entropy clip {name!r}. Known: {', '.join(sorted(CLIP_REGISTRY))}.")
    return CLIP_REGISTRY[name]


def _check_mu(mu: float) -> None:
    if not (isinstance(mu, (int, float)) and not math.isnan(mu) and mu >= 0):
        raise ValueError(f"mu must be a number >= 0 (math.inf allowed), got {mu!r}")


def _masked_std_mean(x: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """Population std (divide by n) and mean of `x` over `valid`, in float64."""
    x64 = x.double()
    mean = masked_mean(x64, valid)
    return masked_mean((x64 - mean) ** 2, valid).sqrt(), mean


def clip_b_mask(S: Tensor, advantages: Tensor, mask: Tensor, mu: float = 2.5) -> Tensor:
    """Clip_B: drop the valid tokens with A < 0 and S - mean(S) < -mu * std(S), both over the valid tokens.

    S and mask (N, T), advantages (N,) or (N, T). std 0 or mu = inf drops nothing; no valid token: all False.
    """
    _check_mu(mu)
    adv = broadcast_advantages(S, advantages, mask)
    valid = mask != 0
    if not bool(valid.any()):
        return torch.zeros_like(valid)
    if math.isinf(mu):
        return valid.clone()
    s, m = _masked_std_mean(S, valid)
    if s == 0:
        return valid.clone()
    drop = valid & (adv < 0) & (S.double() - m < -mu * s)
    return valid & ~drop


def clip_v_mask(
    S: Tensor, S_baseline: Tensor, advantages: Tensor, mask: Tensor, mu: float = 8.5, max_frac: float = 1e-4
) -> Tensor:
    """Clip_V: with D = S_baseline - S, drop valid tokens with A < 0 and D > mu * std(D), at most
    max(floor(max_frac * n_valid), 1) of them, largest D - mu * std(D) first, ties to the lower flat index.

    std 0 or mu = inf drops nothing; padding is False and never counted.
    """
    _check_mu(mu)
    if not (isinstance(max_frac, (int, float)) and 0 <= max_frac <= 1):
        raise ValueError(f"max_frac must be a number in [0, 1], got {max_frac!r}")
    adv = broadcast_advantages(S, advantages, mask, S_baseline)
    valid = mask != 0
    n_valid = int(valid.sum())
    # + 1e-9: 0.29 * 100 = 28.999999999999996 floors to 29
    max_drop = max(math.floor(max_frac * n_valid + 1e-9), 1)
    if n_valid == 0 or math.isinf(mu):
        return valid.clone()
    D = S_baseline.double() - S.double()
    s = _masked_std_mean(D, valid)[0]
    if s == 0:
        return valid.clone()
    violation = D - mu * s
    candidate = valid & (adv < 0) & (violation > 0)
    n_candidates = int(candidate.sum())
    if n_candidates == 0:
        return valid.clone()
    flat_violation = torch.where(candidate, violation, -math.inf).reshape(-1)
    order = torch.sort(flat_violation, descending=True, stable=True).indices  # stable: ties keep index order
    drop = torch.zeros(valid.numel(), dtype=torch.bool, device=valid.device)
    drop[order[: min(max_drop, n_candidates)]] = True
    return valid & ~drop.reshape(valid.shape)


@register_clip("clip_b", needs=("entropy", "logp", "S"), default_mu=2.5)
def _clip_b(stats: dict[str, Tensor], advantages: Tensor, mask: Tensor, mu: float, max_frac: float) -> Tensor:
    return clip_b_mask(stats["S"], advantages, mask, mu=mu)


@register_clip("clip_v", needs=("entropy", "logp", "S", "S_baseline"), default_mu=8.5)
def _clip_v(stats: dict[str, Tensor], advantages: Tensor, mask: Tensor, mu: float, max_frac: float) -> Tensor:
    return clip_v_mask(stats["S"], stats["S_baseline"], advantages, mask, mu=mu, max_frac=max_frac)


def clip_fraction(keep: Tensor, mask: Tensor) -> float:
    """Fraction of the valid tokens (`mask != 0`) that `keep` drops; 0.0 without a valid token."""
    if tuple(keep.shape) != tuple(mask.shape):
        raise ValueError(f"keep shape {tuple(keep.shape)} must equal mask shape {tuple(mask.shape)}")
    return float(masked_mean((~keep.bool()).double(), mask != 0))
