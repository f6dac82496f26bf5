"""Token statistics of p = softmax(logits / T) and the first-order entropy change of a policy-gradient step.

The entropy discriminator S_k = p_k (H + log p_k), its baseline E_p[S] and dH ~ -lr r A c (S_k - E_p[S]) of
docs/METHOD.md section 2. Pure torch; float32 at least (float64 stays float64), `chunk_size` rows at a time.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_MOMENTS = ("log_z", "entropy", "sum_p2", "sum_p2logp")


@torch.no_grad()
def next_token_moments(
    logits: Tensor, temperature: float = 1.0, chunk_size: int = 1024, with_baseline: bool = True
) -> dict[str, Tensor]:
    """`log_z`, `entropy` (nats), `sum_p2` and `sum_p2logp` of softmax(logits / T) over the last dimension.

    `(..., V)` -> dict of `(...)` tensors; at most one `(chunk_size, V)` softmax exists at once; 0 log 0 = 0.
    `with_baseline=False` leaves out `sum_p2` and `sum_p2logp`.
    """
    vocab = logits.shape[-1]
    dtype = torch.promote_types(logits.dtype, torch.float32)
    flat = logits.detach().reshape(-1, vocab)  # (R, V), a view when possible
    names = _MOMENTS if with_baseline else _MOMENTS[:2]
    out = {name: torch.empty(flat.shape[0], dtype=dtype, device=logits.device) for name in names}
    for start in range(0, flat.shape[0], chunk_size):
        rows = slice(start, start + chunk_size)
        z = flat[rows].to(dtype) / temperature  # (C, V), the only fp32 copy of this chunk
        log_z = torch.logsumexp(z, dim=-1, keepdim=True)  # (C, 1)
        logp_all = z.sub_(log_z)  # (C, V) log p, in place
        p = logp_all.exp()
        plogp = torch.where(p > 0, p * logp_all, 0.0)
        out["log_z"][rows] = log_z.squeeze(-1)
        out["entropy"][rows] = -plogp.sum(-1)
        if with_baseline:
            out["sum_p2"][rows] = (p * p).sum(-1)
            out["sum_p2logp"][rows] = (p * plogp).sum(-1)
        del z, logp_all, p, plogp
    return {name: value.reshape(logits.shape[:-1]) for name, value in out.items()}


@torch.no_grad()
def token_statistics(
    logits: Tensor, token_ids: Tensor, temperature: float = 1.0, chunk_size: int = 1024
) -> dict[str, Tensor]:
    """`logp`, `entropy`, `S` and `S_baseline` of the sampled `token_ids` `(...)` under softmax(logits `(..., V)` / T).

    A whole-logits version of what the trainer's sources compute; each result has the leading shape.
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
    logp = sampled_logp(logits, token_ids, moments["log_z"], temperature)
    return {
        "logp": logp,
        "entropy": moments["entropy"],
        "S": discriminator_from_logps(logp, moments["entropy"]),
        "S_baseline": baseline_from_moments(moments["entropy"], moments["sum_p2"], moments["sum_p2logp"]),
    }


def sampled_logp(logits: Tensor, token_ids: Tensor, log_z: Tensor, temperature: float = 1.0) -> Tensor:
    """log p_k = z_k / T - log Z of the sampled `token_ids` `(...)`, from logits `(..., V)` and their `log_z` `(...)`."""
    z_k = logits.detach().gather(-1, token_ids.unsqueeze(-1).long()).squeeze(-1)
    return z_k.to(log_z.dtype) / temperature - log_z


def baseline_from_moments(entropy: Tensor, sum_p2: Tensor, sum_p2logp: Tensor) -> Tensor:
    """E_p[S] = H * sum p^2 + sum p^2 log p."""
    return entropy * sum_p2 + sum_p2logp


def sum_p2logp_from_half_temperature(log_sum_p2: Tensor, entropy_half: Tensor) -> Tensor:
    """sum p^2 log p = sum p^2 * (log sum p^2 - H_q) / 2, with H_q the entropy of q = softmax(2 z) (METHOD.md)."""
    return log_sum_p2.exp() * (log_sum_p2 - entropy_half) / 2


def discriminator_from_logps(logp: Tensor, entropy: Tensor) -> Tensor:
    """S_k = exp(log p_k) * (H + log p_k), with H in nats of the same distribution."""
    return logp.exp() * (entropy + logp)


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """0-dim mean of `x` where `mask != 0` (0 for an empty mask); masked-out values, NaN included, never enter."""
    valid = mask != 0
    total = torch.where(valid, x, torch.zeros((), dtype=x.dtype, device=x.device)).sum()
    count = valid.sum()
    if count == 0:
        return torch.zeros((), dtype=x.dtype, device=x.device)
    return total / count


def broadcast_advantages(S: Tensor, advantages: Tensor, mask: Tensor, *others: Tensor) -> Tensor:
    """Check that `mask` and `others` have the shape of `S` (N, T); `advantages` (N,) or (N, T) broadcast to it."""
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
        return advantages.reshape(-1, *([1] * (S.dim() - 1))).expand_as(S)
    raise ValueError(
        f"advantages shape {tuple(advantages.shape)} must be (N,) = ({S.shape[0]},) or equal S shape {tuple(S.shape)}"
    )


def predicted_entropy_change(
    S: Tensor,
    S_baseline: Tensor,
    advantages: Tensor,
    mask: Tensor,
    lr: float,
    ratio: float | Tensor = 1.0,
    token_scale: float | Tensor = 1.0,
) -> Tensor:
    """(N, T) dH = -lr * ratio * A * token_scale * (S - S_baseline) per token, 0 at padding (METHOD.md section 2).

    `advantages` (N,) or (N, T); `ratio` and `token_scale` (the loss's per-token coefficient) broadcast to (N, T).
    """
    adv = broadcast_advantages(S, advantages, mask, S_baseline)
    dH = -lr * ratio * adv * token_scale * (S - S_baseline)
    return torch.where(mask != 0, dH, torch.zeros((), dtype=dH.dtype, device=dH.device))
