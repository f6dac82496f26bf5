"""One fixed global generation batch through EGSWTrainer, for every method, in 1 process or split over N (gloo).

    rank_truth.py MODEL_DIR OUT_DIR        # plain python: 1 process; under `accelerate launch`: N processes

Each rank re-executes itself first with PYTHONHASHSEED set to a value of its own (rank 0: 0, rank 1: 1, the
single process: 2), so that string-set iteration order differs between the processes on purpose.

What is replaced, and only that: TRL's generation and reward scoring (`GRPOTrainer._generate_and_score_completions`)
returns this process's rows of a fixed global batch, as TRL would have split it (rows in rank order, completions
padded to this process's own longest). A sampled batch cannot be the same in 1 and in N processes. Everything after
it is the product's: the token statistics (the trainer's own extra no-grad forward of the real tiny model), the
gather, the weights and masks, TRL's `compute_loss` and backward. Gradients are then averaged over the ranks, which
is what DDP does, and one plain SGD step is taken so that `log_entropy_dynamics` measures its entropy change on a
second generation batch.

Writes OUT_DIR/rank{r}.pt: {method: {"advantages", "loss_mask", "num_items", "loss", "grads", "metrics",
"controller"}}, plus "world_size" and "set_order" (the iteration order of the 4-statistic string set here).
"""

import os
import sys

RANK = int(os.environ.get("RANK", "0"))
WORLD = int(os.environ.get("WORLD_SIZE", "1"))
HASH_SEED = str(RANK if WORLD > 1 else 2)
if os.environ.get("PYTHONHASHSEED") != HASH_SEED:  # before anything else: the seed is read at interpreter start
    os.environ["PYTHONHASHSEED"] = HASH_SEED
    os.execv(sys.executable, [sys.executable, *sys.argv])

from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import trl  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from open_r1_egsw.training.configs import EGSWConfig  # noqa: E402
from open_r1_egsw.training.trainer import EGSWTrainer  # noqa: E402

ROWS, GROUP, PROMPT, T = 12, 4, 5, 7  # rows 4-7 (the middle group) sit on both ranks when N = 2
LENGTHS = [7, 2, 3, 1, 5, 7, 1, 4, 2, 3, 6, 1]  # ragged: each rank pads to its own longest (7 and 6)
METHODS = {
    "grpo": {},
    "egsw_token": {"use_egsw": True, "egsw_alpha": 0.8, "egsw_temperature": 0.7},
    "egsw_sequence": {"use_egsw": True, "egsw_alpha": 0.8, "egsw_temperature": 0.7, "egsw_granularity": "sequence"},
    "clip_b": {"entropy_clip": "clip_b", "entropy_clip_mu": 0.5},
    "clip_b_grpo_loss": {"entropy_clip": "clip_b", "entropy_clip_mu": 0.5, "loss_type": "grpo"},
    "clip_v": {"entropy_clip": "clip_v", "entropy_clip_mu": 0.3, "entropy_clip_max_frac": 0.1},
    "egsw_clip_b": {"use_egsw": True, "egsw_alpha": 0.5, "entropy_clip": "clip_b", "entropy_clip_mu": 0.5},
    "entropy_dynamics": {
        "log_entropy_dynamics": True,
        "entropy_clip": "clip_v",
        "entropy_clip_mu": 0.3,
        "entropy_clip_max_frac": 0.1,
    },  # fmt: skip
    "controller": {
        "use_egsw": True,
        "egsw_controller": "entropy",
        "egsw_controller_param": "alpha",
        "egsw_controller_target": 0.9,
        "egsw_controller_lr": 0.5,
    },  # fmt: skip
}
LR = 0.05


def global_batch(vocab: int, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(LENGTHS)
    completion_mask = (torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)).long()
    return {
        "prompt_ids": torch.randint(3, vocab, (ROWS, PROMPT), generator=gen),
        "prompt_mask": torch.ones(ROWS, PROMPT, dtype=torch.long),  # equal prompts: no left padding to differ
        "completion_ids": torch.randint(3, vocab, (ROWS, T), generator=gen) * completion_mask,
        "completion_mask": completion_mask,
        "advantages": torch.randn(ROWS, generator=gen),
    }


