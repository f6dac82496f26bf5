"""compare.py and its modules (compare_runs, compare_stats, compare_report): numbers read back from fabricated run files, and the --quick comparison end to end."""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from open_r1_egsw.experiments.compare import cli as compare
from open_r1_egsw.experiments.compare import report as compare_report
from open_r1_egsw.experiments.compare import runs as compare_runs
from open_r1_egsw.experiments.compare import stats as compare_stats
from open_r1_egsw.training.outputs import MetricsJSONLCallback

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def fake_run(run_dir: Path, rewards, lengths, accuracy_after=None, runtime=None, returncode=None, extra=None):
    """Write a run as the trainer does: metrics.jsonl through the real MetricsJSONLCallback, then accuracy.json."""
    run_dir.mkdir(parents=True)
    callback = MetricsJSONLCallback(str(run_dir))
    for step, (reward, length) in enumerate(zip(rewards, lengths), start=1):
        logs = {"reward": reward, "completions/mean_length": length, "entropy": 0.5, **(extra or {})}
        state = SimpleNamespace(is_world_process_zero=True, global_step=step, epoch=step / 100)
        callback.on_log(None, state, None, logs=logs)
    if runtime is not None:  # the end-of-training summary record: no "reward", so not a training step
        state = SimpleNamespace(is_world_process_zero=True, global_step=len(rewards), epoch=0.04)
        callback.on_log(None, state, None, logs={"train_runtime": runtime, "train_loss": 0.1})
    if accuracy_after is not None:
        accuracy = {"accuracy_before": 0.1, "accuracy_after": accuracy_after, "accuracy_rows": 10}
        (run_dir / "accuracy.json").write_text(json.dumps(accuracy))
    if returncode is not None:
        (run_dir / compare_runs.RUN_RECORD).write_text(json.dumps({"returncode": returncode, "error": "boom"}))


@pytest.fixture
def fabricated(tmp_path):
    """Two methods x two seeds, 4 logged steps each, plus a crashed third egsw seed.

    With threshold 0.5 and a trailing window of 2 logged steps:
    grpo seed0 rewards .2 .4 .6 .8 -> smoothed .2 .3 .5 .7: reaches 0.5 at step 3; lengths 10..16 -> mean 13
    grpo seed1 rewards .1 .1 .2 .3 -> smoothed .1 .1 .15 .25: not reached;          lengths 20 -> mean 20
    egsw seed0 rewards .5 .7 .9 1. -> smoothed .5 .6 ...: step 2 (step 1's window is not full); lengths 8 -> mean 8
    egsw seed1 rewards .3 .7 .7 .7 -> smoothed .3 .5 ...: step 2;                     lengths 10 -> mean 10
    egsw seed2 crashed after 2 steps (returncode 1, no accuracy.json): reported, not counted.
    """
    fake_run(tmp_path / "grpo/seed0", [0.2, 0.4, 0.6, 0.8], [10, 12, 14, 16], 0.5, runtime=10.0)
    fake_run(tmp_path / "grpo/seed1", [0.1, 0.1, 0.2, 0.3], [20, 20, 20, 20], 0.3, runtime=20.0)
    ess = {"egsw/ess": 0.9, "egsw/weight_min": 0.2, "egsw/weight_max": 3.0, "egsw/weight_std": 0.4}
    fake_run(tmp_path / "egsw/seed0", [0.5, 0.7, 0.9, 1.0], [8, 8, 8, 8], 0.7, runtime=30.0, extra=ess)
    fake_run(tmp_path / "egsw/seed1", [0.3, 0.7, 0.7, 0.7], [10, 10, 10, 10], 0.9, runtime=40.0, extra=ess)
    fake_run(tmp_path / "egsw/seed2", [0.9, 0.9], [5, 5], returncode=1, extra=ess)
    return tmp_path


def test_trailing_mean_and_threshold():
    """The trailing mean uses fewer values at the start and skips None; the threshold is inclusive."""
    assert compare_stats.trailing_mean([1.0, None, 3.0, 5.0], 2) == [1.0, 1.0, 3.0, 4.0]
    assert compare_stats.steps_to_threshold([5, 10, 15], [0.0, 1.0, 1.0], 1.0, 2) == 15
    assert compare_stats.steps_to_threshold([5, 10, 15], [0.0, 1.0, 1.0], 1.0, 1) == 10
    assert compare_stats.steps_to_threshold([5, 10], [0.0, 0.1], 1.0, 1) is None
    assert compare_stats.steps_to_threshold([5, 10, 15], [1.0, 0.0, 1.0], 1.0, 2) is None  # step 5: window not full


