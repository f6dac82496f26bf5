"""Evaluation prompts against lighteval 0.13's own, the answer formats they ask for, the embedded default's data, and
the tensor-parallel check before anything loads."""

import json
import sys
from pathlib import Path

import pytest

from open_r1_egsw.evaluation import run
from open_r1_egsw.evaluation.benchmarks import gpqa_option_order
from open_r1_egsw.evaluation.local_data import make_rows, write_embedded_default_data
from open_r1_egsw.evaluation.scoring import score_math
from open_r1_egsw.evaluation.settings import BENCHMARK, EMBEDDED, QWEN, QWEN_INSTRUCTION, GenerationSettings

ROWS = {
    "math_500": {"problem": "What is $\\frac{3}{6}$ in lowest terms?", "answer": "\\frac{1}{2}",
                 "solution": "$\\frac{3}{6} = \\boxed{\\frac{1}{2}}$"},
    "aime24": {"problem": "Find the remainder when $2^{10}$ is divided by $1000$.", "answer": "024", "id": 60},
    "aime25": {"problem": "Find $x$ if $x + 1 = 8$.", "answer": "7"},
    "gpqa:diamond": {"Question": "  Which gas makes up most of Earth's atmosphere?\n", "Correct Answer": "Nitrogen ",
                     "Incorrect Answer 1": "Oxygen", "Incorrect Answer 2": " Argon", "Incorrect Answer 3": "Helium"},
}  # fmt: skip


@pytest.fixture(scope="module")
def tasks():
    from open_r1_egsw.evaluation import tasks

    return tasks


def lighteval_doc(task: str, row: dict, monkeypatch):
    """The Doc lighteval 0.13's own task builds from `row`, by its installed prompt function. GPQA: lighteval draws the
    gold position with the global `random`; it is fixed here to the position ours shows (gpqa_option_order)."""
    if task == "math_500":
        from lighteval.tasks.tasks.math_500 import math_500_prompt as prompt
    elif task.startswith("aime"):
        from lighteval.tasks.tasks.aime import aime_prompt as prompt
    else:
        from lighteval.tasks.tasks import gpqa

        gold = gpqa_option_order(row["Question"].strip()).index(0)
        monkeypatch.setattr(gpqa.random, "randint", lambda a, b: gold)
        prompt = gpqa.gpqa_instruct_prompt
    return prompt(row, task)


@pytest.mark.parametrize("task", list(ROWS))
def test_default_prompt_is_lightevals_own(tasks, task, monkeypatch, tmp_path):
    """The benchmark profile's prompt (the default with --model) is, text for text, what lighteval 0.13's built-in task
    renders for the same row: the Doc's query and instruction, and the final prompt with and without a chat template
    (lighteval's PromptManager, the tiny Qwen tokenizer's template)."""
    from lighteval.tasks.prompt_manager import PromptManager
    from transformers import AutoTokenizer

    from open_r1_egsw.experiments.embedded import EmbeddedSpec, build_assets

    ours = tasks.build_task_config(task, BENCHMARK).prompt_function({**ROWS[task], "__index": 0}, task)
    theirs = lighteval_doc(task, ROWS[task], monkeypatch)
    assert (ours.query, ours.instruction) == (theirs.query, theirs.instruction)
    gold = "ABCD"[theirs.gold_index] if task == "gpqa:diamond" else ROWS[task]["answer"]
    assert ours.get_golds() == [gold]
    paths = build_assets(tmp_path, EmbeddedSpec(num_train=8, num_test=2, vocab_size=300))
    tokenizer = AutoTokenizer.from_pretrained(paths.base_model)
    for chat in (True, False):
        manager = PromptManager(chat, tokenizer, None)
        assert manager.prepare_prompt(ours) == manager.prepare_prompt(theirs)
    if task == "gpqa:diamond":  # lighteval's own chat rendering glues its instruction to the question
        assert "before answering.Which gas" in PromptManager(True, tokenizer, None).prepare_prompt(theirs)
        shown = ["Oxygen", "Argon", "Helium"]
        shown.insert(theirs.gold_index, "Nitrogen")
        assert ours.specific["options"] == shown


