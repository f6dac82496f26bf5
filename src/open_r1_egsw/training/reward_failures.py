"""A reward that fails on one process stops every process, with one line naming the function and the rank.

Inside `held`, a failing `NamedReward` records its `RewardError` and returns None, so every rank still reaches TRL's
reward gather instead of waiting there for the collective timeout; `raise_everywhere` then raises the first failure
on every rank (rank 0 reports it, the others raise it `quiet`).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager

from open_r1_egsw.training.rewards import NamedReward, RewardError


class _Held:
    """`func`, with a `RewardError` recorded in `failures` instead of raised (None for every completion instead)."""

    def __init__(self, func: NamedReward, failures: list[str]):
        self.func, self.failures, self.__name__ = func, failures, func.__name__

    def __call__(self, *args, **kwargs):
        try:
            return self.func(*args, **kwargs)
        except RewardError as err:
            self.failures.append(str(err))
            return [None] * len(kwargs["completions"])


@contextmanager
def held(trainer, failures: list[str]):
    """Swap the trainer's `NamedReward`s for held ones for the duration (TRL models and async rewards stay)."""
    original = trainer.reward_funcs
    trainer.reward_funcs = [_Held(f, failures) if isinstance(f, NamedReward) else f for f in original]
    try:
        yield
    finally:
        trainer.reward_funcs = original


def raise_everywhere(failures: list[str], gather_object: Callable[[list], list], rank: int, world: int) -> None:
    """Raise the lowest rank's first failure on every rank (no-op when no rank failed); one collective if world > 1."""
    mine = failures[0] if failures else None
    every = gather_object([mine]) if world > 1 else [mine]
    for failed_rank, message in enumerate(every):
        if message is not None:
            where = f" on rank {failed_rank} of {world}" if world > 1 else ""
            error = RewardError(f"{message}{where}")
            error.quiet = rank != 0  # one line: rank 0 reports it, for every rank
            raise error