def test_aggregate_fabricated_runs(fabricated):
    """Final accuracy mean/std, steps to threshold and mean completion length, exactly, per seed and per method."""
    result = compare_stats.aggregate(fabricated, ["grpo", "egsw"], threshold=0.5, window=2)
    grpo, egsw = (result["groups"][m] for m in ("grpo", "egsw"))
    assert [r["steps_to_threshold"] for r in grpo["runs"]] == [3, None]
    assert [r["mean_completion_length"] for r in grpo["runs"]] == [13.0, 20.0]
    g = grpo["summary"]
    assert (g["runs"], g["runs_ok"]) == (2, 2)
    assert g["final_accuracy_mean"] == pytest.approx(0.4)
    assert g["final_accuracy_std"] == pytest.approx(0.1414213562)  # sample std of (0.5, 0.3)
    assert (g["final_accuracy_min"], g["final_accuracy_max"]) == (0.3, 0.5)
    assert (g["steps_to_threshold_reached"], g["steps_to_threshold_mean"]) == (1, 3.0)
    assert g["mean_completion_length"] == pytest.approx(16.5)
    assert g["final_reward_mean"] == pytest.approx((0.7 + 0.25) / 2)
    assert g["train_runtime_s_mean"] == pytest.approx(15.0)
    assert g["egsw/ess"] is None  # GRPO logs no weights

    e = egsw["summary"]
    assert (e["runs"], e["runs_ok"]) == (3, 2)  # the crashed seed is counted, not aggregated
    assert e["final_accuracy_mean"] == pytest.approx(0.8)
    assert e["final_accuracy_std"] == pytest.approx(0.1414213562)
    assert (e["steps_to_threshold_reached"], e["steps_to_threshold_mean"]) == (2, 2.0)
    assert e["mean_completion_length"] == pytest.approx(9.0)
    assert e["egsw/ess"] == pytest.approx(0.9) and e["egsw/weight_max"] == pytest.approx(3.0)
    assert result["failures"] == [
        {"group": "egsw", "seed": 2, "status": "failed", "dir": str(fabricated / "egsw/seed2"), "error": "boom"}
    ]


def test_markdown_table_rows(fabricated):
    """The compare table: one row per method, in order, with the formatted numbers above."""
    result = compare_stats.aggregate(fabricated, ["grpo", "egsw"], threshold=0.5, window=2)
    lines = compare_report.compare_table(result, 0.5).splitlines()
    assert lines[0].startswith("| method | runs ok | final accuracy (mean ± std) | min – max |")
    assert "steps to reward ≥ 0.5" in lines[0]
    assert (
        lines[2]
        == "| grpo | 2/2 | 0.400 ± 0.141 | 0.300 – 0.500 | 0.100 | 3.0 (1/2) | 16.5 | 0.475 | 0.500 | n/a | 15 |"
    )
    assert (
        lines[3]
        == "| egsw | 2/3 | 0.800 ± 0.141 | 0.700 – 0.900 | 0.100 | 2.0 (2/2) | 9.0 | 0.825 | 0.500 | n/a | 35 |"
    )
    assert len(lines) == 4
    assert "egsw seed 2: failed" in compare_report.failures_text(result)


def test_curves_mean_and_band(fabricated):
    """A curve is the mean over the ok runs of the smoothed metric, with their min and max."""
    loaded = compare_stats.aggregate(fabricated, ["grpo"], threshold=0.5, window=1)["groups"]["grpo"]["_loaded"]
    steps, mean, low, high = compare_stats.curve(loaded, "completions/mean_length", window=1, band="minmax")
    assert steps == [1, 2, 3, 4]
    assert mean == [15.0, 16.0, 17.0, 18.0] and low == [10, 12, 14, 16] and high == [20, 20, 20, 20]
    assert compare_stats.curve(loaded, "egsw/ess", window=1) is None


