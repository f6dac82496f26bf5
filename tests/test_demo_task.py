"""The demo task's rows: deterministic, three solution paths of different lengths, gold and demonstrations checked by
the real rewards, only the direct and split paths slipping; its cache kept apart from the default task's."""

import json
import re
from collections import Counter

import pytest
from transformers import AutoTokenizer

from open_r1_egsw.experiments.demo_task import (
    DemoSpec,
    build_demo_assets,
    completion_text,
    make_demo_rows,
    solution_text,
)
from open_r1_egsw.experiments.embedded import EmbeddedSpec, has_carry
from open_r1_egsw.training.rewards import get_reward_funcs

SPEC = DemoSpec(num_train=600, num_test=50)


def test_rows_are_deterministic_and_differ_from_the_default_task():
    assert make_demo_rows(SPEC) == make_demo_rows(DemoSpec(num_train=600, num_test=50))
    assert make_demo_rows(SPEC) != make_demo_rows(DemoSpec(num_train=600, num_test=50, seed=1))
    assert SPEC.fingerprint() != EmbeddedSpec(num_train=600, num_test=50).fingerprint()


def test_each_path_is_valid_arithmetic():
    """direct `a + b = s`; split `a + b = T + U = s`; chunks `a + b = a + c1 + ... + ck = (a + c1) + c2 + ... = ... = s`
    with c1 + ... + ck = b, each part >= 1 and k 2 or 3 (about half each); only direct and split may end 10 short (a
    dropped carry)."""
    rows = make_demo_rows(SPEC)["train"]
    seen = Counter()
    for row in rows:
        a, b = map(int, re.match(r"What is (\d+) \+ (\d+)\?", row["problem"]).groups())
        think = row["completion_reference"].split("\n")[1]
        steps = [list(map(int, step.split(" + "))) for step in think.split(" = ")]
        (x, y), final = steps[0], steps[-1][0]
        assert sorted([x, y]) == sorted([a, b])  # either order
        seen[row["path"]] += 1
        assert final == a + b or (row["path"] in ("direct", "split") and has_carry(a, b) and final == a + b - 10)
        if row["path"] == "direct":
            assert len(steps) == 2
        elif row["path"] == "split":
            assert steps[1] == [10 * (x // 10 + y // 10), x % 10 + y % 10] and len(steps) == 3
        else:
            assert len(steps) - 2 in SPEC.chunk_pieces and final == a + b
            seen[f"pieces {len(steps) - 2}"] += 1
            assert steps[1][0] == x and sum(steps[1][1:]) == y and min(steps[1]) >= 1
            for before, after in zip(steps[1:-1], steps[2:-1]):
                assert after == [before[0] + before[1], *before[2:]]
            assert len(steps[-2]) == 2
    assert set(seen) == {"direct", "split", "chunks", "pieces 2", "pieces 3"} and min(seen.values()) > len(rows) / 8
    assert seen["pieces 2"] + seen["pieces 3"] == seen["chunks"] and abs(seen["pieces 2"] - seen["pieces 3"]) < 50
    assert seen["split"] > 1.5 * seen["direct"] and seen["chunks"] > 1.5 * seen["direct"]  # weights 1 : 2 : 2


def test_gold_is_right_and_only_direct_and_split_demonstrations_slip():
    """The real accuracy reward: every gold scores 1 against itself; wrong demonstrations are direct or split ones
    with a carry, at about their slip rates (0.6 and 0.5: binomial, n ~ 60 and ~120 carries)."""
    rows = make_demo_rows(SPEC)["train"]
    accuracy, fmt = get_reward_funcs(["accuracy", "format"])
    golds = [r["solution"] for r in rows]
    demos = [r["completion_reference"] for r in rows]
    right = accuracy(demos, solution=golds)
    assert fmt(demos) == [1.0] * len(rows)
    assert accuracy([f"\\boxed{{{r['answer']}}}" for r in rows], solution=golds) == [1.0] * len(rows)
    wrong = [r for r, score in zip(rows, right) if score == 0.0]
    assert all(r["path"] in ("direct", "split") and r["level"] == "Level 2" for r in wrong)
    for path, (low, high) in (("direct", (0.4, 0.8)), ("split", (0.35, 0.65))):
        carries = [r for r in rows if r["path"] == path and r["level"] == "Level 2"]
        assert low < sum(r in wrong for r in carries) / len(carries) < high, path
    assert all(r["completion_reference"].count("\\boxed") == 1 for r in rows)


def test_paths_have_different_lengths_in_tokens(tmp_path):
    """Tokenized with the built tokenizer: direct < split < chunks, so a group's lengths can vary."""
    paths = build_demo_assets(tmp_path / "demo", DemoSpec(num_train=300, num_test=20))
    tokenizer = AutoTokenizer.from_pretrained(paths.base_model)
    rows = [json.loads(line) for line in (paths.data / "train.jsonl").read_text().splitlines()]
    lengths = {p: [len(tokenizer(r["completion_reference"])["input_ids"]) for r in rows if r["path"] == p]
               for p in ("direct", "split", "chunks")}  # fmt: skip
    means = {p: sum(v) / len(v) for p, v in lengths.items()}
    assert means["direct"] + 3 < means["split"] < means["chunks"] - 10, means
    assert json.loads(paths.manifest.read_text())["spec"]["task"] == "demo"


def test_solution_text_rejects_bad_paths():
    import random

    with pytest.raises(ValueError, match="only the direct and split paths slip"):
        solution_text(37, 48, "chunks", random.Random(0), slip=True)
    with pytest.raises(ValueError, match="unknown path"):
        solution_text(37, 48, "guess", random.Random(0))
    assert completion_text("1 + 2 = 3", 3) == "<think>\n1 + 2 = 3\n</think>\n<answer>\n\\boxed{3}\n</answer>"


@pytest.mark.slow
def test_demo_warm_start_has_the_properties_egsw_needs(tmp_path):
    """The real warm start (recipes/demo/sft/config.yaml from a fresh build), measured on one sampled batch of 32
    prompts x 8 completions by task_stats.measure (README, "The demo task"; docs/results/demo_task_warm_start.json
    measured 0.316 nats, CV 0.271, spread 0.111, |w(0.8) - w(0)| 0.028, greedy 0.435 and 59% of groups with a reward
    spread on the idle machine; the seed-1 batch 0.313 nats and CV 0.273). Issue 16's targets are >= 0.3 nats and
    CV >= 0.2: the CV is asserted at its target; the entropy 0.01 under it, because 750 SFT steps on another CPU's
    float rounding can move it by about that much. SFT of 750 x 32: 4.4 minutes on the idle 2-core machine."""
    from open_r1_egsw.experiments.demo_task import DEMO_SFT_RECIPE
    from open_r1_egsw.experiments.embedded import warm_start
    from open_r1_egsw.experiments.task_stats import measure

    paths = build_demo_assets(tmp_path / "demo")
    model = warm_start(paths, DEMO_SFT_RECIPE)
    result = measure(model, paths.data, prompts=32, num_generations=8, max_new_tokens=80, eval_rows=200, seed=0)
    assert result["mean_token_entropy_nats"] >= 0.29, result  # the default task's warm start: 0.02
    assert result["length_cv_within_group"] >= 0.2, result  # the default task's: 0 (every completion 36 tokens)
    assert result["entropy_spread_within_group_nats"] >= 0.07, result
    weights, raw = result["weights_log_vocab"], result["weights_nats"]
    assert weights["mean_abs_diff_alpha0.8_vs_0"] >= 0.01, result
    assert raw["mean_abs_diff_alpha0.8_vs_0"] > 3 * weights["mean_abs_diff_alpha0.8_vs_0"]  # log |V| = 5.8 here
    assert raw["ess_alpha0.8"] < raw["ess_alpha0"]  # in raw nats the entropy differences sharpen the weights
    # room to learn: right often enough for GRPO to have signal, far enough from saturation to show a gain
    assert 0.3 <= result["greedy_accuracy"] <= 0.6, result
    assert result["groups_with_reward_variance"] >= 0.4, result


def test_chunks_cut_into_more_pieces_stay_valid():
    """3 pieces (about half of the chunks demonstrations; `chunk_pieces` (2, 3)): two random cuts, each part >= 1,
    added one at a time; with b = 2 the cut is forced."""
    import random

    rng = random.Random(0)
    for _ in range(200):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        think, total = solution_text(a, b, "chunks", rng, pieces=3)
        steps = [list(map(int, step.split(" + "))) for step in think.split(" = ")]
        assert total == a + b and steps[-1] == [a + b] and len(steps) == 5
        assert steps[1][0] == a and sum(steps[1][1:]) == b and len(steps[1]) == 4 and min(steps[1]) >= 1
        assert steps[2] == [a + steps[1][1], *steps[1][2:]] and steps[3] == [steps[2][0] + steps[2][1], steps[2][2]]
    assert solution_text(5, 2, "chunks", rng, pieces=2)[0] == "5 + 2 = 5 + 1 + 1 = 6 + 1 = 7"
