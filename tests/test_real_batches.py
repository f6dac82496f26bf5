"""scripts/real_model_batches.py (real_batches.py) on a tiny random model: the JSON's schema and the invariants its
numbers must satisfy whatever the model; and the committed report's table is what the script renders from its JSON.

The script runs in this process (its `main`), on the session's tiny assets, with the SmolLM2 egsw recipe's settings
and two reward choices written into a copy of the recipe: a test reward that differs between a random model's
completions (`test_real_batches_chars_mod3`, so groups have advantages), and `accuracy` alone, which a random model
never earns (every advantage exactly 0: what EGSW must then leave unchanged).
"""

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from open_r1_egsw.training.rewards import completion_text, register_reward

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes/SmolLM2-135M-Instruct/egsw/config.yaml"
RESULTS = ROOT / "docs/results/real_model"
G, PROMPTS = 4, 4


@register_reward("test_real_batches_chars_mod3")
def chars_mod3(completions, **kwargs):
    return [float(len(completion_text(c)) % 3) for c in completions]


def load_script():
    spec = importlib.util.spec_from_file_location("real_model_batches", ROOT / "scripts/real_model_batches.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SCRIPT = load_script()


def run(tmp_path, assets, rewards: list[str], name: str) -> tuple[dict, str]:
    recipe = yaml.safe_load(RECIPE.read_text())
    recipe.update(reward_funcs=rewards, reward_weights=[1.0] * len(rewards), output_dir=str(tmp_path / "unused"))
    recipe_path = tmp_path / f"{name}.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / f"{name}.json"
    argv = ["--recipe", str(recipe_path), "--model", str(assets.base_model), "--data", str(assets.data), "--prompts",
            str(PROMPTS), "--num_generations", str(G), "--max_new_tokens", "10", "--step_rows", "8", "--out", str(out)]  # fmt: skip
    assert SCRIPT.main(argv) == 0
    return json.loads(out.read_text()), out.with_suffix(".md").read_text()


@pytest.fixture(scope="module")
def varied(tiny_assets, tmp_path_factory):
    return run(tmp_path_factory.mktemp("varied"), tiny_assets, ["test_real_batches_chars_mod3"], "varied")


def check_common(result: dict) -> None:
    assert result["completions"] == PROMPTS * G and result["step_rows"] == 8 and result["seed"] == 0
    assert result["command"].startswith("python scripts/real_model_batches.py --recipe ")
    assert set(result["wall_time_s"]) == {"sampling", "forward", "total"} and result["versions"]["torch"]
    assert all(len(v) == 3 for v in result["load_average_1_5_15"].values())
    assert 1 <= result["length_mean"] <= 10 and 0 <= result["ended_share"] <= 1
    log_v = math.log(result["vocab_size"])
    entropy = result["entropy"]
    assert entropy["mean_normalized"] == pytest.approx(entropy["mean_nats"] / log_v)
    assert 0 < entropy["mean_normalized"] <= 1 and entropy["spread_within_group_nats"] >= 0
    assert set(result["egsw"]) == {f"alpha{a}_P{p}_{n}" for a, p in ((0.3, 1.0), (0.8, 1.8), (0.8, 1.0))
                                   for n in ("log_vocab", "nats")}  # fmt: skip
    for key, v in result["egsw"].items():
        assert 1 / G <= v["ess"] <= 1 and 1 / G <= v["ess_alpha0"] <= 1, key
        assert 0 <= v["mean_abs_diff_vs_alpha0"] <= v["max_abs_diff_vs_alpha0"] <= G, key  # weights in [0, G]
        twin = result["egsw"][key.replace("_nats", "_log_vocab")]
        # the entropy term in nats is log |V| times the normalised one; the advantage term and w(0) do not see H
        assert v["logit_std_entropy_term"] == pytest.approx(
            twin["logit_std_entropy_term"] * (log_v if v["entropy"] == "nats" else 1), rel=1e-4
        )
        assert (v["logit_std_advantage_term"], v["ess_alpha0"], v["mean_abs_w0_minus_1"], v["predicted_dH_alpha0"]) == (
            twin["logit_std_advantage_term"], twin["ess_alpha0"], twin["mean_abs_w0_minus_1"], twin["predicted_dH_alpha0"]
        )  # fmt: skip
    e = result["egsw"]
    assert e["alpha0.8_P1.8_log_vocab"]["logit_std_advantage_term"] == pytest.approx(
        e["alpha0.8_P1.0_log_vocab"]["logit_std_advantage_term"] / 1.8
    )
    clip_v, clip_b = result["clip"]["clip_v"], result["clip"]["clip_b"]
    for c in (clip_b, clip_v):
        assert 0 <= c["per_step"]["dropped_share"] <= 1 and 0 <= c["whole_batch_dropped_share"] <= 1
        assert c["whole_batch_dropped_share"] == pytest.approx(c["whole_batch_dropped"] / result["tokens"])
    # Clip_V drops at most max(floor(1e-4 n), 1) tokens a step (2 steps of 8 completions here), never more than the
    # candidates; Clip_B only negative-advantage tokens
    assert clip_v["per_step"]["dropped"] <= 2 and clip_v["whole_batch_dropped"] <= min(
        clip_v["whole_batch_candidates"], 1
    )
    assert clip_b["whole_batch_dropped_share"] <= result["negative_advantage_token_share"]
    # the first-drop mu agrees with the rules: a candidate exists exactly when the paper's mu is below it
    for c, found in ((clip_b, clip_b["whole_batch_dropped"]), (clip_v, clip_v["whole_batch_candidates"])):
        first = c["mu_to_first_drop"]["whole_batch"]
        assert (found > 0) == (first is not None and first > c["mu"]), (c, found)
    assert result["S"]["min"] <= result["S"]["mean"] and result["S"]["std"] >= 0


def test_json_invariants_with_advantages(varied):
    result, markdown = varied
    check_common(result)
    assert result["groups_with_reward_variance"] > 0 and result["negative_advantage_token_share"] > 0
    for key, v in result["egsw"].items():
        assert v["mean_abs_w0_minus_1"] > 0 and v["logit_std_advantage_term"] > 0, key  # the advantage softmax acts
    assert result["predicted_dH_grpo"] != 0
    assert f"| vocabulary |V| (log |V|) | 342 (5.83) | {result['vocab_size']} " in markdown  # beside the demo table


def test_json_with_zero_advantages_leaves_grpo_unchanged(tiny_assets, tmp_path):
    """A random model never earns the accuracy reward: every advantage is 0. Then w(0) is exactly uniform (ESS 1),
    the entropy term still moves the weights, and yet no method changes the (zero) update: dH 0, nothing clipped."""
    result, _ = run(tmp_path, tiny_assets, ["accuracy"], "zero")
    check_common(result)
    assert result["reward_means"] == {"accuracy": 0.0} and result["groups_with_reward_variance"] == 0
    assert result["negative_advantage_token_share"] == 0 and result["predicted_dH_grpo"] == 0
    for key, v in result["egsw"].items():
        assert (v["mean_abs_w0_minus_1"], v["ess_alpha0"], v["logit_std_advantage_term"]) == (0.0, 1.0, 0.0), key
        assert v["mean_abs_diff_vs_alpha0"] > 0 and v["predicted_dH"] == v["predicted_dH_alpha0"] == 0, key
    for c in result["clip"].values():
        assert c["whole_batch_dropped"] == c["per_step"]["dropped"] == 0


@pytest.mark.parametrize("seed", range(5))
def test_mu_to_first_drop_is_where_each_rule_starts_dropping(seed):
    """On random statistics: just below the first-drop mu the project's own rule (shape_advantages, uncapped) drops
    at least one token, just above it none."""
    from open_r1_egsw.experiments.real_batches import _mu_to_first_drop
    from open_r1_egsw.methods.shaping import ShapingSettings, shape_advantages

    gen = torch.Generator().manual_seed(seed)
    n, t = 8, 12
    mask = (torch.rand(n, t, generator=gen) < 0.8).long()
    mask[:, 0] = 1
    stats = {"S": torch.randn(n, t, generator=gen), "S_baseline": torch.randn(n, t, generator=gen) ** 3,
             "entropy": torch.rand(n, t, generator=gen)}  # fmt: skip
    advantages = torch.randn(n, generator=gen)
    for clip in ("clip_b", "clip_v"):
        first = _mu_to_first_drop(clip, stats, advantages, mask)
        assert first is not None and first > 0, clip
        for mu, dropping in ((first * (1 - 1e-6), True), (first * (1 + 1e-6), False)):
            settings = ShapingSettings(num_generations=4, entropy_clip=clip, clip_mu=mu, clip_max_frac=1.0)
            count = shape_advantages(advantages, mask, stats, settings).metrics["entropy_dynamics/clip_count"]
            assert (count > 0) == dropping, (clip, mu, count)
    assert _mu_to_first_drop("clip_v", stats, advantages.abs(), mask) is None  # no negative advantage: no candidate


def test_bad_input_is_one_error_line(tmp_path, capsys):
    assert SCRIPT.main(["--recipe", str(tmp_path / "absent.yaml")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'absent.yaml'}: no such file (--recipe)\n"
    assert SCRIPT.main(["--model", str(tmp_path / "no-model"), "--out", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {tmp_path / 'no-model'} does not exist")


def test_committed_table_is_rendered_from_the_committed_json():
    real = json.loads((RESULTS / "real_model_batches.json").read_text())
    demo = json.loads((ROOT / "docs/results/demo_task_warm_start.json").read_text())
    assert (RESULTS / "real_model_batches.md").read_text() == SCRIPT.render_markdown(real, demo)
    assert real["prompts"] >= 16 and real["num_generations"] >= 8 and real["temperature"] == 1.0
    assert real["vocab_size"] == 49_152 and real["model"] == ".cache/smollm2-135m-instruct/model"


def test_results_readme_quotes_the_committed_json():
    """Every number docs/results/real_model/README.md reads off the measurement is the committed JSON's, as rounded."""
    real = json.loads((RESULTS / "real_model_batches.json").read_text())
    readme = " ".join((RESULTS / "README.md").read_text().split())
    e, clip = real["egsw"], real["clip"]
    low, high, at1 = e["alpha0.3_P1.0_log_vocab"], e["alpha0.8_P1.8_log_vocab"], e["alpha0.8_P1.0_nats"]

    def g(x):
        return f"{x:.3g}"

    quoted = [
        f"It took {round(real['wall_time_s']['total'])} s on {real['torch_threads']} torch thread",
        f"Mean token entropy: {g(real['entropy']['mean_nats'])} nats ({g(real['entropy']['mean_normalized'])} of log",
        f"within a group: {g(real['entropy']['spread_within_group_nats'])} nats",
        f"moves the weights by {g(at1['mean_abs_diff_vs_alpha0'])} on average, and the ESS falls from "
        f"{g(at1['ess_alpha0'])} to {g(at1['ess'])}",
        f"alpha H / P is {g(low['logit_std_entropy_term'])}, against {g(low['logit_std_advantage_term'])} for A / P",
        f"differ from alpha = 0 by {g(low['mean_abs_diff_vs_alpha0'])} on average. The ESS is {g(low['ess'])}",
        f"step is {g(low['predicted_dH'])} nats a token, against {g(low['predicted_dH_alpha0'])} with alpha = 0",
        f"the two spreads are {g(high['logit_std_entropy_term'])} and {g(high['logit_std_advantage_term'])}, and the "
        f"ESS is {g(high['ess'])} against {g(high['ess_alpha0'])}",
        f"the predicted change is {g(real['predicted_dH_grpo'])} nats a token",
        f"That gives {g(low['predicted_dH_alpha0'])} at P 1, about "
        f"{round(low['predicted_dH_alpha0'] / real['predicted_dH_grpo'])} times",
        f"Over {real['tokens']:,} tokens",
        f"mu <= {g(clip['clip_b']['mu_to_first_drop']['per_step_max'])} (Clip_B) and mu <= "
        f"{g(clip['clip_v']['mu_to_first_drop']['per_step_max'])} (Clip_V)",
        f"a mean of {g(real['S']['mean'])} and a standard deviation of {g(real['S']['std'])}, so m - 2.5 s = "
        f"{real['S']['mean'] - 2.5 * real['S']['std']:.2f}",
        f"{round(100 * real['reward_means']['accuracy'])}% of samples are right",
    ]
    assert [text for text in quoted if text not in readme] == []
    assert clip["clip_b"]["whole_batch_dropped"] == clip["clip_v"]["whole_batch_dropped"] == 0
    assert clip["clip_b"]["per_step"]["dropped"] == clip["clip_v"]["per_step"]["dropped"] == 0
    assert real["S"]["mean"] - 2.5 * real["S"]["std"] < -1 / math.e  # below every possible S: Clip_B cannot bind
