"""Where the sampling policy's token statistics come from, without paying a forward pass where one already runs.

EGSW needs the entropy H of every completion token; Clip_B also log p_k of the sampled token (hence
S_k = p_k (H + log p_k)); Clip_V and `log_entropy_dynamics` also the baseline E_p[S] = H sum p^2 + sum p^2 log p.
All are taken from p = softmax(logits / T), the unfiltered temperature-scaled distribution TRL scores, under no grad.
`select_source` picks the first of three sources that applies:

1. "trl-forward": TRL's own no-grad "old logps" policy forward, where TRL runs one (vLLM importance-sampling
   correction, generation misaligned with optimisation). It returns log p_k and H from TRL's fused LM head.
   E_p[S] needs sum p^2 log p, which that head does not accumulate (its online sums are sum e^z, sum z e^z and
   sum e^2z); `FusedHeadCapture` asks the same head call for `log_sum_sq_probs` (a documented output of TRL's
   kernel) and runs the kernel once more on the hidden states it already holds at temperature T / 2, whose entropy
   gives sum p^2 log p (`sum_p2logp_from_half_temperature`). That is one more LM-head projection, in TRL's own
   bounded tiles, and no backbone pass; it runs only when E_p[S] is needed.
2. "generation": the logits `model.generate` computes while sampling (TRL's transformers generation path).
   `GenerationRecorder`, a forward hook on the causal LM, reduces each decoding step's (B, V) logits to H, sum p^2
   and sum p^2 log p at once, and keeps that one step's logits until the sampled token is known (the next step's
   input ids; the returned completion ids for the last step) to read log p_k. No forward pass at all.
3. "extra-forward": otherwise (vLLM without IS correction, transformers continuous batching, tools, a custom
   rollout) one extra no-grad policy forward, TRL's own `_get_per_token_logps_and_entropies` under the same
   `FusedHeadCapture`. `make bench` measures what it costs.

Nothing here holds a (B, T, V) tensor: generation keeps one step's (B, V) logits, the fused head works in TRL's
tiles, and `next_token_moments` goes `chunk_size` rows at a time.
"""

from __future__ import annotations

import torch
import trl.trainer.utils as trl_utils

from open_r1_egsw.methods.entropy_dynamics import (
    baseline_from_moments,
    discriminator_from_logps,
    next_token_moments,
    sum_p2logp_from_half_temperature,
)

SOURCES = ("trl-forward", "generation", "extra-forward")


def select_source(trl_runs_policy_forward: bool, transformers_generation: bool) -> str:
    """The first source that applies, in the order of the module docstring."""
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
    """Source "generation": statistics from the logits of each decoding step of `model.generate`.

    Use `register(causal_lm)` for the duration of the generation call, then `result(completion_ids)`. Each forward of
    `generate` yields the next-token logits of every row (prefill: its last position); the hook turns them into
    `next_token_moments` at once. log p_k needs the token sampled from those logits, which is the input of the next
    forward (finished rows are fed padding there, at positions the completion mask drops) or, for the last step, the
    returned completion ids. Holds at most one step's (B, V) logits.
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
    """Sources "trl-forward" and "extra-forward": E_p[S] from the hidden states TRL's fused LM head already holds.

    A context manager around one call of TRL's `_get_per_token_logps_and_entropies` (no grad). While active, TRL's
    `ChunkedLogProbFunction` (the fused head's kernel, looked up in `trl.trainer.utils` at call time) is replaced by
    this object's `apply`, which calls the original with `log_sum_sq_probs` added to the requested outputs and,
    under no grad, once more at temperature T / 2 for the entropy of q = softmax(2 z). A forward hook on the causal
    LM then reads the output TRL scattered back to (b, L - 1) and turns both into E_p[S]. What TRL returns to its
    caller is unchanged. Without `need_baseline` nothing is patched: log p_k and H are TRL's own return values.
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

    def apply(self, hidden, weight, bias, targets, temperature, chunk_size, softcap=None, logit_scale=1.0,
              outputs=("log_probs",)):  # fmt: skip
        extended = tuple(dict.fromkeys((*outputs, "entropy", "log_sum_sq_probs")))
        result = self._original.apply(hidden, weight, bias, targets, temperature, chunk_size, softcap, logit_scale,
                                      extended)  # fmt: skip
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
        self._half_entropy = half[1]  # fmt: skip
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
