"""Tests for open_r1_egsw.methods.dynamics: the token statistics, S, E_p[S] and the first-order entropy change
(arXiv 2602.03392, METHOD.md section 2). CPU only, a few seconds."""

import math

import pytest
import torch
from helpers.reference_stats import entropy_discriminator

from open_r1_egsw.methods.dynamics import (
    discriminator_from_logps,
    next_token_moments,
    predicted_entropy_change,
    sum_p2logp_from_half_temperature,
    token_statistics,
)


def _entropy(z: torch.Tensor) -> torch.Tensor:
    """Reference entropy -(p log p).sum(-1), written independently of the module."""
    logp = torch.log_softmax(z, dim=-1)
    return -(logp.exp() * logp).sum(-1)


# ----------------------------------------------------------------------------------------------------------------------
# Discriminator and baseline
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed,k", [(0, 0), (1, 3), (2, 7), (3, 5)])
def test_logit_step_changes_entropy_by_minus_eps_S(seed, k):
    # dH/dz_k = -p_k (log p_k + H) = -S_k, so H(z + eps e_k) - H(z) = -eps S_k + O(eps^2):
    # the error of the linear prediction falls ~100x per decade of eps.
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(10, generator=gen, dtype=torch.float64) * 2
    S = token_statistics(z, torch.tensor(k))["S"]
    errors = []
    for eps in (1e-2, 1e-3, 1e-4):
        z_step = z.clone()
        z_step[k] += eps
        errors.append(abs(float(_entropy(z_step) - _entropy(z) + eps * S)))
    assert errors[0] / errors[1] > 30, errors
    assert errors[1] / errors[2] > 30, errors


def test_baseline_equals_brute_force_expectation():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(4, 9, generator=gen, dtype=torch.float64) * 3  # (R, V)
    ids = torch.randint(0, 9, (4,), generator=gen)
    stats = token_statistics(z, ids)
    p = torch.softmax(z, -1)
    H = _entropy(z)
    for r in range(4):
        # S_v for every v, then E_{v~p}[S_v] = sum_v p_v S_v by an explicit loop over the vocabulary
        S_v = [float(p[r, v] * (H[r] + torch.log(p[r, v]))) for v in range(9)]
        expected = sum(float(p[r, v]) * S_v[v] for v in range(9))
        assert float(stats["S_baseline"][r]) == pytest.approx(expected, rel=1e-12, abs=1e-14)
        assert float(stats["S"][r]) == pytest.approx(S_v[int(ids[r])], rel=1e-12, abs=1e-14)


def test_sign_of_S_is_sign_of_p_minus_exp_minus_H():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(200, 12, generator=gen, dtype=torch.float64) * torch.rand(200, 1, generator=gen) * 5
    ids = torch.randint(0, 12, (200,), generator=gen)
    stats = token_statistics(z, ids)
    gap = stats["logp"].exp() - torch.exp(-stats["entropy"])  # p_k - e^-H
    keep = gap.abs() > 1e-9  # exclude near-ties, where the sign is rounding noise
    assert keep.sum() > 150
    assert (gap > 0).any() and (gap < 0).any()  # both signs are exercised
    assert torch.equal(torch.sign(stats["S"][keep]), torch.sign(gap[keep]))


def test_chunking_is_invisible_and_entropy_is_minus_p_log_p():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 11, generator=gen)  # (B, T, V) float32
    ids = torch.randint(0, 11, (3, 5), generator=gen)
    reference = token_statistics(logits, ids, chunk_size=10_000)  # one chunk
    for chunk_size in (1, 3, 7):
        chunked = token_statistics(logits, ids, chunk_size=chunk_size)
        for name in ("logp", "entropy", "S", "S_baseline"):
            assert chunked[name].shape == (3, 5)
            torch.testing.assert_close(chunked[name], reference[name], rtol=0, atol=1e-6)
    torch.testing.assert_close(reference["entropy"], _entropy(logits), rtol=1e-5, atol=1e-6)
    logp_ref = torch.log_softmax(logits, -1).gather(-1, ids[..., None]).squeeze(-1)
    torch.testing.assert_close(reference["logp"], logp_ref)


