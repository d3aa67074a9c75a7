"""
Tests for L{comet.memory}: the arena limit holds for threads made after it,
in a process of its own (it changes the whole process's malloc).
"""

from __future__ import annotations

import os
import subprocess
import sys

from twisted.trial.unittest import TestCase

from comet.memory import limit_arenas

#: Four threads alive at once each allocate (outside Python's small-object
#: allocator, so through malloc) once the limit of argv[1] arenas is set (or none with
#: 0), then glibc's malloc_stats prints one "Arena N:" block per arena.
PROGRAM = """
import ctypes, sys, threading
from comet.memory import limit_arenas
limit = int(sys.argv[1])
if limit:
    assert limit_arenas(limit)
kept, together = [], threading.Barrier(4)
def work():
    together.wait()   # all alive at once: none takes the arena another left
    kept.append([bytearray(1000) for _ in range(100)])
    together.wait()
threads = [threading.Thread(target=work) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
ctypes.CDLL(None).malloc_stats()
"""


def arenas(limit: int) -> int:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    done = subprocess.run([sys.executable, "-c", PROGRAM, str(limit)], capture_output=True,
                          text=True, env=env, timeout=60, check=True)
    return sum(1 for line in done.stderr.splitlines() if line.startswith("Arena "))


class ArenaLimitTests(TestCase):
    def test_limit_holds_for_new_threads(self):
        """Without the limit each thread gets an arena; with it, they share."""
        self.assertGreater(arenas(0), 2)
        self.assertEqual(arenas(1), 1)

    def test_environment_chose(self):
        """C{MALLOC_ARENA_MAX} in the environment is the operator's choice: left as it is."""
        os.environ["MALLOC_ARENA_MAX"] = "4"
        self.addCleanup(os.environ.pop, "MALLOC_ARENA_MAX")
        self.assertFalse(limit_arenas(2))