def test_sweep_report_and_heatmap(tmp_path):
    """The sweep table parses (alpha, P) from the run folders and gives each cell's interval over its seeds; the
    heatmap leaves unrun cells blank."""
    weights = {"egsw/ess": 0.8, "egsw/weight_min": 0.1}
    fake_run(tmp_path / "a0.3_p1/seed0", [0.5], [8], 0.6, extra=weights)
    fake_run(tmp_path / "a0.3_p1/seed1", [0.5], [8], 0.8, extra=weights)
    fake_run(tmp_path / "a0.8_p1.8/seed0", [0.5], [8], 0.4, extra={"egsw/ess": 0.7, "egsw/weight_min": 0.2})
    result = compare_stats.aggregate(tmp_path, ["a0.3_p1", "a0.8_p1.8"], threshold=0.5, window=1)
    rows = compare_report.sweep_table(result).splitlines()
    # two seeds 0.6, 0.8: mean 0.7, t interval 0.7 +- 12.706205 * 0.1414 / sqrt(2) = 0.7 +- 1.271
    assert rows[2].startswith("| 0.3 | 1 | 2/2 | 0.700 [-0.571, 1.971] (n=2) |"), rows[2]
    assert rows[2].endswith("| 0.100 | n/a | n/a | 0.800 |"), rows[2]
    assert rows[3].startswith("| 0.8 | 1.8 | 1/1 | 0.400 (n=1) |"), rows[3]
    assert compare_report.parse_setting(compare_report.setting_label(0.1, 2.0)) == (0.1, 2.0)
    config = {"command": "test", "seeds": [0, 1], "overrides": [], "recipe_sha256": {}, "machine": "test",
              "wall_s": 0.0, "jobs": 1, "alphas": compare.SWEEP_ALPHAS, "temperatures": compare.SWEEP_TEMPERATURES,
              "grid_seeds": [0], "more_seeds": [1], "best": [0.3, 1.0], "best_reason": "test",
              "paper_settings": compare.PAPER_SETTINGS}  # fmt: skip
    compare_report.write_sweep_report(result, config, tmp_path)
    assert (tmp_path / "sweep_heatmap.png").read_bytes()[:8] == PNG_MAGIC
    text = (tmp_path / "sweep.md").read_text()
    assert "| 0.8 | 1.8 |" in text and "Stage 2: seeds 1 at the best cell (a0.3_p1: test)" in text
    assert "settings a0.3_p1, a0.8_p1.8." in text


def test_sweep_grid_and_best_setting(tmp_path):
    """The default grid is the paper's 4 x 3; the best cell is the highest mean final accuracy, ties broken by
    reward AUC and then by closeness to the paper's (0.3, 1.0); with no finished run, the paper's setting."""
    assert (compare.SWEEP_ALPHAS, compare.SWEEP_TEMPERATURES) == ([0.1, 0.3, 0.5, 0.8], [0.5, 1.0, 1.8])
    assert compare.PAPER_SETTINGS == [(0.3, 1.0), (0.8, 1.8)]
    grid = [(0.1, 0.5), (0.5, 1.0), (0.3, 1.8), (0.8, 1.8)]
    fake_run(tmp_path / "a0.1_p0.5/seed0", [0.1], [8], 0.5)
    fake_run(tmp_path / "a0.5_p1/seed0", [0.1], [8], 0.7)  # ties with a0.3_p1.8 on accuracy and reward AUC;
    fake_run(tmp_path / "a0.3_p1.8/seed0", [0.1], [8], 0.7)  # distance to (0.3, 1.0): 0.2 vs 0.8
    fake_run(tmp_path / "a0.8_p1.8/seed0", [0.1], [8], 0.9, returncode=1)  # failed: not a candidate
    labels = [compare_report.setting_label(*c) for c in grid]
    result = compare_stats.aggregate(tmp_path, labels, threshold=0.5, window=1, reward_key="reward")
    best, reason = compare.best_setting(result, grid)
    assert best == (0.5, 1.0) and reason == "best mean final accuracy of the grid (0.700)"
    fake_run(tmp_path / "a0.3_p1.8/seed1", [0.9], [8], 0.7)  # a higher reward AUC now wins the tie
    result = compare_stats.aggregate(tmp_path, labels, threshold=0.5, window=1, reward_key="reward")
    assert compare.best_setting(result, grid)[0] == (0.3, 1.8)
    assert compare.best_setting({"groups": {}}, grid)[0] == (0.3, 1.0)


def test_sweep_rejects_bad_grid_seeds(capsys):
    with pytest.raises(SystemExit) as exc:
        compare.main(["sweep", "--seeds", "0", "1", "--grid_seeds", "3"])
    assert exc.value.code == 2
    assert capsys.readouterr().err == ("error: --grid_seeds must be between 1 and the number of --seeds (2), not 3.\n")


