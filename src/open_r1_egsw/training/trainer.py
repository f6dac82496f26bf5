"""`EGSWTrainer`: TRL's GRPOTrainer with the advantage shaping of `methods/` (EGSW weights, entropy clipping).

After TRL has generated, scored and normalised a generation batch, the trainer takes the sampling policy's token
statistics (token_stats.py), gathers the batch of every process, calls `shape_advantages` once, and keeps its own rows:
per-token advantages A_i * w_{i,t}, and the keep-mask in TRL's `tool_mask`. With every method off it is TRL's trainer.
"""

from __future__ import annotations

import json
import os

import torch
from accelerate.utils import gather_object
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl import GRPOTrainer
from trl.models.utils import disable_gradient_checkpointing

from open_r1_egsw.methods.controller import AdaptiveEGSWController
from open_r1_egsw.methods.dynamics import masked_mean
from open_r1_egsw.methods.shaping import (
    CONTROLLER_METRICS,
    ShapingSettings,
    needed_statistics,
    pack_rows,
    predicted_step_entropy_change,
    shape_advantages,
    unpack_rows,
)
from open_r1_egsw.training.prompt_truncation import PromptTruncationMixin  # open-r1's max_prompt_length
from open_r1_egsw.training.reward_failures import held, raise_everywhere
from open_r1_egsw.training.token_stats import FusedHeadCapture, GenerationRecorder, complete, select_source
from open_r1_egsw.training.vllm_cpu import keep_colocated_weights_loadable

CONTROLLER_STATE_FILE = "egsw_controller_state.json"


