"""Generation settings of the benchmark evaluation: sampling, token budgets, samples per problem, seed and prompt.

`GenerationSettings` is the one place they are set, and every results file records it. Profiles: `benchmark`
(lighteval's prompts), `qwen` (Qwen2.5-Math's instruction), `embedded` (the tiny model, prompted as the trainer does);
`prompt_from_recipe` gives a training recipe's prompt.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

from open_r1_egsw.training.data import SYSTEM_PROMPT as EMBEDDED_SYSTEM_PROMPT

# Qwen2.5-Math's math instruction, appended to every MATH / AIME problem by the `qwen` profile.
QWEN_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
PROMPT_TEMPLATES = ("lighteval", "problem")

# Offline override of the benchmark data: a directory with one sub-directory per task (see tasks.py).
DATA_DIR_ENV = "EGSW_EVAL_DATA_DIR"


@dataclass(frozen=True)
class GenerationSettings:
    """How completions are generated for every benchmark task.

    Parameters:
        temperature (`float`, defaults to `0.6`):
            Sampling temperature, >= 0. 0 is greedy decoding and then requires `num_samples == 1`.
        top_p (`float`, defaults to `0.95`):
            Nucleus sampling threshold, in (0, 1].
        max_new_tokens (`int`, defaults to `3072`):
            Completion budget in tokens; also each task's lighteval `generation_size`.
        max_model_length (`int`, defaults to `4096`):
            Prompt + completion budget in tokens (vLLM `max_model_len`, transformers `max_length`). Capped at run time
            by the model's own `max_position_embeddings` when that is smaller.
        num_samples (`int`, defaults to `1`):
            Completions sampled per problem (k). The reported pass@1 is the mean correctness over the k samples, the
            unbiased pass@1 estimator of Chen et al. 2021 (huggingface.co/papers/2107.03374).
        seed (`int`, defaults to `1234`):
            Seed of the sampler (vLLM `seed`, `torch.manual_seed` before each task on the transformers backend).
        prompt_template (`str`, defaults to `"lighteval"`):
            `"lighteval"`: each task's lighteval 0.13 prompt; `"problem"`: the problem, then `instruction` if set.
        system_prompt (`str` or `None`, defaults to `None`):
            System message put before every prompt (chat template models only); None or "" sends none.
        instruction (`str` or `None`, defaults to `None`):
            With the `"problem"` template, appended to each math problem after a blank line; None sends the problem
            alone. GPQA keeps its template.
        chat_template (`bool` or `None`, defaults to `None`):
            Format prompts with the tokenizer's chat template (True), as plain text (False), or when the tokenizer
            has one (None, lighteval's own rule).
    """

    temperature: float = 0.6
    top_p: float = 0.95
    max_new_tokens: int = 3072
    max_model_length: int = 4096
    num_samples: int = 1
    seed: int = 1234
    prompt_template: str = "lighteval"
    system_prompt: str | None = None
    instruction: str | None = None
    chat_template: bool | None = None

    def __post_init__(self):
        if self.system_prompt == "":  # the trainer sends no system message for an empty one (data.py)
            object.__setattr__(self, "system_prompt", None)
        if self.instruction == "":
            object.__setattr__(self, "instruction", None)
        if self.prompt_template not in PROMPT_TEMPLATES:
            raise ValueError(
                f"prompt_template must be one of {', '.join(PROMPT_TEMPLATES)}, got {self.prompt_template!r}."
            )
        if self.prompt_template == "lighteval" and self.instruction is not None:
            raise ValueError(
                "instruction applies to prompt_template 'problem' only (lighteval's prompts carry their own)."
            )
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}.")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}.")
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {self.num_samples}.")
        if self.temperature == 0 and self.num_samples > 1:
            raise ValueError(
                f"num_samples={self.num_samples} with temperature=0 would repeat one greedy completion; "
                "set a temperature > 0 or num_samples=1."
            )
        if not 0 < self.max_new_tokens < self.max_model_length:
            raise ValueError(
                f"max_new_tokens ({self.max_new_tokens}) must be positive and below max_model_length "
                f"({self.max_model_length}): prompt + completion must fit in the model's context."
            )

    def override(self, **changes) -> GenerationSettings:
        """A copy with the given fields replaced; None values are ignored (a flag that was not given)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict:
        return asdict(self)


# Qwen2.5-Math-7B on the real benchmarks: 4096 positions, 3072 of them for the completion; temperature 0.6 and
# top-p 0.95 as open-r1 and DeepSeek-R1 report pass@1.
BENCHMARK = GenerationSettings()
QWEN = GenerationSettings(prompt_template="problem", instruction=QWEN_INSTRUCTION)
# The tiny embedded model as the trainer scores it (quick_eval.greedy_accuracy): greedy, 64 new tokens, 512
# positions, the training prompt (the embedded system prompt, the problem alone, the chat template).
EMBEDDED = GenerationSettings(
    temperature=0.0,
    max_new_tokens=64,
    max_model_length=512,
    prompt_template="problem",
    system_prompt=EMBEDDED_SYSTEM_PROMPT,
    instruction=None,
    chat_template=True,
)

PROFILES = {"benchmark": BENCHMARK, "qwen": QWEN, "embedded": EMBEDDED}


def prompt_from_recipe(path: str | Path) -> dict:
    """The prompt fields a training recipe implies: its `system_prompt`, the problem alone, the chat template.

    grpo.py and sft.py send `conversation_prompt(row[dataset_prompt_column], system_prompt)` through the tokenizer's
    chat template, so a model trained with the recipe is evaluated on the same messages.

    Raises:
        ValueError: the file is missing, is not a YAML mapping, or its `system_prompt` is not a string.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"recipe not found: {path}")
    try:
        recipe = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"recipe {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(recipe, dict):
        raise ValueError(f"recipe {path} is not a mapping of keys to values")
    system_prompt = recipe.get("system_prompt")
    if system_prompt is not None and not isinstance(system_prompt, str):
        raise ValueError(f"recipe {path}: system_prompt must be a string, got {type(system_prompt).__name__}")
    return {
        "prompt_template": "problem",
        "system_prompt": system_prompt or None,
        "instruction": None,
        "chat_template": True,
    }
