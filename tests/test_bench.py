"""
The benchmark scripts run (issue 7): C{bench/api.py --quick} on a tiny N exits
0 and writes its JSON.  Nothing here is timed: the figures are for
C{bench/README.md}, not for the suite.
"""

from __future__ import annotations

import json
import os
import sys

from twisted.trial.unittest import TestCase

from tests._process import run
from tests._util import temp_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class APIBenchTests(TestCase):
    timeout = 180

    async def test_quick_run(self):
        out = os.path.join(temp_dir(self), "api.json")
        outcome = await run(
            [sys.executable, os.path.join(ROOT, "bench", "api.py"), "--quick",
             "--sizes", "3,5", "--json", out],
            env=dict(os.environ),
            path=ROOT,
            timeout=170,
        )
        self.assertEqual(outcome.code, 0, outcome.err.decode(errors="replace"))
        with open(out) as f:
            result = json.load(f)
        self.assertEqual(
            set(result) >= {"machine", "sizes", "growth", "targets", "table"}, True, sorted(result)
        )
        self.assertEqual([r["n"] for r in result["sizes"]], [3, 5])
        for r in result["sizes"]:
            for kind in ("single", "list"):
                for c in ("c1", "c8"):
                    self.assertGreater(r[kind][c]["requests"], 0)
                    self.assertEqual(r[kind][c]["errors"]["count"], 0)
                    for key in ("median_ms", "p95_ms", "p99_ms", "rps"):
                        self.assertIn(key, r[kind][c])
                self.assertIn("median_ms", r["floor"][kind])
                self.assertIn(f"{kind}_median", r["ratio"])
            self.assertGreater(r["rss_mb"], 0)
        busy = result["sizes"][-1]["busy"]  # run at every N; the last is the target's
        self.assertEqual(busy["post_statuses"], {"200": 50})
        self.assertEqual(busy["started_running"], 50)
        self.assertIn("p99_ms", busy["probe_busy"])
        self.assertIn(b"targets (issue 7)", outcome.out)


class ScaleBenchTests(TestCase):
    """
    C{bench/api.py --vms N --hosts H --starts S} (issue 16's scale run is
    C{--vms 10000 --hosts 100 --starts 200}), at a tiny size: every host
    holds its share of the VMs and every start is answered and running.
    """

    timeout = 180

    async def test_vms_hosts_starts(self):
        out = os.path.join(temp_dir(self), "api.json")
        outcome = await run(
            [sys.executable, os.path.join(ROOT, "bench", "api.py"), "--quick",
             "--vms", "7", "--hosts", "3", "--starts", "4", "--json", out],
            env=dict(os.environ),
            path=ROOT,
            timeout=170,
        )
        self.assertEqual(outcome.code, 0, outcome.err.decode(errors="replace"))
        with open(out) as f:
            result = json.load(f)
        self.assertEqual((result["hosts"], result["starts"]), (3, 4))
        [size] = result["sizes"]
        self.assertEqual((size["n"], size["hosts"], size["starts"]), (7, 3, 4))
        self.assertEqual(size["list"]["c1"]["errors"]["count"], 0)
        self.assertEqual(size["busy"]["post_statuses"], {"200": 4})
        self.assertEqual(size["busy"]["started_running"], 4)
        self.assertGreater(size["rss_mb"], 0)
        self.assertGreater(size["list"]["c1"]["cpu_ms"], 0)
        self.assertGreater(size["cluster_get"]["requests"], 0)
        self.assertIn(b"4 VM starts run at once", outcome.out)


class OwnWritesBenchTests(TestCase):
    """
    C{bench/own_writes.py} (issue 14): a real C{twistd} on the embedded
    default, both CPUs kept busy, and every action's answer shows the state
    the action left (the full proof is C{--rounds 200}; see bench/README.md).
    """

    timeout = 120

    async def test_no_stale_answer_under_load(self):
        out = os.path.join(temp_dir(self), "own_writes.json")
        outcome = await run(
            [sys.executable, os.path.join(ROOT, "bench", "own_writes.py"),
             "--rounds", "20", "--busy", "2", "--json", out],
            env=dict(os.environ),
            path=ROOT,
            timeout=110,
        )
        self.assertEqual(outcome.code, 0, (outcome.out + outcome.err).decode(errors="replace"))
        with open(out) as f:
            result = json.load(f)
        self.assertEqual((result["answers"], result["stale"]), (140, 0), result["stale_answers"])


class TestbedBenchTests(TestCase):
    """C{bench/testbed.py} needs the testbed; without one it says so and exits 0."""

    timeout = 60

    async def test_skips_without_testbed(self):
        env = dict(os.environ, COMET_TESTBED_STATE=temp_dir(self))
        outcome = await run(
            [sys.executable, os.path.join(ROOT, "bench", "testbed.py"),
             "--json", os.path.join(temp_dir(self), "testbed.json")],
            env=env, path=ROOT, timeout=50)
        self.assertEqual(outcome.code, 0, outcome.err.decode(errors="replace"))
        self.assertIn(b"skipped: the testbed is not up", outcome.out)
