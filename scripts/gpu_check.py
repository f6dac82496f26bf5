"""The GPU check's driver (scripts/gpu_check.sh builds its environment and runs it): the tiny EGSW, Clip_V and GRPO
recipes in bf16 on CUDA, with TRL's transformers generation and TRL's Triton fused LM head.

    python scripts/gpu_check.py --assets DIR --out DIR [--steps 20] [--recipes egsw clip_v grpo]

For every recipe, from the embedded SFT warm start (DIR/sft-model, DIR/data: `python -m open_r1_egsw.experiments.embedded
--root DIR --warm-start`):
- the run is what it claims: a CUDA device, bf16 autocast (a linear layer's output is bf16), TRL's Triton path for
  its fused head (`trl.kernels.chunked_logprob._use_triton`), statistics from the "generation" source;
- every generation batch: each token statistic the method uses (H; log p_k and S; E_p[S]), as taken from the
  generation logits, equals the "extra-forward" source (TRL's fused-head policy forward, token_stats.py) on the same
  batch within the bf16 tolerance (rtol = atol = 1.6e-2: two bf16 ulps at 1, the two paths round differently);
- the loss: every logged loss is finite, and the loss falls: the policy-gradient surrogate -mean(A log p) of the
  first generation batch with non-zero advantages, evaluated in fp32 before and after the optimizer step that trains
  on exactly that batch (one step per generation, no accumulation, no warm-up; fp32 weights, bf16 compute), is lower
  after it. (GRPO's own logged loss is not a falling quantity: with normalised advantages it is about 0 at every
  on-policy step.) tests/test_gpu_check.py runs all of this on the CPU, the CUDA and Triton checks faked.
Writes OUT/gpu_check.json and prints one line per recipe; exits 1 (with the failing check) on the first failure,
2 without a CUDA device.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {name: ROOT / "recipes" / "tiny" / name / "config.yaml" for name in ("egsw", "clip_v", "grpo")}
BF16_TOLERANCE = {"rtol": 1.6e-2, "atol": 1.6e-2}
IN_SURROGATE = []  # non-empty while the fp32 surrogate runs (the bf16 check ignores those forwards)


class CheckFailed(AssertionError):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def surrogate(trainer, batch: dict) -> float:
    """-mean over completion tokens of A * log p, the loss whose gradient GRPO follows, in fp32 (the model class's plain
    forward, outside the bf16 autocast accelerate wraps the instance's forward in, at the trainer's temperature), so
    that one optimizer step at the recipe's learning rate is not lost in bf16 rounding."""
    model = trainer._causal_lm()
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    attention = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    width = batch["completion_ids"].size(1)
    IN_SURROGATE.append(True)
    with torch.no_grad(), torch.autocast(ids.device.type, enabled=False):
        logits = type(model).forward(model, input_ids=ids, attention_mask=attention).logits[:, -width - 1 : -1]
        logps = torch.log_softmax(logits.float() / trainer.temperature, dim=-1)
        logps = logps.gather(-1, batch["completion_ids"][..., None])[..., 0]
    IN_SURROGATE.clear()
    advantages = batch["advantages"].float()
    advantages = advantages[:, None] if advantages.dim() == 1 else advantages
    mask = batch["completion_mask"].float()
    return (-(advantages * logps * mask).sum() / mask.sum()).item()


