"""Errors that are the user's to fix, and the one place every CLI turns them into one line.

Every entry point (`vdiff.main`, `vdiff.eval.*`, `vdiff.data.prepare`, the DreamPose,
interpolation and PVDM-export CLIs) wraps its `main` with `cli`, so a user error is one line
on stderr, printed once, exit code 2, no traceback; a bug still shows its traceback.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from typing import Any, NoReturn


class UserError(Exception):
    """Base of the errors a user fixes (a flag, a file, a missing run); never a bug."""


class ConfigError(UserError, ValueError):
    """A config value is missing, unknown or inconsistent; the message says what to change."""


class InputError(UserError, ValueError):
    """An input file is missing, empty, undecodable, too short or of the wrong shape."""


class WorkdirBusyError(UserError):
    """Another live process trains in this workdir; the message names it (host, PID, since)."""


class CheckpointRestoreError(UserError):
    """No checkpoint of a workdir restores; the message gives the newest one's reason."""


def one_line(error: BaseException) -> str:
    """The error as `vdiff: Type: message` on one line (multi-line messages are joined)."""
    text = " ".join(x.strip() for x in str(error).splitlines() if x.strip())
    return f"vdiff: {type(error).__name__}: {text}"


def run_cli(main: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """`main(*args, **kwargs)` as an exit code: its own, or 2 with one line for a user error."""
    try:
        return int(main(*args, **kwargs) or 0)
    except (UserError, FileNotFoundError) as e:
        sys.stdout.flush()
        print(one_line(e), file=sys.stderr, flush=True)
        return 2


def cli(main: Callable[..., Any]) -> Callable[..., int]:
    """Decorator form of `run_cli`: `main(argv)` still returns the exit code (tests call it)."""
    @functools.wraps(main)
    def wrapped(*args: Any, **kwargs: Any) -> int:
        return run_cli(main, *args, **kwargs)
    return wrapped


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose bad-argument message is one line (not usage + error) with exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"vdiff: bad arguments: {message} (see {self.prog} --help)\n")
