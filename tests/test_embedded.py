"""The embedded default's assets: deterministic data, a tokenizer that survives `from_pretrained`, a reloadable tiny
Qwen2, and a cache that rebuilds only when the spec changes."""

import json
import re
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from open_r1_egsw.experiments.embedded import (
    SYSTEM_PROMPT,
    EmbeddedSpec,
    build_assets,
    build_model,
    build_tokenizer,
    make_rows,
    warm_start,
)
from open_r1_egsw.training.data import conversation_prompt
from open_r1_egsw.training.rewards import get_reward_funcs

# small enough to build in a few seconds; the model sizes are the default ones
SPEC = EmbeddedSpec(num_train=96, num_test=24)
BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


def problem_key(row: dict) -> str:
    return row["problem"]


def chat_text(row: dict) -> list[dict]:
    messages = conversation_prompt(row["problem"], SYSTEM_PROMPT)
    return messages + [{"role": "assistant", "content": row["completion_reference"]}]


@pytest.fixture(scope="session")
def assets(tmp_path_factory):
    return build_assets(tmp_path_factory.mktemp("embedded-assets"), SPEC)


@pytest.fixture(scope="session")
def saved_tokenizer(tmp_path_factory):
    """The tokenizer object as built (and saved), with the directory it was saved to."""
    out = tmp_path_factory.mktemp("embedded-tokenizer")
    return build_tokenizer(SPEC, out), out


# ---------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------


def test_rows_are_deterministic_in_the_seed():
    first, second = make_rows(SPEC), make_rows(EmbeddedSpec(num_train=96, num_test=24))
    assert first == second
    other = make_rows(EmbeddedSpec(seed=1, num_train=96, num_test=24))
    assert [problem_key(r) for r in other["train"]] != [problem_key(r) for r in first["train"]]
    assert [problem_key(r) for r in other["test"]] != [problem_key(r) for r in first["test"]]


@pytest.mark.parametrize("spec", [SPEC, EmbeddedSpec()], ids=["small", "default"])
def test_splits_have_the_requested_sizes_and_are_disjoint(spec):
    rows = make_rows(spec)
    assert len(rows["train"]) == spec.num_train and len(rows["test"]) == spec.num_test
    train = {problem_key(r) for r in rows["train"]}
    test = {problem_key(r) for r in rows["test"]}
    assert len(train) == spec.num_train and len(test) == spec.num_test  # no duplicate inside a split either
    assert not train & test


def test_too_many_rows_is_an_error():
    with pytest.raises(ValueError, match="exceeds"):
        make_rows(EmbeddedSpec(num_train=10**6))


REASONING = re.compile(
    r"<think>\n(\d+) \+ (\d+) = (\d+) \+ (\d+) = (\d+)\n</think>\n<answer>\n\\boxed\{(\d+)\}\n</answer>"
)


def demonstration(row):
    """(a, b, tens, units, final, boxed) of a row's reference completion."""
    return tuple(map(int, REASONING.fullmatch(row["completion_reference"]).groups()))


