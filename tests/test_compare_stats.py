"""compare_stats: t intervals, paired differences, reward AUC and the curve bands, against hand-computed values."""

import math

import pytest
from test_compare import fabricated, fake_run  # noqa: F401 (fixture)

from open_r1_egsw.experiments.compare import report as compare_report
from open_r1_egsw.experiments.compare import stats as compare_stats


def test_t_critical_table_and_expansion():
    """t_{0.975, df}: the table (df 4: 2.776445) and, beyond df 30, the expansion within 1e-6 of the tables."""
    assert compare_stats.t_critical(1) == 12.706205 and compare_stats.t_critical(4) == 2.776445
    assert compare_stats.t_critical(60) == pytest.approx(2.000298, abs=1e-6)  # printed t tables
    assert compare_stats.t_critical(120) == pytest.approx(1.979930, abs=1e-6)
    assert compare_stats.t_critical(10**6) == pytest.approx(1.959966, abs=1e-6)  # -> the normal quantile
    with pytest.raises(ValueError, match="df >= 1"):
        compare_stats.t_critical(0)


def test_t_critical_matches_scipy():
    """The table and the expansion agree with scipy's t quantile (scipy is not a dependency: skipped without it)."""
    stats = pytest.importorskip("scipy.stats")
    for df in (*range(1, 31), 31, 45, 100, 1000):
        assert compare_stats.t_critical(df) == pytest.approx(stats.t.ppf(0.975, df), abs=1e-6), df


def test_mean_ci_by_hand():
    """1..5: mean 3, s = sqrt(2.5), half width t_{0.975,4} * s / sqrt(5) = 2.776445 * 0.7071068 = 1.963243."""
    ci = compare_stats.mean_ci([1, 2, 3, None, 4, 5])  # None is dropped
    assert ci["n"] == 5 and ci["mean"] == 3.0 and ci["std"] == pytest.approx(math.sqrt(2.5))
    assert ci["half_width"] == pytest.approx(1.963243, abs=1e-6)
    assert (ci["low"], ci["high"]) == (pytest.approx(1.036757, abs=1e-6), pytest.approx(4.963243, abs=1e-6))
    one = compare_stats.mean_ci([0.7])  # one seed: a mean, no interval
    assert one == {"n": 1, "mean": 0.7, "std": None, "half_width": None, "low": None, "high": None}
    assert compare_stats.mean_ci([None])["mean"] is None


def test_paired_difference_by_hand():
    """Only seeds in both (and not None) pair up: differences .1 .3 .3, mean .2333, s = .11547,
    half width t_{0.975,2} * s / sqrt(3) = 4.302653 * 0.0666667 = 0.286844."""
    method = {0: 0.5, 1: 0.7, 2: 0.9, 3: None}
    baseline = {0: 0.4, 1: 0.4, 2: 0.6, 4: 0.1}
    paired = compare_stats.paired_difference(method, baseline)
    assert paired["seeds"] == [0, 1, 2] and paired["differences"] == pytest.approx([0.1, 0.3, 0.3])
    assert paired["mean"] == pytest.approx(0.7 / 3) and paired["std"] == pytest.approx(0.1154701, abs=1e-7)
    assert paired["half_width"] == pytest.approx(0.286844, abs=1e-6)
    assert paired["low"] == pytest.approx(-0.053510, abs=1e-6) and paired["high"] == pytest.approx(0.520177, abs=1e-6)


def test_paired_is_tighter_than_unpaired_when_seeds_share_noise():
    """Same seed, same noise: a constant +0.1 on top of widely varying seeds is exact when paired."""
    baseline = {0: 0.2, 1: 0.9, 2: 0.5}
    paired = compare_stats.paired_difference({s: v + 0.1 for s, v in baseline.items()}, baseline)
    assert paired["mean"] == pytest.approx(0.1) and paired["half_width"] == pytest.approx(0.0, abs=1e-12)
    # unpaired, the seeds' spread dominates: s = 0.351188, 4.302653 * s / sqrt(3) = 0.872400
    assert compare_stats.mean_ci(baseline.values())["half_width"] == pytest.approx(0.872400, abs=1e-6)


def test_reward_auc_by_hand():
    """Trapezoids / step span: .2 .4 .6 .8 at steps 1-4 -> (.3 + .5 + .7) / 3 = .5; uneven steps weigh by span."""
    assert compare_stats.reward_auc([1, 2, 3, 4], [0.2, 0.4, 0.6, 0.8]) == pytest.approx(0.5)
    assert compare_stats.reward_auc([0, 10, 20, 30], [0.0, 1.0, None, 1.0]) == pytest.approx((5 + 20) / 30)
    assert compare_stats.reward_auc([5], [0.3]) == 0.3 and compare_stats.reward_auc([1, 2], [None, None]) is None


