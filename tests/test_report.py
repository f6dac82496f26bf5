"""report.py: the table, JSON and chart built from fabricated evaluation results directories."""

import json

from open_r1_egsw.evaluation.settings import BENCHMARK, EMBEDDED, QWEN, QWEN_INSTRUCTION
from open_r1_egsw.experiments import report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def fake_result(results, model, task, pass1, stderr, answer_rate, rows, k, max_samples=None, **generation):
    """A `<model>/<task>.json` as `python -m open_r1_egsw.evaluation.run` writes it."""
    record = {
        "task": task,
        "model": f"/models/{model}",
        "model_name": model,
        "checkpoint": f"ckpt-{model}",
        "backend": "accelerate",
        "metrics": {"pass@1": pass1, "pass@1_stderr": stderr, "answer_rate": answer_rate, "answer_rate_stderr": 0.0},
        "num_rows": rows,
        "max_samples": max_samples,
        "generation": {"temperature": 0.6, "top_p": 0.95, "max_new_tokens": 3072, "max_model_length": 4096,
                       "num_samples": k, "seed": 1234, "prompt_template": "lighteval", "system_prompt": None,
                       "instruction": None, **generation},
    }  # fmt: skip
    path = results / model / f"{task.replace(':', '_')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))


def fabricate(results):
    """Two models; egsw has two tasks (one partial), grpo has three; plus files the report must ignore."""
    fake_result(results, "qwen-egsw", "math_500", 0.75, 0.02, 1.0, 500, 4)
    fake_result(results, "qwen-egsw", "gpqa:diamond", 0.3333333, 0.0335, 0.9, 198, 4, max_samples=198)
    fake_result(results, "qwen-grpo", "aime24", 0.1, 0.05, 0.5, 30, 8, max_new_tokens=2048, prompt_template="problem",
                instruction=QWEN_INSTRUCTION)  # fmt: skip
    fake_result(results, "qwen-grpo", "math_500", 0.7, 0.0205, 0.98, 500, 4)
    fake_result(results, "qwen-grpo", "aime25", 0.0, 0.0, 0.25, 30, 8)
    (results / "qwen-grpo" / "run.json").write_text(json.dumps({"model": "x", "tasks": {}}))
    (results / "qwen-grpo" / "details").mkdir()
    (results / "qwen-grpo" / "details" / "math_500.json").write_text("{}")
    (results / "report.json").write_text(json.dumps({"rows": []}))  # an earlier report


HEADER = (
    "| model | task | pass@1 | stderr | answer rate | rows | k | prompt | temperature | top_p | max new tokens "
    "| max model length | backend | checkpoint |"
)
EXPECTED_ROWS = [
    "| qwen-egsw | math_500 | 0.7500 | 0.0200 | 1.0000 | 500 | 4 | lighteval | 0.6 | 0.95 | 3072 | 4096 | accelerate "
    "| ckpt-qwen-egsw |",
    "| qwen-egsw | gpqa:diamond (partial) | 0.3333 | 0.0335 | 0.9000 | 198 | 4 | lighteval | 0.6 | 0.95 | 3072 | 4096 "
    "| accelerate | ckpt-qwen-egsw |",
    "| qwen-grpo | math_500 | 0.7000 | 0.0205 | 0.9800 | 500 | 4 | lighteval | 0.6 | 0.95 | 3072 | 4096 | accelerate "
    "| ckpt-qwen-grpo |",
    "| qwen-grpo | aime24 | 0.1000 | 0.0500 | 0.5000 | 30 | 8 | qwen | 0.6 | 0.95 | 2048 | 4096 | accelerate "
    "| ckpt-qwen-grpo |",
    "| qwen-grpo | aime25 | 0.0000 | 0.0000 | 0.2500 | 30 | 8 | lighteval | 0.6 | 0.95 | 3072 | 4096 | accelerate "
    "| ckpt-qwen-grpo |",
]
EXPECTED_PIVOT = [
    "| model | math_500 | aime24 | aime25 | gpqa:diamond |",
    "|---|---|---|---|---|",
    "| qwen-egsw | 0.7500 | - | - | 0.3333 |",
    "| qwen-grpo | 0.7000 | 0.1000 | 0.0000 | - |",
]


def test_report_rows_exact(tmp_path):
    """Rows sorted by model then benchmark order; numbers, sample counts and settings exactly as in the files."""
    fabricate(tmp_path)
    paths = report.write_report(tmp_path)
    lines = paths["md"].read_text().splitlines()
    assert lines[0] == HEADER
    assert lines[2:7] == EXPECTED_ROWS
    assert lines[7] == ""
    assert lines[-4:] == EXPECTED_PIVOT

    table = json.loads(paths["json"].read_text())
    assert [(r["model"], r["task"], r["pass@1"], r["rows"], r["k"], r["max_new_tokens"]) for r in table["rows"]] == [
        ("qwen-egsw", "math_500", 0.75, 500, 4, 3072),
        ("qwen-egsw", "gpqa:diamond", 0.3333333, 198, 4, 3072),
        ("qwen-grpo", "math_500", 0.7, 500, 4, 3072),
        ("qwen-grpo", "aime24", 0.1, 30, 8, 2048),
        ("qwen-grpo", "aime25", 0.0, 30, 8, 3072),
    ]
    assert table["pivot"] == {
        "qwen-egsw": {"math_500": 0.75, "gpqa:diamond": 0.3333333},
        "qwen-grpo": {"math_500": 0.7, "aime24": 0.1, "aime25": 0.0},
    }
    assert paths["png"].read_bytes()[:8] == PNG_MAGIC


def test_report_cli(tmp_path, capsys):
    fabricate(tmp_path / "results")
    assert report.main(["--results-dir", str(tmp_path / "results"), "--output-dir", str(tmp_path / "out")]) == 0
    assert EXPECTED_ROWS[0] in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.json", "report.md", "report.png"]


def test_report_without_results_fails_clearly(tmp_path, capsys):
    assert report.main(["--results-dir", str(tmp_path)]) == 1
    assert "no evaluation results" in capsys.readouterr().err


def test_prompt_label_names_each_profile():
    """The report's prompt column, from the settings each profile writes into the results files."""
    assert report.QWEN_INSTRUCTION == QWEN_INSTRUCTION
    labels = [report.prompt_label(p.to_dict()) for p in (BENCHMARK, QWEN, EMBEDDED)]
    assert labels == ["lighteval", "qwen", "problem + system prompt"]
    assert report.prompt_label({**BENCHMARK.to_dict(), "prompt_template": "problem", "instruction": "Go."}) == (
        "problem + instruction"
    )
    assert report.prompt_label({"temperature": 0.6}) is None  # a results file written before the prompt fields
