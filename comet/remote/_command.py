"""
Turning an argument list into the one string an OpenSSH server hands to the
remote user's shell.

OpenSSH has no way to pass an argument vector: the client joins everything
after the host name with spaces and the server runs C{$SHELL -c STRING}.  So
every argument is quoted with L{shlex.quote}, whose output a POSIX shell (the
storage servers run busybox C{ash}) reads back as exactly the original bytes,
whatever the argument holds: C{;}, C{$(...)}, quotes, newlines, a leading
C{-}.  Nothing ever builds that string from input in any other way.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from comet.errors import InvalidInput


def check_argv(argv: Sequence[str]) -> list[str]:
    """
    Check that C{argv} can be run at all and return it as a new list.

    @raise InvalidInput: C{argv} is empty, is not a sequence of strings, or
        an argument holds a NUL character (which no C{exec} can pass on).
    """
    if isinstance(argv, (str, bytes)) or not isinstance(argv, Sequence):
        raise InvalidInput(f"a command is a list of arguments, not {type(argv).__name__}")
    if not argv:
        raise InvalidInput("a command needs at least one argument")
    result = []
    for arg in argv:
        if not isinstance(arg, str):
            raise InvalidInput(
                f"command arguments are strings, not {type(arg).__name__}: {arg!r}"
            )
        if "\0" in arg:
            raise InvalidInput(f"a command argument holds a NUL character: {arg!r}")
        result.append(arg)
    return result


def remote_command(argv: Sequence[str]) -> str:
    """
    The string that, run by a POSIX shell, executes C{argv} with each
    argument received byte for byte.

    @raise InvalidInput: see L{check_argv}.
    """
    return " ".join(shlex.quote(arg) for arg in check_argv(argv))


def describe(argv: Sequence[str], limit: int = 120) -> str:
    """A short, quoted rendering of C{argv} for log lines and error reasons."""
    text = " ".join(shlex.quote(arg) for arg in argv)
    return text if len(text) <= limit else text[: limit - 1] + "…"
