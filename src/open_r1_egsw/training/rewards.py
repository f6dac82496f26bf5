"""Reward functions for GRPO, selected by name from a registry.

Every reward has TRL's signature `(completions, **kwargs) -> list[float | None]`: one value per completion, where
None means "skip this sample" (TRL turns it into NaN and leaves it out of that reward's statistics). TRL passes the
data set's columns (`solution`, `answer`, ...), `prompts`, `completion_ids`, `trainer_state`, `log_extra` and
`log_metric` as keyword arguments, so each reward takes what it needs and ignores the rest. Completions are either plain
strings or conversations (`[{"role": "assistant", "content": "..."}]`); `completion_text` reads both.

Math answers are parsed and checked only through `open_r1_egsw.training.answers` (`verify_answer`), never by calling math_verify
here, so the accuracy and length rewards cannot drift apart.

Registry (after verl's `register_adv_est`): `@register_reward("name")` adds a reward function, and
`@register_reward("name", factory=True)` a factory `get_<name>(...)` that builds one from parameters; a taken name is
refused. `get_reward_funcs(names, **params)` builds only the selected factories and returns `NamedReward` objects
whose `__name__` is the registry name: TRL 1.16 logs each reward under `__name__`, after unwrapping a
`functools.partial` to the inner function (so open-r1's `update_wrapper(partial(...))` would log the inner function's
name, not the registry name), and its async GRPO worker pickles reward functions (so no closures).

Misbehaving rewards: `NamedReward` checks every call. A reward that raises, returns something other than one value
per completion, or returns NaN/inf or a non-number stops the run with a `RewardError` naming the function and the
problem (one `error:` line, exit 2, through `cli_entry`); checkpoints already written are left as they are. None is
TRL's documented "not applicable" and passes through (see `check_rewards`).

Unparseable golds: the accuracy and length rewards return None for a completion whose gold answer does not parse (a
data problem, not a wrong answer). The accuracy reward counts these completions per gold text in
`UNPARSEABLE_GOLDS` and, inside a trainer, logs the batch fraction as the metric
`accuracy/unparseable_gold_frac`; each distinct unparseable gold is logged once as a warning.
"""

import functools
import inspect
import logging
import math
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
    """Register a reward function (or, with `factory=True`, a factory that builds one) under `name`.

    Raises:
        ValueError: if `name` is already registered.
    """

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
    """A reward function carrying its registry name as `__name__`, for TRL's metric names; picklable.

    Args:
        name: the registry name.
        func: the reward function: a module-level function or a `functools.partial` of one.
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
    """`values` if it is one finite number or None per completion, else a RewardError naming `name`.

    None (for some or all completions) is TRL's "not applicable": TRL leaves that reward out for those completions,
    and a completion every reward skips gets advantage 0 (with a warning). NaN is refused: it is not "skip" but a
    computation gone wrong, and TRL would silently treat it as None.
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