def test_aggregate_intervals_and_pairs(fabricated):  # noqa: F811
    """The fabricated runs of test_compare (grpo accuracies .5 .3, egsw .7 .9 + a crashed seed):
    grpo accuracy .4 ± 12.706205 * .1 = ±1.2706205; egsw - grpo by seed: .2 .6 -> .4 ± 12.706205 * .2;
    reward AUC grpo .5, .1667; egsw .7833, .6333 -> paired .2833, .4667 -> mean .375."""
    result = compare_stats.aggregate(fabricated, ["grpo", "egsw"], threshold=0.5, window=2)
    grpo_ci = result["groups"]["grpo"]["summary"]["ci"]
    assert grpo_ci["final_accuracy"]["half_width"] == pytest.approx(1.2706205)
    assert [r["reward_auc"] for r in result["groups"]["grpo"]["runs"]] == pytest.approx([0.5, 1 / 6])
    assert grpo_ci["final_entropy"]["half_width"] == 0.0  # every step logs entropy 0.5
    assert result["groups"]["egsw"]["summary"]["ci"]["final_accuracy"]["n"] == 2  # the crash is not a seed
    assert list(result["paired"]) == ["egsw"]
    paired = result["paired"]["egsw"]
    assert paired["final_accuracy"]["seeds"] == [0, 1]
    assert paired["final_accuracy"]["differences"] == pytest.approx([0.2, 0.6])
    assert paired["final_accuracy"]["half_width"] == pytest.approx(2.541241)
    assert paired["reward_auc"]["mean"] == pytest.approx(0.375)
    assert paired["mean_completion_length"]["differences"] == pytest.approx([8 - 13, 10 - 20])
    row = compare_report.paired_table(result).splitlines()[2]
    assert row.startswith("| egsw | 0.400 [-2.141, 2.941] (n=2) | 0.375 [")
    assert "| -7.5 [-39.3, 24.3] (n=2) |" in row  # (-5, -10): ±12.706205 * 2.5
    assert compare_report.ci_table(result).splitlines()[2].startswith("| grpo | 0.400 [-0.871, 1.671] (n=2) |")


def test_no_baseline_no_pairs(fabricated):  # noqa: F811
    result = compare_stats.aggregate(fabricated, ["egsw"], threshold=0.5, window=2)
    assert result["paired"] == {} and compare_report.paired_table(result).startswith("No paired differences")


def test_curve_band_is_the_t_interval(fabricated):  # noqa: F811
    """Lengths at step 1 are 10 and 20: mean 15, s = 7.0711, band ±12.706205 * 7.0711 / sqrt(2) = ±63.531."""
    loaded = compare_stats.aggregate(fabricated, ["grpo"], threshold=0.5, window=1)["groups"]["grpo"]["_loaded"]
    steps, mean, low, high = compare_stats.curve(loaded, "completions/mean_length", window=1)
    assert steps == [1, 2, 3, 4] and mean == [15.0, 16.0, 17.0, 18.0]
    assert low[0] == pytest.approx(15 - 63.531025) and high[0] == pytest.approx(15 + 63.531025)
    assert high[3] - low[3] == pytest.approx(2 * 12.706205 * 2)  # 16 and 20: s = 2.828, s / sqrt(2) = 2
    with pytest.raises(ValueError, match="band"):
        compare_stats.curve(loaded, "entropy", window=1, band="sd")


def test_curve_band_of_a_single_run_is_its_line(tmp_path):
    fake_run(tmp_path / "grpo/seed0", [0.1, 0.3], [4, 6])
    loaded = compare_stats.aggregate(tmp_path, ["grpo"], threshold=0.5, window=1)["groups"]["grpo"]["_loaded"]
    assert compare_stats.curve(loaded, "reward", window=1) == ([1, 2], [0.1, 0.3], [0.1, 0.3], [0.1, 0.3])


