"""Run under `accelerate launch --num_processes 2`: each rank builds a real EGSWTrainer, takes its slice of a fixed
generation batch (12 rows, groups of 4, so the middle group spans both ranks; ragged lengths so the ranks pad to
different widths) and computes its advantage multiplier through the trainer's gather/compute/slice path.

Usage: two_process_weights.py MODEL_DIR OUT_DIR   (writes OUT_DIR/rank{r}.pt and, on rank 0, OUT_DIR/global.json)
"""

import json
import sys
from pathlib import Path

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from open_r1_egsw.configs import EGSWConfig
from open_r1_egsw.trainer import EGSWTrainer

ROWS, GROUP, T = 12, 4, 6


def main(model_dir: str, out_dir: str) -> None:
    out = Path(out_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    args = EGSWConfig(
        output_dir=str(out / "trainer"), per_device_train_batch_size=ROWS // 2, num_generations=GROUP,
        max_completion_length=T, report_to="none", bf16=False, use_cpu=True, use_egsw=True, egsw_alpha=0.8, egsw_temperature=0.7,
    )  # fmt: skip
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": "1 + 1"}]}] * ROWS)
    trainer = EGSWTrainer(
        model=model, reward_funcs=[lambda completions, **kw: [0.0] * len(completions)], args=args,
        train_dataset=dataset, processing_class=tokenizer,
    )  # fmt: skip
    rank, world = trainer.accelerator.process_index, trainer.accelerator.num_processes

    gen = torch.Generator().manual_seed(7)
    advantages = torch.randn(ROWS, generator=gen)
    entropy = torch.rand(ROWS, T, generator=gen) * 3.0
    lengths = torch.tensor([6, 2, 3, 1, 5, 2, 1, 4, 2, 3, 2, 1])  # rank 0 rows pad to 6, rank 1 rows to 4
    mask = (torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)).long()

    rows = slice(rank * (ROWS // world), (rank + 1) * (ROWS // world))
    local_len = int(lengths[rows].max())
    local_mask = mask[rows, :local_len]
    stats = {"entropy": entropy[rows, :local_len]}
    factor, _ = trainer._advantage_factor(advantages[rows], local_mask, stats, "train")
    torch.save({"factor": factor, "world_size": world}, out / f"rank{rank}.pt")
    if rank == 0:
        spec = {
            "advantages": advantages.tolist(), "mask": mask.tolist(), "entropy": entropy.tolist(),
            "vocab_size": model.config.vocab_size, "num_generations": GROUP, "alpha": 0.8, "temperature": 0.7,
            "rows_per_process": ROWS // world,
        }  # fmt: skip
        (out / "global.json").write_text(json.dumps(spec))


if __name__ == "__main__":
    main(*sys.argv[1:3])
