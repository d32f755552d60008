"""The error boundary every command shares: a bad option or an operating-system error is one line and exit 2.

``ArgumentParser`` prints ``error: <what is wrong> (see <prog> --help)`` instead of argparse's whole usage
block; ``boundary`` (a decorator on each command's ``main``) turns an ``OSError`` escaping it into
``error: <what failed> on <path>: <reason>; <what to do>``. Layer 0: imports nothing else from egan_med.
"""
from __future__ import annotations

import argparse
import errno
import functools
import os
import sys
from typing import Callable, NoReturn

EXIT_USAGE = 2  # bad input of any kind: the project's one status for "you asked for something that cannot be done"


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line error and a pointer to --help (no 14-line usage block before it)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"error: {message} (see {self.prog} --help)\n")


def _in_the_way(path: str) -> str:
    """The deepest existing component of ``path`` that is not a folder ("" when there is none)."""
    probe = os.path.abspath(path)
    while probe and not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            return ""
        probe = parent
    return probe if probe and not os.path.isdir(probe) else ""


def os_error_message(exc: OSError, doing: str) -> str:
    """One line for an operating-system error: what failed, on which path, why, and what to do.

    Args:
        exc: the error (``filename`` names the path when the OS said which).
        doing: what the command was doing, e.g. ``writing the cohort``.

    Returns:
        ``<doing> failed on <path>: <reason>; <what to do>`` (no ``error:`` prefix).
    """
    path = exc.filename if exc.filename is not None else (exc.filename2 or "")
    path = os.fsdecode(path) if isinstance(path, (bytes, os.PathLike)) else str(path)
    reason = exc.strerror or " ".join(str(exc).split())[:200] or type(exc).__name__
    code = exc.errno
    if code in (errno.EEXIST, errno.ENOTDIR) and path and _in_the_way(path):
        blocker = _in_the_way(path)
        reason = f"{blocker} is a file, so nothing can be created inside it"
        advice = f"move {blocker} away, or choose a path that does not go through it"
    elif code in (errno.EACCES, errno.EPERM):
        advice = "you have no permission there; choose a location you can write to (e.g. under your home folder)"
    elif code == errno.EROFS:
        advice = "that file system is read-only; choose a location on a writable disk"
    elif code == errno.ENOSPC:
        advice = "the disk is full; free some space or choose another disk"
    elif code == errno.ENOENT:
        advice = "a folder on the way does not exist or cannot hold files there; check the path"
    elif code == errno.EISDIR:
        advice = "that is a folder; give a file name"
    elif code == errno.EEXIST:
        advice = "it already exists; remove it or choose another path"
    else:
        advice = "check the path and try again"
    where = f" on {path}" if path else ""
    return f"{doing} failed{where}: {reason}; {advice}"


def boundary(doing: str) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Decorate a command's ``main``: an ``OSError`` escaping it becomes one ``error:`` line on stderr and exit 2.

    Args:
        doing: what the command does, for the message, e.g. ``training``.
    """
    def wrap(main: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(main)
        def run(argv: list[str] | None = None) -> int:
            try:
                return main(argv)
            except OSError as exc:
                print(f"error: {os_error_message(exc, doing)}", file=sys.stderr)
                return EXIT_USAGE
        return run
    return wrap
