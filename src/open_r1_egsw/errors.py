"""User errors: `ConfigError`, and `cli_entry`, which turns them into one `error: ...` line and exit code 2."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable


class ConfigError(ValueError):
    """A user error in a recipe, a flag or an input file: reported as one line, exit code 2.

    `mid_run`: raised while training, so a progress bar may hold the current line: the error starts a line of its own.
    `quiet` (set on an instance): the same error is reported by another rank, so this one prints nothing.
    """

    mid_run = False


def cli_entry(main: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """Wrap an entry point: user errors become one `error: ...` line on stderr and exit code 2."""

    @functools.wraps(main)
    def wrapper(argv: list[str] | None = None) -> int:
        try:
            return main(argv)
        except (ConfigError, FileNotFoundError) as err:
            if not getattr(err, "quiet", False):
                newline = "\n" if getattr(err, "mid_run", False) else ""
                print(f"{newline}error: {err}", file=sys.stderr)  # noqa: T201
            raise SystemExit(2) from None
        except (ConnectionError, *_request_errors()) as err:
            # the vLLM server (server mode) is down, never came up or stopped answering: TRL's client raises after
            # its retries (vllm_server_timeout at start-up); checkpoints already written are left as they are
            # (on a line of its own: a training progress bar may be on the current one)
            print(f"\nerror: vLLM server: {_one_line(err)}", file=sys.stderr)  # noqa: T201
            raise SystemExit(1) from None

    return wrapper


def _request_errors() -> tuple[type[BaseException], ...]:
    import requests

    return (requests.exceptions.ConnectionError, requests.exceptions.Timeout)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__
