"""parallel.check_tensor_parallel: the tensor-parallel sizes vLLM can run, from a model's config.json."""

import json

import pytest

from open_r1_egsw.errors import ConfigError
from open_r1_egsw.training.parallel import check_tensor_parallel, tensor_parallel_sizes

# Qwen2.5-7B's sizes, from its config.json on the hub (Qwen2.5-Math-7B has the same)
QWEN25_7B = {
    "model_type": "qwen2",
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "hidden_size": 3584,
    "intermediate_size": 18944,
}


@pytest.fixture
def qwen_dir(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(QWEN25_7B))
    return tmp_path


@pytest.mark.parametrize("tp", [1, 2, 4])
def test_qwen25_7b_sizes_accepted(qwen_dir, tp):
    for source in (qwen_dir, qwen_dir / "config.json", str(qwen_dir), QWEN25_7B):
        assert check_tensor_parallel(source, tp, gpus=8) is None


@pytest.mark.parametrize("tp", [3, 7, 8, 14, 28])
def test_qwen25_7b_sizes_refused(qwen_dir, tp):
    with pytest.raises(ConfigError) as err:
        check_tensor_parallel(qwen_dir, tp, gpus=28, flag="--vllm-tp")
    message = str(err.value)
    assert "\n" not in message
    assert message == (
        f"--vllm-tp {tp} does not fit the model (num_attention_heads 28, num_key_value_heads 4, intermediate_size "
        f"18944 in {qwen_dir / 'config.json'}): use 1, 2, 4"
    )


def test_allowed_sizes_follow_vllm_rule():
    """Heads split evenly; KV heads split evenly or replicated (tp a multiple of them); the MLP split evenly."""
    assert tensor_parallel_sizes(28, 4, 18944) == [1, 2, 4]
    assert tensor_parallel_sizes(28, 4) == [1, 2, 4, 28]  # 28: KV heads replicated 7 times; the MLP refuses it
    assert tensor_parallel_sizes(16, 2) == [1, 2, 4, 8, 16]  # KV heads replicated for 4, 8, 16
    assert tensor_parallel_sizes(16, 2, 8960) == [1, 2, 4, 8, 16]
    assert tensor_parallel_sizes(12, 12, 4864) == [1, 2, 4]  # 4864 = 2^8 * 19: 3, 6, 12 refused


def test_more_gpus_than_available_refused_first(qwen_dir):
    with pytest.raises(ConfigError, match=r"^--parallel tensor 4 needs 4 GPUs, 2 available$"):
        check_tensor_parallel(qwen_dir, 4, gpus=2, flag="--parallel tensor")
    with pytest.raises(ConfigError, match=r"use 1, 2$"):  # the sizes offered fit the GPUs
        check_tensor_parallel(qwen_dir, 3, gpus=3)


def test_kv_heads_default_to_heads_and_text_config_is_read(tmp_path):
    check_tensor_parallel({"num_attention_heads": 8}, 8)
    with pytest.raises(ConfigError, match=r"\(num_attention_heads 8, num_key_value_heads 8 in the model config\)"):
        check_tensor_parallel({"num_attention_heads": 8}, 3)
    with pytest.raises(ConfigError, match="num_attention_heads 28, num_key_value_heads 4, intermediate_size 18944"):
        check_tensor_parallel({"model_type": "x", "text_config": QWEN25_7B}, 8)


def test_bad_inputs_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"^model config not found: \./no-such-model$"):
        check_tensor_parallel("./no-such-model", 2)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="config.json is not valid JSON"):
        check_tensor_parallel(tmp_path, 2)
    with pytest.raises(ConfigError, match=r"^tensor parallel size must be a positive integer, got 0$"):
        check_tensor_parallel(QWEN25_7B, 0)
