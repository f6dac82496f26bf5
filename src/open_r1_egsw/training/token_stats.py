"""The sampling policy's token statistics (H, log p_k, S, E_p[S]) from passes that already run, under no grad.

`select_source` picks the first that applies (docs/METHOD.md, "Where the statistics come from"): "trl-forward",
TRL's own old-logps policy forward (`FusedHeadCapture`); "generation", the logits `model.generate` computes while
sampling (`GenerationRecorder`); otherwise "extra-forward", one more no-grad forward under `FusedHeadCapture`.
Nothing holds a (B, T, V) tensor.
"""

from __future__ import annotations

import torch
import trl.trainer.utils as trl_utils

from open_r1_egsw.methods.dynamics import (
    baseline_from_moments,
    discriminator_from_logps,
    next_token_moments,
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
    """Source "generation": a forward hook on the causal LM turns each decoding step's (B, V) logits into
    `next_token_moments`, and reads log p_k once the sampled token is known (the next step's input, or the returned
    completion ids for the last step). Use `register(causal_lm)` around the generation call, then `result`.
    """

    def __init__(self, temperature: float, need: tuple[str, ...]):
        self.temperature = temperature
        self.need = need
        self.steps: list[dict[str, torch.Tensor]] = []  # one dict of (B,) tensors per decoding step
        self._pending: torch.Tensor | None = None  # (B, V) logits of the last step, waiting for its token

    def register(self, causal_lm: torch.nn.Module):
        return causal_lm.register_forward_hook(self._hook, with_kwargs=True)

    def _read_logp(self, tokens: torch.Tensor) -> None:
        step, logits = self.steps[-1], self._pending
        z_k = logits.gather(-1, tokens.reshape(-1, 1).to(logits.device).long()).squeeze(-1)
        step["logp"] = z_k.to(step["log_z"].dtype) / self.temperature - step["log_z"]  # log p_k = z_k / T - log Z
        self._pending = None

    def _hook(self, module, args, kwargs, output) -> None:
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        if self._pending is not None and input_ids is not None:
            self._read_logp(input_ids[:, -1])  # the token sampled at the previous step
        logits = output.logits[:, -1, :]  # (B, V)
        self.steps.append(next_token_moments(logits, self.temperature, with_baseline="S_baseline" in self.need))
        if "logp" in self.need:
            self._pending = logits

    def result(self, completion_ids: torch.Tensor) -> dict[str, torch.Tensor] | None:
        """(B, T) statistics for the padded `completion_ids` (B, T) of the batch; None if nothing was recorded."""
        if not self.steps:
            return None
        width = completion_ids.size(1)
        if self._pending is not None:
            last = len(self.steps) - 1
            tokens = completion_ids[:, last] if last < width else torch.zeros_like(completion_ids[:, 0])
            self._read_logp(tokens)
        steps = self.steps[:width]
        stats = {key: torch.stack([s[key] for s in steps], dim=1) for key in steps[0]}  # (B, steps)
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