def test_runs_with_different_recipes_are_flagged(tmp_path):
    """Two seeds of one method that ran different recipe files (edited mid-comparison) raise a warning."""
    for seed, digest in ((0, "aaaaaaaaaaaa"), (1, "bbbbbbbbbbbb")):
        fake_run(tmp_path / f"egsw/seed{seed}", [0.5], [8], 0.5)
        record = {"returncode": 0, "recipe_sha256": digest}
        (tmp_path / f"egsw/seed{seed}" / compare_runs.RUN_RECORD).write_text(json.dumps(record))
    result = compare_stats.aggregate(tmp_path, ["egsw"], threshold=0.5, window=1)
    assert result["warnings"] == ["egsw: its runs used different recipes (sha256[:12] aaaaaaaaaaaa, bbbbbbbbbbbb)"]
    assert "Warning: egsw: its runs used different recipes" in compare_report.failures_text(result)


def test_recipes_are_snapshotted(tmp_path):
    """Runs read a copy of each recipe taken at launch, so edits to recipes/ during a comparison cannot leak in."""
    snapshots = compare_runs.snapshot_recipes({"grpo": str(ROOT / compare.METHOD_RECIPES["grpo"])}, tmp_path)
    assert snapshots == {"grpo": str(tmp_path / "recipes/grpo.yaml")}
    assert Path(snapshots["grpo"]).read_bytes() == (ROOT / compare.METHOD_RECIPES["grpo"]).read_bytes()


def test_tiny_recipes_compare_like_for_like():
    """The four tiny recipes differ only in method keys (EGSW / clip keys, output_dir)."""
    assert compare_runs.recipe_drift({m: str(ROOT / p) for m, p in compare.METHOD_RECIPES.items()}) == []


def test_recipe_drift_is_reported(tmp_path):
    """A shared key that differs is named; method keys may differ."""
    (tmp_path / "a.yaml").write_text("learning_rate: 1.0e-4\nuse_egsw: true\noutput_dir: a\n")
    (tmp_path / "b.yaml").write_text("learning_rate: 2.0e-4\nuse_egsw: false\nentropy_clip: clip_b\noutput_dir: b\n")
    drift = compare_runs.recipe_drift({"a": str(tmp_path / "a.yaml"), "b": str(tmp_path / "b.yaml")})
    assert drift == ["learning_rate: 0.0001 in a vs 0.0002 in b"]


def run_compare(*args, timeout=900):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, "-m", "open_r1_egsw.experiments.compare.cli", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=timeout, cwd=ROOT)  # fmt: skip


def tiny_overrides(assets):
    """grpo.py flags pointing the recipes at the session's tiny assets (random base model: fast, not accurate)."""
    return ["--model_name_or_path", assets.base_model, "--dataset_name", assets.data, "--max_completion_length", "8",
            "--per_device_train_batch_size", "16"]  # fmt: skip


def test_bad_input_is_one_error_line_and_exit_code_2(tmp_path):
    """A report of a folder that does not exist: `error: ...` naming it, exit code 2, nothing written."""
    proc = run_compare("report", "--output_dir", tmp_path / "absent")
    assert proc.returncode == 2 and proc.stderr == f"error: no such directory: {tmp_path / 'absent'}\n"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_quick_compare_end_to_end(tiny_assets, tmp_path):
    """--quick with seed 0: the 10 methods x 2 steps run as grpo.py subprocesses (two at a time, compare's default);
    table, intervals, paired differences to GRPO, JSON and PNGs come out (one seed keeps it short: the intervals
    themselves are tested on fabricated runs in test_compare_stats.py)."""
    out = tmp_path / "compare"
    proc = run_compare("--quick", "--task", "tiny", "--seeds", "0", "--jobs", "2", "--output_dir", out, "--",
                       *tiny_overrides(tiny_assets))  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = (out / "compare.md").read_text()
    saved = json.loads((out / "compare.json").read_text())
    for method in compare.METHODS:
        assert f"| {method} | 1/1 |" in table
        (record,) = saved["groups"][method]["runs"]
        assert record["steps"] == 2 and record["final_accuracy"] is not None and record["reward_auc"] is not None
        assert (out / "recipes" / f"{method}.yaml").exists()  # the recipes as they were at launch
    assert list(saved["paired"]) == compare.METHODS[1:]
    for method, metrics in saved["paired"].items():
        assert metrics["final_accuracy"]["seeds"] == [0] and metrics["final_accuracy"]["half_width"] is None, method
    assert "No failed runs." in table and "Warning" not in table and "| method - grpo |" in table
    ess = saved["groups"]["egsw"]["summary"]["egsw/ess"]
    assert 0 < ess <= 1 and saved["groups"]["top_entropy"]["summary"]["egsw/ess"] is None
    for name in ("reward", "entropy", "completion_length", "ess", "curves"):
        data = (out / f"{name}.png").read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 2000, name


