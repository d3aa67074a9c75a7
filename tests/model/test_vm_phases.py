"""
Tests for L{comet.model.vm_phases}: the VM state machine as data.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from comet.errors import Conflict, Unavailable
from comet.model.vm_phases import STOPPED, UNKNOWN, VM, VM_ACTIONS, conflict
from comet.store import VMRecord


def record(host: str | None = "h1") -> VMRecord:
    return VMRecord(id=1, cluster="c", name="v", uuid="00000000-0000-0000-0000-000000000001",
                    template=None, memory=128, cpus=1, host=host, created=0)


class VMTests(TestCase):
    def test_stopped_shows_shutoff(self):
        """A VM placed nowhere is shown as C{shutoff}, and may only start."""
        vm = VM(record(None), STOPPED)
        self.assertEqual((vm.state, vm.actions), ("shutoff", ["start"]))

    def test_actions_follow_the_table(self):
        """Every action listed is one the table allows in the phase; none else."""
        for phase in ("running", "paused", "shutoff", "other", STOPPED, UNKNOWN):
            vm = VM(record(), phase, movable=True)
            self.assertEqual(vm.actions, [a for a, ps in VM_ACTIONS.items() if phase in ps])

    def test_migrate_needs_a_destination(self):
        """C{migrate} is offered only while another host could take the VM."""
        self.assertNotIn("migrate", VM(record(), "running", movable=False).actions)
        self.assertIn("migrate", VM(record(), "running", movable=True).actions)


class ConflictTests(TestCase):
    def test_wrong_phase_is_409(self):
        """An action invalid in a known phase is a 409 naming the state and host."""
        error = conflict(VM(record(), "running"), "start")
        self.assertIsInstance(error, Conflict)
        self.assertIn("'v' is running on h1", str(error))

    def test_unknown_phase_is_503(self):
        """An unanswering host makes the action unavailable, not refused: a 503 naming it."""
        error = conflict(VM(record(), UNKNOWN), "stop")
        self.assertIsInstance(error, Unavailable)
        self.assertIn("'h1'", str(error))
