"""The registry of operations (L{comet.model.operations.REGISTRY})."""

from __future__ import annotations

import enum

from twisted.trial.unittest import TestCase

from comet.model.operations import REGISTRY, OperationType, make_registry
from tests.integration.test_kill_steps import KillStepsCase


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
        """The SIGKILL tests on the testbed reach every step of every registered operation."""
        covered = _kill_cases()
        missing = [(kind, step.value) for kind, operation in REGISTRY.items()
                   for step in operation.steps if (kind, step.value) not in covered]
        self.assertEqual(missing, [])
