"""N processes compute what 1 process computes, for every method, on the same global generation batch.

tests/scripts/rank_truth.py runs a fixed 12-row batch (groups of 4; the middle group spans both ranks; ragged
completions, so the ranks pad to different widths) through EGSWTrainer once in 1 process and once split over 2 gloo
processes, each process with a PYTHONHASHSEED of its own (so string sets iterate in different orders: asserted).
Only TRL's generation and scoring is replaced (a sampled batch cannot be the same in 1 and 2 processes); the token
statistics, the gather, the weights, the masks, the loss and the backward are the product's.

Tolerance: the two runs do the same float32 arithmetic on differently shaped batches (6 rows against 12: the forward's
matrix products may block differently) and sum the loss in a different order (per rank, then averaged), so values
agree to about 1e-7 relative, not bit for bit: compared with rtol 1e-5, atol 1e-6. A statistic taken from the wrong
tensor (the bug this guards against: one collective per key in set order) is off by O(1). Masks are compared exactly.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_distributed import free_port

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "scripts" / "rank_truth.py"
TOL = {"rtol": 1e-5, "atol": 1e-6}
pytestmark = pytest.mark.slow  # two subprocess runs of 9 trainers each (about a minute)


def run_script(model_dir, out: Path, processes: int) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env.pop("PYTHONHASHSEED", None)
    if processes == 1:
        cmd = [sys.executable, str(SCRIPT), str(model_dir), str(out)]
    else:  # PITFALLS: --multi_gpu with use_cpu, or accelerate silently runs one process
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(ROOT / "recipes/accelerate_configs/ddp_cpu.yaml"), "--multi_gpu", "--num_processes",
               str(processes), "--main_process_port", str(free_port()), str(SCRIPT), str(model_dir), str(out)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.fixture(scope="module")
def records(tiny_assets, tmp_path_factory):
    out = tmp_path_factory.mktemp("rank-truth")
    run_script(tiny_assets.base_model, out, 1)
    run_script(tiny_assets.base_model, out, 2)
    single = torch.load(out / "rank0-of-1.pt")
    ranks = [torch.load(out / f"rank{r}-of-2.pt") for r in range(2)]
    return single, ranks


def test_the_processes_iterate_string_sets_in_different_orders(records):
    single, ranks = records
    assert [r["world_size"] for r in ranks] == [2, 2] and single["world_size"] == 1
    assert ranks[0]["set_order"] != ranks[1]["set_order"]  # the condition that exposed the bug, really present


def joined(ranks, method, key) -> torch.Tensor:
    """The ranks' (rows, local width) tensors stacked in rank order, padded with 0 to the widest."""
    parts = [r[method][key] for r in ranks]
    if parts[0].dim() == 1:
        return torch.cat(parts)
    width = max(p.size(1) for p in parts)
    return torch.cat([torch.nn.functional.pad(p, (0, width - p.size(1))) for p in parts])


METHODS = ["grpo", "egsw_token", "egsw_sequence", "clip_b", "clip_b_grpo_loss", "clip_v", "egsw_clip_b",
           "entropy_dynamics", "controller"]  # fmt: skip


@pytest.mark.parametrize("method", METHODS)
def test_two_processes_equal_one_process(records, method):
    single, ranks = records
    one = single[method]
    width = one["loss_mask"].size(1)
    # per-token advantages (A times the EGSW weights) and the loss mask (valid tokens the clip keeps), row by row
    for key in ("advantages", "loss_mask"):
        expected, got = one[key], joined(ranks, method, key)
        if expected.dim() == 2:
            got = torch.nn.functional.pad(got, (0, width - got.size(1)))
        if key == "loss_mask":
            assert torch.equal(got.long(), expected.long()), (method, key)
        else:
            torch.testing.assert_close(got, expected, **TOL, msg=f"{method}: {key}")
    for r in ranks:
        assert torch.equal(r[method]["num_items"], one["num_items"]), method
    torch.testing.assert_close(ranks[0][method]["loss"], one["loss"], **TOL)
    for r in ranks:
        for name, grad in one["grads"].items():
            torch.testing.assert_close(r[method]["grads"][name], grad, **TOL, msg=f"{method}: grad {name}")
    # every logged egsw/* and entropy_dynamics/* metric, on every rank
    for r in ranks:
        assert r[method]["metrics"].keys() == one["metrics"].keys(), method
        for key, values in one["metrics"].items():
            assert r[method]["metrics"][key] == pytest.approx(values, rel=1e-5, abs=1e-6), (method, key)
        if one["controller"] is not None:  # the adaptive controller's state after its updates
            state, expected = r[method]["controller"], one["controller"]
            assert state.keys() == expected.keys() and state["num_updates"] == expected["num_updates"], method
            assert state["value"] == pytest.approx(expected["value"], rel=1e-6), method


def test_the_comparison_is_not_vacuous(records):
    """Each method really did what it is named for on this batch: weights, dropped tokens, metrics, a moved alpha."""
    single, _ = records
    valid = single["grpo"]["loss_mask"].bool()
    assert single["grpo"]["advantages"].dim() == 1  # plain GRPO: TRL's batch untouched
    for method in ("egsw_token", "egsw_sequence", "egsw_clip_b", "controller"):
        adv = single[method]["advantages"]
        base = single["grpo"]["advantages"].unsqueeze(1).expand_as(adv)
        assert not torch.allclose(adv[valid], base[valid]), method  # non-uniform weights
    for method in ("clip_b", "clip_b_grpo_loss", "clip_v", "egsw_clip_b", "entropy_dynamics"):
        dropped = valid & ~single[method]["loss_mask"].bool()
        assert dropped.any(), method
        assert single[method]["metrics"]["entropy_dynamics/clip_frac"][0] > 0, method
    for key in ("entropy_dynamics/predicted_dH", "entropy_dynamics/measured_dH"):
        assert single["entropy_dynamics"]["metrics"][key], key
    assert (
        single["controller"]["controller"]["value"] != 0.3 and single["controller"]["controller"]["num_updates"] == 2
    )
