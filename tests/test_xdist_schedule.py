"""
C{scripts/test} runs pytest-xdist with C{-n 2 --dist loadfile}; tests/conftest.py's
scheduler keeps every integration test in one worker, in its order (they share
the testbed, and some stop or reboot its storage servers), and each other
module in one worker.  Each test here runs pytest so on a generated tree whose
tests write down which worker ran them.
"""

from __future__ import annotations

import os
import re
import sys
import textwrap

from twisted.trial.unittest import TestCase

from tests._process import run
from tests._util import temp_dir
from tests.conftest import work_unit
from tests.test_service import REPO

#: Each generated test appends "<worker> <its name>" to $RAN.
TEST = '''
    import os


    def _ran(name):
        with open(os.environ["RAN"], "a") as f:
            f.write(f"{os.environ.get('PYTEST_XDIST_WORKER', '-')} {name}\\n")

'''
MODULES = {
    "tests/integration/test_a.py": ["a1", "a2", "a3"],
    "tests/integration/test_b.py": ["b1", "b2"],
    "tests/test_u.py": ["u1", "u2", "u3"],
    "tests/test_v.py": ["v1", "v2", "v3"],
    "tests/web/test_w.py": ["w1", "w2"],
}


class WorkUnitTests(TestCase):
    def test_work_unit(self):
        """All of tests/integration is one unit; any other test's unit is its module."""
        self.assertEqual(work_unit("tests/integration/test_kill_steps.py::VMKillTests::test_x"),
                         "tests/integration")
        self.assertEqual(work_unit("tests/integration/test_remote.py::S1::test_y"),
                         "tests/integration")
        self.assertEqual(work_unit("tests/web/test_vms.py::ActionTests::test_z"),
                         "tests/web/test_vms.py")
        self.assertEqual(work_unit("tests/test_names.py::NameRuleTests::test_pattern"),
                         "tests/test_names.py")


class ScheduleTests(TestCase):
    timeout = 120

    async def test_integration_in_one_worker_in_order(self):
        directory = temp_dir(self)
        for path, names in MODULES.items():
            os.makedirs(os.path.join(directory, os.path.dirname(path)), exist_ok=True)
            with open(os.path.join(directory, path), "w") as f:
                f.write(textwrap.dedent(TEST))
                for name in names:
                    f.write(f"\ndef test_{name}():\n    _ran({name!r})\n")
        with open(os.path.join(directory, "pytest.ini"), "w") as f:
            f.write("[pytest]\n")
        ran = os.path.join(directory, "ran")
        env = {k: v for k, v in os.environ.items() if k != "CI"}
        env.update(PYTHONPATH=REPO, RAN=ran, PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
        outcome = await run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "tests.conftest",
             "-p", "xdist", "-n", "2", "--dist", "loadfile", "--import-mode=importlib",
             "--rootdir", directory, "tests"],
            env=env, path=directory, timeout=90,
        )
        out = outcome.out.decode()
        self.assertEqual(outcome.code, 0, out + outcome.err.decode())
        self.assertIn("13 passed", out)
        with open(ran) as f:
            lines = [line.split() for line in f.read().splitlines()]
        workers = {}
        for worker, name in lines:
            workers.setdefault(re.sub(r"\d", "", name), set()).add(worker)
        self.assertEqual(sorted(workers), ["a", "b", "u", "v", "w"])
        # the integration tests: one worker, in the order of their modules
        self.assertEqual(len(workers["a"] | workers["b"]), 1, lines)
        self.assertEqual([name for _, name in lines if name[0] in "ab"],
                         ["a1", "a2", "a3", "b1", "b2"])
        # each other module: one worker, and the two workers both had work
        for module in "uvw":
            self.assertEqual(len(workers[module]), 1, lines)
        self.assertEqual({w for ws in workers.values() for w in ws}, {"gw0", "gw1"}, lines)