def test_next_token_moments_by_hand():
    # p = (1/2, 1/4, 1/4) from logits log p: log Z = 0, H = 1.5 log 2, sum p^2 = 3/8,
    # sum p^2 log p = (1/4)(-log 2) + 2 (1/16)(-2 log 2) = -log 2 / 2
    z = torch.tensor([[0.5, 0.25, 0.25]], dtype=torch.float64).log()
    moments = next_token_moments(z)
    log2 = math.log(2)
    expected = {"log_z": 0.0, "entropy": 1.5 * log2, "sum_p2": 3 / 8, "sum_p2logp": -log2 / 2}
    for key, value in expected.items():
        assert moments[key].item() == pytest.approx(value, abs=1e-12), key
    # E_p[S] = H sum p^2 + sum p^2 log p = (9/16 - 8/16) log 2 = log 2 / 16
    assert token_statistics(z, torch.tensor([0]))["S_baseline"].item() == pytest.approx(log2 / 16, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sum_p2logp_from_the_entropy_at_half_temperature(seed):
    # sum_v p_v^2 log p_v = sum p^2 (log sum p^2 - H(softmax(2 z))) / 2: what E_p[S] is built from with TRL's head
    z = torch.randn(7, 50, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 3
    direct = next_token_moments(z)
    half = next_token_moments(z, temperature=0.5)["entropy"]
    via_half = sum_p2logp_from_half_temperature(direct["sum_p2"].log(), half)
    torch.testing.assert_close(via_half, direct["sum_p2logp"], rtol=1e-12, atol=1e-12)


def test_softmax_is_computed_one_chunk_at_a_time(monkeypatch):
    # memory bound: the softmax's normaliser only ever sees (chunk_size, V) rows, never the full (B*T, V)
    seen = []
    real_logsumexp = torch.logsumexp

    def spy(z, *args, **kwargs):
        seen.append(tuple(z.shape))
        return real_logsumexp(z, *args, **kwargs)

    monkeypatch.setattr(torch, "logsumexp", spy)
    token_statistics(torch.randn(2, 5, 6), torch.zeros(2, 5, dtype=torch.long), chunk_size=4)
    assert seen == [(4, 6), (4, 6), (2, 6)]


def test_minus_inf_logits_give_finite_statistics():
    # a masked vocabulary entry (p_v = 0) contributes 0 log 0 = 0, not NaN
    z = torch.tensor([[1.0, 0.0, -math.inf, 0.5]], dtype=torch.float64)
    stats = token_statistics(z, torch.tensor([0]))
    reference = token_statistics(z[:, [0, 1, 3]], torch.tensor([0]))
    for name in stats:
        assert torch.isfinite(stats[name]).all()
        torch.testing.assert_close(stats[name], reference[name])


def test_low_precision_logits_are_upcast_and_no_grad():
    logits = torch.randn(2, 3, 6, dtype=torch.bfloat16, requires_grad=True)
    ids = torch.zeros(2, 3, dtype=torch.long)
    stats = token_statistics(logits, ids)
    assert all(v.dtype == torch.float32 and not v.requires_grad for v in stats.values())
    torch.testing.assert_close(stats["entropy"], _entropy(logits.detach().float()))


def test_temperature_divides_logits():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 8, generator=gen)
    ids = torch.randint(0, 8, (4,), generator=gen)
    hot = token_statistics(logits, ids, temperature=0.7)
    scaled = token_statistics(logits / 0.7, ids)
    plain = token_statistics(logits, ids)
    for name in hot:
        torch.testing.assert_close(hot[name], scaled[name])
    assert not torch.allclose(hot["entropy"], plain["entropy"])  # the temperature really changes something


def test_wrappers_agree_with_token_statistics():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 7, generator=gen)
    ids = torch.randint(0, 7, (2, 4), generator=gen)
    stats = token_statistics(logits, ids, temperature=1.3)
    S, S_baseline = entropy_discriminator(logits, ids, temperature=1.3)
    assert torch.equal(S, stats["S"]) and torch.equal(S_baseline, stats["S_baseline"])
    torch.testing.assert_close(discriminator_from_logps(stats["logp"], stats["entropy"]), stats["S"])


