"""
C{scripts/test} runs pytest-xdist with C{-n 3 --dist loadfile}; tests/conftest.py's
scheduler keeps the integration tests in two streams, each in one worker in its
order (they share the testbed), the disruptive ones (they stop or reboot its
storage servers, freeze a host) alone, and each other module in one worker.
Each test here runs pytest so on a generated tree whose tests write down which
worker ran them (and when they began and ended).
"""

from __future__ import annotations

import os
import re
import sys
import textwrap

from twisted.trial.unittest import TestCase

from tests._process import run
from tests._util import temp_dir
from tests.conftest import SECOND_STREAM, STREAMS, disruptive, work_unit
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


#: A tree with both integration streams and disruptive tests (test_faults and
#: test_storage_reboot, in the first stream): each test appends
#: "<worker> start <name>", then "<worker> end <name>" a moment later, to $RAN.
STREAM_TEST = TEST + '''
    import time
    import unittest


    def _run(name):
        _ran("start " + name)
        time.sleep(0.3)
        _ran("end " + name)

'''
STREAM_MODULES = {
    "tests/integration/test_a.py": "def test_a1(): _run('a1')\ndef test_a2(): _run('a2')\n",
    "tests/integration/test_faults.py": "def test_f1(): _run('f1')\n",
    "tests/integration/test_storage_reboot.py": "def test_r1(): _run('r1')\n",
    "tests/integration/test_kill_steps.py": (
        "class VolumeKillTests(unittest.TestCase):\n    def test_v1(self): _run('v1')\n"
        "class VMKillTests(unittest.TestCase):\n    def test_k1(self): _run('k1')\n"
        "    def test_k2(self): _run('k2')\n    def test_k3(self): _run('k3')\n"
        "class FenceKillTests(unittest.TestCase):\n    def test_x1(self): _run('x1')\n"
        "    def test_x2(self): _run('x2')\n"
        "class NetKillTests(unittest.TestCase):\n    def test_n1(self): _run('n1')\n"),
    "tests/test_u.py": "def test_u1(): _run('u1')\ndef test_u2(): _run('u2')\n",
}


class WorkUnitTests(TestCase):
    def test_work_unit(self):
        """
        tests/integration is two units (the second: the kill cases of firmware-only
        VMs and of the one guest); any other test's unit is its module.
        """
        self.assertEqual(work_unit("tests/integration/test_kill_steps.py::VMKillTests::test_x"),
                         STREAMS[1])
        self.assertEqual(work_unit("tests/integration/test_kill_steps.py::VolumeKillTests::t"),
                         STREAMS[1])
        self.assertEqual(work_unit("tests/integration/test_kill_steps.py::FenceKillTests::t"),
                         STREAMS[0])
        self.assertEqual(work_unit("tests/integration/test_remote.py::S1::test_y"), STREAMS[1])
        self.assertEqual(work_unit("tests/integration/test_migrate.py::M::test_m"), STREAMS[0])
        # one stream (fewer than three workers): all of tests/integration
        self.assertEqual(work_unit("tests/integration/test_kill_steps.py::VMKillTests::test_x",
                                   streams=1), STREAMS[0])
        self.assertEqual(STREAMS[0], "tests/integration")
        self.assertEqual(work_unit("tests/web/test_vms.py::ActionTests::test_z"),
                         "tests/web/test_vms.py")
        self.assertEqual(work_unit("tests/test_names.py::NameRuleTests::test_pattern"),
                         "tests/test_names.py")

    def test_second_stream_local_host_alone(self):
        """
        The second stream's daemons configure the local host alone: host2
        frozen by a test of the first stream (not L{disruptive}) is none of
        theirs.  (A prefix names a class, or a whole module, whose daemon
        test classes are checked.)
        """
        import importlib

        from tests.integration._daemon import CometDaemonCase

        self.assertEqual(len(SECOND_STREAM), 6)
        for prefix in SECOND_STREAM:
            path, name = prefix.split("::")[:2]
            module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
            classes = [getattr(module, name)] if name else [
                value for value in vars(module).values()
                if isinstance(value, type) and issubclass(value, CometDaemonCase)]
            for cls in classes:
                self.assertFalse(cls.all_hosts, prefix + cls.__name__)

    def test_disruptive(self):
        """The tests that reboot or stop a storage server or freeze local's libvirtd."""
        for nodeid in ("tests/integration/test_storage_reboot.py::StorageRebootTests::test_x",
                       "tests/integration/test_faults.py::StorageServerFaultTests::test_y"):
            self.assertTrue(disruptive(nodeid), nodeid)
        # (host2's libvirtd frozen: only the first stream's tests use host2)
        for nodeid in ("tests/integration/test_hosts.py::TwoHostTests::test_z",
                       "tests/integration/test_migrate.py::MigrationTests::test_w",
                       "tests/integration/test_kill_steps.py::FenceKillTests::test_v",
                       "tests/integration/test_kill_steps.py::MigrateKillTests::test_v",
                       "tests/integration/test_compute.py::ComputeIntegrationTests::test_c",
                       "tests/test_hosts.py::HostTests::test_h"):
            self.assertFalse(disruptive(nodeid), nodeid)


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

    async def test_two_integration_streams_disruptive_alone(self):
        """
        With C{-n 3}: each integration stream in one worker of its own, in its
        order, and the disruptive tests each alone: no other test begins or
        ends while one runs.
        """
        directory = temp_dir(self)
        for path, body in STREAM_MODULES.items():
            os.makedirs(os.path.join(directory, os.path.dirname(path)), exist_ok=True)
            with open(os.path.join(directory, path), "w") as f:
                f.write(textwrap.dedent(STREAM_TEST) + "\n" + body)
        with open(os.path.join(directory, "pytest.ini"), "w") as f:
            f.write("[pytest]\n")
        ran = os.path.join(directory, "ran")
        env = {k: v for k, v in os.environ.items() if k != "CI"}
        env.update(PYTHONPATH=REPO, RAN=ran, PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
        outcome = await run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "tests.conftest",
             "-p", "xdist", "-n", "3", "--dist", "loadfile", "--import-mode=importlib",
             "--rootdir", directory, "tests"],
            env=env, path=directory, timeout=110,
        )
        out = outcome.out.decode()
        self.assertEqual(outcome.code, 0, out + outcome.err.decode())
        self.assertIn("13 passed", out)
        with open(ran) as f:
            lines = [line.split() for line in f.read().splitlines()]
        worker = {name: w for w, what, name in lines}
        order = [name for _, what, name in lines if what == "start"]
        first = ["a1", "a2", "f1", "x1", "x2", "n1", "r1"]
        second = ["v1", "k1", "k2", "k3"]
        self.assertEqual([n for n in order if n in first], first)
        self.assertEqual([n for n in order if n in second], second)
        self.assertEqual(len({worker[n] for n in first}), 1, lines)
        self.assertEqual(len({worker[n] for n in second}), 1, lines)
        self.assertNotEqual(worker["a1"], worker["k1"], lines)
        for name in ("f1", "r1"):
            begin = lines.index([worker[name], "start", name])
            self.assertEqual(lines[begin + 1], [worker[name], "end", name], lines)