@pytest.mark.slow
def test_crashed_run_keeps_finished_results(tiny_assets, tmp_path):
    """A method whose runs crash is reported; the finished method's numbers are still aggregated (exit code 1)."""
    out = tmp_path / "compare"
    # egsw_controller needs use_egsw: the GRPO run fails at config validation, the EGSW run trains
    proc = run_compare("--quick", "--task", "tiny", "--methods", "grpo", "egsw", "--seeds", "0", "--max_steps", "1",
                       "--output_dir", out,
                       "--", *tiny_overrides(tiny_assets), "--egsw_controller", "entropy")  # fmt: skip
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = (out / "compare.md").read_text()
    assert "| egsw | 1/1 |" in table and "| grpo | 0/1 | n/a |" in table
    assert "grpo seed 0: failed" in table and "egsw_controller needs use_egsw" in table


@pytest.mark.parametrize(
    "task, builder", [("demo", "experiments.demo_task"), ("tiny", "experiments.embedded"), ("bogus", None)]
)
def test_make_compare_and_sweep_pick_the_task(task, builder):
    """`make compare` / `make sweep` warm-start the task they compare (the demo task unless EXP_TASK=tiny); another
    EXP_TASK is one error line naming it, and so is TASK (evaluation's benchmark list) on the command line (make -n:
    the commands are printed, not run). The demo case passes no EXP_TASK."""
    task_args = [] if task == "demo" else [f"EXP_TASK={task}"]
    commands = {
        "compare": "-m open_r1_egsw.experiments.compare --task",
        "sweep": "-m open_r1_egsw.experiments.compare sweep --task",
    }
    for target, command in commands.items():
        proc = subprocess.run(["make", "-n", target, *task_args], cwd=ROOT, capture_output=True, text=True)
        if builder is None:
            assert proc.returncode != 0 and "EXP_TASK must be demo or tiny, not 'bogus'" in proc.stderr, proc.stderr
            continue
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.splitlines()
        assert any(line.endswith(f"-m open_r1_egsw.{builder} --warm-start") for line in lines), lines
        assert any(f"{command} {task}" in line for line in lines), lines
        proc = subprocess.run(["make", "-n", target, f"TASK={task}"], cwd=ROOT, capture_output=True, text=True)
        assert proc.returncode == 2 and "open_r1_egsw.experiments.compare" not in proc.stdout, proc.stdout
        assert (
            "TASK names evaluation's benchmarks; compare and sweep take EXP_TASK=demo or EXP_TASK=tiny" in proc.stderr
        )


def test_power_reads_the_spread_of_a_saved_comparison(fabricated, tmp_path):
    """`compare power`: the detectable difference for the planned seeds from a compare.json's paired stds
    (egsw - grpo accuracy differences .2 .6: s = 0.282843; 10 seeds: 3.145561 * s / sqrt(10) = 0.281346); a missing
    file is one error line, exit code 2."""
    config = {"command": "test", "seeds": [0, 1], "overrides": [], "recipe_sha256": {}, "machine": "test",
              "wall_s": 0.0, "jobs": 1, "reward_key": "reward"}  # fmt: skip
    result = compare_stats.aggregate(fabricated, ["grpo", "egsw"], threshold=0.5, window=2)
    compare_report.write_compare_report(result, config, fabricated, window=2, threshold=0.5)
    proc = run_compare("power", "--from", fabricated / "compare.json", "--seeds", "10")
    assert proc.returncode == 0, proc.stderr
    row = next(line for line in proc.stdout.splitlines() if line.startswith("| egsw |"))
    assert row.startswith("| egsw | 0.2813 (std 0.2828, n=2) |")
    missing = run_compare("power", "--from", tmp_path / "absent.json")
    assert missing.returncode == 2 and missing.stderr == f"error: no such file: {tmp_path / 'absent.json'}\n"
