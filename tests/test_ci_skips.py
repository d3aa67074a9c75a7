"""
Under CI a skipped test fails, giving its reason (tests/conftest.py); elsewhere
it skips.  Each test runs pytest, with tests/conftest.py as a plugin, on a few
generated tests that skip every way a test here can.
"""

from __future__ import annotations

import os
import re
import sys
import textwrap

from twisted.trial.unittest import TestCase

from tests._process import run
from tests._util import temp_dir
from tests.test_service import REPO

GENERATED = {
    "test_generated.py": '''
        import pytest
        from twisted.trial.unittest import SkipTest, TestCase


        class Skips(TestCase):
            def setUp(self):
                if self._testMethodName == "test_in_setup":
                    raise SkipTest("the frobnicator is not installed")

            def test_in_setup(self):
                pass

            def test_in_test(self):
                self.skipTest("the widget is not installed")

            def test_legitimate(self):
                self.skipTest("right everywhere")

            def test_passes(self):
                pass


        class SkippedClass(TestCase):
            skip = "the gadget is not installed"

            def test_any(self):
                pass


        @pytest.mark.skip(reason="the gizmo is not installed")
        def test_marked():
            pass
    ''',
    "test_module.py": '''
        import pytest

        pytest.importorskip("comet_no_such_module_here")
    ''',
    # The one place legitimate skips are listed, as a test run lists one.
    "conftest.py": '''
        from tests import conftest

        conftest.LEGITIMATE_SKIPS["test_generated.py::Skips::test_legitimate"] = "for this test"
    ''',
}

REASONS = [
    "the frobnicator is not installed",
    "the widget is not installed",
    "the gadget is not installed",
    "the gizmo is not installed",
]


class CISkipTests(TestCase):
    timeout = 120

    async def _pytest(self, ci: str | None, *files: str, options: tuple[str, ...] = ()):
        """
        Run pytest on the generated C{files} (with C{options} first); its exit
        code, output and counts.
        """
        directory = temp_dir(self)
        for name, text in GENERATED.items():
            with open(os.path.join(directory, name), "w") as f:
                f.write(textwrap.dedent(text))
        with open(os.path.join(directory, "pytest.ini"), "w") as f:
            f.write("[pytest]\n")
        env = {k: v for k, v in os.environ.items() if k != "CI"}
        env["PYTHONPATH"] = REPO
        # Only pytest's own plugins and tests/conftest.py: a quicker start.
        env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
        if ci is not None:
            env["CI"] = ci
        outcome = await run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "tests.conftest",
             "--rootdir", directory, *options, *files],
            env=env, path=directory, timeout=90,
        )
        out = outcome.out.decode()
        self.assertTrue(out.strip(), outcome.err.decode())
        summary = out.strip().splitlines()[-1]
        counts = {word: int(n) for n, word in re.findall(r"(\d+) (\w+)", summary)}
        return outcome.code, out, counts

    async def test_ci_skip_fails(self):
        """
        With C{CI=true}, each skip but the listed one fails, saying why (a skip
        mark's, in the setup phase, is an error).
        """
        code, out, counts = await self._pytest("true", "test_generated.py")
        self.assertEqual(code, 1, out)
        self.assertEqual(counts, {"failed": 3, "error": 1, "passed": 1, "skipped": 1}, out)
        for reason in REASONS:
            self.assertIn(f"skipped under CI (CI=true), where a skip is a failure: {reason}\n", out)
        self.assertIn("test_generated.py::Skips::test_in_setup: install what it needs", out)

    async def test_ci_skip_fails_under_xdist(self):
        """
        The same in C{scripts/test}'s way, in pytest-xdist workers (shared out by
        tests/conftest.py's scheduler): the reports the workers send say the
        same, and the listed skip is still the one allowed.
        """
        code, out, counts = await self._pytest(
            "true", "test_generated.py", options=("-p", "xdist", "-n", "2", "--dist", "loadfile"))
        self.assertEqual(code, 1, out)
        self.assertEqual(counts, {"failed": 3, "error": 1, "passed": 1, "skipped": 1}, out)
        for reason in REASONS:
            self.assertIn(f"skipped under CI (CI=true), where a skip is a failure: {reason}\n", out)
        self.assertIn("test_generated.py::Skips::test_in_setup: install what it needs", out)

    async def test_ci_module_skip_fails(self):
        """With C{CI=true}, a module skipped while it is imported fails too."""
        code, out, counts = await self._pytest("true", "test_module.py")
        self.assertNotEqual(code, 0, out)
        self.assertEqual(counts.get("error"), 1, out)
        self.assertIn("where a skip is a failure: could not import 'comet_no_such_module_here'", out)

    async def test_skips_without_ci(self):
        """Without C{CI} (or with C{CI=false}) skips are skips."""
        for ci in (None, "false"):
            code, out, counts = await self._pytest(ci, "test_generated.py", "test_module.py")
            self.assertEqual(code, 0, out)
            self.assertEqual(counts, {"passed": 1, "skipped": 6}, out)
            self.assertNotIn("skipped under CI", out)
