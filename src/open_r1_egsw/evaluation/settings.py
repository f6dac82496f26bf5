"""Generation settings of the benchmark evaluation: the one place they are set.

Every value that shapes a completion (sampling temperature and top-p, the token budget, the number of samples per
problem, the seed, and the prompt: template, system prompt, math instruction, chat template) lives in
`GenerationSettings`. `run.py` builds the lighteval model and the task configs from one instance and writes
`to_dict()` into every results file, so a score is never separated from the settings that produced it. Command-line
flags (`--temperature`, `--max-new-tokens`, ...) replace single fields of a profile; they do not introduce other
defaults.

Prompt templates (`prompt_template`):

- `"lighteval"`: each task's own prompt in lighteval 0.13 (`lighteval/tasks/tasks/math_500.py`, `aime.py`,
  `gpqa.py`, copied in benchmarks.py and checked against lighteval's functions by the tests), so that scores set
  beside lighteval's and open-r1's are produced by the same prompt. `instruction` must be None.
- `"problem"`: the problem alone, followed by `instruction` after a blank line when one is set (GPQA keeps its
  multiple-choice template); what the trainer sends when the instruction is None.

Profiles (`--profile`):

- `benchmark` (default with `--model`): Qwen2.5-Math-7B on the real benchmarks with lighteval's prompts. The model
  has 4096 positions (`max_position_embeddings`), so prompt + completion must fit in 4096 tokens: 3072 new tokens
  leave 1024 for the prompt (a GPQA Diamond prompt is about 300-700 tokens with the Qwen tokenizer). A prompt that
  does not fit is skipped and counted (`num_skipped_too_long`), never truncated. Temperature 0.6 / top-p 0.95 are
  the values open-r1 and DeepSeek-R1 report pass@1 with. No system prompt, the model's chat template.
- `qwen`: the same, but Qwen2.5-Math's own prompt: each math problem followed by `QWEN_INSTRUCTION`, "Please reason
  step by step, and put your final answer within \\boxed{}." (the numbers Qwen reports for its models).
- `embedded` (default without `--model`): the tiny embedded Qwen2 (`python -m open_r1_egsw.experiments.embedded`), 512
  positions, scored as the trainer scores it (`quick_eval.greedy_accuracy`, `eval_max_new_tokens` 64 of the tiny
  recipes): greedy, 64 new tokens, and exactly the training prompt (`data.conversation_prompt`): the embedded system
  prompt, then the problem alone (no instruction), through the tokenizer's chat template.

The prompt of a model trained with a recipe is the recipe's: `prompt_from_recipe` reads its `system_prompt` (the
trainer sends the problem column alone, so there is no instruction), `--recipe` applies it, and `--system-prompt`,
`--instruction`, `--no-instruction`, `--chat-template` / `--no-chat-template` set single fields (`--instruction` and
`--no-instruction` select the `"problem"` template).
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


BENCHMARK = GenerationSettings()
QWEN = GenerationSettings(prompt_template="problem", instruction=QWEN_INSTRUCTION)
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
