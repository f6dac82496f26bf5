"""Reward functions for GRPO, selected by name from a registry.

Every reward has TRL's signature `(completions, **kwargs) -> list[float | None]`: one value per completion, None to
skip it. Completions are strings or conversations (`completion_text` reads both). `@register_reward(name)` adds a
reward, `factory=True` a factory that builds one from recipe keys (`GRPOScriptArguments`); `get_reward_funcs` returns
picklable `NamedReward`s named by the registry, which stop the run with a `RewardError` when a reward misbehaves.
Math answers are checked only through `answers.verify_answer`; a completion whose gold does not parse scores None.
"""

import functools
import inspect
import logging
import math
import numbers
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from open_r1_egsw.errors import ConfigError
from open_r1_egsw.training.answers import verify_answer

logger = logging.getLogger(__name__)

RewardFunc = Callable[..., list[float | None]]

# Registry name -> reward function, or reward factory for the names in _FACTORY_NAMES.
REWARD_FUNCS_REGISTRY: dict[str, Callable] = {}
_FACTORY_NAMES: set[str] = set()

# Gold text -> number of completions the accuracy reward scored None because that gold does not parse.
UNPARSEABLE_GOLDS: Counter[str] = Counter()
_WARNED_GOLDS: set[str] = set()

# open-r1's format pattern. Matched with DOTALL only: open-r1 also passes MULTILINE, which lets "$" match at any line
# end, so a completion with text after "</answer>\n" still scored 1.
FORMAT_PATTERN = re.compile(r"^<think>\n.*?\n</think>\n<answer>\n.*?\n</answer>$", re.DOTALL)


def register_reward(name: str, *, factory: bool = False) -> Callable[[Callable], Callable]:
    """Register a reward function (or, with `factory=True`, a factory that builds one) under `name`, once."""

    def decorator(func: Callable) -> Callable:
        if name in REWARD_FUNCS_REGISTRY:
            taken_by = getattr(REWARD_FUNCS_REGISTRY[name], "__qualname__", REWARD_FUNCS_REGISTRY[name])
            raise ValueError(f"Reward function '{name}' is already registered (by {taken_by}).")
        REWARD_FUNCS_REGISTRY[name] = func
        if factory:
            _FACTORY_NAMES.add(name)
        return func

    return decorator


