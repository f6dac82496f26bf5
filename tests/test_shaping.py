"""shaping.py: the fixed statistic order, the bit-exact packing the trainer's one gather relies on, and the pure
shape_advantages call against the method modules it composes."""

import os
import subprocess
import sys
from pathlib import Path

import torch

from open_r1_egsw.methods.clipping import clip_b_mask, clip_v_mask
from open_r1_egsw.methods.dynamics import masked_mean, predicted_entropy_change
from open_r1_egsw.methods.egsw import compute_egsw_weights, normalize_entropy
from open_r1_egsw.methods.shaping import (
    STATISTICS,
    ShapingSettings,
    loss_token_scale,
    needed_statistics,
    pack_rows,
    predicted_step_entropy_change,
    shape_advantages,
    unpack_rows,
)

ROOT = Path(__file__).resolve().parents[1]


def test_needed_statistics_keep_one_order_whatever_the_hash_seed():
    code = "from open_r1_egsw.methods.shaping import needed_statistics as n; print(n(True, 'clip_v', True), n(True, 'clip_b', False))"
    outputs = set()
    for seed in ("0", "1", "3"):  # seeds under which the 4-string set iterates in different orders
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "PYTHONHASHSEED": seed}
        outputs.add(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout)
    assert outputs == {"('entropy', 'logp', 'S', 'S_baseline') ('entropy', 'logp', 'S')\n"}
    assert needed_statistics(True, "none", False) == ("entropy",) and STATISTICS[0] == "entropy"


def test_pack_and_unpack_restore_every_value_bit_for_bit():
    gen = torch.Generator().manual_seed(0)
    advantages = torch.randn(5, generator=gen)
    mask = (torch.rand(5, 3, generator=gen) > 0.3).long()
    stats = [torch.randn(5, 3, generator=gen) * 1e-7, torch.randn(5, 3, generator=gen) * 1e6]
    packed = pack_rows(advantages, [mask, *stats])
    assert packed.shape == (5, 4, 3) and packed.dtype == torch.float64
    row, (mask_back, *stats_back) = unpack_rows(packed, advantages.dtype, [mask.dtype, torch.float32, torch.float32])
    assert torch.equal(row, advantages) and torch.equal(mask_back, mask) and mask_back.dtype == torch.long
    assert all(torch.equal(a, b) for a, b in zip(stats_back, stats, strict=True))


def test_shape_advantages_composes_the_method_modules():
    gen = torch.Generator().manual_seed(1)
    n, t, groups = 8, 5, 4
    advantages = torch.randn(n, generator=gen)
    mask = (torch.arange(t) < torch.randint(1, t + 1, (n, 1), generator=gen)).long()
    entropy = torch.rand(n, t, generator=gen) * 3
    stats = {"entropy": entropy, "logp": -torch.rand(n, t, generator=gen), "S": torch.randn(n, t, generator=gen) ** 3,
             "S_baseline": torch.randn(n, t, generator=gen) * 0.1}  # fmt: skip
    settings = ShapingSettings(num_generations=groups, use_egsw=True, alpha=0.5, temperature=0.7, vocab_size=50,
                               entropy_clip="clip_b", clip_mu=0.5)  # fmt: skip
    shaped = shape_advantages(advantages, mask, stats, settings)
    weights = compute_egsw_weights(advantages, normalize_entropy(entropy, 50), mask, groups, 0.5, 0.7)
    keep = clip_b_mask(stats["S"], advantages, mask, mu=0.5)
    assert torch.equal(shaped.weights, weights) and torch.equal(shaped.keep, keep)
    assert shaped.metrics["entropy_dynamics/clip_count"] == float((mask.bool() & ~keep).sum()) > 0
    clip_v = shape_advantages(advantages, mask, stats, ShapingSettings(num_generations=groups, entropy_clip="clip_v",
                                                                       clip_mu=0.1, clip_max_frac=0.0))  # fmt: skip
    assert clip_v.weights is None
    assert torch.equal(clip_v.keep, clip_v_mask(stats["S"], stats["S_baseline"], advantages, mask, mu=0.1, max_frac=0))
    assert clip_v.metrics["entropy_dynamics/clip_count"] == 1.0  # max_frac 0: still the one most violating token


def test_loss_token_scale_of_each_loss_type():
    """d(loss)/d(token surrogate) over N = 2 completions of 3 and 1 valid tokens (4 in all, max length 5):
    grpo 1 / (|o_i| N) = 1/6 and 1/2; bnpo and dapo 1 / 4; dr_grpo 1 / (N * 5) = 1/10."""
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    assert torch.equal(loss_token_scale("grpo", mask, 5), torch.tensor([[1 / 6], [1 / 2]]))
    assert loss_token_scale("dapo", mask, 5) == loss_token_scale("bnpo", mask, 5) == 0.25
    assert loss_token_scale("dr_grpo", mask, 5) == 0.1


def test_predicted_step_entropy_change_uses_the_weighted_advantages_and_the_kept_tokens():
    gen = torch.Generator().manual_seed(2)
    n, t, groups = 8, 5, 4
    advantages = torch.randn(n, generator=gen)
    mask = (torch.arange(t) < torch.randint(1, t + 1, (n, 1), generator=gen)).long()
    stats = {key: torch.randn(n, t, generator=gen) for key in ("entropy", "logp", "S_baseline")}
    stats["S"] = torch.randn(n, t, generator=gen) ** 3
    egsw = {"use_egsw": True, "alpha": 0.5, "vocab_size": 50}
    settings = ShapingSettings(num_generations=groups, **egsw, entropy_clip="clip_b", clip_mu=0.5)
    shaped = shape_advantages(advantages, mask, stats, settings)
    assert shaped.keep is not None and not torch.equal(shaped.keep, mask.bool())  # a token is dropped
    kept = mask * shaped.keep
    for loss_type in ("grpo", "dapo", "dr_grpo"):
        scale = loss_token_scale(loss_type, kept, 5)
        effective = advantages.unsqueeze(1) * shaped.weights
        change = predicted_entropy_change(stats["S"], stats["S_baseline"], effective, kept, lr=0.1, token_scale=scale)
        expected = masked_mean(change, mask).item()
        assert predicted_step_entropy_change(advantages, mask, stats, shaped, 0.1, loss_type, 5) == expected
