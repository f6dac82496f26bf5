"""grpo.py's own `cli_main`, run under a launcher, then a per-rank record: world size, rank and the parameters.

Usage (in place of src/open_r1_egsw/grpo.py in a command rendered by `python -m open_r1_egsw.cli.launch train`):
    distributed_grpo.py OUT_DIR --config RECIPE [grpo.py flags...]
Writes OUT_DIR/rank{r}.pt = {"world_size", "process_index", "params": {name: tensor}, "batches": [...]}. Under
DeepSpeed ZeRO-3 the parameters are sharded, so each rank gathers the full tensors first. "batches" holds, for every
training generation batch, this rank's own rows before any gather: advantages, loss mask and token statistics, as the
trainer's `_sampling_token_stats` received and returned them (so a test can recompute what one process computes on
the whole batch).
"""

import sys
from pathlib import Path

import torch

from open_r1_egsw import grpo

captured = {}
_build_trainer = grpo.build_trainer


def build_and_keep(*args, **kwargs):
    trainer, test_split = _build_trainer(*args, **kwargs)
    captured["trainer"] = trainer
    captured["batches"] = []
    sampling_token_stats = trainer._sampling_token_stats

    def record(batch, mode):
        stats = sampling_token_stats(batch, mode)
        if mode == "train":
            mask = batch["completion_mask"]
            captured["batches"].append({"advantages": batch["advantages"].detach().clone(), "mask": mask.clone(),
                                        "stats": {k: v.detach().clone() for k, v in stats.items()}})  # fmt: skip
        return stats

    trainer._sampling_token_stats = record
    return trainer, test_split


def full_parameters(trainer) -> dict[str, torch.Tensor]:
    model = trainer.model
    params = list(model.parameters())
    if trainer.is_deepspeed_enabled and any(hasattr(p, "ds_id") for p in params):
        import deepspeed

        with deepspeed.zero.GatheredParameters(params):
            return {name: p.detach().float().clone() for name, p in model.named_parameters()}
    return {name: p.detach().float().clone() for name, p in model.named_parameters()}


def main(out_dir: str, argv: list[str]) -> int:
    grpo.build_trainer = build_and_keep  # grpo.main looks the name up at call time
    code = grpo.cli_main(argv)
    trainer = captured["trainer"]
    accelerator = trainer.accelerator
    record = {
        "world_size": accelerator.num_processes,
        "process_index": accelerator.process_index,
        "params": full_parameters(trainer),
        "batches": captured["batches"],
    }
    torch.save(record, Path(out_dir) / f"rank{accelerator.process_index}.pt")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
