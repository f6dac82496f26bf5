"""Tests for open_r1_egsw.methods.entropy_dynamics (arXiv 2602.03392, METHOD.md section 2). CPU only, a few seconds."""

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from open_r1_egsw.methods.entropy_dynamics import (
    AdaptiveEGSWController,
    clip_b_mask,
    clip_fraction,
    clip_v_mask,
    discriminator_from_logps,
    entropy_discriminator,
    masked_mean,
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


# ----------------------------------------------------------------------------------------------------------------------
# Masks
# ----------------------------------------------------------------------------------------------------------------------


def test_clip_b_hand_example_uses_population_std_and_ignores_padding():
    # valid S: 0, .1, .2, .3, .4, -2.0, .5 (the 9.0 is padding)
    # m = -0.5 / 7 = -0.071429; sum of squared deviations = 4.55 - 0.25/7 = 4.514286
    # population s = sqrt(4.514286 / 7) = 0.803063; sample s = sqrt(4.514286 / 6) = 0.867399
    # token -2.0: S - m = -1.928571.  mu = 2.3: population threshold -1.847045 -> dropped,
    # sample threshold -1.995018 -> kept, so this pins correction=0. (Padding 9.0 in the stats would raise m to
    # 1.06 and s to 2.93: -2.0 would then be kept.)
    S = torch.tensor([[0.0, 0.1, 0.2, 0.3], [0.4, -2.0, 0.5, 9.0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    keep = clip_b_mask(S, torch.tensor([-1.0, -1.0]), mask, mu=2.3)
    expected = torch.tensor([[True, True, True, True], [True, False, True, False]])
    assert torch.equal(keep, expected)
    assert clip_fraction(keep, mask) == pytest.approx(1 / 7)
    # mu = 2.5 (default): threshold -2.079 -> kept
    assert torch.equal(clip_b_mask(S, torch.tensor([-1.0, -1.0]), mask), mask.bool())
    # positive advantage on that row: never dropped
    assert torch.equal(clip_b_mask(S, torch.tensor([-1.0, 1.0]), mask, mu=2.3), mask.bool())
    # per-token advantages (N, T): only the -2.0 token negative
    A_tok = torch.ones(2, 4)
    A_tok[1, 1] = -0.5
    assert torch.equal(clip_b_mask(S, A_tok, mask, mu=2.3), expected)


def test_clip_v_hand_example_drops_most_violating_first_and_caps():
    # One row of 20 valid tokens plus one padding token (D = 1000, A < 0: must never count).
    # D = S_baseline - S = [0]*16 + [10, 30, 20, 30]; mean 4.5; E[D^2] = 2300/20 = 115
    # population s = sqrt(115 - 4.5^2) = 9.7340; mu = 1: candidates D > 9.734 at positions 16..19,
    # violations D - s = 0.266, 20.266, 10.266, 20.266 (positions 17 and 19 tie).
    D = torch.tensor([[0.0] * 16 + [10.0, 30.0, 20.0, 30.0, 1000.0]], dtype=torch.float64)
    S_baseline = torch.zeros_like(D)
    S = S_baseline - D
    mask = torch.ones(1, 21)
    mask[0, 20] = 0
    A = torch.tensor([-1.0])

    def dropped(max_frac):
        keep = clip_v_mask(S, S_baseline, A, mask, mu=1.0, max_frac=max_frac)
        assert not keep[0, 20]  # padding is never kept
        return [i for i in range(20) if not keep[0, i]]

    assert dropped(0.05) == [17]  # floor(0.05 * 20) = 1: the tie 17/19 goes to the smaller index
    assert dropped(0.1) == [17, 19]  # floor(2)
    assert dropped(0.15) == [17, 18, 19]  # floor(3): next most violating is D = 20
    assert dropped(0.25) == [16, 17, 18, 19]  # floor(5), only 4 candidates
    # floor(0.8) = 0, but the authors' cap is max(int(max_frac * n_valid), 1): the most violating one still goes
    assert dropped(0.04) == [17]
    assert dropped(1e-4) == [17]  # the paper's default on a small batch: one token, not none
    assert dropped(0.0) == [17]  # as in the authors' code, 0 does not switch the clip off (entropy_clip: none does)
    # positive advantage: nothing dropped
    assert torch.equal(clip_v_mask(S, S_baseline, torch.tensor([1.0]), mask, mu=1.0, max_frac=1.0), mask.bool())


def _random_batch(seed, N=4, T=6):
    gen = torch.Generator().manual_seed(seed)
    S = torch.randn(N, T, generator=gen) ** 3  # heavy tails: some outliers
    S_baseline = torch.randn(N, T, generator=gen) * 0.1
    A = torch.randn(N, T, generator=gen)
    mask = (torch.rand(N, T, generator=gen) > 0.3).long()
    return S, S_baseline, A, mask


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    mu=st.floats(0.0, 3.0),
    max_frac=st.floats(0.0, 1.0),
)
def test_masks_never_drop_nonnegative_advantages_and_cap_clip_v(seed, mu, max_frac):
    S, S_baseline, A, mask = _random_batch(seed)
    valid = mask.bool()
    for keep in (clip_b_mask(S, A, mask, mu=mu), clip_v_mask(S, S_baseline, A, mask, mu=mu, max_frac=max_frac)):
        assert keep.dtype == torch.bool
        assert not (keep & ~valid).any()  # padding is never kept
        assert keep[valid & (A >= 0)].all()  # A >= 0 is never dropped
    keep_v = clip_v_mask(S, S_baseline, A, mask, mu=mu, max_frac=max_frac)
    cap = max(math.floor(max_frac * int(valid.sum()) + 1e-9), 1)
    assert int((valid & ~keep_v).sum()) <= cap
    # the cap binds exactly: as many as allowed are dropped whenever there are that many candidates
    D = (S_baseline - S).double()
    s = D[valid].std(correction=0)
    candidates = int((valid & (A < 0) & (D > mu * s)).sum()) if s > 0 else 0
    assert int((valid & ~keep_v).sum()) == min(candidates, cap)


def test_mu_inf_drops_nothing():
    S, S_baseline, A, mask = _random_batch(0)
    A = -A.abs()  # every token is negative-advantage
    S[0, 0] = -1e6  # an extreme outlier
    S_baseline[0, 0] = 1e6
    mask[0, 0] = 1
    assert torch.equal(clip_b_mask(S, A, mask, mu=math.inf), mask.bool())
    assert torch.equal(clip_v_mask(S, S_baseline, A, mask, mu=math.inf, max_frac=1.0), mask.bool())
    # sanity: with a finite mu the outlier is dropped by both
    assert not clip_b_mask(S, A, mask, mu=1.0)[0, 0]
    assert not clip_v_mask(S, S_baseline, A, mask, mu=1.0, max_frac=1.0)[0, 0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_padding_values_never_influence_masks(seed):
    S, S_baseline, A, mask = _random_batch(seed)
    A = A - 0.5  # mostly negative, so there is something to drop
    pad = mask == 0
    assert pad.any()
    before_b = clip_b_mask(S, A, mask, mu=0.5)
    before_v = clip_v_mask(S, S_baseline, A, mask, mu=0.5, max_frac=0.2)
    assert (before_b != mask.bool()).any()  # the test is not vacuous
    S2, Sb2, A2 = S.clone(), S_baseline.clone(), A.clone()
    S2[pad], Sb2[pad], A2[pad] = -1e9, 1e9, -5.0  # would be the most violating tokens if counted
    assert torch.equal(clip_b_mask(S2, A2, mask, mu=0.5), before_b)
    assert torch.equal(clip_v_mask(S2, Sb2, A2, mask, mu=0.5, max_frac=0.2), before_v)
    S2[pad], Sb2[pad] = float("nan"), float("nan")
    assert torch.equal(clip_b_mask(S2, A2, mask, mu=0.5), before_b)
    assert torch.equal(clip_v_mask(S2, Sb2, A2, mask, mu=0.5, max_frac=0.2), before_v)


def test_empty_mask_and_helpers():
    S, S_baseline, A, _ = _random_batch(0)
    empty = torch.zeros_like(S, dtype=torch.long)
    assert not clip_b_mask(S, A, empty).any()
    assert not clip_v_mask(S, S_baseline, A, empty, max_frac=1.0).any()
    assert clip_fraction(torch.zeros_like(empty, dtype=torch.bool), empty) == 0.0
    assert float(masked_mean(S, empty)) == 0.0
    x = torch.tensor([[1.0, 2.0, float("nan")], [4.0, 5.0, 6.0]])
    m = torch.tensor([[1, 1, 0], [0, 1, 0]])
    assert float(masked_mean(x, m)) == pytest.approx((1 + 2 + 5) / 3)  # NaN at padding ignored
    with pytest.raises(ValueError, match="advantages"):
        clip_b_mask(S, torch.zeros(3), empty)
    with pytest.raises(ValueError, match="max_frac"):
        clip_v_mask(S, S_baseline, A, empty, max_frac=2.0)
    with pytest.raises(ValueError, match="mu"):
        clip_b_mask(S, A, empty, mu=-1.0)


# ----------------------------------------------------------------------------------------------------------------------
# Adaptive controller
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target,param,direction_when_below",
    [
        ("entropy", "alpha", +1),  # entropy too low -> raise alpha
        ("entropy", "temperature", -1),  # entropy too low -> lower P
        ("ess", "alpha", -1),  # ESS too low -> lower alpha
        ("ess", "temperature", +1),  # ESS too low -> raise P
    ],
)
def test_controller_directions(target, param, direction_when_below):
    below = AdaptiveEGSWController(target=target, target_value=0.5, param=param, value=1.0, lr=0.2)
    new = below.update(0.3)
    assert math.copysign(1, new - 1.0) == direction_when_below
    assert new == pytest.approx(math.exp(direction_when_below * 0.2 * (0.5 - 0.3) / 0.5))  # the one formula
    above = AdaptiveEGSWController(target=target, target_value=0.5, param=param, value=1.0, lr=0.2)
    assert math.copysign(1, above.update(0.9) - 1.0) == -direction_when_below
    at = AdaptiveEGSWController(target=target, target_value=0.5, param=param, value=1.0, lr=0.2)
    assert at.update(0.5) == 1.0 and at.num_updates == 1


def test_controller_clamps():
    c = AdaptiveEGSWController(target="entropy", target_value=1.0, param="alpha", value=1.0, lr=5.0, max_value=2.0)
    assert c.update(0.0) == 2.0  # exp(5) clamped
    assert c.update(100.0) == c.min_value  # exp(-495) clamped
    assert c.num_updates == 2
    zero = AdaptiveEGSWController(target="ess", target_value=0.0, param="temperature", value=1.0, lr=1e-9)
    assert zero.update(1.0) == pytest.approx(math.exp(-1e-9 / zero.eps))  # eps guards the zero target


def test_controller_state_dict_round_trip():
    c = AdaptiveEGSWController(target="ess", target_value=0.7, param="temperature", value=1.3, lr=0.37)
    for measured in (0.2, 0.9, 0.55):
        c.update(measured)
    state = json.loads(json.dumps(c.state_dict()))  # plain JSON types
    assert state == c.state_dict()
    other = AdaptiveEGSWController(target="entropy", target_value=2.0, param="alpha", value=0.5)
    other.load_state_dict(state)
    assert other.state_dict() == c.state_dict()
    for measured in (0.1, 0.8, 0.65, 0.3):
        assert other.update(measured) == c.update(measured)  # bit-identical
    assert other.num_updates == c.num_updates == 7
    with pytest.raises(ValueError, match="missing"):
        other.load_state_dict({k: v for k, v in state.items() if k != "lr"})


@pytest.mark.parametrize(
    "override,name",
    [
        ({"target": "kl"}, "target"),
        ({"param": "beta"}, "param"),
        ({"target_value": float("nan")}, "target_value"),
        ({"lr": -0.1}, "lr"),
        ({"min_value": 0.0}, "min_value"),
        ({"max_value": 1e-4}, "max_value"),
        ({"value": 50.0}, "value"),
        ({"num_updates": -1}, "num_updates"),
    ],
)
def test_controller_rejects_bad_arguments(override, name):
    kwargs = {"target": "entropy", "target_value": 0.5, "param": "alpha", "value": 1.0} | override
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        AdaptiveEGSWController(**kwargs)


def test_controller_rejects_non_finite_measurement():
    c = AdaptiveEGSWController(target="entropy", target_value=0.5, param="alpha", value=1.0)
    with pytest.raises(ValueError, match="measured"):
        c.update(float("nan"))
    assert c.value == 1.0 and c.num_updates == 0
