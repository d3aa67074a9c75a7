"""The registry of operations (L{comet.model.operations.REGISTRY})."""

from __future__ import annotations

import enum
import importlib
import inspect

from twisted.trial.unittest import TestCase

from comet.model.operations import REGISTRY, OperationType, make_registry
from tests.integration.test_kill_steps import KillStepsCase


#: Operations whose steps are crashed by unit crash tests alone, not by SIGKILL
#: cases on the testbed (each case a daemon restart: CI time; the NIC
#: hot-plug came in session 19 with its kill steps asked for in unit tests
#: only; the local unmap needs a compute host with OpenZFS, which the
#: testbed's is not yet): kind -> its test module, which crashes before and
#: after each step.
UNIT_CRASHED = {
    "nic.attach": "tests.model.operations.test_nic_attach",
    "nic.detach": "tests.model.operations.test_nic_detach",
    "unmap.local": "tests.model.operations.test_unmap_local",
}


def _kill_cases() -> set[tuple[str, str]]:
    """The (kind, step) pairs the SIGKILL step tests cover."""
    return {(kind, step) for case in KillStepsCase.__subclasses__()
            for _, kind, step in case.CASES}


class RegistryTests(TestCase):
    def test_steps_are_enums_of_names(self):
        """Each operation's steps are an enum of distinct, non-empty step names."""
        for kind, operation in REGISTRY.items():
            self.assertTrue(issubclass(operation.steps, enum.Enum), kind)
            values = [step.value for step in operation.steps]
            self.assertTrue(values, kind)
            self.assertTrue(all(isinstance(v, str) and v for v in values), kind)
            self.assertEqual(len(set(values)), len(values), kind)

    def test_every_kind_registered_once(self):
        """A kind of two operations is refused."""
        one = REGISTRY["vm.start"]
        with self.assertRaises(ValueError):
            make_registry(one, OperationType(kinds=("vm.start",), steps=one.steps,
                                         repair=one.repair))

    def test_kill_tests_cover_every_step(self):
        """
        The SIGKILL tests on the testbed reach every step of every registered
        operation but those of L{UNIT_CRASHED}.
        """
        covered = _kill_cases()
        missing = [(kind, step.value) for kind, operation in REGISTRY.items()
                   for step in operation.steps
                   if (kind, step.value) not in covered and kind not in UNIT_CRASHED]
        self.assertEqual(missing, [])

    def test_unit_crash_tests_cover_every_step(self):
        """
        Each operation of L{UNIT_CRASHED} is registered, and its test module
        crashes it at every step of its steps enum (C{steps(<module>.OPERATION)}
        with each of L{tests.model.operations.crash.WHEN}).
        """
        for kind, name in UNIT_CRASHED.items():
            self.assertIn(kind, REGISTRY)
            module = importlib.import_module(name)
            source = inspect.getsource(module)
            operation = REGISTRY[kind]
            self.assertIn(f"steps({operation.repair.__module__.rpartition('.')[2]}.OPERATION)",
                          source, name)
            self.assertIn("for when in WHEN", source, name)
            self.assertIn(f'Crash("{kind}", step, when)', source, name)
