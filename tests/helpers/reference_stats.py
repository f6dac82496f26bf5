"""Test-only entropy helpers: a second, independent entropy implementation and a (S, E_p[S]) wrapper."""

import math

import torch

from open_r1_egsw.methods.dynamics import token_statistics


@torch.no_grad()
def token_entropy(logits: torch.Tensor, temperature: float = 1.0, chunk_size: int = 1024) -> torch.Tensor:
    """Entropy in nats of softmax(logits / temperature) over the last dimension: `(..., V)` -> `(...)`, float32 at
    least, `chunk_size` rows at a time (log_softmax, independently of `next_token_moments`)."""
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite positive number, got {temperature!r}")
    flat = logits.detach().reshape(-1, logits.shape[-1])
    out = torch.empty(flat.shape[0], dtype=torch.promote_types(logits.dtype, torch.float32), device=logits.device)
    for start in range(0, flat.shape[0], chunk_size):
        logp = torch.log_softmax(flat[start : start + chunk_size].to(out.dtype) / temperature, dim=-1)
        out[start : start + chunk_size] = -torch.where(logp > -math.inf, logp.exp() * logp, 0.0).sum(-1)
    return out.reshape(logits.shape[:-1])


def entropy_discriminator(
    logits: torch.Tensor, token_ids: torch.Tensor, *, temperature: float = 1.0, chunk_size: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(S, S_baseline)` of the sampled tokens, from `token_statistics`."""
    stats = token_statistics(logits, token_ids, temperature=temperature, chunk_size=chunk_size)
    return stats["S"], stats["S_baseline"]
