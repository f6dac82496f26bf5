"""The sampling policy's token statistics (H, log p_k, S, E_p[S]) from passes that already run, under no grad.

`select_source` picks the first that applies (docs/METHOD.md, "Where the statistics come from"): "trl-forward",
TRL's own old-logps policy forward (`FusedHeadCapture`); "generation", the logits `model.generate` computes while
sampling (`GenerationRecorder`); otherwise "extra-forward", one more no-grad forward under `FusedHeadCapture`.
No source holds more than a bounded slice of (B, T, V).
"""

from __future__ import annotations

import torch
import trl.trainer.utils as trl_utils

from open_r1_egsw.methods.dynamics import (
    baseline_from_moments,
    discriminator_from_logps,
    next_token_moments,
    sampled_logp,
    sum_p2logp_from_half_temperature,
)

SOURCES = ("trl-forward", "generation", "extra-forward")


def select_source(trl_runs_policy_forward: bool, transformers_generation: bool) -> str:
    """The first source that applies: "trl-forward", "generation" or "extra-forward"."""
    if trl_runs_policy_forward:
        return "trl-forward"
    if transformers_generation:
        return "generation"
    return "extra-forward"


def complete(stats: dict[str, torch.Tensor], need: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Add S from log p_k and H when needed, and keep only the needed statistics, in the order of `need`."""
    if "S" in need and "S" not in stats:
        stats = {**stats, "S": discriminator_from_logps(stats["logp"], stats["entropy"])}
    return {key: stats[key] for key in need}


class GenerationRecorder:
    """Source "generation": a forward hook on the causal LM keeps each decoding step's (B, V) logits (the model's own
    output, which `generate` copies before changing) and the token sampled from them (the next step's input, or the
    returned completion ids for the last step). Whenever the kept steps would need more than `budget_bytes` of fp32
    work space, and at the end, they are reduced together: `next_token_moments` and log p_k over (B, k, V) at once,
    the same values as step by step at a fraction of the calls (per-call overhead dominates small vocabularies). A large
    vocabulary gives k = 1, one step at a time. Use `register(causal_lm)` around the generation call, then `result`.
    """

    _FP32_COPIES = 4  # work space of next_token_moments per row: the fp32 logits, p, p log p and a product

    def __init__(self, temperature: float, need: tuple[str, ...], budget_bytes: int = 64 * 2**20):
        self.temperature = temperature
        self.need = need
        self.budget_bytes = budget_bytes
        self.blocks: list[dict[str, torch.Tensor]] = []  # (B, k) statistics of steps already reduced
        self._logits: list[torch.Tensor] = []  # (B, V) logits of the steps not reduced yet
        self._tokens: list[torch.Tensor] = []  # (B,) the token sampled from each of them, once known

    def register(self, causal_lm: torch.nn.Module):
        return causal_lm.register_forward_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs, output) -> None:
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        if len(self._tokens) < len(self._logits) and input_ids is not None:
            self._tokens.append(input_ids[:, -1])  # the token sampled at the previous step
        logits = output.logits[:, -1, :]  # (B, V)
        if output.logits.size(1) > 1:
            logits = logits.clone()  # a prefill without logits_to_keep: keep one row, not (B, P, V)
        step_bytes = logits.shape[0] * logits.shape[1] * 4 * self._FP32_COPIES
        if self._logits and (len(self._logits) + 1) * step_bytes > self.budget_bytes:
            self._reduce()
        self._logits.append(logits)

    def _reduce(self) -> None:
        logits = torch.stack(self._logits, dim=1)  # (B, k, V)
        block = next_token_moments(
            logits,
            self.temperature,
            chunk_size=logits.shape[0] * logits.shape[1],
            with_baseline="S_baseline" in self.need,
        )
        if "logp" in self.need:
            tokens = torch.stack(self._tokens, dim=1).to(logits.device)  # (B, k)
            block["logp"] = sampled_logp(logits, tokens, block["log_z"], self.temperature)
        self.blocks.append(block)
        self._logits, self._tokens = [], []

    def result(self, completion_ids: torch.Tensor) -> dict[str, torch.Tensor] | None:
        """(B, T) statistics for the padded `completion_ids` (B, T) of the batch; None if nothing was recorded."""
        if self._logits:
            last = sum(block["log_z"].size(1) for block in self.blocks) + len(self._logits) - 1
            width = completion_ids.size(1)
            self._tokens.append(completion_ids[:, last] if last < width else torch.zeros_like(completion_ids[:, 0]))
            self._reduce()
        if not self.blocks:
            return None
        stats = {
            key: torch.cat([b[key] for b in self.blocks], dim=1)[:, : completion_ids.size(1)] for key in self.blocks[0]
        }
        if "sum_p2" in stats:
            stats["S_baseline"] = baseline_from_moments(stats["entropy"], stats["sum_p2"], stats["sum_p2logp"])
        return stats


class FusedHeadCapture:
    """Sources "trl-forward" and "extra-forward": E_p[S] from the hidden states TRL's fused LM head holds.

    Around one call of TRL's `_get_per_token_logps_and_entropies`, TRL's `_ChunkedLogProbFunction` is replaced by
    `apply`, which also asks for `log_sum_sq_probs` and runs the kernel once more at temperature T / 2; a forward
    hook turns both into E_p[S]. What TRL returns is unchanged; without `need_baseline` nothing is patched.
    """

    def __init__(self, causal_lm: torch.nn.Module, need_baseline: bool):
        self.causal_lm = causal_lm
        self.need_baseline = need_baseline
        self.chunks: list[torch.Tensor] = []  # (b, L - 1) E_p[S] per chunk of rows TRL processes
        self._half_entropy: torch.Tensor | None = None  # flat, as the kernel returned it
        self._original = trl_utils._ChunkedLogProbFunction

    def __enter__(self):
        if self.need_baseline:
            trl_utils._ChunkedLogProbFunction = self
            self._handle = self.causal_lm.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc):
        if self.need_baseline:
            trl_utils._ChunkedLogProbFunction = self._original
            self._handle.remove()

    def apply(
        self,
        hidden,
        weight,
        bias,
        targets,
        temperature,
        chunk_size,
        softcap=None,
        logit_scale=1.0,
        outputs=("log_probs",),
    ):
        extended = tuple(dict.fromkeys((*outputs, "entropy", "log_sum_sq_probs")))
        result = self._original.apply(
            hidden, weight, bias, targets, temperature, chunk_size, softcap, logit_scale, extended
        )
        with torch.no_grad():
            half = self._original.apply(
                hidden.detach(),
                weight.detach(),
                None if bias is None else bias.detach(),
                targets,
                temperature / 2,
                chunk_size,
                softcap,
                logit_scale,
                ("entropy",),
            )
        self._half_entropy = half[1]
        return result

    def _hook(self, module, args, output) -> None:
        mask = output.label_mask  # (b, L - 1)
        half = self._half_entropy
        # TRL scores either every position (flat, then viewed) or only the valid ones (then scattered)
        half = (
            half.view(mask.shape)
            if half.numel() == mask.numel()
            else half.new_zeros(mask.shape).masked_scatter(mask, half)
        )
        log_sum_p2 = output.log_sum_sq_probs.float()
        entropy = output.entropy.float()
        sum_p2logp = sum_p2logp_from_half_temperature(log_sum_p2, half.float())
        baseline = baseline_from_moments(entropy, log_sum_p2.exp(), sum_p2logp)
        self.chunks.append(baseline.masked_fill(~mask, 0.0))
        self._half_entropy = None

    def baseline(self, width: int) -> torch.Tensor:
        """(B, width) E_p[S] of the completion positions, as TRL slices its log-probs."""
        return torch.cat(self.chunks, dim=0)[:, -width:]
