"""grpo.py's CLI, with one test-only fault injected (a test helper, run as a script in a subprocess).

    python tests/helpers/run_grpo.py [--kill-at-step N] [--bad-reward KIND [--bad-from-call K]]
        [--skip-alignment-check] -- GRPO_ARGS...

--kill-at-step N: SIGKILL this process right after step N is logged (metrics.jsonl has it), as a pre-emption does:
    no handler runs, nothing is flushed. The only thing added to the real run is that callback.
--bad-reward KIND: register a reward function `bad` (add it to --reward_funcs) that behaves from its K-th call on:
    raise | nan | none | short (one value too few) | scalar. --bad-rank R: only on the process of rank R.
--skip-alignment-check: allow checkpoints inside a generation batch (to show that resuming there is inexact).
--chars-reward: register a reward `chars` (len(text) / 64): a random tiny model scores 0 on every built-in reward,
    so its advantages are 0 and nothing trains; this one varies within a group, so weights and optimizer state move.
"""

import math
import os
import signal
import sys

from transformers import TrainerCallback

from open_r1_egsw import grpo
from open_r1_egsw.training import rewards
from open_r1_egsw.training.configs import EGSWConfig


class KillAtStep(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def chars(completions, **kwargs):
    return [len(rewards.completion_text(c)) / 64 for c in completions]


def bad_reward_factory(kind: str, from_call: int, rank: int | None = None):
    calls = {"n": 0}

    def bad(completions, **kwargs):
        calls["n"] += 1
        n = len(completions)
        if calls["n"] < from_call or (rank is not None and int(os.environ.get("RANK", "0")) != rank):
            return [0.5] * n
        if kind == "raise":
            raise ZeroDivisionError("division by zero")
        if kind == "nan":
            return [0.5] * (n - 1) + [math.nan]
        if kind == "none":
            return [None] * n
        if kind == "short":
            return [0.5] * (n - 1)
        if kind == "scalar":
            return 0.5
        raise AssertionError(kind)

    return bad


def main(argv: list[str]) -> int:
    own, grpo_args = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    if "--skip-alignment-check" in own:
        own.remove("--skip-alignment-check")
        EGSWConfig._check_checkpoints_resume_exactly = lambda self: None
    if "--chars-reward" in own:
        own.remove("--chars-reward")
        rewards.register_reward("chars")(chars)
    options = dict(zip(own[::2], own[1::2]))
    if "--bad-reward" in options:
        rank = int(options["--bad-rank"]) if "--bad-rank" in options else None
        func = bad_reward_factory(options["--bad-reward"], int(options.get("--bad-from-call", 1)), rank)
        func.__name__ = "bad"
        rewards.register_reward("bad")(func)
    if "--kill-at-step" in options:
        build = grpo.build_trainer

        def build_with_kill(*args, **kwargs):
            trainer, test_split = build(*args, **kwargs)
            trainer.add_callback(KillAtStep(int(options["--kill-at-step"])))
            return trainer, test_split

        grpo.build_trainer = build_with_kill
    return grpo.cli_main(grpo_args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
