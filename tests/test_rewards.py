"""Tests for open_r1_egsw.training.answers (math answer checking) and open_r1_egsw.training.rewards (reward registry)."""

import logging
import pickle
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from open_r1_egsw.errors import ConfigError
from open_r1_egsw.training import answers, rewards
from open_r1_egsw.training.answers import last_boxed_content, parse_completion, parse_gold, verify_answer
from open_r1_egsw.training.rewards import (
    REWARD_FUNCS_REGISTRY,
    accuracy_reward,
    completion_text,
    format_reward,
    get_reward_funcs,
    get_soft_overlong_punishment,
    len_reward,
    register_reward,
    tag_count_reward,
)

FACTORY_PARAMS = {"max_completion_len": 100, "soft_punish_cache": 20}


def conv(text: str) -> list[dict[str, str]]:
    """Wrap a text as a conversational completion."""
    return [{"role": "assistant", "content": text}]


# ---------------------------------------------------------------- math-verify equivalences through `accuracy`

EQUIVALENT = [
    # (gold column, gold, completion)
    ("answer", r"\frac{1}{2}", "0.5"),
    ("answer", r"\frac{1}{2}", r"\boxed{0.5}"),
    ("answer", "2", r"So the result is \boxed{2}."),
    ("solution", r"We add them ... so the answer is $\boxed{\frac{3}{4}}$.", r"\boxed{0.75}"),
    ("answer", r"\{1,2,3\}", r"\boxed{\{3,2,1\}}"),
    ("answer", r"(0,1]", r"The interval is \boxed{(0,1]}"),
    ("answer", r"3\sqrt{13}", r"\boxed{3\sqrt{13}}"),
    ("answer", r"3\sqrt{13}", r"\boxed{\sqrt{117}}"),
    ("answer", r"\text{Evelyn}", r"\boxed{\text{Evelyn}}"),
    ("answer", "025", r"\boxed{25}"),
    ("answer", "25", r"\boxed{025}"),
    ("answer", 25, r"\boxed{25}"),  # AIME copies that store the answer as an int
    ("solution", r"First $\boxed{5}$ is wrong; in fact the answer is $\boxed{7}$.", r"\boxed{7}"),
    ("answer", "7", r"I first wrote \boxed{5} but the answer is \boxed{7}"),
    ("answer", "5", "The answer is ５"),  # full-width digit
]

NOT_EQUIVALENT = [
    ("answer", r"\frac{1}{2}", r"\boxed{0.6}"),
    ("answer", "2", r"\boxed{3}"),
    ("solution", r"... so the answer is $\boxed{\frac{3}{4}}$.", r"\boxed{\frac{4}{3}}"),
    ("answer", r"\{1,2,3\}", r"\boxed{\{1,2,4\}}"),
    ("answer", r"(0,1]", r"\boxed{[0,1]}"),
    ("answer", r"(0,1]", r"\boxed{(0,1)}"),
    ("answer", r"3\sqrt{13}", r"\boxed{3}"),  # parsed bare, the gold would read as 3 and this would pass
    ("answer", r"\text{Evelyn}", r"\boxed{\text{Emily}}"),
    ("answer", "025", r"\boxed{26}"),
    ("answer", "7", r"\boxed{7} no wait, \boxed{5}"),
]


@pytest.mark.parametrize(("column", "gold", "completion"), EQUIVALENT)
def test_accuracy_equivalent(column, gold, completion):
    """Equivalent answers score exactly 1.0."""
    assert accuracy_reward([completion], **{column: [gold]}) == [1.0]


@pytest.mark.parametrize(("column", "gold", "completion"), NOT_EQUIVALENT)
def test_accuracy_wrong(column, gold, completion):
    """Wrong answers score exactly 0.0."""
    assert accuracy_reward([completion], **{column: [gold]}) == [0.0]


def test_bare_gold_is_wrapped():
    """Bare golds that math_verify parses wrongly or not at all come back right from parse_gold."""
    assert str(parse_gold(r"3\sqrt{13}")[0]) == "3*sqrt(13)"
    assert str(parse_gold(r"\text{Evelyn}")[0]) == "Evelyn"
    assert parse_gold("025")[0] == 25


