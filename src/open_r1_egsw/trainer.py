"""`EGSWTrainer`: TRL's GRPOTrainer with EGSW weights and entropy-discriminator clipping on the advantages.

The only method whose behaviour changes is `_generate_and_score_completions`: after TRL has generated, scored and
normalised a generation batch, the trainer

1. takes the token statistics of the sampling policy under no grad (H; log p_k and S for clip_b; E_p[S] too for
   clip_v and `log_entropy_dynamics`) from the first source that applies (token_stats.py says which and how):
   TRL's own policy forward when TRL runs one (vLLM importance-sampling correction, or generation misaligned with
   optimisation); the logits `model.generate` computes while sampling (TRL's transformers generation path: a
   forward hook, no pass of its own); otherwise one extra no-grad forward (vLLM without IS correction; measured by
   `make bench`);
2. gathers advantages, masks and statistics of every process (a group can span processes), computes the weights
   (egsw.py) and the keep-masks (entropy_dynamics.py) once for the whole generation batch, and slices its rows back;
3. replaces `advantages` (B,) by per-token advantages (B, T) = A_i * w_{i,t} * keep_{i,t}, which TRL's
   `_compute_loss` accepts for subclasses. TRL then splits the batch into micro-batches as usual.

With `use_egsw: false`, `entropy_clip: none` and `log_entropy_dynamics: false` the trainer is TRL's, unchanged.
Checked against TRL 1.16.0 (pinned in setup.py); tests/test_trainer.py has one test per TRL hook relied on.
"""

from __future__ import annotations

import json
import os

import torch
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl import GRPOTrainer
from trl.models.utils import disable_gradient_checkpointing

from .egsw import compute_egsw_weights, egsw_weight_stats, normalize_entropy
from .entropy_dynamics import (
    AdaptiveEGSWController,
    clip_b_mask,
    clip_fraction,
    clip_v_mask,
    masked_mean,
    predicted_entropy_change,
)
from .prompt_truncation import PromptTruncationMixin  # open-r1's max_prompt_length
from .token_stats import FusedHeadCapture, GenerationRecorder, complete, needed_statistics, select_source
from .vllm_cpu import keep_colocated_weights_loadable

CONTROLLER_STATE_FILE = "egsw_controller_state.json"


