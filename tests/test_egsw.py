"""EGSW weights (egsw.py): hand-computed values, the limits of METHOD.md section 1, and properties."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from open_r1_egsw.methods.egsw import compute_egsw_weights, egsw_weight_stats, get_granularity_fn, normalize_entropy

# Two groups of three completions, ragged lengths (3, 2, 1) in the first group, (2, 2, 2) in the second.
ADV = torch.tensor([1.0, 0.0, -1.0, 0.5, 0.5, -1.0])
ENT = torch.tensor(
    [
        [0.2, 0.4, 0.6],
        [0.0, 0.2, 9.0],  # 9.0: garbage at padding, must be ignored
        [0.4, 9.0, 9.0],
        [0.0, 0.0, 0.0],
        [0.0, 0.0, 0.0],
        [0.0, 0.0, 0.0],
    ]
)
MASK = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 0], [1, 1, 0], [1, 1, 0]])


def test_hand_computed_token_weights():
    """Step-wise weights of a ragged 2-group example equal values worked out by hand."""
    # alpha = 0.5, P = 1: z = A + 0.5 H.
    # Group 1, t=0: z = (1.1, 0.0, -0.8); e^z = (3.004166, 1, 0.449329), sum 4.453495;
    #   times 3 present: (2.023691, 0.673628, 0.302681).
    # Group 1, t=1: z = (1.2, 0.1) (row 2 has ended); 2 * e^z / sum = (1.500520, 0.499480).
    # Group 1, t=2: only row 0 remains -> 1.
    # Group 2, t=0 and t=1: z = (0.5, 0.5, -1.0); 3 * e^z / sum = (1.349449, 1.349449, 0.301103).
    expected = torch.tensor(
        [
            [2.023691, 1.500520, 1.0],
            [0.673628, 0.499480, 0.0],
            [0.302681, 0.0, 0.0],
            [1.349449, 1.349449, 0.0],
            [1.349449, 1.349449, 0.0],
            [0.301103, 0.301103, 0.0],
        ]
    )
    weights = compute_egsw_weights(ADV, ENT, MASK, num_generations=3, alpha=0.5, temperature=1.0)
    torch.testing.assert_close(weights, expected, atol=2e-6, rtol=0)


def test_hand_computed_sequence_weights_and_paper_scale():
    """Trajectory-wise weights use each completion's mean entropy; scale "none" divides by the group size."""
    # Mean entropies of group 1 over their own tokens: 0.4, 0.1, 0.4 -> v = A + 0.5 Hbar = (1.2, 0.05, -0.8);
    # 3 * softmax(v) = (2.066155, 0.654221, 0.279624). Group 2 as in the token case.
    weights = compute_egsw_weights(ADV, ENT, MASK, 3, alpha=0.5, temperature=1.0, granularity="sequence")
    torch.testing.assert_close(weights[0], torch.full((3,), 2.066155), atol=2e-6, rtol=0)
    torch.testing.assert_close(weights[1], torch.tensor([0.654221, 0.654221, 0.0]), atol=2e-6, rtol=0)
    torch.testing.assert_close(weights[2], torch.tensor([0.279624, 0.0, 0.0]), atol=2e-6, rtol=0)
    paper = compute_egsw_weights(ADV, ENT, MASK, 3, 0.5, 1.0, granularity="sequence", weight_scale="none")
    torch.testing.assert_close(paper, weights / 3)


def test_uniform_weights_are_exactly_one():
    """alpha = 0 and a huge temperature give weights of exactly 1 on every valid token (plain GRPO)."""
    weights = compute_egsw_weights(ADV * 100, ENT, MASK, 3, alpha=0.0, temperature=1e12)
    assert torch.equal(weights, MASK.float())