def test_solution_uses_last_boxed():
    """A solution with several boxes is reduced to its last one."""
    assert parse_gold(r"$\boxed{1}$ then $\boxed{\frac{1}{3}}$")[0] == parse_gold(r"\frac{1}{3}")[0]


def test_last_boxed_content():
    """The scanner finds the last closed box, skips unclosed ones and escaped braces."""
    assert last_boxed_content(r"\boxed{1} and \boxed{\{1,2\}} then \boxed{") == r"\{1,2\}"
    assert last_boxed_content(r"\boxed{\boxed{2}}") == "2"
    assert last_boxed_content(r"\left\{ x \right. \boxed{\frac{1}{2}}") == r"\frac{1}{2}"
    assert last_boxed_content("no box {}") is None


def test_float_timeout():
    """A fractional timeout works (math_verify's signal.alarm would reject it and silently score 0)."""
    assert verify_answer(r"\frac{1}{2}", r"\boxed{0.5}", timeout_seconds=0.5) == 1.0


def test_solution_column_preferred_over_answer():
    """With both columns, the gold comes from `solution`."""
    assert accuracy_reward([r"\boxed{3}"], solution=[r"$\boxed{3}$"], answer=["4"]) == [1.0]


# ---------------------------------------------------------------- robustness

MALFORMED = [
    "",
    " ",
    r"\frac{",
    r"\boxed{",
    r"\boxed{\frac{1}{",
    "}}}{{{",
    "{" * 5000,
    r"\boxed{" * 2000,
    "$" * 1001,
    "\x00\xff\ud800 junk \x1b[31m",
    "x" * 100_000,
    "9 " * 50_000,
]


