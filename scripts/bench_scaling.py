"""Scaling benchmark: how the methods' overhead over GRPO grows with completion length, group size and vocabulary.

    make bench-scaling                     # the default grid below -> docs/bench/scaling.{json,png}
    python scripts/bench_scaling.py --lengths 64 256 1024 --groups 4 8 16 32 --vocabs 342 32768 151936

One axis moves at a time from the base point (completion length 64, group size 8, vocabulary 342; 2 prompts per
batch, so B = 2 x group size). Every point builds a random tiny Qwen2 locally (hidden 64, 2 layers, the embedded
tokenizer; vocabulary 151,936 is Qwen2.5's, ids beyond the tokenizer's decode to nothing) and alternates GRPO with
each method on the same batches at learning rate 0 (scripts/bench_egsw.py's `alternate`: medians of the per-batch
ratios). `min_new_tokens` makes every completion exactly the length asked for. The setting is "aligned" (statistics
from the generation logits; `--setting trl-forward` times TRL's own forward instead).

Peak memory is the per-step peak RSS (high-water mark reset before each step); "extra MiB" is the method's median
peak minus GRPO's. A (B, T, V) fp32 copy would show there: 16 x 64 x 151,936 x 4 bytes is 593 MiB.
"""

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_egsw import alternate, load_average  # noqa: E402

BASE = {"length": 64, "group": 8, "vocab": 342}


def length_reward(completions, **kwargs):
    """A reward that varies across completions, so that advantages are not all zero."""
    return [float(len(c[0]["content"]) % 5) for c in completions]


def build(point: dict, setting: str, tokenizer_dir: Path, data_dir: Path, out_dir: str):
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from open_r1_egsw.experiments.embedded import SYSTEM_PROMPT
    from open_r1_egsw.training.configs import EGSWConfig
    from open_r1_egsw.training.data import load_dataset_any, to_prompt_dataset
    from open_r1_egsw.training.trainer import EGSWTrainer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=point["vocab"],
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = Qwen2ForCausalLM(config)
    dataset = to_prompt_dataset(load_dataset_any(str(data_dir))["train"].select(range(256)), "problem", SYSTEM_PROMPT)
    length, group = point["length"], point["group"]
    args = EGSWConfig(
        output_dir=out_dir,
        per_device_train_batch_size=2 * group,
        num_generations=group,
        max_completion_length=length,
        generation_kwargs={"min_new_tokens": length},
        learning_rate=0.0,
        loss_type="grpo",
        beta=0.0,
        report_to="none",
        bf16=False,
        seed=0,
        disable_tqdm=True,
        steps_per_generation=2 if setting == "trl-forward" else None,
        entropy_clip_max_frac=1e-4,
    )
    return EGSWTrainer(
        model=model, reward_funcs=[length_reward], args=args, train_dataset=dataset, processing_class=tokenizer
    )


def grid(args) -> list[tuple[str, dict]]:
    points = [("length", {**BASE, "length": v}) for v in args.lengths]
    points += [("group", {**BASE, "group": v}) for v in args.groups]
    points += [("vocab", {**BASE, "vocab": v}) for v in args.vocabs]
    return points


def plot(rows: list[dict], methods: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes_names = {"length": "completion length T", "group": "group size G (B = 2G)", "vocab": "vocabulary V"}
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5), sharey="row")
    for col, (axis, label) in enumerate(axes_names.items()):
        for method in methods:
            pts = sorted((r["point"][axis], r) for r in rows if r["axis"] == axis and r["method"] == method)
            xs = [x for x, _ in pts]
            axes[0, col].plot(xs, [r["step_time_ratio"] for _, r in pts], "o-", label=method)
            axes[1, col].plot(xs, [r["peak_memory_ratio"] for _, r in pts], "o-", label=method)
        for row in (0, 1):
            axes[row, col].set_xscale("log", base=2 if axis != "vocab" else 10)
            axes[row, col].axhline(1.0, color="grey", lw=0.8)
            axes[row, col].axhline(1.03, color="grey", lw=0.8, ls="--")
        axes[1, col].set_xlabel(label)
    axes[0, 0].set_ylabel("step-time ratio vs GRPO")
    axes[1, 0].set_ylabel("peak-RSS ratio vs GRPO")
    axes[0, 0].legend()
    load = rows[0]["load_average"] if rows else ""
    fig.suptitle(f"Overhead over GRPO, same run, medians of per-batch ratios (load average {load})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--groups", type=int, nargs="+", default=[4, 8, 16, 32])
    parser.add_argument("--vocabs", type=int, nargs="+", default=[342, 32768, 151936])
    parser.add_argument("--methods", nargs="+", default=["egsw", "clip_v"])
    parser.add_argument("--setting", default="aligned", choices=["aligned", "trl-forward"])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--assets", default=".cache/embedded", help="embedded tokenizer (base-model/) and data/")
    parser.add_argument("--out", default="docs/bench/scaling.json")
    args = parser.parse_args()
    assets = Path(args.assets)
    if not (assets / "base-model" / "tokenizer.json").is_file():
        print(
            f"error: {assets}/base-model/tokenizer.json not found: run `python -m open_r1_egsw.experiments.embedded` first",
            file=sys.stderr,
        )
        raise SystemExit(2)
    command = shlex.join(["python", *sys.argv])
    methods = ["grpo", *args.methods]
    rows = []
    print(
        f"{'axis':7} {'T':>5} {'G':>3} {'V':>7} {'method':8} {'time ratio':>10} {'memory ratio':>12} "
        f"{'extra MiB':>9} {'GRPO step (s)':>13}  load"
    )
    for axis, point in grid(args):
        with tempfile.TemporaryDirectory() as tmp:
            trainer = build(point, args.setting, assets / "base-model", assets / "data", tmp)
            start = time.perf_counter()
            records = alternate(trainer, methods, args.steps, args.warmup)
            del trainer
        load = load_average()
        grpo = records["grpo"]
        for method in args.methods:
            rec = records[method]
            row = {
                "axis": axis,
                "point": point,
                "method": method,
                "setting": args.setting,
                "steps": args.steps,
                "step_time_ratio": round(statistics.median(t / g for t, g in zip(rec["time"], grpo["time"])), 4),
                "peak_memory_ratio": round(statistics.median(p / g for p, g in zip(rec["peak"], grpo["peak"])), 4),
                "extra_peak_mib": round(statistics.median(rec["peak"]) - statistics.median(grpo["peak"]), 1),
                "grpo_step_s": round(statistics.median(grpo["time"]), 4),
                "load_average": load,
                "command": command,
            }
            rows.append(row)
            print(
                f"{axis:7} {point['length']:5} {point['group']:3} {point['vocab']:7} {method:8} "
                f"{row['step_time_ratio']:10.3f} {row['peak_memory_ratio']:12.3f} {row['extra_peak_mib']:9.1f} "
                f"{row['grpo_step_s']:13.3f}  {load}  ({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1) + "\n")
    plot(rows, args.methods, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