def test_tiny_temperature_is_one_hot_at_argmax():
    """P -> 0 puts the whole (scaled) weight on the argmax of A + alpha H at each step."""
    weights = compute_egsw_weights(ADV, ENT, MASK, 3, alpha=0.5, temperature=1e-6)
    expected = torch.tensor(
        [[3.0, 2.0, 1.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    )
    # Group 2 ties rows 3 and 4 (z = 0.5 each): they share the mass 3 -> 1.5 each.
    expected[3, :2] = 1.5
    expected[4, :2] = 1.5
    torch.testing.assert_close(weights, expected)


def test_per_token_advantages_are_used_as_is():
    """(N, T) advantages equal to the broadcast (N,) ones give the same weights."""
    broadcast = ADV.unsqueeze(1).expand_as(ENT).clone()
    torch.testing.assert_close(
        compute_egsw_weights(broadcast, ENT, MASK, 3, 0.3, 0.7), compute_egsw_weights(ADV, ENT, MASK, 3, 0.3, 0.7)
    )


def test_extreme_values_stay_finite():
    """|A| = 1e4 and entropies of log|V| with a tiny temperature give finite weights, no NaN."""
    adv = torch.tensor([1e4, -1e4, 1e4, -1e4])
    ent = torch.full((4, 5), math.log(152064.0))
    mask = torch.ones(4, 5)
    weights = compute_egsw_weights(adv, ent, mask, 2, alpha=1.0, temperature=1e-3)
    assert torch.isfinite(weights).all()
    torch.testing.assert_close(weights.sum(), torch.tensor(20.0))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"alpha": -0.1}, "alpha must be >= 0"),
        ({"temperature": 0.0}, "temperature must be > 0"),
        ({"weight_scale": "sum"}, "Unknown weight_scale 'sum'"),
        ({"granularity": "step"}, "Unknown EGSW granularity 'step'. Known: sequence, token"),
        ({"num_generations": 4}, "multiple of num_generations"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    """Invalid arguments raise ValueError naming the argument."""
    args = {"num_generations": 3, "alpha": 0.3, "temperature": 1.0, **kwargs}
    with pytest.raises(ValueError, match=message):
        compute_egsw_weights(ADV, ENT, MASK, **args)


def test_granularity_registry_lists_names():
    """Looking up an unknown granularity lists the registered ones."""
    assert get_granularity_fn("token") is not None
    with pytest.raises(ValueError, match="Known: sequence, token"):
        get_granularity_fn("trajectory")


def test_normalize_entropy():
    """Normalised entropy of the uniform distribution over V is exactly 1."""
    assert normalize_entropy(torch.tensor(math.log(1000)), 1000).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="vocab_size"):
        normalize_entropy(torch.tensor(1.0), 1)


