"""Benchmark: EGSW's overhead over plain GRPO (step time and peak memory), GRPO and EGSW alternated in one run.

    make bench                                   # the tiny recipes on CPU
    python scripts/bench_egsw.py --steps 30 --repeats 3 --grpo RECIPE --egsw RECIPE [--extra "--key value"]

Step time: one process builds both trainers from their recipes and alternates them step by step on the same
generation batches (GRPO, EGSW, GRPO, EGSW, ...), so load on the machine hits both alike; a step is generation +
scoring (+ EGSW's entropy pass, gather and weights) + loss + backward. The reported ratio is the median of the
per-step ratios EGSW/GRPO after `--warmup` steps. Both run at learning rate 0: they keep sampling from the same
policy and generate the same lengths, so the ratio measures EGSW's own cost, not a difference in what was learned.
Three settings are timed. "aligned" is the tiny recipes as they are: transformers generation, no old-logps forward
in TRL, so EGSW takes the entropies from the logits `generate` already computes (a forward hook) and adds no
forward pass. "trl-forward" adds `--steps_per_generation 2`, under which TRL itself runs its no-grad old-logps
forward (as it always does with vLLM's importance-sampling correction, the cluster setting): EGSW reuses that
forward's entropies and adds only the gather and the weights. "extra-forward" is "aligned" with the generation
hook switched off, which is what EGSW pays where neither source exists (vLLM without IS correction, continuous
batching, tools): one extra no-grad policy forward per generation batch.
Peak memory: each recipe runs `--steps` steps in its own `grpo.py` process, alternating, `--repeats` times; the
peak RSS of each process comes from `os.wait4`; median over repeats. The target is <= 1.03 for both ratios.
"""

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def run_once(recipe: str, steps: int, out_dir: Path, extra: list[str]) -> tuple[list[float], float]:
    """Run grpo.py for `steps` steps; return (step times in s, peak RSS in MiB)."""
    cmd = [
        sys.executable, str(ROOT / "src/open_r1_egsw/grpo.py"), "--config", recipe, "--max_steps", str(steps),
        "--learning_rate", "0.0", "--logging_steps", "1", "--eval_accuracy_samples", "0", "--save_strategy", "no",
        "--output_dir", str(out_dir), "--overwrite_output_dir", "true", "--report_to", "none", "--disable_tqdm", "true",
        *extra,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out_dir.mkdir(parents=True, exist_ok=True)
    log = out_dir / "stderr.log"
    with open(log, "w") as stderr:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        _, status, rusage = os.wait4(proc.pid, 0)  # reaps the child and returns its own resource usage
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"benchmark run failed ({recipe}):\n{log.read_text()[-2000:]}")
    records = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    times = [r["step_time"] for r in records if "step_time" in r]
    return times, rusage.ru_maxrss / 1024  # ru_maxrss is in KiB on Linux


def time_alternating(
    grpo_recipe: str, egsw_recipe: str, steps: int, warmup: int, extra: list[str], generation_hook: bool = True
) -> dict:
    """Per-step wall times of the two trainers, alternated on the same generation batches."""
    import torch
    from trl import ModelConfig

    from open_r1_egsw.configs import EGSWConfig, GRPOScriptArguments
    from open_r1_egsw.grpo import build_trainer
    from open_r1_egsw.utils import parse_recipe_args

    trainers = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, recipe in (("grpo", grpo_recipe), ("egsw", egsw_recipe)):
            argv = ["--config", recipe, "--learning_rate", "0.0", "--output_dir", f"{tmp}/{name}", "--report_to",
                    "none", *extra]  # fmt: skip
            trainers[name], _ = build_trainer(*parse_recipe_args((GRPOScriptArguments, EGSWConfig, ModelConfig), argv))
        if not generation_hook:  # what EGSW pays without the generation logits: one extra no-grad forward
            trainers["egsw"]._entropies_from_generation = lambda: False
    batches = iter(trainers["grpo"].get_train_dataloader())
    times = {"grpo": [], "egsw": []}
    for _ in range(steps + warmup):
        inputs = next(batches)
        for name, trainer in trainers.items():
            trainer.model.train()
            trainer.current_gradient_accumulation_steps = 1
            torch.manual_seed(0)  # same sampling randomness for both
            start = time.perf_counter()
            batch = trainer._generate_and_score_completions(inputs)
            trainer.compute_loss(trainer.model, batch).backward()
            times[name].append(time.perf_counter() - start)
            trainer.model.zero_grad(set_to_none=True)
    return {name: values[warmup:] for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grpo", default="recipes/tiny/grpo/config.yaml")
    parser.add_argument("--egsw", default="recipes/tiny/egsw/config.yaml")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--memory-steps", type=int, default=10, help="steps of each peak-memory process")
    parser.add_argument("--warmup", type=int, default=3, help="steps dropped at the start of every run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--extra", default="", help="extra grpo.py flags for both runs, e.g. '--use_cpu true'")
    args = parser.parse_args()
    extra = shlex.split(args.extra)

    settings = {"aligned": ([], True), "trl-forward": (["--steps_per_generation", "2"], True),
                "extra-forward": ([], False)}  # fmt: skip
    timings = {}
    for setting, (flags, hook) in settings.items():
        times = time_alternating(args.grpo, args.egsw, args.steps, args.warmup, extra + flags, generation_hook=hook)
        ratios = [e / g for e, g in zip(times["egsw"], times["grpo"])]
        timings[setting] = ({name: statistics.median(v) for name, v in times.items()}, statistics.median(ratios))
        print(f"timed {setting}: ratio {timings[setting][1]:.3f}", flush=True)
    peaks = {"grpo": [], "egsw": []}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for name in ("grpo", "egsw"):
                _, peak = run_once(getattr(args, name), args.memory_steps, Path(tmp) / f"{name}{repeat}", extra)
                peaks[name].append(peak)
                print(f"memory repeat {repeat} {name}: peak RSS {peak:.0f} MiB", flush=True)

    peak = {name: statistics.median(values) for name, values in peaks.items()}
    print(f"\n{args.steps} alternated steps after {args.warmup} warm-up steps per setting; {args.repeats} memory runs")
    print("setting        GRPO step (s)  EGSW step (s)  step-time ratio EGSW/GRPO (median of per-step ratios)")
    for setting, (step, ratio) in timings.items():
        print(f"{setting:13}  {step['grpo']:13.4f}  {step['egsw']:13.4f}  {ratio:.3f}")
    print(f"\npeak RSS (MiB): GRPO {peak['grpo']:.0f}, EGSW {peak['egsw']:.0f}")
    print(f"peak-memory ratio EGSW/GRPO: {peak['egsw'] / peak['grpo']:.3f}")


if __name__ == "__main__":
    main()
