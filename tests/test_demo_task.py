"""The demo task's rows: deterministic, three solution paths of different lengths, gold and demonstrations checked by
the real rewards, only the direct path slipping; its cache kept apart from the default task's."""

import json
import re
from collections import Counter

import pytest
from transformers import AutoTokenizer

from open_r1_egsw.demo_task import DemoSpec, build_demo_assets, completion_text, make_demo_rows, solution_text
from open_r1_egsw.embedded import EmbeddedSpec, has_carry
from open_r1_egsw.rewards import get_reward_funcs

SPEC = DemoSpec(num_train=600, num_test=50)
NUMBER = r"(\d+)"


def test_rows_are_deterministic_and_differ_from_the_default_task():
    assert make_demo_rows(SPEC) == make_demo_rows(DemoSpec(num_train=600, num_test=50))
    assert make_demo_rows(SPEC) != make_demo_rows(DemoSpec(num_train=600, num_test=50, seed=1))
    assert SPEC.fingerprint() != EmbeddedSpec(num_train=600, num_test=50).fingerprint()


def test_each_path_is_valid_arithmetic():
    """direct `a + b = s`; split `a + b = T + U = s`; chunks `a + b = a + c + d = (a + c) + d = s` with c + d = b."""
    rows = make_demo_rows(SPEC)["train"]
    seen = Counter()
    for row in rows:
        a, b = map(int, re.match(r"What is (\d+) \+ (\d+)\?", row["problem"]).groups())
        think = row["completion_reference"].split("\n")[1]
        numbers = list(map(int, re.findall(NUMBER, think)))
        assert sorted(numbers[:2]) == sorted([a, b])  # either order
        x, y = numbers[:2]
        seen[row["path"]] += 1
        if row["path"] == "direct":
            assert len(numbers) == 3 and numbers[2] in (a + b, a + b - 10)
            assert numbers[2] == a + b or has_carry(a, b)  # only a carry can be dropped
        elif row["path"] == "split":
            assert numbers[2:] == [10 * (x // 10 + y // 10), x % 10 + y % 10, a + b]
        else:
            first, rest = numbers[3], numbers[4]
            assert numbers[2] == x and first + rest == y and first >= 1 and rest >= 1
            assert numbers[5:] == [x + first, rest, a + b]
    assert set(seen) == {"direct", "split", "chunks"} and min(seen.values()) > len(rows) / 4


def test_gold_is_right_and_only_direct_demonstrations_slip():
    """The real accuracy reward: every gold scores 1 against itself; wrong demonstrations are direct ones with a
    carry, at about the `direct_slip` rate (0.6: binomial, n ~ 100 carries on the direct path)."""
    rows = make_demo_rows(SPEC)["train"]
    accuracy, fmt = get_reward_funcs(["accuracy", "format"])
    golds = [r["solution"] for r in rows]
    demos = [r["completion_reference"] for r in rows]
    right = accuracy(demos, solution=golds)
    assert fmt(demos) == [1.0] * len(rows)
    assert accuracy([f"\\boxed{{{r['answer']}}}" for r in rows], solution=golds) == [1.0] * len(rows)
    wrong = [r for r, score in zip(rows, right) if score == 0.0]
    assert all(r["path"] == "direct" and r["level"] == "Level 2" for r in wrong)
    direct_carry = [r for r in rows if r["path"] == "direct" and r["level"] == "Level 2"]
    assert 0.45 < len(wrong) / len(direct_carry) < 0.75
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

    with pytest.raises(ValueError, match="only the direct path slips"):
        solution_text(37, 48, "split", random.Random(0), slip=True)
    with pytest.raises(ValueError, match="unknown path"):
        solution_text(37, 48, "guess", random.Random(0))
    assert completion_text("1 + 2 = 3", 3) == "<think>\n1 + 2 = 3\n</think>\n<answer>\n\\boxed{3}\n</answer>"


@pytest.mark.slow
def test_demo_warm_start_has_the_properties_egsw_needs(tmp_path):
    """The real warm start (recipes/demo/sft/config.yaml from a fresh build), measured on one sampled batch of 32
    prompts x 8 completions by task_stats.measure (the numbers of the README): entropy >= 0.3 nats a token, length
    CV within groups >= 0.2, completions of a group differing in entropy, and EGSW weights at alpha 0.8 away from
    alpha 0 under the recipes' log_vocab normalization. SFT of 900 steps: 3.3 CPU-minutes (8 min wall on the busy
    2-core machine, above the ~3 minutes a slow test should take)."""
    from open_r1_egsw.demo_task import DEMO_SFT_RECIPE
    from open_r1_egsw.embedded import warm_start
    from open_r1_egsw.task_stats import measure

    paths = build_demo_assets(tmp_path / "demo")
    model = warm_start(paths, DEMO_SFT_RECIPE)
    result = measure(model, paths.data, prompts=32, num_generations=8, max_new_tokens=64, eval_rows=200, seed=0)
    assert result["mean_token_entropy_nats"] >= 0.3, result
    assert result["length_cv_within_group"] >= 0.2, result
    assert result["entropy_spread_within_group_nats"] >= 0.02, result
    assert result["weights_log_vocab"]["mean_abs_diff_alpha0.8_vs_0"] >= 0.01, result
    weights, raw = result["weights_log_vocab"], result["weights_nats"]
    assert weights["ess_alpha0.8"] < weights["ess_alpha0"]  # entropy differences sharpen the weights
    assert raw["mean_abs_diff_alpha0.8_vs_0"] > 3 * weights["mean_abs_diff_alpha0.8_vs_0"]  # log |V| = 5.8 here
    # Not asserted: "room to learn". This warm start is right on only ~9% of the test rows greedily (it does not yet
    # copy the operands reliably), so GRPO's end point was not measured (README, Results).
    assert result["greedy_accuracy"] <= 0.9, result
