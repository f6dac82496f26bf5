"""Configuration dataclasses: TRL's, extended only by what this project adds.

A recipe YAML is parsed by TRL's `TrlParser` into `(GRPOScriptArguments, EGSWConfig, ModelConfig)` (GRPO) or
`(SFTScriptArguments, SFTConfig, ModelConfig)` (warm start). Every key of a recipe is a field of one of these
classes: TRL rejects unknown keys ("Unknown arguments from config file"), and command-line flags override the
file (`--egsw_alpha 0.5`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import trl

from open_r1_egsw.errors import ConfigError
from open_r1_egsw.methods.clipping import CLIP_REGISTRY
from open_r1_egsw.methods.egsw import ENTROPY_NORMALIZATIONS, GRANULARITY_REGISTRY, WEIGHT_SCALES

# TRL loss types whose per-token loss is the clipped surrogate -min(r A, clip(r) A), so that a non-negative weight
# on the advantage equals a weight on the per-token loss (METHOD.md section 1).
EGSW_LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
ENTROPY_CLIPS = ("none", *CLIP_REGISTRY)
ENTROPY_CLIP_DEFAULT_MU = {name: rule.default_mu for name, rule in CLIP_REGISTRY.items()}
CONTROLLER_TARGETS = ("none", "entropy", "ess")
CONTROLLER_PARAMS = ("alpha", "temperature")


def _check_choice(name: str, value: str, choices) -> None:
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not valid; choose one of: {', '.join(map(str, choices))}.")


def _check_range(name: str, value, ok: bool, accepts: str) -> None:
    if not ok:
        raise ConfigError(f"{name}: got {value!r}; it accepts {accepts}.")


def _positive(value) -> bool:
    return math.isfinite(value) and value > 0


@dataclass
class EGSWConfig(trl.GRPOConfig):
    r"""
    [`trl.GRPOConfig`] plus Entropy-Guided Sequence Weighting (arXiv 2503.22456) and entropy-discriminator clipping
    (arXiv 2602.03392). Only the fields below are new; every GRPOConfig field keeps its meaning. The formulas are
    in methods/ (egsw.py, clipping.py); `tests/test_configs.py` checks that this docstring and the fields agree.

    Parameters:
        > Parameters that control EGSW

        use_egsw (`bool`, *optional*, defaults to `False`):
            Multiply each token's advantage by its EGSW weight. `False` leaves the trainer exactly TRL's GRPO.
        egsw_alpha (`float`, *optional*, defaults to `0.3`):
            Entropy coefficient alpha >= 0 in exp((A + alpha * H) / P). 0 ignores entropy.
        egsw_temperature (`float`, *optional*, defaults to `1.0`):
            Softmax temperature P > 0. Large P flattens the weights towards GRPO; small P concentrates them.
        egsw_granularity (`str`, *optional*, defaults to `"token"`):
            `"token"`: one softmax per generation step over the completions still present at that step (the
            paper's step-wise weights); `"sequence"`: one weight per completion from its advantage and its mean
            entropy (trajectory-wise).
        egsw_entropy_normalization (`str`, *optional*, defaults to `"log_vocab"`):
            `"log_vocab"` divides entropies (nats) by log |V| so they lie in [0, 1]; `"none"` uses nats.
        egsw_weight_scale (`str`, *optional*, defaults to `"group_size"`):
            `"group_size"` multiplies the weights by the number of completions in each softmax (uniform weights
            are 1: plain GRPO); `"none"` keeps the paper-literal weights that sum to 1 over the group.

        > Parameters that control entropy-discriminator clipping

        entropy_clip (`str`, *optional*, defaults to `"none"`):
            `"clip_b"` (batch-normalised) or `"clip_v"` (vocabulary-normalised) drop from the gradient the
            negative-advantage tokens whose update would shrink entropy most; `"none"` disables. Composes with
            EGSW (mask times weight).
        entropy_clip_mu (`float`, *optional*, defaults to `None`):
            Threshold mu in standard deviations; `None` takes the paper's default, 2.5 for clip_b, 8.5 for clip_v.
        entropy_clip_max_frac (`float`, *optional*, defaults to `0.0001`):
            clip_v only: the largest fraction of valid tokens clipped per generation batch, most violating first.
        log_entropy_dynamics (`bool`, *optional*, defaults to `False`):
            Log the discriminator diagnostics (mean S, mean S - E[S]) and the predicted vs measured entropy change
            of each step. Costs one extra no-grad forward per generation batch (two with the measurement).

        > Parameters that control the adaptive EGSW controller

        egsw_controller (`str`, *optional*, defaults to `"none"`):
            `"entropy"` adapts `egsw_controller_param` to hold the mean token entropy at `egsw_controller_target`;
            `"ess"` holds the mean weight effective sample size there; `"none"` keeps alpha and P fixed.
        egsw_controller_param (`str`, *optional*, defaults to `"alpha"`):
            Which hyper-parameter the controller moves: `"alpha"` or `"temperature"`.
        egsw_controller_target (`float`, *optional*, defaults to `0.5`):
            Target value (normalised entropy, or ESS in (0, 1]).
        egsw_controller_lr (`float`, *optional*, defaults to `0.1`):
            Step size of the controller's multiplicative update, per generation batch.
        egsw_controller_min (`float`, *optional*, defaults to `0.01`):
            Lower bound of the controlled value.
        egsw_controller_max (`float`, *optional*, defaults to `10.0`):
            Upper bound of the controlled value.

        > Parameters kept from open-r1 (TRL 0.18)

        max_prompt_length (`int`, *optional*, defaults to `None`):
            Keep only the last `max_prompt_length` tokens of each templated prompt (left truncation, as TRL 0.18
            and open-r1 did); `None` keeps whole prompts. TRL 1.16 dropped the field.
    """

    use_egsw: bool = field(
        default=False,
        metadata={"help": "Multiply each token's advantage by its EGSW weight. False: exactly TRL's GRPO."},
    )
    egsw_alpha: float = field(
        default=0.3,
        metadata={"help": "Entropy coefficient alpha >= 0 in exp((A + alpha * H) / P). 0 ignores entropy."},
    )
    egsw_temperature: float = field(
        default=1.0,
        metadata={"help": "Softmax temperature P > 0. Large P flattens the weights towards GRPO."},
    )
    egsw_granularity: str = field(
        default="token",
        metadata={
            "help": "'token': a softmax per generation step over the completions present (step-wise); "
            "'sequence': one weight per completion from A_i and its mean entropy (trajectory-wise)."
        },
    )
    egsw_entropy_normalization: str = field(
        default="log_vocab",
        metadata={"help": "'log_vocab': entropy / log|V|, in [0, 1]; 'none': entropy in nats."},
    )
    egsw_weight_scale: str = field(
        default="group_size",
        metadata={
            "help": "'group_size': weights times the number of completions in each softmax (uniform = GRPO); "
            "'none': paper-literal weights summing to 1 over the group."
        },
    )
    entropy_clip: str = field(
        default="none",
        metadata={"help": "'clip_b' | 'clip_v': drop entropy-collapsing negative-advantage tokens; 'none'."},
    )
    entropy_clip_mu: float | None = field(
        default=None,
        metadata={"help": "Clipping threshold mu in standard deviations; None: 2.5 (clip_b) or 8.5 (clip_v)."},
    )
    entropy_clip_max_frac: float = field(
        default=1e-4,
        metadata={"help": "clip_v: largest fraction of valid tokens clipped per generation batch, in [0, 1]."},
    )
    log_entropy_dynamics: bool = field(
        default=False,
        metadata={
            "help": "Log mean S, mean S - E[S] and predicted vs measured entropy change per step "
            "(extra no-grad forwards)."
        },
    )
    egsw_controller: str = field(
        default="none",
        metadata={"help": "'entropy' or 'ess': adapt alpha or P to hold a target; 'none' keeps them fixed."},
    )
    egsw_controller_param: str = field(
        default="alpha", metadata={"help": "Hyper-parameter the controller moves: 'alpha' or 'temperature'."}
    )
    egsw_controller_target: float = field(
        default=0.5, metadata={"help": "Controller target: normalised entropy, or ESS in (0, 1]."}
    )
    egsw_controller_lr: float = field(
        default=0.1, metadata={"help": "Step size of the controller's multiplicative update, > 0."}
    )
    egsw_controller_min: float = field(default=0.01, metadata={"help": "Lower bound of the controlled value."})
    egsw_controller_max: float = field(default=10.0, metadata={"help": "Upper bound of the controlled value."})
    max_prompt_length: int | None = field(
        default=None,
        metadata={
            "help": "Keep the last max_prompt_length tokens of each templated prompt (left truncation, TRL 0.18 / "
            "open-r1); None keeps whole prompts."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        _check_choice("egsw_granularity", self.egsw_granularity, sorted(GRANULARITY_REGISTRY))
        _check_choice("egsw_entropy_normalization", self.egsw_entropy_normalization, ENTROPY_NORMALIZATIONS)
        _check_choice("egsw_weight_scale", self.egsw_weight_scale, WEIGHT_SCALES)
        _check_choice("entropy_clip", self.entropy_clip, ENTROPY_CLIPS)
        _check_choice("egsw_controller", self.egsw_controller, CONTROLLER_TARGETS)
        _check_choice("egsw_controller_param", self.egsw_controller_param, CONTROLLER_PARAMS)
        self._check_checkpoints_resume_exactly()
        self._check_ranges()
        if self.egsw_controller != "none" and not self.use_egsw:
            raise ConfigError("egsw_controller needs use_egsw: true (it adapts the EGSW weights).")
        if (self.use_egsw or self.entropy_clip != "none") and self.loss_type not in EGSW_LOSS_TYPES:
            raise ConfigError(
                f"loss_type={self.loss_type!r} cannot be combined with use_egsw/entropy_clip: the weights multiply "
                f"the clipped surrogate of {', '.join(EGSW_LOSS_TYPES)} only. Set loss_type to one of these."
            )

    def _check_ranges(self) -> None:
        """The ranges of the fields this class adds (TRL's own fields are TRL's to check)."""
        alpha, mu, frac = self.egsw_alpha, self.entropy_clip_mu, self.entropy_clip_max_frac
        _check_range("egsw_alpha", alpha, math.isfinite(alpha) and alpha >= 0, "a finite number >= 0")
        _check_range("egsw_temperature", self.egsw_temperature, _positive(self.egsw_temperature), "a number > 0")
        _check_range("entropy_clip_mu", mu, mu is None or _positive(mu), "a number > 0, or null (the paper's default)")
        _check_range("entropy_clip_max_frac", frac, 0 <= frac <= 1, "a number in [0, 1]")
        _check_range("egsw_controller_lr", self.egsw_controller_lr, _positive(self.egsw_controller_lr), "a number > 0")
        low, high = self.egsw_controller_min, self.egsw_controller_max
        if not (_positive(low) and _positive(high) and low < high):
            raise ConfigError(
                f"egsw_controller_min ({low}) and egsw_controller_max ({high}) must satisfy 0 < min < max."
            )
        length = self.max_prompt_length
        _check_range("max_prompt_length", length, length is None or length >= 1, "an integer >= 1, or null")

    def _check_checkpoints_resume_exactly(self) -> None:
        """Checkpoints must fall on generation-batch boundaries, the only places a resume is exact.

        TRL generates once per `steps_per_generation * num_iterations` micro-batches and keeps the batch in memory
        (not in the checkpoint); resumed mid-batch, it would generate again with another RNG state and restart the
        slicing at 0 (tests/test_resume.py shows both). So `save_steps * gradient_accumulation_steps` must be a
        multiple of that period.
        """
        if str(getattr(self.save_strategy, "value", self.save_strategy)) != "steps" or self.save_steps < 1:
            return
        period = self.steps_per_generation * self.num_iterations
        micro = int(self.save_steps) * self.gradient_accumulation_steps
        if micro % period:
            step = period // math.gcd(period, self.gradient_accumulation_steps)
            raise ConfigError(
                f"save_steps={int(self.save_steps)} puts checkpoints inside a generation batch (steps_per_generation="
                f"{self.steps_per_generation} x num_iterations={self.num_iterations} micro-batches, "
                f"gradient_accumulation_steps={self.gradient_accumulation_steps}), where a resume is not exact; "
                f"use a multiple of {step} for save_steps."
            )

    @property
    def resolved_entropy_clip_mu(self) -> float:
        """mu for the active clip method: the configured value, else the paper's default."""
        if self.entropy_clip_mu is not None:
            return self.entropy_clip_mu
        return ENTROPY_CLIP_DEFAULT_MU.get(self.entropy_clip, math.inf)


@dataclass
class ScriptArgumentsMixin:
    """Fields shared by the GRPO and SFT entry points (data set columns, prompt, output-dir safety)."""

    dataset_prompt_column: str = field(
        default="problem", metadata={"help": "Column holding the question; it becomes the user message."}
    )
    system_prompt: str | None = field(
        default=None, metadata={"help": "System message prepended to every prompt; None: no system message."}
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Allow writing into a non-empty output_dir. False: refuse, so no run is overwritten."},
    )
    chat_template: str | None = field(
        default=None,
        metadata={
            "help": "Jinja chat template that replaces the tokenizer's (open-r1's field, e.g. for base models); "
            "None keeps the tokenizer's own."
        },
    )


@dataclass
class GRPOScriptArguments(ScriptArgumentsMixin, trl.ScriptArguments):
    """Script arguments for `grpo.py`: data set, prompt format and rewards."""

    reward_funcs: list[str] = field(
        default_factory=lambda: ["accuracy", "format"],
        metadata={"help": "Reward functions by registry name (see rewards.REWARD_FUNCS_REGISTRY)."},
    )
    max_completion_len: int = field(
        default=16384,
        metadata={
            "help": "soft_overlong reward: L_max, the completion length in tokens from which the punishment is -1 "
            "(open-r1's key; set it to max_completion_length)."
        },
    )
    soft_punish_cache: int = field(
        default=4096,
        metadata={
            "help": "soft_overlong reward: L_cache, the tokens before max_completion_len over which the punishment "
            "grows linearly from 0 to -1 (open-r1's key); 0 <= soft_punish_cache <= max_completion_len."
        },
    )
    eval_accuracy_samples: int = field(
        default=0,
        metadata={
            "help": "Before and after training, greedy accuracy on this many rows of the test split "
            "(0 disables). Printed and saved to accuracy.json."
        },
    )
    eval_max_new_tokens: int = field(
        default=64, metadata={"help": "Max new tokens for the before/after greedy accuracy check."}
    )
    stop_tokens: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Tokens that also end a completion, besides the tokenizer's EOS and the model's "
            "generation_config eos_token_id: e.g. '<|im_end|>' for a base model whose EOS is '<|endoftext|>' while its "
            "chat template ends turns with '<|im_end|>'. Added to the model's generation_config (TRL's transformers "
            "generation, its completion masks) and, with vLLM, to generation_kwargs' stop_token_ids."
        },
    )


@dataclass
class SFTScriptArguments(ScriptArgumentsMixin, trl.ScriptArguments):
    """Script arguments for `sft.py` (warm start): the reference completion column to imitate."""

    dataset_completion_column: str = field(
        default="completion_reference",
        metadata={"help": "Column holding the assistant completion the model imitates."},
    )