def test_compare_report_carries_intervals_and_pairs(fabricated):  # noqa: F811
    """compare.md has both tables; compare.json has the intervals and the pairs; the band figures are PNGs."""
    import json

    result = compare_stats.aggregate(fabricated, ["grpo", "egsw"], threshold=0.5, window=2)
    config = {"command": "test", "seeds": [0, 1], "overrides": [], "recipe_sha256": {}, "machine": "test",
              "wall_s": 0.0, "jobs": 1, "reward_key": "reward"}  # fmt: skip
    compare_report.write_compare_report(result, config, fabricated, window=2, threshold=0.5)
    text = (fabricated / "compare.md").read_text()
    assert compare_report.ci_table(result) in text and compare_report.paired_table(result) in text
    saved = json.loads((fabricated / "compare.json").read_text())
    assert saved["paired"]["egsw"]["final_accuracy"]["differences"] == pytest.approx([0.2, 0.6])
    assert saved["groups"]["grpo"]["summary"]["ci"]["final_accuracy"]["mean"] == pytest.approx(0.4)
    for stem in ("reward", "entropy", "completion_length", "ess", "curves"):
        assert (fabricated / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", stem


def test_detectable_difference_by_hand_and_scipy():
    """(t_{0.975,9} + t_{0.80,9}) * s / sqrt(10) = (2.262157 + 0.883404) * 0.0443 / 3.162278 = 0.044066; the
    t_{0.80} table and its expansion beyond df 30 agree with scipy."""
    assert compare_stats.detectable_difference(0.0443, 10) == pytest.approx(0.044066, abs=1e-6)
    assert compare_stats.detectable_difference(0.0, 10) == 0.0
    # more seeds detect less: 5 seeds need (2.776445 + 0.940965) / sqrt(5) = 1.662476 s
    assert compare_stats.detectable_difference(1.0, 5) == pytest.approx(1.662476, abs=1e-6)
    stats = pytest.importorskip("scipy.stats")
    for df in (*range(1, 31), 31, 45, 100, 1000):
        found = compare_stats._t_quantile(df, compare_stats.T80, compare_stats.Z80)
        assert found == pytest.approx(stats.t.ppf(0.8, df), abs=1e-6), df


@pytest.mark.parametrize("second,beyond", [(0.08544, True), (0.08540, False)])
def test_beyond_noise_is_decided_on_unrounded_bounds(second, beyond):
    """Differences (0.1, b): low = -0.58531025 + 6.8531025 b, i.e. +0.00022 for b = 0.08544 and -0.00005 for
    0.08540; both print as 0.000, only the first excludes 0 and is bold."""
    paired = compare_stats.paired_difference({0: 0.1, 1: second}, {0: 0.0, 1: 0.0})
    assert paired["low"] == pytest.approx(-0.58531025 + 6.8531025 * second, abs=1e-6)
    assert paired["beyond_noise"] is beyond
    cell = compare_report.ci_cell(paired)
    assert ("**" in cell) is beyond and ("[0.000," in cell or "[-0.000," in cell)
    assert compare_stats.paired_difference({0: 0.1}, {0: 0.0})["beyond_noise"] is None  # one seed: no interval


def test_steps_to_threshold_and_drops_per_step_are_paired_and_reported(tmp_path):
    """Steps to threshold pair over the seeds where both runs reached it; tokens dropped per step average
    `entropy_dynamics/clip_count` over the run."""
    for seed, (grpo, clip) in enumerate([([0.6] * 4, [0.0, 0.6, 0.6, 0.6]), ([0.6] * 4, [0.0, 0.0, 0.6, 0.6]),
                                         ([0.0] * 4, [0.6] * 4)]):  # fmt: skip
        fake_run(tmp_path / f"grpo/seed{seed}", grpo, [10] * 4, 0.5)
        fake_run(tmp_path / f"clip_v/seed{seed}", clip, [10] * 4, 0.5,
                 extra={"entropy_dynamics/clip_count": 2.0 * seed, "entropy_dynamics/clip_frac": 0.01})  # fmt: skip
    result = compare_stats.aggregate(tmp_path, ["grpo", "clip_v"], threshold=0.5, window=1)
    steps = result["paired"]["clip_v"]["steps_to_threshold"]
    assert steps["seeds"] == [0, 1] and steps["differences"] == [1, 2]  # seed 2: grpo never reached it
    assert steps["mean"] == 1.5 and steps["half_width"] == pytest.approx(12.706205 * 0.5)
    summary = result["groups"]["clip_v"]["summary"]
    assert summary["clip_count_mean"] == pytest.approx(2.0) and summary["clip_frac_mean"] == pytest.approx(0.01)
    assert "| 1.00% (2.00/step) |" in compare_report.compare_table(result, 0.5)
    assert "| 1.5 [-4.9, 7.9] (n=2) |" in compare_report.paired_table(result)