def local_rows(batch: dict[str, torch.Tensor], rank: int, world: int) -> dict[str, torch.Tensor]:
    """This process's rows, as TRL hands them over: completions cut to the local longest, the global token count."""
    rows = slice(rank * ROWS // world, (rank + 1) * ROWS // world)
    width = int(batch["completion_mask"][rows].sum(1).max())
    local = {key: value[rows] for key, value in batch.items()}
    local["completion_ids"] = local["completion_ids"][:, :width]
    local["completion_mask"] = local["completion_mask"][:, :width]
    local["num_items_in_batch"] = batch["completion_mask"].sum()
    return local


def build(model_dir: str, out: Path, options: dict) -> EGSWTrainer:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    settings = dict(
        output_dir=str(out / "trainer"), per_device_train_batch_size=ROWS // WORLD, num_generations=GROUP,
        max_completion_length=T, report_to="none", bf16=False, use_cpu=True, learning_rate=LR, seed=0,
    )  # fmt: skip
    settings.update(options)
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": "1 + 1"}]}] * ROWS)
    return EGSWTrainer(model=model, reward_funcs=[lambda completions, **kw: [0.0] * len(completions)],
                       args=EGSWConfig(**settings), train_dataset=dataset, processing_class=tokenizer)  # fmt: skip


def average_over_ranks(trainer, tensor: torch.Tensor) -> torch.Tensor:
    if trainer.accelerator.num_processes == 1:
        return tensor
    tensor = tensor.clone()
    torch.distributed.all_reduce(tensor)  # sum, then / N: DDP's gradient average
    return tensor / trainer.accelerator.num_processes


def run_method(model_dir: str, out: Path, options: dict) -> dict:
    trainer = build(model_dir, out, options)
    rank, world = trainer.accelerator.process_index, trainer.accelerator.num_processes
    vocab = trainer.model.config.vocab_size
    batches = [local_rows(global_batch(vocab, seed), rank, world) for seed in (11, 12)]
    served = iter(batches)
    original = trl.GRPOTrainer._generate_and_score_completions
    trl.GRPOTrainer._generate_and_score_completions = lambda self, inputs: {
        k: v.clone() for k, v in next(served).items()
    }
    try:
        trainer.model.train()
        batch = trainer._generate_and_score_completions([])
        trainer.current_gradient_accumulation_steps = 1
        loss = trainer.compute_loss(trainer.model, batch)
        loss.backward()
        grads = {name: average_over_ranks(trainer, p.grad) for name, p in trainer.model.named_parameters()}
        with torch.no_grad():
            for name, p in trainer.model.named_parameters():
                p -= LR * grads[name]
        trainer._generate_and_score_completions([])  # the second batch: measures the first step's entropy change
    finally:
        trl.GRPOTrainer._generate_and_score_completions = original
    mask = batch["completion_mask"] * batch["tool_mask"] if "tool_mask" in batch else batch["completion_mask"]
    return {
        "advantages": batch["advantages"],
        "loss_mask": mask,
        "num_items": batch["num_items_in_batch"],
        "loss": average_over_ranks(trainer, loss.detach()),
        "grads": grads,
        "metrics": {k: list(v) for k, v in trainer._metrics["train"].items() if k.startswith(("egsw/", "entropy_"))},
        "controller": None if trainer.egsw_controller is None else trainer.egsw_controller.state_dict(),
    }


def main(model_dir: str, out_dir: str) -> None:
    out = Path(out_dir)
    record = {name: run_method(model_dir, out, options) for name, options in METHODS.items()}
    record["world_size"] = WORLD
    record["set_order"] = list({"entropy", "logp", "S", "S_baseline"})
    torch.save(record, out / f"rank{RANK}-of-{WORLD}.pt")


if __name__ == "__main__":
    main(*sys.argv[1:3])