def get_reward_funcs(names: Sequence[str], **params: Any) -> list[NamedReward]:
    """Build the reward functions selected by name, in order.

    Args:
        names: registry names, e.g. `["accuracy", "format"]`.
        **params: parameters for the reward factories (e.g. `max_completion_len`, `soft_punish_cache`); each selected
            factory receives the ones its signature names. Factories that are not selected are not called.

    Raises:
        ValueError: on an unknown name (the message lists the known ones) or a repeated one, on a parameter that no
            registered factory accepts (a typo would otherwise be dropped silently), or when a selected factory lacks
            a required parameter.
    """
    known = ", ".join(sorted(REWARD_FUNCS_REGISTRY))
    for name in names:
        if name not in REWARD_FUNCS_REGISTRY:
            raise ValueError(f"Unknown reward function '{name}'. Known: {known}")
    repeated = sorted({name for name in names if list(names).count(name) > 1})
    if repeated:
        raise ValueError(f"Reward functions selected more than once: {', '.join(repeated)}")

    signatures = {name: inspect.signature(REWARD_FUNCS_REGISTRY[name]) for name in sorted(_FACTORY_NAMES)}
    accepted = {param for signature in signatures.values() for param in signature.parameters}
    stray = sorted(set(params) - accepted)
    if stray:
        factories = "; ".join(f"{name}{signature}" for name, signature in signatures.items())
        raise ValueError(
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
                raise ValueError(
                    f"Reward '{name}' is built by {entry.__name__}{signature}; got parameters {sorted(factory_params)}."
                ) from exc
            entry = entry(**factory_params)
        funcs.append(NamedReward(name, entry))
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
    """1.0 if the completion's final answer equals the gold answer (math_verify, via `answers.verify_answer`), else 0.0.

    Args:
        completions: plain strings or conversations.
        solution: gold column holding full solutions; the last `\\boxed{}` is the answer. Used if given.
        answer: gold column holding bare answers (`3\\sqrt{13}`, `025`); used when there is no `solution` column.
        **kwargs: other columns and TRL's extras; `log_metric`, if passed, receives `accuracy/unparseable_gold_frac`.

    Returns:
        One value per completion; None where the gold does not parse (TRL skips it; counted in `UNPARSEABLE_GOLDS`).

    Raises:
        ValueError: if neither `solution` nor `answer` is given, or their length differs from `completions`'.
    """
    golds = _golds(solution, answer, len(completions), "accuracy")
    rewards = _correctness(completions, golds, count=True)
    log_metric = kwargs.get("log_metric")
    if callable(log_metric) and rewards:
        log_metric("accuracy/unparseable_gold_frac", sum(r is None for r in rewards) / len(rewards))
    return rewards


@register_reward("format")
def format_reward(completions: Sequence, **kwargs: Any) -> list[float]:
    """1.0 if the completion is exactly `<think>\\n...\\n</think>\\n<answer>\\n...\\n</answer>`, else 0.0.

    The pattern is open-r1's (`FORMAT_PATTERN`), matched with DOTALL but without open-r1's MULTILINE, so text after
    `</answer>` (other than one final newline) fails.
    """
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
    """Kimi 1.5 length penalty (Kimi Team, "Kimi k1.5: Scaling Reinforcement Learning with LLMs", arXiv 2501.12599,
    Sec. 2.3.3), as open-r1's `len_reward` but with correctness from `answers.verify_answer`.

    Among the completions of one prompt, with lengths between min_len and max_len:
        lambda = 0.5 - (len - min_len) / (max_len - min_len)
        reward = lambda if the answer is correct, else min(0, lambda)
    so the shortest correct answer gets +0.5, the longest -0.5, and wrong answers are never rewarded for brevity.
    All completions of a prompt get 0.0 when their lengths are all equal.

    Groups: completions with equal `prompts` entries form a group (Kimi's k samples of one problem). TRL passes
    `prompts`; without it the whole call is one group (open-r1's behaviour). Under data parallelism a prompt's group
    may be split across processes; each process normalises over the completions it scores.

    Length: the number of tokens (`completion_ids`, which TRL passes) if given, else the number of characters
    (open-r1's measure).

    Returns:
        One value per completion, in [-0.5, 0.5]; None where the gold does not parse (as in `accuracy_reward`).

    Raises:
        ValueError: if neither `solution` nor `answer` is given, or a column's length differs from `completions`'.
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
    completions: Sequence,
    completion_ids: Sequence[Sequence[int]] | None = None,
    *,
    max_completion_len: int,
    soft_punish_cache: int,
    **kwargs: Any,
) -> list[float]:
    """DAPO soft overlong punishment (Eq. 13); built by `get_soft_overlong_punishment`, see there."""
    if completion_ids is None:
        raise ValueError("The 'soft_overlong' reward needs `completion_ids` (token ids, which TRL passes).")
    if len(completion_ids) != len(completions):
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


@register_reward("soft_overlong", factory=True)
def get_soft_overlong_punishment(max_completion_len: int, soft_punish_cache: int) -> RewardFunc:
    """Build DAPO's soft overlong punishment (Yu et al., "DAPO", arXiv 2503.14476, Eq. 13), on token counts:

        R(y) = 0                                  if |y| <= L_max - L_cache
        R(y) = ((L_max - L_cache) - |y|) / L_cache if L_max - L_cache < |y| <= L_max
        R(y) = -1                                 if L_max < |y|

    where |y| is the number of completion tokens (`completion_ids`). TRL truncates completions at its
    `max_completion_length`, so set `max_completion_len` to that value.

    Args:
        max_completion_len: L_max, in tokens; positive.
        soft_punish_cache: L_cache, in tokens; 0 <= L_cache <= L_max (0: a hard -1 beyond L_max only).

    Raises:
        ValueError: on values outside those ranges.
    """
    if max_completion_len <= 0:
        raise ValueError(f"max_completion_len must be positive, got {max_completion_len}.")
    if not 0 <= soft_punish_cache <= max_completion_len:
        raise ValueError(
            f"soft_punish_cache must be in [0, max_completion_len={max_completion_len}], got {soft_punish_cache}."
        )
    reward = functools.partial(
        soft_overlong_punishment_reward, max_completion_len=max_completion_len, soft_punish_cache=soft_punish_cache
    )
    return functools.update_wrapper(reward, soft_overlong_punishment_reward)
