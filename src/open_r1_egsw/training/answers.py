"""Parse and check final math answers: the one module that calls math_verify.

Training rewards (`open_r1_egsw.training.rewards`) and the evaluation tasks import these three functions; no other module calls
math_verify directly, so a fix made here reaches both (open-r1 carried three drifting copies of this logic: STYLE.md,
"What to avoid" 3).

Choices, each measured on math-verify 0.5.2 / latex2sympy2_extended 1.0.6:

1. Gold answers. A gold containing `\\boxed{...}` (a MATH `solution` field) is reduced to its LAST boxed content. A bare
   answer (an `answer` column: `3\\sqrt{13}`, `\\text{Evelyn}`, `025`) is wrapped in `$...$` before `parse`: parsed
   bare, `\\text{Evelyn}` and `\\{1,2,3\\}` come back empty and `3\\sqrt{13}` comes back as `3`, silently wrong.
   A gold for which math_verify returns only its raw-string fallback (no sympy object, e.g. `\\frac{`) counts as
   not parsed. Parsed golds are cached (a gold repeats once per generation of its prompt).
2. Completions. The last `\\boxed{}` wins; without one (or if it does not parse), math_verify's default LaTeX + plain
   expression extraction reads the final answer from the last `MAX_SEARCH_CHARS` characters only. Its regexes are
   super-linear: 100,000 characters of "1 1 1 ..." took 34 s, 4,000 characters 0.06 s.
3. Verification is `verify(gold, target)` (math_verify's argument order: the gold is first) with integer timeouts:
   math_verify arms them with `signal.alarm`, which rejects a float. A timeout counts as "not equivalent".
4. Leading zeros compare equal ("025" vs 25, AIME): math_verify reads both as the integer 25.
5. Non-ASCII decimal digits (full-width `５`, Arabic-Indic `٣`) are mapped to ASCII first: math_verify matches them
   with `\\d` and then fails to sympify them, which empties the whole parse of an otherwise good completion.
6. math_verify's `parse` prints ("Error during parsing: ...") instead of logging; that output is captured and sent to
   this module's logger at debug level.
7. Main thread only. math_verify 0.5.2 runs every LaTeX parse and every comparison under `signal.alarm`; off the main
   thread `signal.signal` raises inside math_verify, which swallows the error: LaTeX answers stop parsing and `verify`
   returns False even for 25 vs 25. All three functions raise RuntimeError there instead of scoring every answer 0.
   For the same reason, a SIGALRM alarm armed by the caller is cancelled by any call into math_verify.

A gold that does not parse is a data problem, not a wrong answer: `verify_answer` returns None for it and callers count
it (see `rewards.accuracy_reward`).
"""

import contextlib
import functools
import io
import logging
import math
import re
import threading
import unicodedata

from math_verify import parse, verify

logger = logging.getLogger(__name__)

# Only this many trailing characters of a completion are searched when it has no usable \boxed{} (see docstring, 2.).
MAX_SEARCH_CHARS = 4000

# Per-expression parse timeout (s) handed to math_verify; `verify_answer` takes its own comparison timeout.
PARSING_TIMEOUT_SECONDS = 5

# Tokens of a single left-to-right scan for \boxed{...}: an opening "\boxed{", an escaped character ("\{", "\}", "\\"),
# or a bare brace.
_BOXED_TOKENS = re.compile(r"\\boxed\s*\{|\\.|[{}]", re.DOTALL)
# An unescaped "$", or "\(" / "\[": the text already delimits its math.
_MATH_DELIMITER = re.compile(r"(?<!\\)\$|\\\(|\\\[")
# A Unicode decimal digit other than 0-9 (Python's \d matches all of category Nd).
_NON_ASCII_DIGIT = re.compile(r"(?![0-9])\d")


def _ascii_digits(text: str) -> str:
    """Replace every non-ASCII decimal digit (`５`, `٣`) by its ASCII digit (module docstring, 5.)."""
    return _NON_ASCII_DIGIT.sub(lambda m: str(unicodedata.digit(m.group(), 0)), text)


def _check_main_thread() -> None:
    """Raise RuntimeError off the main thread, where math_verify 0.5.2 silently fails (module docstring, 7.)."""
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError(
            "open_r1_egsw.training.answers must run in the main thread: math_verify 0.5.2 times out with signal.alarm, and "
            "in any other thread every LaTeX parse and every verify() silently fails. Call the reward/metric from "
            "the main thread (TRL's synchronous reward functions already are)."
        )


