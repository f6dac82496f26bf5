"""Entropy dynamics of policy-gradient steps and entropy-discriminator clipping.

Implements arXiv 2602.03392 as fixed by ``docs/METHOD.md`` section 2 (the contract), plus an adaptive
controller for the EGSW hyper-parameters (arXiv 2503.22456, METHOD.md section 1), which goes beyond both papers.

Pure tensor functions: this module imports only ``torch`` and the standard library (no trl, transformers,
accelerate or trainer), so every function can be unit-tested on CPU with hand-made tensors.

Notation (METHOD.md): for one position with next-token distribution ``p`` over the vocabulary ``V`` (logits ``z``,
``p = softmax(z)``), sampled token ``k`` and entropy ``H = -sum_v p_v log p_v`` (nats):

    S_k    = p_k * (H + log p_k)                                  the entropy discriminator
    E[S]   = sum_v p_v S_v = H * sum_v p_v^2 + sum_v p_v^2 log p_v the baseline (expectation over v ~ p)
    dH     ~ -eta * r * A * (S_k - E[S])                          first-order entropy change of a GRPO step

Departures from / additions to the paper, numbered:

1. Statistics are computed in float32 at least; a float64 input stays float64 (used by the finite-difference
   tests). ``token_statistics`` processes ``chunk_size`` rows at a time, so at most one chunk's fp32 softmax exists.
2. Clip_B and Clip_V use the *population* standard deviation (``correction=0``) over the valid tokens of the batch,
   and a zero standard deviation (all values equal: nothing is an outlier) drops nothing.
3. Clip_V drops at most ``max(floor(max_frac * n_valid), 1)`` tokens, the most violating first, ties broken by flat
   index (the authors' cap: at least one token whenever a candidate exists).
4. Only negative-advantage tokens are ever clipped (METHOD.md section 3, as in the authors' released code).
5. ``AdaptiveEGSWController`` (not in either paper) retunes EGSW's alpha or temperature P toward a target entropy or
   effective sample size (the EGSW paper names alpha/P sensitivity as its main weakness).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "AdaptiveEGSWController",
    "baseline_from_moments",
    "clip_b_mask",
    "clip_fraction",
    "clip_v_mask",
    "discriminator_from_logps",
    "entropy_discriminator",
    "masked_mean",
    "next_token_moments",
    "predicted_entropy_change",
    "sum_p2logp_from_half_temperature",
    "token_statistics",
]


# ----------------------------------------------------------------------------------------------------------------------
# Per-token statistics
# ----------------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def token_statistics(
    logits: Tensor, token_ids: Tensor, temperature: float = 1.0, chunk_size: int = 1024
) -> dict[str, Tensor]:
    """Log-probability, entropy, discriminator and its baseline of the sampled tokens (arXiv 2602.03392, Sec. 3).

    With ``z = logits / temperature`` (the policy the trainer scores, as TRL divides by the sampling temperature),
    ``p = softmax(z)`` and ``k = token_ids``, per position:

        logp       = log p_k
        entropy    = H = -sum_v p_v log p_v                       (nats, not normalised by log|V|)
        S          = p_k * (H + log p_k)                          (entropy discriminator; sign = sign(p_k - e^-H))
        S_baseline = E_{v~p}[S_v] = sum_v p_v * p_v (H + log p_v)
                   = H * sum_v p_v^2 + sum_v p_v^2 log p_v

    Memory: leading dimensions are flattened to ``R`` rows and ``chunk_size`` rows are processed at a time, so the
    float32 softmax of at most one ``(chunk_size, V)`` chunk (plus a few temporaries of that size) exists at once,
    never a full ``(B, T, V)`` fp32 copy. Computation is in float32 (float64 if the logits are float64). Runs under
    ``torch.no_grad``: these statistics are constants for the loss. Vocabulary entries with ``-inf`` logits
    (``p_v = 0``) contribute ``0 * log 0 = 0``.

    Args:
        logits: ``(..., V)`` next-token logits, any float dtype.
        token_ids: ``(...)`` integer ids of the sampled tokens, same leading shape as ``logits``.
        temperature: positive; logits are divided by it first.
        chunk_size: number of rows per chunk (>= 1).

    Returns:
        dict with ``logp``, ``entropy``, ``S``, ``S_baseline``, each of shape ``(...)`` (the leading shape) and dtype
        float32 (float64 for float64 logits).
    """
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite positive number, got {temperature!r}")
    if not (isinstance(chunk_size, int) and chunk_size >= 1):
        raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
    if logits.dim() < 1:
        raise ValueError("logits must have a vocabulary dimension (shape (..., V))")
    if tuple(token_ids.shape) != tuple(logits.shape[:-1]):
        raise ValueError(
            f"token_ids shape {tuple(token_ids.shape)} must equal the leading shape of logits "
            f"{tuple(logits.shape[:-1])}"
        )

    moments = next_token_moments(logits, temperature=temperature, chunk_size=chunk_size)
    z_k = logits.detach().gather(-1, token_ids.unsqueeze(-1).long()).squeeze(-1).to(moments["entropy"].dtype)
    logp = z_k / temperature - moments["log_z"]  # log p_k = z_k / T - logsumexp(z / T)
    return {
        "logp": logp,
        "entropy": moments["entropy"],
        "S": discriminator_from_logps(logp, moments["entropy"]),  # p_k (H + log p_k)
        "S_baseline": baseline_from_moments(moments["entropy"], moments["sum_p2"], moments["sum_p2logp"]),
    }


@torch.no_grad()
def next_token_moments(
    logits: Tensor, temperature: float = 1.0, chunk_size: int = 1024, with_baseline: bool = True
) -> dict[str, Tensor]:
    """The token-independent reductions of ``p = softmax(logits / temperature)`` over the last dimension.

        log_z      = logsumexp(logits / T)     (so log p_k = logits_k / T - log_z for any token k)
        entropy    = H = -sum_v p_v log p_v    (nats)
        sum_p2     = sum_v p_v^2
        sum_p2logp = sum_v p_v^2 log p_v       (with H and sum_p2 it gives E_p[S], :func:`baseline_from_moments`)

    Used on whole logits tensors (:func:`token_statistics`) and on one decoding step's ``(B, V)`` logits while
    generating, before the sampled token is known. ``chunk_size`` rows at a time: at most one ``(chunk_size, V)``
    fp32 softmax exists at once. float32 at least (float64 stays float64). ``with_baseline=False`` skips
    ``sum_p2`` and ``sum_p2logp`` (absent from the result).

    Args:
        logits: ``(..., V)``.

    Returns:
        dict of ``(...)`` tensors ``log_z``, ``entropy``, ``sum_p2``, ``sum_p2logp``.
    """
    vocab = logits.shape[-1]
    dtype = torch.promote_types(logits.dtype, torch.float32)  # fp32 at least; fp64 stays fp64
    flat = logits.detach().reshape(-1, vocab)  # (R, V), a view when possible: no copy
    names = _MOMENTS if with_baseline else _MOMENTS[:2]
    out = {name: torch.empty(flat.shape[0], dtype=dtype, device=logits.device) for name in names}
    for start in range(0, flat.shape[0], chunk_size):
        rows = slice(start, start + chunk_size)
        z = flat[rows].to(dtype) / temperature  # (C, V), the only fp32 copy of this chunk
        log_z = torch.logsumexp(z, dim=-1, keepdim=True)  # (C, 1)
        logp_all = z.sub_(log_z)  # (C, V) log p, in place
        p = logp_all.exp()  # (C, V)
        plogp = torch.where(p > 0, p * logp_all, 0.0)  # (C, V), 0 log 0 = 0
        out["log_z"][rows] = log_z.squeeze(-1)
        out["entropy"][rows] = -plogp.sum(-1)  # H in nats
        if with_baseline:
            out["sum_p2"][rows] = (p * p).sum(-1)
            out["sum_p2logp"][rows] = (p * plogp).sum(-1)
        del z, logp_all, p, plogp
    return {name: value.reshape(logits.shape[:-1]) for name, value in out.items()}


_MOMENTS = ("log_z", "entropy", "sum_p2", "sum_p2logp")


def baseline_from_moments(entropy: Tensor, sum_p2: Tensor, sum_p2logp: Tensor) -> Tensor:
    """``E_{v~p}[S_v] = sum_v p_v * p_v (H + log p_v) = H * sum_v p_v^2 + sum_v p_v^2 log p_v`` (all ``(...)``)."""
    return entropy * sum_p2 + sum_p2logp


def sum_p2logp_from_half_temperature(log_sum_p2: Tensor, entropy_half: Tensor) -> Tensor:
    """``sum_v p_v^2 log p_v`` from ``log sum_v p_v^2`` and the entropy ``H_q`` of ``q = softmax(2 z)``.

    With ``p = softmax(z)``, ``q = p^2 / sum p^2`` is the distribution at half the temperature, and
    ``H_q = -sum q (2 log p - log sum p^2) = log sum p^2 - 2 E_q[log p]``, so

        sum_v p_v^2 log p_v = sum p^2 * E_q[log p] = sum p^2 * (log sum p^2 - H_q) / 2.

    This is how E_p[S] comes out of an LM head that returns only entropies and ``log sum p^2`` (TRL's fused head):
    one more pass of that head at temperature T / 2. All arguments and the result are ``(...)``.
    """
    return log_sum_p2.exp() * (log_sum_p2 - entropy_half) / 2


def entropy_discriminator(
    logits: Tensor, token_ids: Tensor, *, temperature: float = 1.0, chunk_size: int = 1024
) -> tuple[Tensor, Tensor]:
    """``(S, S_baseline)`` of the sampled tokens: ``S_k = p_k (H + log p_k)`` and ``E_{v~p}[S_v]``.

    arXiv 2602.03392, Sec. 3 (METHOD.md section 2). A thin wrapper over :func:`token_statistics`; see there for the
    formulas, ``temperature`` and the memory bound.

    Args:
        logits: ``(..., V)``.
        token_ids: ``(...)``.

    Returns:
        ``S`` ``(...)`` and ``S_baseline`` ``(...)``.
    """
    stats = token_statistics(logits, token_ids, temperature=temperature, chunk_size=chunk_size)
    return stats["S"], stats["S_baseline"]


def discriminator_from_logps(logp: Tensor, entropy: Tensor) -> Tensor:
    """Entropy discriminator from already computed ``log p_k`` and ``H``: ``S_k = exp(log p_k) * (H + log p_k)``.

    arXiv 2602.03392, Sec. 3. ``entropy`` must be the raw entropy in nats (the same distribution as ``logp``), not
    the normalised ``H / log|V|`` used by EGSW recipes. The baseline ``E_{v~p}[S_v]`` needs the full distribution and
    cannot be computed from these two tensors: use :func:`token_statistics` for it.

    Args:
        logp: ``(...)`` log-probability of the sampled token.
        entropy: ``(...)`` entropy of the distribution it was sampled from (nats).

    Returns:
        ``(...)`` ``S``.
    """
    return logp.exp() * (entropy + logp)


# ----------------------------------------------------------------------------------------------------------------------
# Masks
# ----------------------------------------------------------------------------------------------------------------------


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``x`` over positions where ``mask != 0``; a 0-dim tensor, ``0`` when the mask is empty.

    Values of ``x`` at masked-out positions never enter the result (not even a NaN there).

    Args:
        x: ``(...)``.
        mask: ``(...)`` bool or 0/1, same shape as ``x``.
    """
    valid = mask != 0
    total = torch.where(valid, x, torch.zeros((), dtype=x.dtype, device=x.device)).sum()
    count = valid.sum()
    if count == 0:
        return torch.zeros((), dtype=x.dtype, device=x.device)
    return total / count


def _check_shapes(S: Tensor, advantages: Tensor, mask: Tensor, *others: Tensor) -> Tensor:
    """Validate shapes and return the advantages broadcast to ``S.shape``."""
    if S.dim() < 1:
        raise ValueError("S must have at least one dimension, shape (N, T)")
    if tuple(mask.shape) != tuple(S.shape):
        raise ValueError(f"mask shape {tuple(mask.shape)} must equal S shape {tuple(S.shape)}")
    for other in others:
        if tuple(other.shape) != tuple(S.shape):
            raise ValueError(f"S_baseline shape {tuple(other.shape)} must equal S shape {tuple(S.shape)}")
    if tuple(advantages.shape) == tuple(S.shape):
        return advantages
    if advantages.dim() == 1 and advantages.shape[0] == S.shape[0]:
        return advantages.reshape(-1, *([1] * (S.dim() - 1))).expand_as(S)  # (N,) -> (N, T)
    raise ValueError(
        f"advantages shape {tuple(advantages.shape)} must be (N,) = ({S.shape[0]},) or equal S shape {tuple(S.shape)}"
    )


def _check_mu(mu: float) -> None:
    if not (isinstance(mu, (int, float)) and not math.isnan(mu) and mu >= 0):
        raise ValueError(f"mu must be a number >= 0 (math.inf allowed), got {mu!r}")


def _masked_std_mean(x: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """Population std (``correction=0``) and mean of ``x`` over ``valid``, in float64."""
    x64 = x.double()
    mean = masked_mean(x64, valid)
    var = masked_mean((x64 - mean) ** 2, valid)  # divides by n, not n - 1
    return var.sqrt(), mean


def clip_b_mask(S: Tensor, advantages: Tensor, mask: Tensor, mu: float = 2.5) -> Tensor:
    """Clip_B (batch-normalised entropy-discriminator clipping), arXiv 2602.03392; METHOD.md section 2.

    Over the valid tokens of the batch (``mask != 0``), ``m = mean(S)`` and ``s = std(S)``. Keep

        A >= 0                         (never clipped)
        A <  0  and  S - m >= -mu * s  (a negative-advantage token is dropped if S is an outlier below the mean)

    Why: for ``A < 0`` the first-order entropy change is ``dH ~ -eta r A (S - E[S])``; a token with very small S
    (low-probability token) being penalised lowers entropy most, so it is removed from the gradient.

    Std convention: the *population* standard deviation (``correction=0``, divide by ``n``) over the valid tokens;
    the paper does not say, and for the thousands of tokens in a batch the two coincide. If ``s == 0`` (all S equal)
    nothing is dropped; ``mu = inf`` drops nothing. Padding (``mask == 0``) is ``False`` in the output and never enters
    ``m`` or ``s``. No valid token: all ``False``.

    Args:
        S: ``(N, T)`` discriminator.
        advantages: ``(N,)`` (one per sequence, broadcast over T) or ``(N, T)``.
        mask: ``(N, T)`` bool or 0/1, valid completion tokens.
        mu: threshold in standard deviations, ``>= 0`` (default 2.5, the paper's).

    Returns:
        ``(N, T)`` bool, ``True`` = keep the token in the loss.
    """
    _check_mu(mu)
    adv = _check_shapes(S, advantages, mask)  # (N, T)
    valid = mask != 0  # (N, T)
    if not bool(valid.any()):
        return torch.zeros_like(valid)
    if math.isinf(mu):
        return valid.clone()
    s, m = _masked_std_mean(S, valid)  # scalars, float64
    if s == 0:
        return valid.clone()
    drop = valid & (adv < 0) & (S.double() - m < -mu * s)  # (N, T)
    return valid & ~drop


def clip_v_mask(
    S: Tensor,
    S_baseline: Tensor,
    advantages: Tensor,
    mask: Tensor,
    mu: float = 8.5,
    max_frac: float = 1e-4,
) -> Tensor:
    """Clip_V (vocabulary-normalised entropy-discriminator clipping), arXiv 2602.03392; METHOD.md section 2.

    Per token ``D = E_{v~p}[S_v] - S_k`` (``S_baseline - S``; ``D > 0`` means a low-probability token), and
    ``s = std(D)`` over the valid tokens (population std, ``correction=0``; ``D`` is compared with ``mu * s`` as
    written in METHOD.md, not re-centred on its batch mean). Candidates to drop are the valid tokens with

        A < 0  and  D > mu * s

    and at most ``max(floor(max_frac * n_valid), 1)`` of them are dropped, the most violating first (largest
    ``D - mu * s``; equal violations broken by the smaller flat index first, so the result is deterministic). As in the
    authors' released code, the cap never falls below one token: a batch with any candidate drops at least its most
    violating one, whatever its size (``max_frac = 0`` included). ``mu = inf`` or ``s == 0`` drop nothing. Padding is
    ``False`` in the output and never enters ``s`` or ``n_valid``.

    Args:
        S: ``(N, T)`` discriminator.
        S_baseline: ``(N, T)`` its expectation ``E_{v~p}[S_v]``.
        advantages: ``(N,)`` or ``(N, T)``.
        mask: ``(N, T)`` bool or 0/1.
        mu: threshold in standard deviations of D, ``>= 0`` (default 8.5, the paper's).
        max_frac: cap on the dropped fraction of valid tokens, in ``[0, 1]`` (default 1e-4, the paper's).

    Returns:
        ``(N, T)`` bool, ``True`` = keep.
    """
    _check_mu(mu)
    if not (isinstance(max_frac, (int, float)) and 0 <= max_frac <= 1):
        raise ValueError(f"max_frac must be a number in [0, 1], got {max_frac!r}")
    adv = _check_shapes(S, advantages, mask, S_baseline)  # (N, T)
    valid = mask != 0  # (N, T)
    n_valid = int(valid.sum())
    # + 1e-9 so that e.g. 0.29 * 100 = 28.999999999999996 floors to 29, not 28; never below one token (authors)
    max_drop = max(math.floor(max_frac * n_valid + 1e-9), 1)
    if n_valid == 0 or math.isinf(mu):
        return valid.clone()
    D = S_baseline.double() - S.double()  # (N, T)
    s = _masked_std_mean(D, valid)[0]  # scalar, float64
    if s == 0:
        return valid.clone()
    violation = D - mu * s  # (N, T), > 0 for candidates
    candidate = valid & (adv < 0) & (violation > 0)  # (N, T)
    n_candidates = int(candidate.sum())
    if n_candidates == 0:
        return valid.clone()
    flat_violation = torch.where(candidate, violation, -math.inf).reshape(-1)  # (N*T,)
    # stable descending sort: equal violations keep ascending flat-index order
    order = torch.sort(flat_violation, descending=True, stable=True).indices
    drop_idx = order[: min(max_drop, n_candidates)]  # all candidates, since they sort before the -inf
    drop = torch.zeros(valid.numel(), dtype=torch.bool, device=valid.device)
    drop[drop_idx] = True
    return valid & ~drop.reshape(valid.shape)


def clip_fraction(keep: Tensor, mask: Tensor) -> float:
    """Fraction of the valid tokens (``mask != 0``) that ``keep`` drops; ``0.0`` when there is no valid token.

    Args:
        keep: ``(N, T)`` bool from :func:`clip_b_mask` / :func:`clip_v_mask`.
        mask: ``(N, T)`` bool or 0/1.
    """
    if tuple(keep.shape) != tuple(mask.shape):
        raise ValueError(f"keep shape {tuple(keep.shape)} must equal mask shape {tuple(mask.shape)}")
    valid = mask != 0
    return float(masked_mean((~keep.bool()).double(), valid))


# ----------------------------------------------------------------------------------------------------------------------
# First-order entropy change
# ----------------------------------------------------------------------------------------------------------------------


def predicted_entropy_change(
    S: Tensor,
    S_baseline: Tensor,
    advantages: Tensor,
    mask: Tensor,
    lr: float,
    ratio: float | Tensor = 1.0,
    token_scale: float | Tensor = 1.0,
) -> Tensor:
    """Per-token first-order entropy change of one SGD policy-gradient step on the logits (arXiv 2602.03392).

        dH_{i,t} = -lr * r_{i,t} * A_{i,t} * c_{i,t} * (S_k - E_{v~p}[S_v])     (METHOD.md section 2)

    Derivation, for one position with logits z, p = softmax(z), H = -sum_j p_j log p_j:

    * ``dp_i/dz_j = p_i (delta_ij - p_j)``, so ``dH/dz_j = -sum_i (log p_i + 1) p_i (delta_ij - p_j)
      = -p_j (log p_j + 1) + p_j sum_i p_i (log p_i + 1) = -p_j (log p_j + H)``; for ``j = k`` this is ``-S_k``,
      hence a logit step ``eps`` on token k gives ``dH = -eps S_k + O(eps^2)``.
    * ``d log p_k / dz = e_k - p``.
    * The loss term ``-c * r * A`` with ``r = exp(log p_k - log p_k.detach())`` has gradient ``-c r A (e_k - p)``
      with respect to z, so an SGD step moves ``dz = lr c r A (e_k - p)`` and
      ``dH = grad_z H . dz = lr c r A (-S_k + sum_j p_j S_j) = -lr c r A (S_k - E[S])``.

    This is exact to first order when the logits themselves are the parameters (tabular policy); for a network it is
    the paper's approximation that each position's logits move independently. It assumes plain SGD (not Adam) and an
    unclipped surrogate (for a PPO-clipped token the gradient, hence dH, is zero: pass ``ratio=0`` there).

    Args:
        S: ``(N, T)`` discriminator.
        S_baseline: ``(N, T)`` baseline ``E_{v~p}[S_v]``.
        advantages: ``(N,)`` or ``(N, T)``.
        mask: ``(N, T)`` bool or 0/1; the result is 0 at padding.
        lr: learning rate eta of the SGD step.
        ratio: importance ratio r, float or broadcastable to ``(N, T)``.
        token_scale: per-token coefficient c of the loss, broadcastable to ``(N, T)``: ``1/|o_i|`` for TRL's
            ``"grpo"`` loss, ``1/num_tokens`` for ``"dapo"``, or EGSW weights times that.

    Returns:
        ``(N, T)`` predicted entropy change (nats) per token; ``.sum()`` is the step's total for a tabular policy.
    """
    adv = _check_shapes(S, advantages, mask, S_baseline)  # (N, T)
    valid = mask != 0  # (N, T)
    dH = -lr * ratio * adv * token_scale * (S - S_baseline)  # (N, T)
    return torch.where(valid, dH, torch.zeros((), dtype=dH.dtype, device=dH.device))


# ----------------------------------------------------------------------------------------------------------------------
# Adaptive controller for EGSW's alpha / temperature (beyond the papers)
# ----------------------------------------------------------------------------------------------------------------------

_TARGETS = ("entropy", "ess")
_PARAMS = ("alpha", "temperature")
# sign of d(measured)/d(log value): +1 if raising the parameter raises the measured quantity
_SIGNS: dict[tuple[str, str], int] = {
    ("entropy", "alpha"): +1,  # more weight on high-entropy tokens -> more exploration -> entropy up
    ("entropy", "temperature"): -1,  # flatter weights dilute the alpha * H / P bonus -> entropy down
    ("ess", "alpha"): -1,  # a larger spread of A + alpha H -> more uneven weights -> ESS down
    ("ess", "temperature"): +1,  # flatter weights -> ESS up
}


@dataclass
class AdaptiveEGSWController:
    """Proportional, log-space controller that retunes EGSW's alpha or temperature P toward a target.

    Not in either paper: EGSW (arXiv 2503.22456) reports sensitivity to alpha and P as its main weakness; this keeps
    a measured quantity (mean token entropy, or the effective sample size of the weights) near ``target_value`` by
    moving one parameter after each step. One update:

        value <- clamp(value * exp(sign * lr * (target_value - measured) / max(|target_value|, eps)),
                       min_value, max_value)

    with ``sign`` the direction in which raising the parameter moves the measured quantity:

        target     param         sign  measured below target  reason
        "entropy"  "alpha"       +1    raise alpha            more weight on high-entropy tokens
        "entropy"  "temperature" -1    lower P                sharper weights, stronger alpha * H / P bonus
        "ess"      "alpha"       -1    lower alpha            smaller spread of A + alpha H, more even weights
        "ess"      "temperature" +1    raise P                flatter weights

    (measured above target: the opposite move). The step is multiplicative, so ``value``, ``min_value`` and
    ``max_value`` must be positive (alpha = 0 could never move). The error is relative to ``|target_value|``
    (``eps`` guards a zero target), so ``lr`` is unitless whichever quantity is controlled.

    Attributes:
        target: ``"entropy"`` or ``"ess"``.
        target_value: finite, the set point (same units as ``measured``).
        param: ``"alpha"`` or ``"temperature"``.
        value: current alpha or temperature, in ``[min_value, max_value]``.
        lr: step size of the log-space update, finite and ``>= 0`` (0 freezes the value).
        min_value: lower clamp, ``> 0``.
        max_value: upper clamp, ``>= min_value``.
        num_updates: number of ``update`` calls so far.
    """

    target: str
    target_value: float
    param: str
    value: float
    lr: float = 0.1
    min_value: float = 1e-3
    max_value: float = 10.0
    num_updates: int = 0

    eps = 1e-8  # class constant, not a field

    def __post_init__(self) -> None:
        if self.target not in _TARGETS:
            raise ValueError(f"target must be one of {_TARGETS}, got {self.target!r}")
        if self.param not in _PARAMS:
            raise ValueError(f"param must be one of {_PARAMS}, got {self.param!r}")
        for name in ("target_value", "value", "lr", "min_value", "max_value"):
            raw = getattr(self, name)
            if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
                raise ValueError(f"{name} must be a finite number, got {raw!r}")
            setattr(self, name, float(raw))
        if self.lr < 0:
            raise ValueError(f"lr must be >= 0, got {self.lr!r}")
        if self.min_value <= 0:
            raise ValueError(f"min_value must be > 0 (the update is multiplicative), got {self.min_value!r}")
        if self.max_value < self.min_value:
            raise ValueError(f"max_value must be >= min_value ({self.min_value!r}), got {self.max_value!r}")
        if not self.min_value <= self.value <= self.max_value:
            raise ValueError(
                f"value must lie in [min_value, max_value] = [{self.min_value!r}, {self.max_value!r}], got {self.value!r}"
            )
        if isinstance(self.num_updates, bool) or not isinstance(self.num_updates, int) or self.num_updates < 0:
            raise ValueError(f"num_updates must be an integer >= 0, got {self.num_updates!r}")

    @property
    def sign(self) -> int:
        """Direction in which raising the parameter moves the measured quantity (see the table above)."""
        return _SIGNS[(self.target, self.param)]

    def update(self, measured: float) -> float:
        """One proportional log-space step toward ``target_value``; returns the new (clamped) value.

        Raises ``ValueError`` for a non-finite ``measured`` (a NaN entropy must not silently poison the value).
        """
        measured = float(measured)
        if not math.isfinite(measured):
            raise ValueError(f"measured must be finite, got {measured!r}")
        error = (self.target_value - measured) / max(abs(self.target_value), self.eps)  # relative, unitless
        new_value = self.value * math.exp(self.sign * self.lr * error)
        self.value = float(min(max(new_value, self.min_value), self.max_value))
        self.num_updates += 1
        return self.value

    def state_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable state (str, float, int); ``load_state_dict`` restores it exactly."""
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`; validated like ``__init__`` (``ValueError`` on bad or missing keys)."""
        names = {f.name for f in fields(self)}
        missing, unknown = names - set(state), set(state) - names
        if missing or unknown:
            raise ValueError(f"state keys: missing {sorted(missing)}, unknown {sorted(unknown)}")
        restored = AdaptiveEGSWController(**{name: state[name] for name in names})
        for name in names:
            setattr(self, name, getattr(restored, name))