def test_token_statistics_rejects_bad_arguments():
    logits, ids = torch.randn(2, 5), torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match="token_ids"):
        token_statistics(logits, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="temperature"):
        token_statistics(logits, ids, temperature=0.0)
    with pytest.raises(ValueError, match="chunk_size"):
        token_statistics(logits, ids, chunk_size=0)


# ----------------------------------------------------------------------------------------------------------------------
# Predicted entropy change vs one real SGD step
# ----------------------------------------------------------------------------------------------------------------------

# logits of a peaked tabular policy: token 0 is the most likely, token 7 the least likely
_Z = torch.tensor([3.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -2.0], dtype=torch.float64)


@pytest.mark.parametrize(
    "k,A,expected_sign",
    [
        (0, +1.0, -1),  # reward a high-probability token (S > E[S]) -> entropy falls
        (7, -1.0, -1),  # penalise a low-probability token (S < E[S]) -> entropy falls
        (0, -1.0, +1),  # penalise a high-probability token -> entropy rises
        (7, +1.0, +1),  # reward a low-probability token -> entropy rises
    ],
)
def test_first_order_formula_predicts_one_sgd_step(k, A, expected_sign):
    lr = 1e-3
    stats = token_statistics(_Z, torch.tensor(k))
    S, S_baseline = stats["S"].reshape(1, 1), stats["S_baseline"].reshape(1, 1)  # (N=1, T=1)
    assert (float(S - S_baseline) > 0) == (k == 0)  # precondition: high-prob token has S > E[S], low-prob S < E[S]
    predicted = predicted_entropy_change(S, S_baseline, torch.tensor([A], dtype=torch.float64), torch.ones(1, 1), lr)

    z = _Z.clone().requires_grad_(True)
    logp = torch.log_softmax(z, -1)[k]
    ratio = torch.exp(logp - logp.detach())  # == 1, gradient = grad log p_k
    loss = -A * ratio
    loss.backward()
    with torch.no_grad():
        measured = float(_entropy(z - lr * z.grad) - _entropy(_Z))

    assert math.copysign(1, measured) == expected_sign
    assert math.copysign(1, float(predicted)) == expected_sign
    assert float(predicted) == pytest.approx(measured, rel=1e-2)


def test_first_order_formula_multi_token_with_ratio_padding_and_scale():
    # N=2 sequences x T=3 positions, each position an independent tabular softmax; position (1, 2) is padding.
    # Loss = -(1/n_valid) sum_valid A_i r_{i,t} with r != 1 (old log-probs shifted by +0.1): token_scale = 1/n_valid.
    gen = torch.Generator().manual_seed(0)
    z0 = torch.randn(2, 3, 8, generator=gen, dtype=torch.float64) * 1.5  # (N, T, V)
    ids = torch.randint(0, 8, (2, 3), generator=gen)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    A = torch.tensor([0.8, -1.3], dtype=torch.float64)
    n_valid = int(mask.sum())
    lr = 1e-3

    z = z0.clone().requires_grad_(True)
    logp = torch.log_softmax(z, -1).gather(-1, ids[..., None]).squeeze(-1)  # (N, T)
    old_logp = logp.detach() + 0.1
    ratio = torch.exp(logp - old_logp)  # (N, T), exp(-0.1) everywhere
    loss = -(A[:, None] * ratio * mask).sum() / n_valid
    loss.backward()
    with torch.no_grad():
        dH = _entropy(z - lr * z.grad) - _entropy(z0)  # (N, T)
    assert float(dH[1, 2]) == 0.0  # the padding position gets no gradient

    stats = token_statistics(z0, ids)
    predicted = predicted_entropy_change(
        stats["S"], stats["S_baseline"], A, mask, lr, ratio=ratio.detach(), token_scale=1.0 / n_valid
    )
    assert float(predicted[1, 2]) == 0.0
    torch.testing.assert_close(predicted, dH, rtol=1e-2, atol=1e-9)  # per token, hence also the sum
    assert float(predicted.sum()) == pytest.approx(float(dH.sum()), rel=1e-2)
