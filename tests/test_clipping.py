"""Tests for open_r1_egsw.methods.clipping: Clip_B and Clip_V keep-masks (arXiv 2602.03392, METHOD.md section 2)
and their registry. CPU only, a few seconds."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from open_r1_egsw.methods.clipping import CLIP_REGISTRY, clip_b_mask, clip_fraction, clip_v_mask, get_clip_fn
from open_r1_egsw.methods.dynamics import masked_mean


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


def test_registry_names_the_rules_and_what_they_read():
    assert sorted(CLIP_REGISTRY) == ["clip_b", "clip_v"]
    assert get_clip_fn("clip_b").needs == ("entropy", "logp", "S")
    assert get_clip_fn("clip_v").needs == ("entropy", "logp", "S", "S_baseline")
    S, S_baseline, A, mask = _random_batch(3)
    stats = {"S": S, "S_baseline": S_baseline}
    assert torch.equal(get_clip_fn("clip_b")(stats, A, mask, mu=0.5, max_frac=0.2), clip_b_mask(S, A, mask, mu=0.5))
    assert torch.equal(
        get_clip_fn("clip_v")(stats, A, mask, mu=0.5, max_frac=0.2),
        clip_v_mask(S, S_baseline, A, mask, mu=0.5, max_frac=0.2),
    )
    with pytest.raises(ValueError, match="Known: clip_b, clip_v"):
        get_clip_fn("clip_x")