class EGSWTrainer(PromptTruncationMixin, GRPOTrainer):
    """GRPO with EGSW (arXiv 2503.22456) and entropy-discriminator clipping (arXiv 2602.03392); `args` an EGSWConfig.

    TRL's policy forward and generation call are wrapped only to keep the statistics they compute; the controller
    state is saved with checkpoints.
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

    def _needed_stats(self) -> tuple[str, ...]:
        return needed_statistics(self.args.use_egsw, self.args.entropy_clip, self.args.log_entropy_dynamics)

    def _trl_runs_policy_forward(self) -> bool:
        """Whether TRL 1.16's `_generate_and_score_completions` runs its no-grad "old logps" policy forward."""
        generate_every = self.args.steps_per_generation * self.num_iterations
        return self.args.gradient_accumulation_steps % generate_every != 0 or (
            self.use_vllm and self.vllm_importance_sampling_correction
        )

    def _stats_source(self) -> str:
        """token_stats.py's source: "generation" on TRL's plain transformers generation path (no vLLM, continuous
        batching, tools or custom rollout), unless TRL runs its own policy forward."""
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
    def _extra_forward_stats(self, batch: dict, mode: str, need: tuple[str, ...]) -> dict[str, torch.Tensor]:
        """Source "extra-forward": TRL's own (fused-head) policy forward, once more, under `FusedHeadCapture`."""
        input_ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
        attention_mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
        batch_size = self.args.per_device_train_batch_size if mode == "train" else self.args.per_device_eval_batch_size
        with (
            disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs),
            FusedHeadCapture(self._causal_lm(), "S_baseline" in need) as capture,
        ):
            logps, entropies, _ = super()._get_per_token_logps_and_entropies(
                self.model,
                input_ids,
                attention_mask,
                batch["completion_ids"].size(1),
                batch_size=batch_size,
                compute_entropy=True,
            )
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

    def _gather_rows(self, per_row: torch.Tensor, per_token: list[torch.Tensor]):
        """(B,) and (B, T) tensors of every process in rank order, dim 1 padded to the longest: one packed gather,
        in the order of the caller's list on every rank."""
        packed = self.accelerator.pad_across_processes(pack_rows(per_row, per_token), dim=2, pad_index=0)
        return unpack_rows(self.accelerator.gather(packed), per_row.dtype, [t.dtype for t in per_token])

    def _shaping_settings(self, mode: str) -> ShapingSettings:
        args = self.args
        return ShapingSettings(
            num_generations=self.num_generations if mode == "train" else self.num_generations_eval,
            use_egsw=args.use_egsw,
            alpha=self.egsw_alpha,
            temperature=self.egsw_temperature,
            granularity=args.egsw_granularity,
            weight_scale=args.egsw_weight_scale,
            entropy_normalization=args.egsw_entropy_normalization,
            vocab_size=self.model.config.get_text_config().vocab_size,
            entropy_clip=args.entropy_clip,
            clip_mu=args.resolved_entropy_clip_mu,
            clip_max_frac=args.entropy_clip_max_frac,
        )

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        # a reward that fails on one rank must not leave the others waiting in TRL's gather (reward_failures.py)
        failures: list[str] = []
        with held(self, failures):
            rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        accelerator = self.accelerator
        raise_everywhere(failures, gather_object, accelerator.process_index, accelerator.num_processes)
        return rewards

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
        loss_mask = (
            batch["completion_mask"] if "tool_mask" not in batch else batch["completion_mask"] * batch["tool_mask"]
        )
        local_rows, local_len = loss_mask.shape
        # the whole generation batch: a group (and the batch statistics of clipping) spans processes
        advantages, gathered = self._gather_rows(batch["advantages"], [loss_mask, *stats.values()])
        full_mask, full_stats = gathered[0], dict(zip(stats, gathered[1:], strict=True))
        shaped = shape_advantages(advantages, full_mask, full_stats, self._shaping_settings(mode))
        for key, value in shaped.metrics.items():
            self._metrics[mode][key].append(value)
        self._update_controller(shaped.metrics, mode)

        rows = slice(self.accelerator.process_index * local_rows, (self.accelerator.process_index + 1) * local_rows)
        if shaped.weights is not None:  # (B, T) advantages A_i * w_{i,t}, which TRL's _compute_loss accepts
            weights = shaped.weights[rows, :local_len].to(batch["advantages"].dtype)
            batch["advantages"] = batch["advantages"].unsqueeze(1) * weights
        if shaped.keep is not None:
            # a dropped token leaves the loss (TRL reads completion_mask * tool_mask), its normalisation and the KL
            # term; the "dapo" normaliser is recounted over the whole batch
            keep = shaped.keep[rows, :local_len].to(batch["completion_mask"].dtype)
            batch["tool_mask"] = keep if "tool_mask" not in batch else batch["tool_mask"] * keep
            batch["num_items_in_batch"] = (full_mask * shaped.keep).sum().to(batch["num_items_in_batch"])

        if self.args.log_entropy_dynamics and mode == "train":
            lr = self._get_learning_rate() if self.lr_scheduler is not None else self.args.learning_rate
            predicted = predicted_step_entropy_change(
                advantages, full_mask, full_stats, shaped, lr, self.loss_type, self.max_completion_length
            )
            self._previous_batch = {
                "batch": {k: batch[k] for k in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask")},
                "entropy": full_stats["entropy"],
                "mask": full_mask,
                "predicted": predicted,
            }
        return batch

    def _update_controller(self, metrics: dict[str, float], mode: str) -> None:
        """One step of the adaptive controller (training batches only), from this batch's measured entropy or ESS."""
        if self.egsw_controller is None or mode != "train":
            return
        new_value = self.egsw_controller.update(metrics[CONTROLLER_METRICS[self.args.egsw_controller]])
        if self.args.egsw_controller_param == "alpha":
            self.egsw_alpha = new_value
        else:
            self.egsw_temperature = new_value

    @torch.no_grad()
    def _log_measured_entropy_change(self) -> None:
        """Entropy of the previous generation batch under the updated policy minus its entropy when sampled."""
        previous, self._previous_batch = self._previous_batch, None
        if previous is None:
            return
        after = self._extra_forward_stats(previous["batch"], "train", ("entropy",))["entropy"]
        mask = previous["batch"]["completion_mask"]
        _, (after_all, mask_all) = self._gather_rows(torch.zeros(mask.size(0), device=mask.device), [after, mask])
        measured = masked_mean(after_all, mask_all) - masked_mean(previous["entropy"], previous["mask"])
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