@pytest.mark.parametrize("completion", MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_completion_scores_zero(completion):
    """Malformed, empty, huge or unbalanced completions score 0.0 without raising."""
    assert accuracy_reward([completion], answer=["2"]) == [0.0]
    assert accuracy_reward([conv(completion)], answer=["2"]) == [0.0]


def test_long_completion_is_capped():
    """Only the tail of a long completion is searched, so a 100k-character one is fast (34 s uncapped)."""
    start = time.perf_counter()
    assert verify_answer("1", "1 " * 50_000) == 1.0
    assert time.perf_counter() - start < 10
    assert verify_answer("2", "x " * 50_000 + "The answer is 2") == 1.0
    assert verify_answer("2", "The answer is 2. " + "x" * 100_000) == 0.0  # outside the searched tail
    assert verify_answer("2", r"\boxed{2}" + "x" * 100_000) == 1.0  # boxes are found anywhere


@pytest.mark.parametrize("gold", ["", "   ", r"\boxed{}", r"\frac{", r"\boxed{\frac{}"])
def test_unparseable_gold_gives_none(gold):
    """A gold that does not parse gives None, not 0.0."""
    assert parse_gold(gold) == []
    assert verify_answer(gold, r"\boxed{2}") is None
    assert accuracy_reward([r"\boxed{2}", "2"], answer=[gold, gold]) == [None, None]


def test_unparseable_gold_counted_and_warned_once(caplog, monkeypatch):
    """Unparseable golds are counted per completion and warned about once per distinct gold."""
    monkeypatch.setattr(rewards, "UNPARSEABLE_GOLDS", type(rewards.UNPARSEABLE_GOLDS)())
    monkeypatch.setattr(rewards, "_WARNED_GOLDS", set())
    metrics = []
    with caplog.at_level(logging.WARNING, logger="open_r1_egsw.training.rewards"):
        out = accuracy_reward(
            ["1", "2", "3"], answer=[r"\frac{", r"\frac{", "3"], log_metric=lambda k, v: metrics.append((k, v))
        )
        accuracy_reward(["1"], answer=[r"\frac{"])
        assert len_reward(["1"], answer=[r"\frac{"]) == [None]  # skipped, not counted a second time
    assert out == [None, None, 1.0]
    assert rewards.UNPARSEABLE_GOLDS == {r"\frac{": 3}
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    assert metrics == [("accuracy/unparseable_gold_frac", 2 / 3)]


def test_missing_gold_columns():
    """Without `solution` or `answer` the accuracy reward raises a ValueError naming both."""
    with pytest.raises(ValueError, match="`solution`.*`answer`"):
        accuracy_reward(["2"])
    with pytest.raises(ValueError, match="`solution`.*`answer`"):
        len_reward(["2"], prompt=["p"])


def test_off_main_thread_raises():
    """Off the main thread (where math_verify 0.5.2 fails silently) verify_answer raises instead of scoring 0."""
    errors = []

    def target():
        try:
            verify_answer("25", "25")
        except RuntimeError as exc:
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    assert len(errors) == 1


def test_math_verify_print_is_captured(capsys, caplog):
    """math_verify's own print on a sympify error goes to the debug log, not to stdout."""
    with caplog.at_level(logging.DEBUG, logger="open_r1_egsw.training.answers"):
        assert answers._parse("x = 7 then \u0663") == []  # Arabic-Indic 3: math_verify prints and gives up
    assert capsys.readouterr().out == ""
    assert any("Error during parsing" in record.getMessage() for record in caplog.records)
    assert parse_completion("x = 7 then \u0663")[0] == 3  # mapped to ASCII before parsing


# ---------------------------------------------------------------- format and tag_count

FULL = "<think>\nI add.\n</think>\n<answer>\n4\n</answer>"


@pytest.mark.parametrize(
    ("completion", "fmt", "tags"),
    [
        (FULL, 1.0, 1.0),
        (FULL + "\n", 1.0, 1.0),  # one trailing newline is allowed by "$"
        ("<think>\nmulti\nline\n</think>\n<answer>\n4\n</answer>", 1.0, 1.0),
        (FULL + "\nextra text", 0.0, 1.0),  # open-r1's MULTILINE would give 1.0 here
        ("<think>\nI add.\n</think>\n4", 0.0, 0.5),
        ("<think>\nI add.\n</think>\n<answer>\n4", 0.0, 0.75),
        ("<think>I add.</think><answer>4</answer>", 0.0, 0.0),
        ("\n<answer>\n4\n</answer>", 0.0, 0.5),
        (FULL + FULL, 1.0, 0.0),  # every tag twice: ".*?" stretches to the last </answer>; tag_count catches it
        ("", 0.0, 0.0),
    ],
)
def test_format_and_tag_count(completion, fmt, tags):
    """format is all-or-nothing; tag_count gives 0.25 per tag found exactly once."""
    assert format_reward([completion]) == [fmt]
    assert tag_count_reward([completion]) == [tags]


# ---------------------------------------------------------------- length (Kimi 1.5)


def test_length_reward_hand_computed():
    """Kimi 1.5 length reward per prompt group, on token counts."""
    # Group p1 (gold 2), token lengths 10, 10, 20, 50: min_len = 10, max_len = 50, range 40.
    #   lambda = 0.5 - (len - 10) / 40  ->  0.5, 0.5, 0.25, -0.5
    #   correct (\boxed{2}) -> lambda; wrong -> min(0, lambda)
    #   c1 correct len 10: 0.5;  c2 wrong len 10: min(0, 0.5) = 0.0
    #   c3 correct len 20: 0.25; c4 wrong len 50: min(0, -0.5) = -0.5
    # Group p2 (gold 7), both of length 8: max_len == min_len -> 0.0 each, correct or not.
    completions = [r"\boxed{2}", r"\boxed{3}", r"\boxed{2}", r"\boxed{5}", r"\boxed{7}", r"\boxed{1}"]
    prompts = ["p1", "p1", "p1", "p1", "p2", "p2"]
    lengths = [10, 10, 20, 50, 8, 8]
    out = len_reward(
        completions, answer=["2"] * 4 + ["7"] * 2, prompts=prompts, completion_ids=[[0] * n for n in lengths]
    )
    assert out == [0.5, 0.0, 0.25, -0.5, 0.0, 0.0]


def test_length_reward_characters_whole_batch():
    """Without prompts and token ids: one group over the batch, lengths in characters (open-r1's len_reward)."""
    # "\boxed{2}" has 9 characters, "so \boxed{2}" 12, "so it is \boxed{3}" 18: min 9, max 18, range 9.
    #   lambda = 0.5 - (len - 9) / 9 -> 0.5, 0.5 - 3/9 = 1/6, -0.5; the third is wrong -> min(0, -0.5) = -0.5
    out = len_reward([r"\boxed{2}", r"so \boxed{2}", r"so it is \boxed{3}"], answer=["2", "2", "2"])
    assert out == [0.5, pytest.approx(1 / 6), -0.5]


def test_length_reward_unparseable_gold():
    """Completions with an unparseable gold get None from the length reward too."""
    assert len_reward(["1", "22"], answer=["", ""]) == [None, None]


# ---------------------------------------------------------------- soft overlong (DAPO Eq. 13)


def test_soft_overlong_values():
    """0 up to L_max - L_cache, linear to -1 at L_max, -1 beyond."""
    reward = get_soft_overlong_punishment(max_completion_len=100, soft_punish_cache=20)
    ids = [[0] * n for n in (10, 80, 90, 100, 101)]
    # (80 - 90) / 20 = -0.5 ; (80 - 100) / 20 = -1
    assert reward(["x"] * 5, completion_ids=ids) == [0.0, 0.0, -0.5, -1.0, -1.0]


def test_soft_overlong_validates():
    """The factory rejects a cache larger than the maximum length, and non-integer or non-positive lengths."""
    with pytest.raises(ConfigError, match="soft_punish_cache"):
        get_soft_overlong_punishment(max_completion_len=10, soft_punish_cache=20)
    for max_len, cache in ((0, 0), (-5, 0), (10.5, 2), (True, 0)):
        with pytest.raises(ConfigError, match="max_completion_len must be a positive integer"):
            get_soft_overlong_punishment(max_completion_len=max_len, soft_punish_cache=cache)
    for cache in (-1, 2.0, None):
        with pytest.raises(ConfigError, match="soft_punish_cache must be an integer in"):
            get_soft_overlong_punishment(max_completion_len=10, soft_punish_cache=cache)


def open_r1_soft_overlong(max_completion_len, soft_punish_cache):
    """open-r1's `get_soft_overlong_punishment` (src/open_r1/rewards.py), verbatim but for the docstrings."""

    def soft_overlong_punishment_reward(completion_ids: list[list[int]], **kwargs) -> list[float]:
        rewards = []
        for ids in completion_ids:
            completion_length = len(ids)
            if completion_length <= max_completion_len - soft_punish_cache:
                rewards.append(0.0)
            elif max_completion_len - soft_punish_cache < completion_length <= max_completion_len:
                rewards.append((max_completion_len - soft_punish_cache - completion_length) / soft_punish_cache)
            else:
                rewards.append(-1.0)
        return rewards

    return soft_overlong_punishment_reward


def test_soft_overlong_open_r1_calls():
    """open-r1's own tests' calls: the factory by position, the reward with `completion_ids` alone (by keyword or by
    position). Hand-computed at the boundaries for L_max = 100, L_cache = 20: 0 up to 80, (80 - n) / 20 up to 100,
    -1 beyond."""
    reward = get_soft_overlong_punishment(100, 20)
    assert reward(completion_ids=[[1] * 50]) == [0]
    assert reward([[1] * 110]) == [-1]
    assert reward([[1] * 90])[0] == pytest.approx(-0.5, abs=1e-4)
    lengths = (0, 79, 80, 81, 90, 99, 100, 101, 500)
    expected = [0.0, 0.0, 0.0, -0.05, -0.5, -0.95, -1.0, -1.0, -1.0]
    ids = [[7] * n for n in lengths]
    for values in (reward(ids), reward(completion_ids=ids), reward(["x"] * len(ids), completion_ids=ids)):
        assert values == pytest.approx(expected, abs=1e-12)
    (named,) = get_reward_funcs(["soft_overlong"], max_completion_len=100, soft_punish_cache=20)
    assert named(ids) == named(completion_ids=ids) == reward(ids)
    hard = get_soft_overlong_punishment(100, 0)  # no cache: 0 up to L_max, -1 beyond (no division by 0)
    assert hard([[1] * 100, [1] * 101]) == [0.0, -1.0]


@pytest.mark.parametrize(("max_len", "cache"), [(100, 20), (100, 0), (100, 100), (7, 3), (1, 1)])
def test_soft_overlong_equals_open_r1(max_len, cache):
    """The same value as open-r1's reward for every length from 0 to beyond L_max."""
    ids = [[0] * n for n in range(max_len + 30)]
    ours = get_soft_overlong_punishment(max_len, cache)
    assert ours(ids) == open_r1_soft_overlong(max_len, cache)(ids)


def test_soft_overlong_needs_token_ids():
    """Texts or conversations given without `completion_ids` are refused, not measured."""
    reward = get_soft_overlong_punishment(100, 20)
    for completions in (["some text"], [conv("some text")]):
        with pytest.raises(ValueError, match="needs `completion_ids`"):
            reward(completions)
    with pytest.raises(ValueError, match="got 2 completions but 1 completion_ids"):
        reward(["a", "b"], completion_ids=[[1]])


def test_factory_parameters_from_script_arguments():
    """open-r1's call `get_reward_funcs(script_args)`: the names and the factory parameters come from the fields."""
    from open_r1_egsw.training.configs import GRPOScriptArguments

    args = GRPOScriptArguments(reward_funcs=["format", "soft_overlong"], max_completion_len=100, soft_punish_cache=40)
    fmt, overlong = get_reward_funcs(args)
    assert (fmt.__name__, overlong.__name__) == ("format", "soft_overlong")
    ids = [[1] * n for n in (60, 70, 90, 100, 120)]  # free up to 100 - 40 = 60
    assert overlong(["x"] * 5, completion_ids=ids) == pytest.approx([0.0, -0.25, -0.75, -1.0, -1.0])
    args.soft_punish_cache = 200
    with pytest.raises(ConfigError, match="soft_punish_cache must be an integer in \\[0, max_completion_len=100\\]"):
        get_reward_funcs(args)
    args.soft_punish_cache = 20
    # TRL cuts completions at max_completion_length: a punishment that cannot start is refused
    with pytest.raises(ConfigError, match="never punishes: completions stop at max_completion_length=80 tokens"):
        get_reward_funcs(args, max_completion_length=80)
    assert len(get_reward_funcs(args, max_completion_length=81)) == 2
    args.soft_punish_cache = 0  # a hard -1 beyond L_max only: never reached when TRL cuts at L_max
    with pytest.raises(ConfigError, match="within max_completion_len - soft_punish_cache = 100"):
        get_reward_funcs(args, max_completion_length=100)
    args.reward_funcs = ["format"]
    assert len(get_reward_funcs(args, max_completion_length=8)) == 1  # not selected: not checked


# ---------------------------------------------------------------- registry


@pytest.fixture
def scratch_registry(monkeypatch):
    """A copy of the registry that a test may extend."""
    monkeypatch.setattr(rewards, "REWARD_FUNCS_REGISTRY", dict(rewards.REWARD_FUNCS_REGISTRY))
    monkeypatch.setattr(rewards, "_FACTORY_NAMES", set(rewards._FACTORY_NAMES))
    return rewards.REWARD_FUNCS_REGISTRY


def test_unknown_name_lists_known():
    """An unknown name raises a ConfigError listing every registered name."""
    with pytest.raises(ConfigError, match="Unknown reward function 'acuracy'. Known: accuracy, format") as info:
        get_reward_funcs(["acuracy"])
    for name in REWARD_FUNCS_REGISTRY:
        assert name in str(info.value)


def test_duplicate_registration_raises(scratch_registry):
    """Registering a taken name raises and leaves the registry unchanged."""
    before = dict(scratch_registry)
    with pytest.raises(ValueError, match="already registered"):
        register_reward("accuracy")(lambda completions, **kwargs: [0.0] * len(completions))
    assert scratch_registry == before


def test_names_are_registry_names():
    """Every returned callable has `__name__` equal to its registry name and is not a bare partial."""
    names = sorted(REWARD_FUNCS_REGISTRY)
    funcs = get_reward_funcs(names, **FACTORY_PARAMS)
    assert [f.__name__ for f in funcs] == names
    assert {"accuracy", "format", "tag_count", "length", "soft_overlong"} <= set(names)


def test_names_seen_by_trl():
    """TRL 1.16's own name lookup (which unwraps partials) sees the registry names."""
    trl_utils = pytest.importorskip("trl.trainer.utils")  # imports torch: ~7 s
    names = sorted(REWARD_FUNCS_REGISTRY)
    funcs = get_reward_funcs(names, **FACTORY_PARAMS)
    assert [trl_utils.get_callable_name(f) for f in funcs] == names
    assert not any(trl_utils.is_async_callable(f) for f in funcs)


def test_reward_funcs_pickle():
    """Built reward functions survive pickling (TRL's async worker pickles them) and score the same."""
    for func in get_reward_funcs(sorted(REWARD_FUNCS_REGISTRY), **FACTORY_PARAMS):
        clone = pickle.loads(pickle.dumps(func))
        kwargs = {"answer": ["2"], "completion_ids": [[0] * 90]}
        assert clone.__name__ == func.__name__
        assert clone([r"\boxed{2}"], **kwargs) == func([r"\boxed{2}"], **kwargs)


def test_factory_built_only_when_selected(scratch_registry):
    """A factory is not called unless its name is selected."""
    calls = []

    @register_reward("spy", factory=True)
    def get_spy(scale: float):
        calls.append(scale)
        return format_reward

    get_reward_funcs(["format"], scale=2.0)
    assert calls == []
    (spy,) = get_reward_funcs(["spy"], scale=2.0)
    assert calls == [2.0] and spy.__name__ == "spy"
    # The real factory: its invalid parameters matter only when it is selected.
    get_reward_funcs(["accuracy"], max_completion_len=10, soft_punish_cache=20)
    with pytest.raises(ConfigError, match="soft_punish_cache"):
        get_reward_funcs(["soft_overlong"], max_completion_len=10, soft_punish_cache=20)


def test_bad_parameters():
    """Stray parameters, missing factory parameters and repeated names raise ConfigError."""
    with pytest.raises(ConfigError, match="soft_punish_cach\\b"):
        get_reward_funcs(["soft_overlong"], max_completion_len=10, soft_punish_cach=2)
    with pytest.raises(ConfigError, match="get_soft_overlong_punishment"):
        get_reward_funcs(["soft_overlong"], max_completion_len=10)
    with pytest.raises(ConfigError, match="more than once"):
        get_reward_funcs(["format", "format"])


# ---------------------------------------------------------------- completion formats


COMPLETIONS = [FULL, r"<think>\nx\n</think>\n<answer>\n\boxed{2}\n</answer>", r"\boxed{3}", "", "2"]


def test_conversational_and_plain_agree():
    """Every reward scores conversational and plain completions the same."""
    kwargs = {"answer": ["2"] * len(COMPLETIONS), "completion_ids": [[0] * 85] * len(COMPLETIONS)}
    for func in get_reward_funcs(sorted(REWARD_FUNCS_REGISTRY), **FACTORY_PARAMS):
        plain = func(COMPLETIONS, **kwargs)
        assert func([conv(c) for c in COMPLETIONS], **kwargs) == plain, func.__name__
        assert len(plain) == len(COMPLETIONS)


def test_completion_text_forms():
    """completion_text reads strings, the last assistant message, and text parts."""
    assert completion_text("a") == "a"
    assert completion_text([{"role": "assistant", "content": "a"}]) == "a"
    turns = [{"role": "assistant", "content": "call"}, {"role": "tool", "content": "out"}]
    assert completion_text(turns + [{"role": "assistant", "content": "b"}]) == "b"
    assert completion_text([{"role": "assistant", "content": [{"type": "text", "text": "c"}]}]) == "c"
    assert completion_text([]) == ""


# ---------------------------------------------------------------- property-based


@settings(max_examples=50, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_never_raises(text):
    """Any text gets one float in [0, 1] from accuracy, format and tag_count, conversational or not."""
    for completion in (text, conv(text)):
        for func, kwargs in ((accuracy_reward, {"answer": ["2"]}), (format_reward, {}), (tag_count_reward, {})):
            (score,) = func([completion], **kwargs)
            assert isinstance(score, float) and 0.0 <= score <= 1.0


@settings(max_examples=50, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_gold_never_raises(text):
    """Any gold text gives 1.0, 0.0 or None, never an exception."""
    assert verify_answer(text, r"\boxed{2}") in (1.0, 0.0, None)
    assert answers.parse_completion(text) is not None
