"""`EGSWTrainer`: TRL's GRPOTrainer with EGSW weights and entropy-discriminator clipping on the advantages.

The only method whose behaviour changes is `_generate_and_score_completions`: after TRL has generated, scored and
normalised a generation batch, the trainer

1. takes the token statistics of the sampling policy under no grad, from the first of these that applies:
   the entropies TRL's own policy forward computed when TRL runs one (vLLM importance-sampling correction, or
   generation misaligned with optimisation); the logits `model.generate` computed while sampling (TRL's
   transformers generation path, EGSW alone: a forward hook, no extra pass); otherwise one extra no-grad forward
   (vLLM without IS correction; measured by `make bench`). clip_b needs log p_k as well, and clip_v and
   `log_entropy_dynamics` need E_p[S], which TRL's fused head does not return: they take a forward
   (a logits forward for the latter two, entropy_dynamics.py);
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

from .egsw import compute_egsw_weights, egsw_weight_stats, normalize_entropy, token_entropy
from .entropy_dynamics import (
    AdaptiveEGSWController,
    clip_b_mask,
    clip_fraction,
    clip_v_mask,
    discriminator_from_logps,
    masked_mean,
    predicted_entropy_change,
    token_statistics,
)
from .prompt_truncation import PromptTruncationMixin  # open-r1's max_prompt_length
from .vllm_cpu import keep_colocated_weights_loadable

CONTROLLER_STATE_FILE = "egsw_controller_state.json"
LOGITS_CHUNK_ELEMENTS = 2**28  # 0.5 GiB of bf16 logits per forward of the logits path (clip_v, diagnostics)


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
        self._captured_stats: dict[str, torch.Tensor] | None = None
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

    def _trl_runs_policy_forward(self) -> bool:
        """Whether TRL 1.16's `_generate_and_score_completions` runs its no-grad "old logps" policy forward.

        Mirrors the condition in TRL; `test_trl_policy_forward_is_captured` fails if TRL changes it.
        """
        generate_every = self.args.steps_per_generation * self.num_iterations
        return self.args.gradient_accumulation_steps % generate_every != 0 or (
            self.use_vllm and self.vllm_importance_sampling_correction
        )

    def _get_per_token_logps_and_entropies(self, model, *args, **kwargs):
        if not self._capture_policy_forward:
            return super()._get_per_token_logps_and_entropies(model, *args, **kwargs)
        # The first policy forward of the generation phase is TRL's "old logps" forward (it runs before the
        # reference-model forward). Its fused LM head already computes entropies: keep them instead of paying for
        # another forward.
        self._capture_policy_forward = False
        wanted = kwargs.get("compute_entropy", False)
        kwargs["compute_entropy"] = True
        logps, entropies, aux = super()._get_per_token_logps_and_entropies(model, *args, **kwargs)
        self._captured_stats = {"logp": logps, "entropy": entropies}
        return logps, (entropies if wanted else None), aux

    def _entropies_from_generation(self) -> bool:
        """Whether the sampling entropies are taken from the logits `model.generate` computes while sampling.

        That is TRL's plain transformers generation path (no vLLM, no continuous batching, no tools, no custom
        rollout) when TRL runs no policy forward of its own and only the entropy is needed (EGSW without clipping
        or diagnostics, which need log p_k and E_p[S]): then EGSW costs no forward pass at all.
        """
        args = self.args
        return (
            args.use_egsw
            and args.entropy_clip == "none"
            and not args.log_entropy_dynamics
            and not self.use_vllm
            and not self.use_transformers_continuous_batching
            and not self.tools
            and self.rollout_func is None
            and not self._trl_runs_policy_forward()
        )

    def _generate_single_turn(self, *args, **kwargs):
        if not self._capture_generation:
            return super()._generate_single_turn(*args, **kwargs)
        # Each forward of `generate` yields the next-token logits of every row (prefill: its last position). A
        # forward hook on the causal LM turns them into H(softmax(logits / T)): the same temperature-scaled,
        # unfiltered distribution as TRL's policy forward, under which the tokens were sampled.
        model = self.accelerator.unwrap_model(self.model)
        model = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT: the inner causal LM
        steps = []

        def record(module, inputs, output):
            steps.append(token_entropy(output.logits[:, -1, :], self.temperature))

        handle = model.register_forward_hook(record)
        try:
            result = super()._generate_single_turn(*args, **kwargs)
        finally:
            handle.remove()
        self._captured_stats = {"entropy": torch.stack(steps, dim=1)} if steps else None  # (B, generated steps)
        return result

    def _batch_forward_inputs(self, batch: dict, mode: str):
        input_ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
        attention_mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
        batch_size = self.args.per_device_train_batch_size if mode == "train" else self.args.per_device_eval_batch_size
        return input_ids, attention_mask, batch["completion_ids"].size(1), batch_size

    @torch.no_grad()
    def _policy_forward_stats(self, batch: dict, mode: str) -> dict[str, torch.Tensor]:
        """log p_k and H from TRL's own (fused-head) policy forward: one extra no-grad pass."""
        input_ids, attention_mask, logits_to_keep, batch_size = self._batch_forward_inputs(batch, mode)
        with disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
            logps, entropies, _ = super()._get_per_token_logps_and_entropies(
                self.model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size, compute_entropy=True
            )
        return {"logp": logps, "entropy": entropies}

    @torch.no_grad()
    def _logits_forward_stats(self, batch: dict, mode: str) -> dict[str, torch.Tensor]:
        """log p_k, H, S and E_p[S] from the logits, a few rows at a time.

        Rows per forward: the per-device batch, capped so that one chunk's logits hold at most
        `LOGITS_CHUNK_ELEMENTS` values (for Qwen2.5-Math, 152k vocabulary x 3k tokens is 0.46e9 per row: one row).
        """
        input_ids, attention_mask, logits_to_keep, batch_size = self._batch_forward_inputs(batch, mode)
        vocab_size = self.model.config.get_text_config().vocab_size
        batch_size = max(1, min(batch_size, LOGITS_CHUNK_ELEMENTS // ((logits_to_keep + 1) * vocab_size)))
        completion_ids = batch["completion_ids"]
        chunks = []
        with disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
            for start in range(0, input_ids.size(0), batch_size):
                rows = slice(start, start + batch_size)
                with self.accelerator.autocast():
                    logits = self.model(
                        input_ids=input_ids[rows],
                        attention_mask=attention_mask[rows],
                        logits_to_keep=logits_to_keep + 1,
                        use_cache=False,
                    ).logits[:, :-1]  # (b, T, V): position t predicts completion token t
                chunks.append(token_statistics(logits, completion_ids[rows], temperature=self.temperature))
                del logits
        return {key: torch.cat([c[key] for c in chunks], dim=0) for key in chunks[0]}

    def _sampling_token_stats(self, batch: dict, mode: str) -> dict[str, torch.Tensor]:
        if self.args.entropy_clip == "clip_v" or self.args.log_entropy_dynamics:
            return self._logits_forward_stats(batch, mode)
        stats = self._captured_stats or self._policy_forward_stats(batch, mode)
        stats = {key: value[:, : batch["completion_ids"].size(1)] for key, value in stats.items()}  # generation: >= T
        if self.args.entropy_clip == "clip_b":
            stats = {**stats, "S": discriminator_from_logps(stats["logp"], stats["entropy"])}
        return stats

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
        self._captured_stats = None
        self._capture_policy_forward = self._trl_runs_policy_forward()
        self._capture_generation = self._entropies_from_generation()
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
        after = self._policy_forward_stats(previous["batch"], "train")["entropy"]
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
