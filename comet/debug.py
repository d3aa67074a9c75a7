"""
Fault injection for crash tests of a real daemon process: C{[debug]
kill_at_file}.

The in-process crash tests freeze an operation at a step with
L{comet.model.intents.Intents.halt}.  A test of a real C{twistd} child
cannot reach into it, so it writes a small file instead, and this hook (set
as C{intents.halt} by L{comet.service} when the key is set) reads it at
each checkpoint: a line C{<kind> <step> <before|after>} that matches the
checkpoint kills the process with SIGKILL right there, as a power loss
would, after removing the file (so that the restarted daemon does not die
again at the same step while repairing).

For tests only, and off by default: reading a local file at every step of
every operation is blocking I/O in the reactor thread, acceptable only
because the file is tiny and the key is never set in production.
"""

from __future__ import annotations

import os
import signal
from typing import Callable


def parse(text: str) -> set[tuple[str, str, str]]:
    """
    The checkpoints a kill file names: one C{<kind> <step> <before|after>} a
    line (the step may hold spaces: C{vm.start define domain after}); blank
    lines, C{#} comments and malformed lines are ignored.
    """
    points = set()
    for line in text.splitlines():
        words = line.split()
        if len(words) < 3 or words[0].startswith("#") or words[-1] not in ("before", "after"):
            continue
        points.add((words[0], " ".join(words[1:-1]), words[-1]))
    return points


def _sigkill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class KillAt:
    """
    A L{comet.model.intents.Halt} hook: C{hook(kind, step, when)} kills this
    process (C{kill}, SIGKILL by default) if the file at C{path} names that
    checkpoint; otherwise answers C{False} (the operation goes on).
    """

    def __init__(self, path: str, kill: Callable[[], None] = _sigkill):
        self.path = path
        self._kill = kill

    def __call__(self, kind: str, step: str, when: str) -> bool:
        try:
            with open(self.path, encoding="utf-8", errors="replace") as f:
                text = f.read(65536)
        except OSError:
            return False   # no file (the usual case): nothing to kill
        if (kind, step, when) not in parse(text):
            return False
        try:
            os.unlink(self.path)
        except OSError:
            pass
        self._kill()
        return False   # reached only with an injected kill that returns