def test_schema_gold_and_demonstrations():
    """The gold is always a + b; a demonstration adds tens and units right and either combines them right or, on a
    problem with a carry, drops it (final = a + b - 10); its boxed value is its own final line."""
    for split, rows in make_rows(SPEC).items():
        for row in rows:
            assert {"problem", "solution", "answer", "completion_reference", "level", "type"} <= set(row), split
            a, b = map(int, re.fullmatch(r"What is (\d+) \+ (\d+)\?", row["problem"]).groups())
            assert row["answer"] == str(a + b) and BOXED.findall(row["solution"]) == [row["answer"]]
            x, y, tens, units, final, boxed = demonstration(row)
            assert (x, y, tens, units) == (a, b, 10 * (a // 10 + b // 10), a % 10 + b % 10)
            assert row["level"] == ("Level 2" if units >= 10 else "Level 1")
            assert boxed == final and final in ((a + b, a + b - 10) if units >= 10 else (a + b,))


@pytest.mark.parametrize("carry_slip", [0.7, 0.0, 1.0])
def test_demonstrations_drop_the_carry_at_the_specified_rate(carry_slip):
    """Train demonstrations drop the carry on a share `carry_slip` of the problems with one, never elsewhere; test
    demonstrations (not trained on) never do."""
    rows = make_rows(EmbeddedSpec(carry_slip=carry_slip))
    slipped = {split: [demonstration(r)[5] != int(r["answer"]) for r in rows[split] if r["level"] == "Level 2"]
               for split in rows}  # fmt: skip
    assert len(slipped["train"]) > 1000 and not any(slipped["test"])
    assert abs(sum(slipped["train"]) / len(slipped["train"]) - carry_slip) < 0.03
    assert all(demonstration(r)[5] == int(r["answer"]) for r in rows["train"] if r["level"] == "Level 1")


def test_the_rewards_see_the_dropped_carry():
    """The real accuracy reward (math-verify) gives 1.0 to a right demonstration and 0.0 to one that dropped the
    carry, against the row's gold; the format reward gives both 1.0."""
    accuracy, fmt = get_reward_funcs(["accuracy", "format"])
    rows = make_rows(SPEC)["train"] + make_rows(SPEC)["test"]
    completions = [row["completion_reference"] for row in rows]
    right = [float(demonstration(row)[5] == int(row["answer"])) for row in rows]
    assert 0 < sum(right) < len(rows)
    assert accuracy(completions, solution=[row["solution"] for row in rows]) == right
    assert accuracy(completions, answer=[row["answer"] for row in rows]) == right
    assert fmt(completions) == [1.0] * len(rows)


# ---------------------------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------------------------


def test_tokenizer_reloads_as_qwen2_and_round_trips_every_train_row(saved_tokenizer):
    built, out_dir = saved_tokenizer
    loaded = AutoTokenizer.from_pretrained(out_dir)
    assert type(loaded).__name__ == "Qwen2Tokenizer"
    assert loaded.eos_token == "<|im_end|>" and loaded.pad_token == "<|endoftext|>"
    assert len(loaded) == len(built)
    for row in make_rows(SPEC)["train"]:
        text = loaded.apply_chat_template(chat_text(row), tokenize=False)
        ids = loaded(text, add_special_tokens=False)["input_ids"]
        assert ids == built(text, add_special_tokens=False)["input_ids"], text
        assert loaded.decode(ids) == text
        # digits are single tokens (Qwen2's pre-tokeniser), the answer survives decoding on its own
        assert loaded.decode(loaded(row["answer"], add_special_tokens=False)["input_ids"]) == row["answer"]


def test_special_tokens_are_single_ids(saved_tokenizer):
    _, out_dir = saved_tokenizer
    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    for token in ("<|im_start|>", "<|im_end|>", "<|endoftext|>"):
        ids = tokenizer(token, add_special_tokens=False)["input_ids"]
        assert ids == [tokenizer.convert_tokens_to_ids(token)], token


def test_chat_template_renders_system_user_assistant(assets):
    tokenizer = AutoTokenizer.from_pretrained(assets.base_model)
    prompt = conversation_prompt("What is 12 + 34?", SYSTEM_PROMPT)
    rendered = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    assert rendered == (
        f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n"
        "<|im_start|>user\nWhat is 12 + 34?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    without = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=False)
    assert rendered == without + "<|im_start|>assistant\n"
    full = tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": "x"}], tokenize=False)
    assert full == without + "<|im_start|>assistant\nx<|im_end|>\n"


# ---------------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------------


def test_model_reloads_with_the_spec_config_and_seeded_weights(assets, saved_tokenizer, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(assets.base_model)
    model = AutoModelForCausalLM.from_pretrained(assets.base_model)
    config = model.config
    assert config.model_type == "qwen2" and type(model).__name__ == "Qwen2ForCausalLM"
    for name in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                 "num_key_value_heads", "max_position_embeddings"):  # fmt: skip
        assert getattr(config, name) == getattr(SPEC, name), name
    assert config.vocab_size == len(tokenizer) <= SPEC.vocab_size
    assert config.eos_token_id == tokenizer.eos_token_id and config.pad_token_id == tokenizer.pad_token_id
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id

    same, other = tmp_path / "same", tmp_path / "other"
    build_model(SPEC, tokenizer, same)
    build_model(EmbeddedSpec(seed=SPEC.seed + 1, num_train=96, num_test=24), tokenizer, other)
    reference = model.state_dict()
    same_state = AutoModelForCausalLM.from_pretrained(same).state_dict()
    other_state = AutoModelForCausalLM.from_pretrained(other).state_dict()
    assert reference.keys() == same_state.keys()
    assert all(torch.equal(reference[k], same_state[k]) for k in reference)
    assert not all(torch.equal(reference[k], other_state[k]) for k in reference)


def test_model_generates_from_a_chat_prompt(assets):
    tokenizer = AutoTokenizer.from_pretrained(assets.base_model)
    model = AutoModelForCausalLM.from_pretrained(assets.base_model)
    text = tokenizer.apply_chat_template(conversation_prompt("What is 12 + 34?", SYSTEM_PROMPT), tokenize=False,
                                         add_generation_prompt=True)  # fmt: skip
    enc = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**enc, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert out.shape[1] > enc["input_ids"].shape[1]


# ---------------------------------------------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------------------------------------------


def mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()}


def test_cache_is_reused_and_rebuilt_when_the_spec_changes(tmp_path):
    spec = EmbeddedSpec(num_train=32, num_test=8)
    paths = build_assets(tmp_path, spec)
    files = mtimes(tmp_path)
    assert {"manifest.json", "data/train.jsonl", "data/test.jsonl", "base-model/config.json"} <= set(files)
    assert json.loads(paths.manifest.read_text())["fingerprint"] == spec.fingerprint()

    assert build_assets(tmp_path, EmbeddedSpec(num_train=32, num_test=8)) == paths
    assert mtimes(tmp_path) == files  # reused: nothing rewritten

    paths.sft_model.mkdir()
    (paths.sft_model / "warm_start.json").write_text("{}")
    reseeded = EmbeddedSpec(seed=1, num_train=32, num_test=8)
    build_assets(tmp_path, reseeded)
    rebuilt = mtimes(tmp_path)
    assert json.loads(paths.manifest.read_text())["fingerprint"] == reseeded.fingerprint() != spec.fingerprint()
    assert all(rebuilt[name] != files[name] for name in files)
    assert not paths.sft_model.exists()  # a warm start of the old assets is stale
    rows = [json.loads(line) for line in (paths.data / "train.jsonl").read_text().splitlines()]
    assert rows == make_rows(reseeded)["train"]

    build_assets(tmp_path, reseeded, force=True)
    assert all(mtimes(tmp_path)[name] != rebuilt[name] for name in rebuilt)


def test_fingerprint_follows_every_field():
    base = EmbeddedSpec()
    assert base.fingerprint() == EmbeddedSpec().fingerprint()
    assert EmbeddedSpec(seed=1).fingerprint() != base.fingerprint()
    assert EmbeddedSpec(hidden_size=base.hidden_size * 2).fingerprint() != base.fingerprint()
    assert EmbeddedSpec(version=base.version + 1).fingerprint() != base.fingerprint()


# ---------------------------------------------------------------------------------------------------------------
# Slow: the SFT warm start and its cache
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_warm_start_trains_once_and_is_reused(tmp_path):
    paths = build_assets(tmp_path, EmbeddedSpec(num_train=32, num_test=8))
    extra = ["--max_steps", "2", "--per_device_train_batch_size", "4", "--logging_steps", "1"]
    out = warm_start(paths, extra_args=extra)
    assert out == paths.sft_model
    model = AutoModelForCausalLM.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(paths.base_model)
    assert not all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), base.state_dict().values()))
    assert (
        AutoTokenizer.from_pretrained(out).chat_template
        == AutoTokenizer.from_pretrained(paths.base_model).chat_template
    )
    before = mtimes(out)
    assert warm_start(paths, extra_args=extra) == out
    assert mtimes(out) == before  # up to date: not retrained
    warm_start(paths, extra_args=[*extra[:-2], "--logging_steps", "2"])  # other arguments: retrained
    assert mtimes(out)["model.safetensors"] != before["model.safetensors"]
