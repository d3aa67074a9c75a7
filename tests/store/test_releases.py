"""
Upgrades: a database made by a released Comet (tests/store/releases/, made
by that release's own code with the C{make} script beside it) is opened by
today's: migrated, its copy at the old version kept, nothing lost, and a
daemon serves it.
"""

from __future__ import annotations

import glob
import os
import shutil
import sqlite3

from twisted.trial.unittest import TestCase

from comet import config
from comet.admin import bootstrap, connect
from comet.service import makeService
from comet.store import MIGRATIONS_KNOWN, in_transaction, schema_version, users
from tests._util import bearer, http, temp_dir
from tests.test_service import free_port, write_config

RELEASES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "releases")


def _version(path: str) -> int:
    conn = sqlite3.connect(path)
    try:
        return schema_version(conn)
    finally:
        conn.close()


class ReleaseUpgradeTests(TestCase):
    def test_there_is_a_release(self):
        self.assertEqual([os.path.basename(p) for p in glob.glob(os.path.join(RELEASES, "*.sqlite"))],
                         ["comet-v0.1.0.sqlite"])

    async def test_daemon_upgrades_and_serves_v0_1_0(self):
        directory = temp_dir(self)
        path = os.path.join(directory, "comet.sqlite")
        shutil.copy(os.path.join(RELEASES, "comet-v0.1.0.sqlite"), path)
        os.chmod(path, 0o644)   # as a careless copy leaves it
        self.assertEqual(_version(path), 9)
        service = makeService(config.load(write_config(directory, free_port())))
        service.startService()
        self.addCleanup(service.stopService)
        await service.ready
        self.assertEqual(_version(path), MIGRATIONS_KNOWN)
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        kept = f"{path}.pre-v9"
        self.assertEqual((_version(kept), os.stat(kept).st_mode & 0o777), (9, 0o600))
        with connect(path) as conn:
            self.assertEqual([(u.name, u.role) for u in users.list_users(conn)],
                             [("admin", "admin"), ("ops", "operator")])
            self.assertEqual([(t.user, t.expires) for t in users.list_tokens(conn)],
                             [("admin", None), ("ops", None)])   # old tokens never expire
            _, token = in_transaction(conn, users.create_token, "ops")
        port = service.port.getHost().port
        answer = await http().get(f"http://127.0.0.1:{port}/cluster/lab/vms",
                                  headers=bearer(token))
        self.assertEqual(answer.code, 200)
        vms = await answer.json()
        self.assertEqual(sorted((vm["name"], vm["state"]) for vm in vms),
                         [("db", "shutoff"), ("small-1", "shutoff")])
        answer = await http().get(f"http://127.0.0.1:{port}/cluster/lab/vms/db",
                                  headers=bearer(token))
        vm = await answer.json()
        self.assertEqual((vm["template"], vm["memory"], vm["cpus"], vm["host"]),
                         ("small", 64, 1, None))
        answer = await http().get(f"http://127.0.0.1:{port}/tasks/1", headers=bearer(token))
        task = await answer.json()
        self.assertEqual((task["status"], task["message"].split(":")[0]),
                         ("finished", "cluster 'lab' stop"))
        self.assertIsNone(bootstrap(path))   # its users are there: no second first admin