def test_profiles_name_their_prompts(tasks):
    """benchmark: lighteval's prompts; qwen: the problem and Qwen's instruction; embedded: the training prompt,
    scored as the trainer scores (greedy, its 64 tokens)."""
    row = {**ROWS["math_500"], "__index": 0}
    assert (BENCHMARK.prompt_template, BENCHMARK.instruction, BENCHMARK.system_prompt) == ("lighteval", None, None)
    assert (
        tasks.build_task_config("math_500", BENCHMARK)
        .prompt_function(row, "m")
        .query.startswith("Solve the following problem. The final line of your response MUST be")
    )
    assert tasks.build_task_config("math_500", QWEN).prompt_function(row, "m").query == (
        "What is $\\frac{3}{6}$ in lowest terms?\n\nPlease reason step by step, and put your final answer within "
        "\\boxed{}."
    )
    assert QWEN.to_dict() == {**BENCHMARK.to_dict(), "prompt_template": "problem", "instruction": QWEN_INSTRUCTION}
    assert (EMBEDDED.temperature, EMBEDDED.num_samples, EMBEDDED.max_new_tokens) == (0.0, 1, 64)
    assert EMBEDDED.prompt_template == "problem" and EMBEDDED.instruction is None
    with pytest.raises(ValueError, match="instruction applies to prompt_template 'problem' only"):
        GenerationSettings(instruction="Go.")
    # --instruction / --no-instruction switch the benchmark profile to the problem template
    spec = run.ModelSpec(source="m", local=True, name="m", fingerprint="0", max_positions=4096)
    args = run.parse_args(["--model", "m", "--instruction", "Go."])
    assert run._effective_settings(args, spec).prompt_template == "problem"
    assert run._effective_settings(run.parse_args(["--model", "m", "--profile", "qwen"]), spec) == QWEN


@pytest.mark.parametrize(
    "gold, completion, expected",
    [
        ("\\frac{1}{2}", "3/6 reduces.\nANSWER: $\\frac{1}{2}$", (1.0, True)),  # lighteval's MATH-500 answer line
        ("\\frac{1}{2}", "**ANSWER:** 0.5.", (1.0, True)),
        ("85", "ANSWER: 84", (0.0, True)),
        ("85", "ANSWER: 85\nWait, no.\nANSWER: 86", (0.0, True)),  # the last line wins
        ("85", "the answer is 85", (0.0, False)),  # no stated answer
        ("24", "Therefore, the final answer is: $\\boxed{24}$. I hope it is correct", (1.0, True)),  # lighteval's AIME
        ("85", "\\boxed{85}\nANSWER: 3", (1.0, True)),  # a box wins
    ],
)
def test_math_answer_formats_of_both_templates(gold, completion, expected):
    assert score_math(gold, completion) == expected


def test_embedded_default_math_500_is_the_embedded_test_split(tmp_path):
    """`make evaluate`'s MATH-500 holds the rows `make train`'s greedy accuracy is measured on; the others are
    synthetic; no split: synthetic MATH-500 rows."""
    split = tmp_path / "test.jsonl"
    split.write_text(json.dumps({"problem": "What is 10 + 11?", "solution": "\\boxed{21}", "answer": "21"}) + "\n")
    root = write_embedded_default_data(tmp_path / "data", split)
    assert (root / "math_500" / "test.jsonl").read_text() == split.read_text()
    aime = [json.loads(line) for line in (root / "aime24" / "train.jsonl").read_text().splitlines()]
    assert aime == make_rows("aime24")
    root = write_embedded_default_data(tmp_path / "other", tmp_path / "missing.jsonl")
    rows = [json.loads(line) for line in (root / "math_500" / "test.jsonl").read_text().splitlines()]
    assert rows == make_rows("math_500")


@pytest.mark.parametrize(
    "flags, gpus, message",
    [
        (["--parallel", "tensor", "--num-gpus", "8"], "8", "error: --parallel tensor --num-gpus 8 does not fit the "
         "model (num_attention_heads 28, num_key_value_heads 4, intermediate_size 18944 in {cfg}): use 1, 2, 4"),
        (["--parallel", "tensor", "--num-gpus", "4"], "2", "error: --num-gpus 4: only 2 GPU(s) available"),
        (["--num-gpus", "0"], "8", "error: --num-gpus must be >= 1, got 0"),
    ],
)  # fmt: skip
def test_vllm_parallel_sizes_checked_before_anything_loads(tmp_path, capsys, monkeypatch, flags, gpus, message):
    """A local config.json with Qwen2.5-7B's sizes; the allocation's GPUs come from SLURM_GPUS_ON_NODE (no GPU
    here): a size vLLM cannot run is one error line, exit 2, before lighteval or vLLM is imported."""
    model = tmp_path / "Qwen2.5-7B"
    model.mkdir()
    config = {"num_attention_heads": 28, "num_key_value_heads": 4, "intermediate_size": 18944,
              "max_position_embeddings": 4096}  # fmt: skip
    (model / "config.json").write_text(json.dumps(config))
    monkeypatch.setenv("SLURM_GPUS_ON_NODE", gpus)
    monkeypatch.delitem(sys.modules, "vllm", raising=False)
    code = run.main(["--model", str(model), "--backend", "vllm", "--data-dir", str(tmp_path), *flags])
    assert code == 2
    assert capsys.readouterr().err.splitlines() == [message.format(cfg=model / "config.json")]
    assert "vllm" not in sys.modules and not (Path("results") / "Qwen2.5-7B").exists()