def _parse(text: str) -> list:
    """Call math_verify.parse with the module's timeout, capturing its prints; never raises."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):
            parsed = parse(text, parsing_timeout=PARSING_TIMEOUT_SECONDS)
    except Exception as exc:  # math_verify catches most errors itself; this is the last line of defence
        logger.debug("math_verify.parse raised %r on %.200r", exc, text)
        parsed = []
    if captured.getvalue():
        logger.debug("math_verify.parse on %.200r printed: %s", text, captured.getvalue().strip())
    return list(parsed)


def _wrap_math(answer: str) -> str:
    """Wrap a bare answer in `$...$` (newlines become spaces: math_verify's inline `$` stops at a newline)."""
    return "$" + answer.replace("\n", " ") + "$"


def last_boxed_content(text: str) -> str | None:
    """Return the content of the last complete `\\boxed{...}` in `text`, or None if there is none.

    "Last" means the last `\\boxed{` that is closed: in `\\boxed{\\boxed{2}}` it is `2`; an unclosed trailing
    `\\boxed{` is skipped. Escaped braces (`\\{`, `\\}`) do not count. One linear scan, so safe on long texts.
    """
    best: tuple[int, int] | None = None
    open_boxes: list[tuple[int, int]] = []  # (content start, brace depth inside that box)
    depth = 0
    for match in _BOXED_TOKENS.finditer(text):
        token = match.group()
        if token.startswith("\\boxed"):
            depth += 1
            open_boxes.append((match.end(), depth))
        elif token == "{":
            depth += 1
        elif token == "}":
            if open_boxes and open_boxes[-1][1] == depth:
                start, _ = open_boxes.pop()
                if best is None or start > best[0]:
                    best = (start, match.start())
            depth = max(depth - 1, 0)  # a stray "}" outside every group is ignored
    return None if best is None else text[best[0] : best[1]]


@functools.lru_cache(maxsize=4096)
def _parse_gold_cached(text: str) -> tuple:
    """Cached body of `parse_gold` (a tuple, so callers cannot mutate the cached value)."""
    text = _ascii_digits(text).strip()
    boxed = last_boxed_content(text)
    if boxed is not None:
        parsed = _parse(_wrap_math(boxed)) if len(boxed) <= MAX_SEARCH_CHARS else []
    elif _MATH_DELIMITER.search(text):
        parsed = _parse(text[-MAX_SEARCH_CHARS:])  # already "$...$" or "\(...\)": wrapping again would break it
    else:
        parsed = _parse(_wrap_math(text)) if len(text) <= MAX_SEARCH_CHARS else []
    # math_verify appends the raw string as a fallback; a gold with nothing but that string did not parse as math.
    return tuple(parsed) if any(not isinstance(item, str) for item in parsed) else ()


def parse_gold(text: str) -> list:
    """Parse a gold answer with math_verify.

    A gold text without `\\boxed{}` that already contains `$`, `\\(` or `\\[` is parsed as is (its last
    `MAX_SEARCH_CHARS` characters); a bare answer or boxed content longer than `MAX_SEARCH_CHARS` is not an answer.
    Results are cached per text.

    Args:
        text: a full solution containing `\\boxed{...}` (its LAST boxed content is the answer) or a bare answer such as
            `3\\sqrt{13}`, `\\text{Evelyn}`, `025`, which is wrapped in `$...$` before parsing.

    Returns:
        math_verify's parsed list (sympy objects, then string fallbacks). An empty list if the gold does not parse,
        which includes the case where math_verify only returns its raw-string fallback (e.g. for `\\frac{`): such a
        gold would score every completion 0 without anyone noticing, while None (see `verify_answer`) gets counted.

    Raises:
        RuntimeError: only when called off the main thread (see the module docstring, 7.).
    """
    _check_main_thread()
    if not isinstance(text, str):
        logger.debug("parse_gold got a %s, not a str", type(text).__name__)
        return []
    return list(_parse_gold_cached(text))


def parse_completion(text: str) -> list:
    """Parse a model completion's final answer with math_verify; never raises on any string.

    The last complete `\\boxed{...}` wins. Without one, or if its content does not parse, math_verify's default
    extraction (LaTeX environments, then plain numbers/expressions, the rightmost first) runs on the LAST
    `MAX_SEARCH_CHARS` (4000) characters of the completion only: math_verify's regexes are super-linear in the input
    length, and the final answer of a long completion is at its end. A boxed content longer than that is not parsed.

    Args:
        text: the completion text.

    Returns:
        math_verify's parsed list; an empty list if no answer is found.

    Raises:
        RuntimeError: only when called off the main thread (see the module docstring, 7.).
    """
    _check_main_thread()
    if not isinstance(text, str):
        logger.debug("parse_completion got a %s, not a str", type(text).__name__)
        return []
    text = _ascii_digits(text)
    boxed = last_boxed_content(text)
    if boxed is not None and len(boxed) <= MAX_SEARCH_CHARS:
        parsed = _parse(_wrap_math(boxed))
        if parsed:
            return parsed
    return _parse(text[-MAX_SEARCH_CHARS:])


def verify_answer(gold: str, completion: str, timeout_seconds: int = 5) -> float | None:
    """Score a completion against a gold answer.

    Args:
        gold: the gold answer, as accepted by `parse_gold`.
        completion: the model completion, as accepted by `parse_completion`.
        timeout_seconds: limit for each comparison inside math_verify's `verify`, rounded up to a whole second
            (math_verify arms it with `signal.alarm`). A timed-out comparison counts as not equivalent.

    Returns:
        1.0 if the completion's answer is equivalent to the gold; 0.0 if it is not, if the completion has no
        parseable answer, or on any error; None if the GOLD does not parse (a data problem: callers count these).

    Raises:
        RuntimeError: only when called off the main thread (see the module docstring, 7.).
    """
    _check_main_thread()
    gold_parsed = parse_gold(gold)
    if not gold_parsed:
        return None
    try:
        target = parse_completion(completion)
        if not target:
            return 0.0
        # math_verify's signature is verify(gold, target): the order matters (e.g. for "x = 2" vs 2).
        return 1.0 if verify(gold_parsed, target, timeout_seconds=max(1, math.ceil(timeout_seconds))) else 0.0
    except Exception as exc:
        logger.debug("verify_answer failed on gold %.200r, completion %.200r: %r", gold, completion, exc)
        return 0.0