def test_weight_stats():
    """ESS is 1 for uniform weights and 1/n for one-hot ones; min/max/std over valid tokens only."""
    mask = torch.ones(4, 2)
    uniform = egsw_weight_stats(torch.ones(4, 2), mask, num_generations=4)
    assert uniform == {"weight_min": 1.0, "weight_max": 1.0, "weight_std": 0.0, "ess": 1.0}
    one_hot = torch.tensor([[4.0, 4.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    stats = egsw_weight_stats(one_hot, mask, num_generations=4)
    assert stats["ess"] == pytest.approx(0.25)
    assert stats["weight_max"] == 4.0 and stats["weight_min"] == 0.0
    assert stats["weight_std"] == pytest.approx(math.sqrt(3.0))  # values {4, 0, 0, 0} twice: std = sqrt(3)


# ---------------------------------------------------------------------------------------------------------------
# Properties (hypothesis)
# ---------------------------------------------------------------------------------------------------------------


@st.composite
def batches(draw):
    groups = draw(st.integers(1, 3))
    g = draw(st.integers(1, 5))
    t = draw(st.integers(1, 6))
    n = groups * g
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    scale = draw(st.sampled_from([1.0, 10.0, 1e4]))
    adv = (torch.rand(n, generator=gen) * 2 - 1) * scale
    ent = torch.rand(n, t, generator=gen) * math.log(1000)
    lengths = torch.randint(0, t + 1, (n,), generator=gen)
    mask = (torch.arange(t).unsqueeze(0) < lengths.unsqueeze(1)).float()
    alpha = draw(st.floats(0.0, 2.0))
    temperature = draw(st.sampled_from([0.05, 0.5, 1.0, 1.8, 10.0]))
    return adv, ent, mask, g, alpha, temperature


PROPERTY_SETTINGS = settings(max_examples=60, deadline=None)


@PROPERTY_SETTINGS
@given(batches(), st.sampled_from(["group_size", "none"]))
def test_step_sums_masking_and_finiteness(batch, scale):
    """Per group and step, weights sum to the number present ("group_size") or 1 ("none"); 0 at padding."""
    adv, ent, mask, g, alpha, temperature = batch
    w = compute_egsw_weights(adv, ent, mask, g, alpha, temperature, weight_scale=scale)
    assert torch.isfinite(w).all() and (w >= 0).all()
    assert (w[mask == 0] == 0).all()
    n, t = mask.shape
    sums = w.view(n // g, g, t).sum(dim=1)
    present = mask.view(n // g, g, t).sum(dim=1)
    target = present if scale == "group_size" else (present > 0).float()
    torch.testing.assert_close(sums, target, atol=1e-4, rtol=1e-5)


@PROPERTY_SETTINGS
@given(batches(), st.floats(-50.0, 50.0))
def test_shift_invariance(batch, shift):
    """Adding a constant to every A + alpha H of a group leaves the weights unchanged."""
    adv, ent, mask, g, alpha, temperature = batch
    w = compute_egsw_weights(adv, ent, mask, g, alpha, temperature)
    shifted = compute_egsw_weights(adv + shift, ent, mask, g, alpha, temperature)
    torch.testing.assert_close(shifted, w, atol=1e-4, rtol=1e-4)


@PROPERTY_SETTINGS
@given(batches())
def test_single_completion_step_gets_scale(batch):
    """A step where one completion of its group remains gets weight 1 ("group_size") and 1 ("none")."""
    adv, ent, mask, g, alpha, temperature = batch
    n, t = mask.shape
    present = mask.view(n // g, g, t).sum(dim=1, keepdim=True).expand(n // g, g, t).reshape(n, t)
    alone = (present == 1) & (mask == 1)
    for scale in ("group_size", "none"):
        w = compute_egsw_weights(adv, ent, mask, g, alpha, temperature, weight_scale=scale)
        assert torch.equal(w[alone], torch.ones_like(w[alone]))


@PROPERTY_SETTINGS
@given(batches())
def test_uniform_limit_and_one_hot_limit(batch):
    """alpha = 0 with a huge P gives uniform weights; a tiny P gives one-hot at the unique argmax."""
    adv, ent, mask, g, alpha, _ = batch
    uniform = compute_egsw_weights(adv, ent, mask, g, 0.0, 1e12)
    assert torch.equal(uniform, mask)
    n, t = mask.shape
    w = compute_egsw_weights(adv, ent, mask, g, alpha, 1e-7, weight_scale="none")
    z = torch.where(mask.bool(), adv.unsqueeze(1) + alpha * ent, torch.tensor(float("-inf"))).view(n // g, g, t)
    top2 = z.topk(min(2, g), dim=1).values
    unique = (top2[:, 0] > top2[:, -1] + 1e-3) if g > 1 else torch.ones_like(top2[:, 0], dtype=torch.bool)
    argmax = z.argmax(dim=1)  # (groups, T)
    w3 = w.view(n // g, g, t)
    for grp, step in (unique & torch.isfinite(top2[:, 0])).nonzero().tolist():
        assert w3[grp, argmax[grp, step], step].item() == pytest.approx(1.0, abs=1e-6)


@PROPERTY_SETTINGS
@given(batches())
def test_sequence_equals_plain_softmax(batch):
    """ "sequence" weights equal a plain softmax over per-completion values, times the non-empty count."""
    adv, ent, mask, g, alpha, temperature = batch
    w = compute_egsw_weights(adv, ent, mask, g, alpha, temperature, granularity="sequence")
    n, t = mask.shape
    for grp in range(n // g):
        rows = range(grp * g, (grp + 1) * g)
        live = [i for i in rows if mask[i].sum() > 0]
        if not live:
            continue
        values = torch.tensor(
            [
                (adv[i].item() + alpha * (ent[i] * mask[i]).sum().item() / mask[i].sum().item()) / temperature
                for i in live
            ],
            dtype=torch.float64,
        )
        expected = torch.softmax(values, dim=0) * len(live)
        for k, i in enumerate(live):
            got = w[i][mask[i].bool()]
            torch.testing.assert_close(got, torch.full_like(got, expected[k].item()), atol=1e-4, rtol=1e-4)


def test_token_entropy_matches_the_definition_in_chunks_and_with_masked_logits():
    """H(softmax(z / T)) = -sum p log p per row, whatever the chunk size; -inf logits (p = 0) contribute 0: the
    test-only reference implementation and the one the trainer uses (`next_token_moments`)."""
    from helpers.reference_stats import token_entropy

    from open_r1_egsw.methods.dynamics import next_token_moments

    torch.manual_seed(0)
    logits = torch.randn(3, 5, 11) * 3
    logits[0, 0, :4] = -math.inf
    for temperature in (1.0, 0.6):
        p = torch.softmax(logits.double() / temperature, dim=-1)
        expected = -(torch.where(p > 0, p * p.log(), 0.0)).sum(-1)
        for chunk_size in (1, 4, 1024):
            got = token_entropy(logits, temperature, chunk_size=chunk_size)
            assert got.shape == (3, 5) and got.dtype == torch.float32
            torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-5)
            product = next_token_moments(logits, temperature, chunk_size=chunk_size)["entropy"]
            assert product.shape == (3, 5) and product.dtype == torch.float32
            torch.testing.assert_close(product.double(), expected, atol=1e-5, rtol=1e-5)
    assert token_entropy(torch.zeros(2, 7)).sub(math.log(7)).abs().max() < 1e-6  # uniform: log V
    with pytest.raises(ValueError, match="temperature"):
        token_entropy(logits, 0.0)
