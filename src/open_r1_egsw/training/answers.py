"""Parse and check final math answers: the one module that calls math_verify.

The rewards and the evaluation tasks score answers only through `parse_gold`, `parse_completion` and `verify_answer`.
A gold is its last `\\boxed{}` content, or the bare answer wrapped in `$...$`; a completion's last `\\boxed{}` wins,
else its last `MAX_SEARCH_CHARS` characters are searched. Non-ASCII digits read as ASCII. A gold that does not parse
scores None. math_verify times out with `signal.alarm`, so all three run in the main thread only (RuntimeError
elsewhere). docs/answers.md gives the reason for each choice.
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

# Only this many trailing characters of a completion are searched when it has no usable \boxed{} (docs/answers.md, 2.).
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
    """Replace every non-ASCII decimal digit (`５`, `٣`) by its ASCII digit (docs/answers.md, 5.)."""
    return _NON_ASCII_DIGIT.sub(lambda m: str(unicodedata.digit(m.group(), 0)), text)


def _check_main_thread() -> None:
    """Raise RuntimeError off the main thread, where math_verify 0.5.2 silently fails (docs/answers.md, 7.)."""
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
    """Parse a gold answer with math_verify (cached per text); an empty list if it does not parse.

    The answer is the last `\\boxed{...}` content of a full solution, else the bare answer (`3\\sqrt{13}`, `025`)
    wrapped in `$...$`; a text that already has `$`, `\\(` or `\\[` is parsed as is. Only math_verify's raw-string
    fallback (e.g. for `\\frac{`) counts as not parsed. RuntimeError off the main thread.
    """
    _check_main_thread()
    if not isinstance(text, str):
        logger.debug("parse_gold got a %s, not a str", type(text).__name__)
        return []
    return list(_parse_gold_cached(text))


def parse_completion(text: str) -> list:
    """Parse a completion's final answer with math_verify; an empty list if none is found.

    The last complete `\\boxed{...}` wins; without one (or if it does not parse), math_verify's default extraction
    reads the last `MAX_SEARCH_CHARS` characters only. RuntimeError off the main thread, else never raises.
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
    """1.0 if the completion's answer is equivalent to the gold, 0.0 if not (or none, or on any error), None if the
    gold does not parse. Each comparison times out after `timeout_seconds`, rounded up to a whole second (counts as
    not equivalent). RuntimeError off the main thread.
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