class EGSWTrainer(PromptTruncationMixin, GRPOTrainer):
    """GRPO + Entropy-Guided Sequence Weighting (arXiv 2503.22456) + entropy-discriminator clipping (2602.03392).

    Takes an [`EGSWConfig`] as `args`; everything else is [`trl.GRPOTrainer`]'s. The only change w.r.t.
    `GRPOTrainer` is `_generate_and_score_completions` (see the module docstring); TRL's policy forward and its
    generation call are wrapped only to keep the entropies they already compute (nothing they return changes), and
    the controller state rides along with checkpoints.
    """

    _tag_names = ["trl", "grpo", "egsw"]

    def __init__(self, *args, **kwargs):
        keep_colocated_weights_loadable(kwargs.get("args"))  # vLLM on the CPU only (vllm_cpu.py)
        super().__init__(*args, **kwargs)
        self.egsw_alpha = self.args.egsw_alpha
        self.egsw_temperature = self.args.egsw_temperature
        self._capture_policy_forward = False  # set while TRL's generation-phase policy forward is expected
        self._capture_generation = False  # set while TRL generates, when the entropies come from generation
        self._captured_stats: dict[str, torch.Tensor] | None = None  # from TRL's policy forward
        self._recorder: GenerationRecorder | None = None  # from the logits of generation
        self._previous_batch: dict | None = None  # for the measured entropy change (log_entropy_dynamics)
        self.egsw_controller = None
        if self.args.egsw_controller != "none":
            param = self.args.egsw_controller_param
            self.egsw_controller = AdaptiveEGSWController(
                target=self.args.egsw_controller,
                target_value=self.args.egsw_controller_target,
                param=param,
                value=self.egsw_alpha if param == "alpha" else self.egsw_temperature,
                lr=self.args.egsw_controller_lr,
                min_value=self.args.egsw_controller_min,
                max_value=self.args.egsw_controller_max,
            )

    # ----------------------------------------------------------------------------------------------------------
    # Token statistics of the sampling policy
    # ----------------------------------------------------------------------------------------------------------

    @property
    def _modifies_batch(self) -> bool:
        args = self.args
        return args.use_egsw or args.entropy_clip != "none" or args.log_entropy_dynamics

    def _needed_stats(self) -> set[str]:
        return needed_statistics(self.args.use_egsw, self.args.entropy_clip, self.args.log_entropy_dynamics)

    def _trl_runs_policy_forward(self) -> bool:
        """Whether TRL 1.16's `_generate_and_score_completions` runs its no-grad "old logps" policy forward.

        Mirrors the condition in TRL; `test_trl_policy_forward_is_captured` fails if TRL changes it.
        """
        generate_every = self.args.steps_per_generation * self.num_iterations
        return self.args.gradient_accumulation_steps % generate_every != 0 or (
            self.use_vllm and self.vllm_importance_sampling_correction
        )

    def _stats_source(self) -> str:
        """token_stats.py's source for this configuration: "trl-forward", "generation" or "extra-forward".

        "generation" is TRL's plain transformers generation path: no vLLM, no continuous batching, no tools, no
        custom rollout.
        """
        transformers_generation = not (
            self.use_vllm or self.use_transformers_continuous_batching or self.tools or self.rollout_func is not None
        )
        return select_source(self._trl_runs_policy_forward(), transformers_generation)

    def _causal_lm(self):
        model = self.accelerator.unwrap_model(self.model)
        return model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT: the inner causal LM

    def _get_per_token_logps_and_entropies(self, model, *args, **kwargs):
        if not self._capture_policy_forward:
            return super()._get_per_token_logps_and_entropies(model, *args, **kwargs)
        # The first policy forward of the generation phase is TRL's "old logps" forward (it runs before the
        # reference-model forward). Its fused LM head already computes log p_k and H: keep them, and E_p[S] from
        # the same hidden states when needed (token_stats.FusedHeadCapture), instead of paying for another forward.
        self._capture_policy_forward = False
        wanted = kwargs.get("compute_entropy", False)
        kwargs["compute_entropy"] = True
        with FusedHeadCapture(self._causal_lm(), "S_baseline" in self._needed_stats()) as capture:
            logps, entropies, aux = super()._get_per_token_logps_and_entropies(model, *args, **kwargs)
        self._captured_stats = {"logp": logps, "entropy": entropies}
        if capture.need_baseline:
            self._captured_stats["S_baseline"] = capture.baseline(logps.size(1))
        return logps, (entropies if wanted else None), aux

    def _generate_single_turn(self, *args, **kwargs):
        if not self._capture_generation:
            return super()._generate_single_turn(*args, **kwargs)
        self._recorder = GenerationRecorder(self.temperature, self._needed_stats())
        handle = self._recorder.register(self._causal_lm())
        try:
            return super()._generate_single_turn(*args, **kwargs)
        finally:
            handle.remove()

    @torch.no_grad()
    def _extra_forward_stats(self, batch: dict, mode: str, need: set[str]) -> dict[str, torch.Tensor]:
        """Source "extra-forward": TRL's own (fused-head) policy forward, once more, under `FusedHeadCapture`."""
        input_ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
        attention_mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
        batch_size = self.args.per_device_train_batch_size if mode == "train" else self.args.per_device_eval_batch_size
        with (
            disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs),
            FusedHeadCapture(self._causal_lm(), "S_baseline" in need) as capture,
        ):
            logps, entropies, _ = super()._get_per_token_logps_and_entropies(
                self.model, input_ids, attention_mask, batch["completion_ids"].size(1), batch_size=batch_size,
                compute_entropy=True,
            )  # fmt: skip
        stats = {"logp": logps, "entropy": entropies}
        if capture.need_baseline:
            stats["S_baseline"] = capture.baseline(logps.size(1))
        return stats

    def _sampling_token_stats(self, batch: dict, mode: str) -> dict[str, torch.Tensor]:
        need = self._needed_stats()
        stats = self._captured_stats
        if self._recorder is not None:
            stats = self._recorder.result(batch["completion_ids"])
        if stats is None:
            stats = self._extra_forward_stats(batch, mode, need)
        width = batch["completion_ids"].size(1)
        return complete({key: value[:, :width] for key, value in stats.items()}, need)  # generation: >= T

    # ----------------------------------------------------------------------------------------------------------
    # Gather, weigh, clip, slice back
    # ----------------------------------------------------------------------------------------------------------

    def _gather_rows(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Gather per-row tensors of every process in rank order (TRL's order), padding dim 1 to a common length."""
        gathered = {}
        for key, tensor in tensors.items():
            if tensor.dim() > 1:
                tensor = self.accelerator.pad_across_processes(tensor, dim=1, pad_index=0)
            gathered[key] = self.accelerator.gather(tensor)
        return gathered

    def _generate_and_score_completions(self, inputs):
        if not self._modifies_batch:
            return super()._generate_and_score_completions(inputs)

        mode = "train" if self.model.training else "eval"
        self._captured_stats = self._recorder = None
        source = self._stats_source()
        self._capture_policy_forward = source == "trl-forward"
        self._capture_generation = source == "generation"
        try:
            batch = super()._generate_and_score_completions(inputs)
        finally:
            self._capture_policy_forward = self._capture_generation = False
        if self.args.log_entropy_dynamics and mode == "train":
            self._log_measured_entropy_change()

        stats = self._sampling_token_stats(batch, mode)
        mask = batch["completion_mask"] if "tool_mask" not in batch else batch["completion_mask"] * batch["tool_mask"]
        factor, everything = self._advantage_factor(batch["advantages"], mask, stats, mode)
        if factor is not None:
            batch["advantages"] = batch["advantages"].unsqueeze(1) * factor.to(batch["advantages"].dtype)  # (B, T)

        if self.args.log_entropy_dynamics and mode == "train":
            full_mask = everything["mask"]
            effective = everything["factor"] * everything["advantages"].unsqueeze(1)
            predicted = predicted_entropy_change(
                everything["S"], everything["S_baseline"], effective, full_mask,
                lr=self._get_learning_rate() if self.lr_scheduler is not None else self.args.learning_rate, token_scale=self._loss_token_scale(full_mask),
            )  # fmt: skip
            self._previous_batch = {
                "batch": {k: batch[k] for k in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask")},
                "entropy": everything["entropy"],
                "mask": full_mask,
                "predicted": masked_mean(predicted, full_mask).item(),
            }
        return batch

    def _advantage_factor(
        self, advantages: torch.Tensor, mask: torch.Tensor, stats: dict[str, torch.Tensor], mode: str
    ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """The (B, T) multiplier of this process's advantages: EGSW weights times clip keep-masks.

        Gathers the rows of every process first, because a group (and the batch statistics of clipping) spans
        processes; computes once on the whole generation batch; returns this process's rows, cut to its own length.
        Also returns the gathered tensors (with the full-batch `factor`) for diagnostics. Logs the metrics.
        """
        local_rows, local_len = mask.shape
        everything = self._gather_rows({"advantages": advantages, "mask": mask, **stats})
        advantages, full_mask = everything["advantages"], everything["mask"]  # (N,), (N, T_max)
        num_generations = self.num_generations if mode == "train" else self.num_generations_eval

        factor = None  # (N, T_max)
        metrics = {}
        if self.args.entropy_clip != "none":
            mu = self.args.resolved_entropy_clip_mu
            if self.args.entropy_clip == "clip_b":
                keep = clip_b_mask(everything["S"], advantages, full_mask, mu=mu)
            else:
                keep = clip_v_mask(
                    everything["S"], everything["S_baseline"], advantages, full_mask, mu=mu,
                    max_frac=self.args.entropy_clip_max_frac,
                )  # fmt: skip
            factor = keep.float()
            metrics["entropy_dynamics/clip_frac"] = clip_fraction(keep, full_mask)
        if self.args.use_egsw:
            entropies = everything["entropy"]
            if self.args.egsw_entropy_normalization == "log_vocab":
                entropies = normalize_entropy(entropies, self.model.config.get_text_config().vocab_size)
            weights = compute_egsw_weights(
                advantages, entropies, full_mask, num_generations,
                alpha=self.egsw_alpha, temperature=self.egsw_temperature,
                granularity=self.args.egsw_granularity, weight_scale=self.args.egsw_weight_scale,
            )  # fmt: skip
            factor = weights if factor is None else factor * weights
            weight_stats = egsw_weight_stats(weights, full_mask, num_generations)
            metrics.update({f"egsw/{key}": value for key, value in weight_stats.items()})
            metrics["egsw/entropy_mean"] = masked_mean(entropies, full_mask).item()
            metrics["egsw/alpha"] = self.egsw_alpha
            metrics["egsw/temperature"] = self.egsw_temperature
            if self.egsw_controller is not None and mode == "train":
                measured = (
                    metrics["egsw/entropy_mean"] if self.args.egsw_controller == "entropy" else weight_stats["ess"]
                )
                new_value = self.egsw_controller.update(measured)
                if self.args.egsw_controller_param == "alpha":
                    self.egsw_alpha = new_value
                else:
                    self.egsw_temperature = new_value
        if "S" in everything:
            metrics["entropy_dynamics/S_mean"] = masked_mean(everything["S"], full_mask).item()
        if "S_baseline" in everything:
            gap = everything["S"] - everything["S_baseline"]
            metrics["entropy_dynamics/S_minus_baseline_mean"] = masked_mean(gap, full_mask).item()
            metrics["entropy_dynamics/entropy_mean"] = masked_mean(everything["entropy"], full_mask).item()
        for key, value in metrics.items():
            self._metrics[mode][key].append(value)

        everything["factor"] = factor if factor is not None else full_mask.float()
        if factor is None:
            return None, everything
        start = self.accelerator.process_index * local_rows
        return factor[start : start + local_rows, :local_len], everything

    def _loss_token_scale(self, full_mask: torch.Tensor) -> torch.Tensor | float:
        """d(loss)/d(per-token surrogate) for the configured loss type, over one optimizer step (N completions).

        grpo: 1 / (|o_i| N); bnpo and dapo: 1 / (valid tokens of the batch); dr_grpo: 1 / (N * max_completion_length).
        """
        n = full_mask.size(0)
        if self.loss_type == "grpo":
            return 1.0 / (full_mask.sum(dim=1, keepdim=True).clamp(min=1) * n)
        if self.loss_type == "dr_grpo":
            return 1.0 / (n * self.max_completion_length)
        return 1.0 / full_mask.sum().clamp(min=1).item()

    @torch.no_grad()
    def _log_measured_entropy_change(self) -> None:
        """Entropy of the previous generation batch under the updated policy minus its entropy when sampled."""
        previous, self._previous_batch = self._previous_batch, None
        if previous is None:
            return
        after = self._extra_forward_stats(previous["batch"], "train", {"entropy"})["entropy"]
        mask = previous["batch"]["completion_mask"]
        after_all = self._gather_rows({"entropy": after, "mask": mask})
        measured = masked_mean(after_all["entropy"], after_all["mask"]) - masked_mean(
            previous["entropy"], previous["mask"]
        )
        self._metrics["train"]["entropy_dynamics/predicted_dH"].append(previous["predicted"])
        self._metrics["train"]["entropy_dynamics/measured_dH"].append(measured.item())

    # ----------------------------------------------------------------------------------------------------------
    # Controller state with checkpoints (the same pattern TRL uses for its adaptive entropy coefficient)
    # ----------------------------------------------------------------------------------------------------------

    def _save_checkpoint(self, model, trial):
        # Written before the Trainer's files, so that trainer_state.json (written last) marks a complete checkpoint.
        if self.egsw_controller is not None and self.args.should_save:
            folder = os.path.join(
                self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            )
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, CONTROLLER_STATE_FILE), "w") as f:
                json.dump(self.egsw_controller.state_dict(), f)
        super()._save_checkpoint(model, trial)

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if self.egsw_controller is not None and checkpoint is not None:
            path = os.path.join(checkpoint, CONTROLLER_STATE_FILE)
            if not os.path.exists(path):
                raise FileNotFoundError(f"Resuming with egsw_controller set, but {path} is missing.")
            with open(path) as f:
                self.egsw_controller.load_state_dict(json.load(f))
            value = self.egsw_controller.value
            if self.args.egsw_controller_param == "alpha":
                self.egsw_alpha = value
            else:
                self.egsw_temperature = value
