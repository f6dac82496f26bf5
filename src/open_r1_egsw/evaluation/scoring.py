"""Scoring of benchmark completions: math answers, GPQA option letters, and the pass@k estimator.

A math completion has an answer only when it states one (a `\\boxed{}` or an "ANSWER:" line that parses); it is then
checked with math-verify through `open_r1_egsw.training.answers`. A GPQA letter stated explicitly wins over a bare
one, and within each kind the last one wins.
"""

from __future__ import annotations

import math
import re

from open_r1_egsw.training.answers import last_boxed_content, parse_completion, verify_answer

CHOICE_LETTERS = "ABCD"

# A standalone option letter: not preceded or followed by a letter or digit ("Because", "CAD", "A1" do not count).
_LETTER = r"(?<![A-Za-z0-9])\(?\s*([ABCD])\s*\)?(?![A-Za-z0-9])"
# Tier 1: the model states its answer.
_STATED = [
    re.compile(
        r"(?i:answer|(?:correct|final|right|best)\s+(?:option|choice))(?:\s+(?i:is))?\s*[:：]?\s*(?:\*\*)?\s*\$?\s*"
        + _LETTER
    ),
    re.compile(r"\\boxed\s*\{\s*(?:\\text(?:bf)?\s*\{\s*)?\(?([ABCD])\)?\s*\}"),
]
# Tier 2: a parenthesised letter, or a line holding nothing but a letter (with optional punctuation / bold).
_BARE = [
    re.compile(r"\(([ABCD])\)"),
    re.compile(r"(?m)^[\s*]*([ABCD])[\s*.)]*$"),
]


def _last_match(patterns: list[re.Pattern], text: str) -> str | None:
    """The letter of the right-most match of any pattern (ties impossible: one position holds one letter)."""
    best: tuple[int, str] | None = None
    for pattern in patterns:
        for match in pattern.finditer(text):
            if best is None or match.start(1) > best[0]:
                best = (match.start(1), match.group(1))
    return None if best is None else best[1]


def extract_choice_letter(completion: str) -> str | None:
    """The option letter (A-D) a completion chooses, or None.

    A stated answer ("Answer: B", "the answer is (C)", "\\boxed{D}") wins over a bare "(C)" or a line holding only a
    letter; within each kind the last one wins. A letter must stand alone: "Because" holds no B.
    """
    if not isinstance(completion, str):
        return None
    return _last_match(_STATED, completion) or _last_match(_BARE, completion)


def score_choice(gold_letter: str, completion: str) -> tuple[float, bool]:
    """(1.0 if the chosen letter is the gold letter else 0.0, whether a letter was found)."""
    letter = extract_choice_letter(completion)
    return (1.0 if letter == gold_letter else 0.0), letter is not None


# lighteval 0.13's MATH-500 answer line: 'ANSWER: $ANSWER' (any case, optional bold / $ delimiters, final period)
_ANSWER_LINE = re.compile(r"(?im)^[ \t*]*answer[ \t*]*:[ \t*]*(.*?)[ \t*]*$")


def _answer_line(completion: str) -> str | None:
    """The content of the last "ANSWER: ..." line, without `$` delimiters and a final period, or None."""
    found = [m.group(1) for m in _ANSWER_LINE.finditer(completion) if m.group(1).strip()]
    if not found:
        return None
    answer = found[-1].strip().rstrip(".").strip()
    if len(answer) > 1 and answer[0] == answer[-1] == "$":
        answer = answer.strip("$").strip()
    return answer or None


def extract_math_answer(completion: str) -> str | None:
    """The content of the completion's last complete `\\boxed{}`, else of its last "ANSWER: ..." line, if it parses
    as math; else None. math-verify's fallback (the last number of any text) is not used."""
    if not isinstance(completion, str):
        return None
    stated = last_boxed_content(completion)
    if stated is None:
        stated = _answer_line(completion)
    if stated is None or not stated.strip():
        return None
    inline = stated.replace("\n", " ")  # math-verify's inline $...$ stops at a newline
    return stated if parse_completion(f"${inline}$") else None


def score_math(gold: str, completion: str) -> tuple[float, bool]:
    """(math-verify correctness, whether the completion states an answer: a `\\boxed{}` or an "ANSWER:" line).

    The gold must parse (the prompt functions drop rows whose gold does not); if it does not, the completion scores 0.
    """
    answer = extract_math_answer(completion)
    if answer is None:
        return 0.0, False
    if last_boxed_content(completion) is not None:
        return (verify_answer(gold, completion) or 0.0), True
    inline = answer.replace("\n", " ")
    return (verify_answer(gold, f"${inline}$") or 0.0), True


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}.")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)