class NamedReward:
    """A reward function (module-level, or a partial of one) named `name` for TRL's metrics; checks every call.

    A reward that raises, or returns anything but one finite number or None per completion, is a `RewardError`.
    """

    def __init__(self, name: str, func: RewardFunc) -> None:
        functools.update_wrapper(self, func)  # docstring and __wrapped__ (so inspect.signature shows func's)
        self.__name__ = name
        self.__qualname__ = name
        self.func = func

    def __call__(self, *args: Any, **kwargs: Any) -> list[float | None]:
        completions = kwargs["completions"] if "completions" in kwargs else (args[0] if args else None)
        where = _where(kwargs)
        try:
            values = self.func(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 (any failure of user code stops the run with its name)
            detail = " ".join(str(err).split())[:200]
            raise RewardError(
                f"reward function {self.__name__!r} raised {type(err).__name__}: {detail}{where}"
            ) from err
        return check_rewards(self.__name__, values, None if completions is None else len(completions), where)

    def __repr__(self) -> str:
        return f"NamedReward({self.__name__!r}, {self.func!r})"


class RewardError(ConfigError):
    """A reward function failed or returned something TRL cannot use: one `error:` line naming it (cli_entry)."""

    mid_run = True


def _where(kwargs: dict) -> str:
    state = kwargs.get("trainer_state")
    return f" (training step {state.global_step + 1})" if getattr(state, "global_step", None) is not None else ""


def check_rewards(name: str, values: Any, expected: int | None, where: str = "") -> list[float | None]:
    """`values` if it is one finite number or None (TRL's "skip") per completion, else a RewardError naming `name`.

    NaN is refused: TRL would silently read it as None.
    """
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise RewardError(
            f"reward function {name!r} returned {type(values).__name__}, not a list of one value per completion{where}"
        )
    if expected is not None and len(values) != expected:
        raise RewardError(f"reward function {name!r} returned {len(values)} values for {expected} completions{where}")
    for i, value in enumerate(values):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RewardError(
                f"reward function {name!r} returned {type(value).__name__} {value!r:.40} for completion {i}; a reward "
                f"is a number, or None to skip the completion{where}"
            )
        if not math.isfinite(value):
            raise RewardError(
                f"reward function {name!r} returned {value} for completion {i} of {len(values)}; return a finite "
                f"number, or None to skip the completion{where}"
            )
    return list(values)


def get_reward_funcs(
    selection: Sequence[str] | Any, /, *, max_completion_length: int | None = None, **params: Any
) -> list[NamedReward]:
    """Build the selected rewards, in order; only the selected factories are called.

    `selection` is a list of registry names with the factory parameters in `params`, or (open-r1's call) script
    arguments: their `reward_funcs`, and their fields named like a factory parameter. `max_completion_length`, TRL's
    cut, if given, refuses a `soft_overlong` that could never punish. User errors raise ConfigError.
    """
    names = [selection] if isinstance(selection, str) else list(getattr(selection, "reward_funcs", selection))
    signatures = {name: inspect.signature(REWARD_FUNCS_REGISTRY[name]) for name in sorted(_FACTORY_NAMES)}
    accepted = {param for signature in signatures.values() for param in signature.parameters}
    if not isinstance(selection, Sequence):
        params = {key: getattr(selection, key) for key in accepted if hasattr(selection, key)} | params
    for name in names:
        if name not in REWARD_FUNCS_REGISTRY:
            known = ", ".join(sorted(REWARD_FUNCS_REGISTRY))
            raise ConfigError(f"Unknown reward function '{name}'. Known: {known}")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(f"Reward functions selected more than once: {', '.join(repeated)}")
    stray = sorted(set(params) - accepted)
    if stray:
        factories = "; ".join(f"{name}{signature}" for name, signature in signatures.items())
        raise ConfigError(
            f"Reward parameters accepted by no reward factory: {', '.join(stray)}. Factories: {factories}"
        )

    funcs = []
    for name in names:
        entry = REWARD_FUNCS_REGISTRY[name]
        if name in _FACTORY_NAMES:
            signature = signatures[name]
            factory_params = {key: value for key, value in params.items() if key in signature.parameters}
            try:
                signature.bind(**factory_params)
            except TypeError as exc:
                raise ConfigError(
                    f"Reward '{name}' is built by {entry.__name__}{signature}; got parameters {sorted(factory_params)}."
                ) from exc
            entry = entry(**factory_params)
        funcs.append(NamedReward(name, entry))
    if "soft_overlong" in names and max_completion_length is not None:
        free_len = params["max_completion_len"] - params["soft_punish_cache"]
        if max_completion_length <= free_len:
            raise ConfigError(
                f"The 'soft_overlong' reward never punishes: completions stop at max_completion_length="
                f"{max_completion_length} tokens, within max_completion_len - soft_punish_cache = {free_len}. "
                f"Set max_completion_len to {max_completion_length}, with a positive soft_punish_cache."
            )
    return funcs


def completion_text(completion: str | list[dict[str, Any]]) -> str:
    """Return the text of a completion: the string itself, or the content of the last assistant message.

    Content given as a list of parts (`[{"type": "text", "text": ...}]`) is joined; anything else reads as "".
    """
    if isinstance(completion, str):
        return completion
    if not isinstance(completion, list) or not completion:
        return ""
    messages = [message for message in completion if isinstance(message, dict)]
    assistant = [message for message in messages if message.get("role") == "assistant"]
    content = (assistant or messages or [{}])[-1].get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text") or "" for part in content if isinstance(part, dict))
    return ""


def _golds(solution: Sequence | None, answer: Sequence | None, n: int, reward_name: str) -> list[str]:
    """Pick the gold column (`solution` first, else `answer`) and check it has one entry per completion."""
    column = solution if solution is not None else answer
    if column is None:
        raise ValueError(
            f"The '{reward_name}' reward needs the gold answers: the data set must have a `solution` column (a full "
            "solution with \\boxed{}) or an `answer` column (a bare answer). Neither was passed."
        )
    if len(column) != n:
        raise ValueError(f"The '{reward_name}' reward got {n} completions but {len(column)} gold answers.")
    return ["" if gold is None else str(gold) for gold in column]  # AIME copies store answers as int


def _correctness(completions: Sequence, golds: list[str], count: bool) -> list[float | None]:
    """`verify_answer` per completion; warn once per distinct unparseable gold, count it if `count`."""
    scores = [verify_answer(gold, completion_text(completion)) for gold, completion in zip(golds, completions)]
    for gold, score in zip(golds, scores):
        if score is not None:
            continue
        if count:
            UNPARSEABLE_GOLDS[gold] += 1
        if gold not in _WARNED_GOLDS:
            _WARNED_GOLDS.add(gold)
            logger.warning("Gold answer %.200r does not parse: its completions get reward None (skipped).", gold)
    return scores


@register_reward("accuracy")
def accuracy_reward(
    completions: Sequence, solution: Sequence | None = None, answer: Sequence | None = None, **kwargs: Any
) -> list[float | None]:
    """1.0 if the completion's final answer equals the gold (`answers.verify_answer`), else 0.0.

    The gold is the `solution` column (its last `\\boxed{}`), else the bare `answer` column. A gold that does not
    parse scores None, is counted in `UNPARSEABLE_GOLDS` and logged as `accuracy/unparseable_gold_frac`.
    """
    golds = _golds(solution, answer, len(completions), "accuracy")
    rewards = _correctness(completions, golds, count=True)
    log_metric = kwargs.get("log_metric")
    if callable(log_metric) and rewards:
        log_metric("accuracy/unparseable_gold_frac", sum(r is None for r in rewards) / len(rewards))
    return rewards


@register_reward("format")
def format_reward(completions: Sequence, **kwargs: Any) -> list[float]:
    """1.0 if the completion is exactly `<think>\\n...\\n</think>\\n<answer>\\n...\\n</answer>`, else 0.0."""
    return [1.0 if FORMAT_PATTERN.match(completion_text(c)) else 0.0 for c in completions]


@register_reward("tag_count")
def tag_count_reward(completions: Sequence, **kwargs: Any) -> list[float]:
    """open-r1's partial format credit: 0.25 for each of `<think>\\n`, `\\n</think>\\n`, `\\n<answer>\\n`, `\\n</answer>`
    that occurs exactly once in the completion (so 0.0 to 1.0 in steps of 0.25)."""
    tags = ("<think>\n", "\n</think>\n", "\n<answer>\n", "\n</answer>")
    return [0.25 * sum(completion_text(c).count(tag) == 1 for tag in tags) for c in completions]


@register_reward("length")
def len_reward(
    completions: Sequence,
    solution: Sequence | None = None,
    answer: Sequence | None = None,
    completion_ids: Sequence[Sequence[int]] | None = None,
    prompts: Sequence | None = None,
    **kwargs: Any,
) -> list[float | None]:
    """Kimi 1.5's length penalty (arXiv 2501.12599, Sec. 2.3.3), as open-r1's `len_reward`, in [-0.5, 0.5].

    Within each group of equal `prompts` (the whole call without them), lambda = 0.5 - (len - min) / (max - min);
    a correct completion gets lambda, a wrong one min(0, lambda), all get 0 when the lengths are equal. Lengths are
    token counts (`completion_ids`), else characters. A gold that does not parse scores None.
    """
    n = len(completions)
    golds = _golds(solution, answer, n, "length")
    correct = _correctness(completions, golds, count=False)  # accuracy_reward counts unparseable golds
    if completion_ids is not None:
        if len(completion_ids) != n:
            raise ValueError(f"The 'length' reward got {n} completions but {len(completion_ids)} completion_ids.")
        lengths = [len(ids) for ids in completion_ids]
    else:
        lengths = [len(completion_text(c)) for c in completions]
    if prompts is not None and len(prompts) != n:
        raise ValueError(f"The 'length' reward got {n} completions but {len(prompts)} prompts.")

    groups: dict[str, list[int]] = defaultdict(list)  # prompt -> indices of its completions
    for i in range(n):
        groups[repr(prompts[i]) if prompts is not None else ""].append(i)

    rewards: list[float | None] = [None] * n
    for indices in groups.values():
        min_len = min(lengths[i] for i in indices)
        max_len = max(lengths[i] for i in indices)
        for i in indices:
            if correct[i] is None:
                continue  # gold does not parse: skip (None)
            if max_len == min_len:
                rewards[i] = 0.0
                continue
            lam = 0.5 - (lengths[i] - min_len) / (max_len - min_len)
            rewards[i] = lam if correct[i] == 1.0 else min(0.0, lam)
    return rewards


def soft_overlong_punishment_reward(
    completions: Sequence | None = None,
    completion_ids: Sequence[Sequence[int]] | None = None,
    *,
    max_completion_len: int,
    soft_punish_cache: int,
    **kwargs: Any,
) -> list[float]:
    """DAPO soft overlong punishment on token counts; built by `get_soft_overlong_punishment`.

    TRL passes `completions` and `completion_ids`; open-r1's call, `reward(completion_ids)`, passes the ids alone.
    """
    if completion_ids is None:  # open-r1's call: the ids are the only (first) argument
        completions, completion_ids = None, completions
    if completion_ids is None or not all(_is_token_ids(ids) for ids in completion_ids):
        raise ValueError("The 'soft_overlong' reward needs `completion_ids` (token ids, which TRL passes).")
    if completions is not None and len(completion_ids) != len(completions):
        raise ValueError(
            f"'soft_overlong' got {len(completions)} completions but {len(completion_ids)} completion_ids."
        )
    free_len = max_completion_len - soft_punish_cache  # L_max - L_cache: no punishment up to here
    rewards = []
    for ids in completion_ids:
        length = len(ids)
        if length <= free_len:
            rewards.append(0.0)
        elif length <= max_completion_len:
            rewards.append((free_len - length) / soft_punish_cache)  # linear from 0 to -1 across the cache
        else:
            rewards.append(-1.0)
    return rewards


def _is_token_ids(ids: Any) -> bool:
    """A list of token ids, not a text or a conversation (its first element decides)."""
    return not isinstance(ids, (str, dict)) and _is_int(next(iter(ids), 0))


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@register_reward("soft_overlong", factory=True)
def get_soft_overlong_punishment(max_completion_len: int, soft_punish_cache: int) -> RewardFunc:
    """DAPO's soft overlong punishment (arXiv 2503.14476, Eq. 13), as open-r1's, on the completion's token count n:
    0 if n <= L_max - L_cache, (L_max - L_cache - n) / L_cache up to L_max, -1 beyond. L_max is
    `max_completion_len` (> 0; TRL cuts completions at `max_completion_length`), L_cache `soft_punish_cache`
    (0 <= L_cache <= L_max). Raises ConfigError outside those ranges.
    """
    if not (_is_int(max_completion_len) and max_completion_len > 0):
        raise ConfigError(f"max_completion_len must be a positive integer, got {max_completion_len!r}.")
    if not (_is_int(soft_punish_cache) and 0 <= soft_punish_cache <= max_completion_len):
        raise ConfigError(
            f"soft_punish_cache must be an integer in [0, max_completion_len={max_completion_len}], got "
            f"{soft_punish_cache!r}."
        )
    reward = functools.partial(
        soft_overlong_punishment_reward, max_completion_len=max_completion_len, soft_punish_cache=soft_punish_cache
    )
    return functools.update_wrapper(reward, soft_overlong_punishment_reward)