def run_recipe(name: str, assets: Path, out: Path, steps: int) -> dict:
    import trl.kernels.chunked_logprob as chunked
    from transformers import TrainerCallback
    from trl import ModelConfig

    from open_r1_egsw.cli.recipe_args import parse_recipe_args
    from open_r1_egsw.grpo import build_trainer
    from open_r1_egsw.training.configs import EGSWConfig, GRPOScriptArguments

    argv = [
        "--config",
        str(RECIPES[name]),
        "--model_name_or_path",
        str(assets / "sft-model"),
        "--dataset_name",
        str(assets / "data"),
        "--output_dir",
        str(out / name),
        "--overwrite_output_dir",
        "true",
        "--bf16",
        "true",
        "--use_vllm",
        "false",
        "--max_steps",
        str(steps),
        "--logging_steps",
        "1",
        "--warmup_steps",
        "0",
        "--eval_accuracy_samples",
        "0",
        "--save_strategy",
        "no",
        "--report_to",
        "none",
    ]
    script_args, training_args, model_args = parse_recipe_args((GRPOScriptArguments, EGSWConfig, ModelConfig), argv)
    trainer, _ = build_trainer(script_args, training_args, model_args)
    device = trainer.accelerator.device
    check(device.type == "cuda", f"{name}: the trainer runs on {device}, not CUDA")
    check(chunked._use_triton(device), f"{name}: TRL's Triton fused head is not in use (is triton installed?)")
    check(trainer.args.bf16, f"{name}: bf16 is off")
    check(
        trainer.args.gradient_accumulation_steps == 1 and trainer.args.steps_per_generation == 1,
        f"{name}: the loss check needs one optimizer step per generation batch",
    )
    need = trainer._needed_stats()
    check(not need or trainer._stats_source() == "generation", f"{name}: source {trainer._stats_source()}")

    layer_dtypes = []  # a linear layer's output: bf16 under the bf16 autocast accelerate wraps the forward in
    linear = trainer._causal_lm().model.layers[0].mlp.down_proj
    linear.register_forward_hook(
        lambda module, args, output: None if IN_SURROGATE else layer_dtypes.append(output.dtype)
    )

    compared, worst, first = 0, {}, {}
    sampling_stats = trainer._sampling_token_stats  # called once per generation batch, for the methods that use any

    def stats_and_compare(batch, mode):
        nonlocal compared
        stats = sampling_stats(batch, mode)
        if mode == "train":
            trainer._captured_stats = trainer._recorder = None  # nothing captured: token_stats' extra-forward source
            reference = sampling_stats(batch, mode)
            mask = batch["completion_mask"].bool()
            check(
                set(stats) == set(need) == set(reference), f"{name}: statistics {sorted(stats)}, need {sorted(need)}"
            )
            for key in sorted(need):
                got, want = stats[key][mask].float(), reference[key][mask].float()
                worst[key] = max(worst.get(key, 0.0), (got - want).abs().max().item())
                try:
                    torch.testing.assert_close(got, want, **BF16_TOLERANCE)
                except AssertionError as err:
                    detail = " ".join(str(err).split())
                    raise CheckFailed(f"{name}: {key} from generation != extra-forward: {detail}") from None
            compared += 1
        return stats

    trainer._sampling_token_stats = stats_and_compare
    generate_and_score = trainer._generate_and_score_completions

    def generate_and_compare(inputs):
        batch = generate_and_score(inputs)  # the advantages in it are the ones the loss uses (EGSW: per token)
        # the first batch with a gradient (not every group's rewards equal)
        if not first and batch["advantages"].abs().sum() > 0:
            first["batch"] = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
            first["before"] = surrogate(trainer, first["batch"])
            first["step"] = trainer.state.global_step + 1  # the optimizer step that trains on it
        return batch

    trainer._generate_and_score_completions = generate_and_compare

    class AfterFirstStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if first and state.global_step == first["step"]:
                first["after"] = surrogate(trainer, first["batch"])

    trainer.add_callback(AfterFirstStep())
    started = time.monotonic()
    trainer.train()
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    check(layer_dtypes and all(d == torch.bfloat16 for d in layer_dtypes), f"{name}: forward not in bf16")
    check(len(losses) == steps and all(math.isfinite(x) for x in losses), f"{name}: losses {losses}")
    check("after" in first, f"{name}: every generation batch had equal rewards in each group: no gradient")
    check(
        first["after"] < first["before"],
        f"{name}: the first batch's surrogate did not fall ({first['before']:.6g} -> {first['after']:.6g})",
    )
    check(not need or compared == steps, f"{name}: {compared} of {steps} generation batches compared")
    return {
        "recipe": name,
        "steps": steps,
        "seconds": round(time.monotonic() - started, 1),
        "statistics": sorted(need),
        "batches_compared": compared,
        "max_abs_diff": worst,
        "surrogate_before": first["before"],
        "surrogate_after": first["after"],
        "losses": losses,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--assets", type=Path, required=True, help="embedded assets with the SFT warm start")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--recipes", nargs="+", choices=sorted(RECIPES), default=["egsw", "clip_v", "grpo"])
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(
            f"gpu_check: error: no CUDA device (torch {torch.__version__}, CUDA {torch.version.cuda})", file=sys.stderr
        )
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        for name in args.recipes:
            results.append(run_recipe(name, args.assets, args.out, args.steps))
            r = results[-1]
            print(
                f"gpu_check: {name}: PASS ({r['steps']} steps, {r['seconds']} s; {r['batches_compared']} batches "
                f"compared, max |diff| {r['max_abs_diff']}; surrogate {r['surrogate_before']:.5g} -> "
                f"{r['surrogate_after']:.5g})",
                flush=True,
            )
    except CheckFailed as err:
        print(f"gpu_check: FAIL: {err}", file=sys.stderr)
        return 1
    finally:
        (args.out / "gpu_check.json").write_text(
            json.dumps(
                {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "results": results}, indent=1
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
