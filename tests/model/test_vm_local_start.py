"""
Tests for L{comet.model.vm_local_start}: the task of a local-copy mode VM's
start (the start itself through the API: C{tests/model/storage/test_local_mode.py}).
"""

from __future__ import annotations

from twisted.internet.defer import fail, succeed
from twisted.trial.unittest import TestCase

from comet.model.vm_local_start import MiB, copy_progress


class _Task:
    def __init__(self, broken=False):
        self.seen = []
        self.broken = broken

    def progress(self, percent, message):
        self.seen.append((percent, message))
        return fail(RuntimeError("the database is gone")) if self.broken else succeed(None)


class CopyProgressTests(TestCase):
    def test_whole_percentages_only(self):
        """The task hears of each whole percentage once, never 100 before the start is done."""
        task = _Task()
        progress = copy_progress(task, "web")
        total = 100 * MiB
        for moved in range(0, total + 1, MiB // 4):
            progress(moved, total)
        self.assertEqual([p for p, _ in task.seen], list(range(100)))
        self.assertEqual(task.seen[50][1],
                         "copying the disks of VM 'web' to its host: 50 MiB of about 100 MiB")

    def test_nothing_to_copy(self):
        """An empty disk (nothing referenced) is 0 %, not a division by zero."""
        task = _Task()
        copy_progress(task, "web")(0, 0)
        self.assertEqual([p for p, _ in task.seen], [0])

    def test_progress_not_recorded(self):
        """A progress the database could not record does not stop the copy."""
        task = _Task(broken=True)
        copy_progress(task, "web")(MiB, 2 * MiB)
        self.assertEqual([p for p, _ in task.seen], [50])
