"""
The daemon as a whole: the service tree on a real port, C{twistd -n comet},
C{twistd -ny comet.tac}, configuration errors, and a clean SIGTERM.
"""

import os
import re
import signal
import socket
import sys
import time


from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from comet import config
from comet.service import makeService
from tests._process import run, spawn
from comet.admin import bootstrap
from tests._util import bearer, http, temp_dir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def write_config(directory: str, port: int, extra: str = "") -> str:
    path = os.path.join(directory, "comet.toml")
    with open(path, "w") as f:
        f.write(
            f'[api]\nendpoint = "tcp:{port}:interface=127.0.0.1"\n'
            f'[database]\npath = "{directory}/comet.sqlite"\n' + extra
        )
    return path


class ServiceTests(TestCase):
    """The service tree in this process, on a real listening port."""

    async def test_start_serve_stop(self):
        directory = temp_dir(self)
        port = free_port()
        token = bootstrap(os.path.join(directory, "comet.sqlite"))
        service = makeService(config.load(write_config(directory, port)))
        service.startService()
        await service.ready
        response = await http().get(f"http://127.0.0.1:{port}/cluster", headers=bearer(token))
        self.assertEqual(response.code, 200)
        self.assertEqual(await response.json(), [])
        self.assertEqual(
            response.headers.getRawHeaders("content-type"), ["application/json; charset=utf-8"]
        )
        await service.stopService()
        with self.assertRaises(Exception):
            await http().get(f"http://127.0.0.1:{port}/cluster")

    async def test_stall_watch(self):
        """C{[debug] stall_ms} starts a stall watch with the service; stopping stops it."""
        directory = temp_dir(self)
        service = makeService(config.load(write_config(
            directory, free_port(), "[debug]\nstall_ms = 250\n")))
        service.startService()
        await service.ready
        watch = service.stallwatch
        self.assertIsNotNone(watch)
        self.assertTrue(watch._thread.is_alive())
        await service.stopService()
        self.assertIsNone(service.stallwatch)
        self.assertIsNone(watch._thread)

    async def test_whole_process_freezes_startup_heap(self):
        """
        A service that is the whole process (twistd) takes start-up's objects
        out of the collector's scans before it listens; one in a test does not.
        """
        import gc

        self.addCleanup(gc.unfreeze)
        directory = temp_dir(self)
        shared = makeService(config.load(write_config(directory, free_port())))
        self.assertFalse(shared.whole_process)
        shared.startService()
        await shared.ready
        self.assertEqual(gc.get_freeze_count(), 0)
        await shared.stopService()
        whole = makeService(config.load(write_config(directory, free_port())), whole_process=True)
        whole.startService()
        await whole.ready
        self.assertGreater(gc.get_freeze_count(), 0)
        await whole.stopService()

    async def test_reconciles_before_listening(self):
        """
        At start, an operation a dead process left is repaired and its task
        failed with what was repaired before the API answers; the periodic
        reconciler runs until the service stops.
        """
        from comet.store import Database, Intents, Tasks

        directory = temp_dir(self)
        port = free_port()
        db = Database(f"{directory}/comet.sqlite")
        db.open()
        task = await Tasks(db).create("/cluster/lab/vms/gone", "stopping VM 'gone'", 1)
        await Intents(db).plan("op1", task.id, "vm.stop", "no-such-uuid", "shut down",
                               {"host": "local"}, 1)
        db.close()
        token = bootstrap(os.path.join(directory, "comet.sqlite"))
        service = makeService(config.load(write_config(
            directory, port, "[reconcile]\ninterval = 30\n")))
        service.startService()
        await service.ready
        self.addCleanup(service.stopService)
        response = await http().get(f"http://127.0.0.1:{port}/tasks/{task.id}",
                                    headers=bearer(token))
        body = await response.json()
        self.assertEqual(body["status"], "failed")
        self.assertIn("repaired: vm.stop of no-such-uuid: the VM no longer exists", body["message"])
        self.assertEqual(await Intents(service.db).list(), [])
        reconciler = service.models.reconciler
        self.assertTrue(reconciler._loop.running)
        self.assertEqual(reconciler._loop.interval, 30.0)
        await service.stopService()
        self.assertIsNone(reconciler._loop)

    async def test_second_daemon_refused(self):
        """
        A second daemon over the database of a running one refuses to start,
        naming it, and touches nothing (the first one's running task stays
        running); once the first stopped cleanly, a new one starts.
        """
        from comet.model.locks import LeaseHeld
        from comet.store import Tasks

        directory = temp_dir(self)
        first = makeService(config.load(write_config(directory, free_port())))
        first.startService()
        await first.ready
        self.addCleanup(first.stopService)
        task = await Tasks(first.db).create("/x", "running in the first daemon", 1)
        second = makeService(config.load(write_config(directory, free_port())))
        second.startService()
        with self.assertRaises(LeaseHeld) as caught:
            await second.ready
        self.assertIn(f"pid {os.getpid()}", str(caught.exception))
        self.assertIn(f"{directory}/comet.sqlite", str(caught.exception))
        self.flushLoggedErrors()
        await second.stopService()
        self.assertIsNone(second.port)
        self.assertEqual((await Tasks(first.db).get(task.id)).status, "running")
        await first.stopService()
        third = makeService(config.load(write_config(directory, free_port())))
        third.startService()
        await third.ready
        self.assertEqual((await Tasks(third.db).get(task.id)).status, "failed")
        await third.stopService()

    async def test_newer_schema_refused(self):
        """
        A database a newer Comet wrote: the daemon refuses to start, naming
        both versions, serves nothing and leaves the file as it was.
        """
        import sqlite3

        from comet.store import MIGRATIONS_KNOWN, NewerSchema

        directory = temp_dir(self)
        path = os.path.join(directory, "comet.sqlite")
        bootstrap(path)
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("INSERT INTO schema_migrations (version, applied) VALUES (?, 0)",
                     (MIGRATIONS_KNOWN + 1,))
        conn.close()
        with open(path, "rb") as f:
            before = f.read()
        service = makeService(config.load(write_config(directory, free_port())))
        service.startService()
        with self.assertRaises(NewerSchema) as caught:
            await service.ready
        self.assertIn(f"schema version {MIGRATIONS_KNOWN + 1}, newer than this Comet knows"
                      f" ({MIGRATIONS_KNOWN})", str(caught.exception))
        self.flushLoggedErrors()
        await service.stopService()
        self.assertIsNone(service.port)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), before)

    async def test_stale_live_owner_refused(self):
        """An owner not renewed for ages whose process runs (this one): refused all the same."""
        import attrs

        from comet.model.locks import LeaseHeld, this_process
        from comet.store import Database, Locks

        directory = temp_dir(self)
        db = Database(f"{directory}/comet.sqlite")
        db.open()
        me = attrs.evolve(this_process(), started=1, renewed=1)
        self.assertIsNone(await Locks(db).take_lease(me, lambda other: False))
        db.close()
        service = makeService(config.load(write_config(directory, free_port())))
        service.startService()
        with self.assertRaises(LeaseHeld):
            await service.ready
        self.flushLoggedErrors()
        await service.stopService()

    async def test_dead_owner_locks_released_at_start(self):
        """
        A dead daemon's lock rows are released before the API listens, and a
        task one names that was still running is failed.
        """
        import attrs

        from comet.model.locks import this_process
        from comet.store import Database, Locks, Tasks
        from tests.model.test_locks import dead_pid

        directory = temp_dir(self)
        db = Database(f"{directory}/comet.sqlite")
        db.open()
        ghost = attrs.evolve(this_process(), pid=dead_pid(), started=1, renewed=1)
        self.assertIsNone(await Locks(db).take_lease(ghost, lambda other: False))
        task = await Tasks(db).create("/cluster/lab/vms/web", "stopping VM 'web'", 1)
        await Locks(db).acquire("some-uuid", task.id, "stopping", ghost.owner, 1)
        db.close()
        service = makeService(config.load(write_config(directory, free_port())))
        service.startService()
        await service.ready
        self.addCleanup(service.stopService)
        self.assertEqual(await Locks(service.db).list(), [])
        self.assertEqual([o.owner for o in await Locks(service.db).owners()],
                         [service.models.locks.me.owner])
        self.assertEqual((await Tasks(service.db).get(task.id)).status, "failed")
        await service.stopService()
        # A clean stop gives the lease back.
        db = Database(f"{directory}/comet.sqlite")
        db.open()
        self.addCleanup(db.close)
        self.assertEqual(await Locks(db).owners(), [])

    async def test_port_in_use(self):
        """A port already taken fails the start with the reason."""
        directory = temp_dir(self)
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        self.addCleanup(taken.close)
        service = makeService(config.load(write_config(directory, taken.getsockname()[1])))
        service.startService()
        with self.assertRaises(Exception):
            await service.ready
        self.flushLoggedErrors()
        await service.stopService()

    def test_bad_config_is_one_line(self):
        """An unusable configuration stops with one line naming the key."""
        directory = temp_dir(self)
        path = write_config(directory, free_port(), "[api2]\nx = 1\n")
        e = self.assertRaises(SystemExit, makeService, path)
        self.assertEqual(str(e.code).count("\n"), 0)
        self.assertIn("unknown key api2", str(e.code))


def _twistd_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return env


TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


class ScrapeTokenTests(TestCase):
    """L{read_scrape_token}: the file of C{[metrics] token_file}."""

    def test_read(self):
        from comet.service import read_scrape_token

        directory = temp_dir(self)
        path = os.path.join(directory, "token")
        self.assertIsNone(read_scrape_token(""))
        with open(path, "w") as f:
            f.write("  " + "t" * 32 + "\n")
        self.assertEqual(read_scrape_token(path), "t" * 32)
        for bad in ("", "short", "two words here and there"):
            with open(path, "w") as f:
                f.write(bad)
            with self.assertRaises(config.ConfigError) as e:
                read_scrape_token(path)
            self.assertIn("metrics.token_file", str(e.exception))
        with self.assertRaises(config.ConfigError):
            read_scrape_token(os.path.join(directory, "absent"))


class TwistdTests(TestCase):
    """The daemon as an operator starts it, in a child process."""

    async def _wait_listening(self, port, done, timeout=20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if done.called:
                self.fail("twistd exited before listening")
            try:
                response = await http().get(f"http://127.0.0.1:{port}/health")
                return response
            except Exception:
                await deferLater(reactor, 0.1, lambda: None)
        self.fail("twistd did not listen in time")

    async def _start_and_term(self, argv, directory, port, env, token=None):
        """
        Start twistd, check that it serves (with C{token}, the first admin's,
        made by comet-admin bootstrap on C{directory}/comet.sqlite by default),
        then SIGTERM it.
        """
        if token is None:
            token = bootstrap(os.path.join(directory, "comet.sqlite"))
        process, done = spawn(argv, env=env, path=directory)
        self.addCleanup(lambda: done.called or process.signalProcess("KILL"))
        health = await self._wait_listening(port, done)
        self.assertEqual(await health.json(), {"status": "ok"})
        refused = await http().get(f"http://127.0.0.1:{port}/cluster")
        self.assertEqual(refused.code, 401)
        await refused.content()
        response = await http().get(f"http://127.0.0.1:{port}/cluster", headers=bearer(token))
        self.assertEqual(await response.json(), [])
        created = await http().post(
            f"http://127.0.0.1:{port}/cluster",
            b'{"name": "lab"}',
            headers={b"Content-Type": [b"application/json"], **bearer(token)},
        )
        self.assertEqual(created.code, 201)
        await created.content()
        started = time.monotonic()
        process.signalProcess("TERM")
        outcome = await done
        self.assertLess(time.monotonic() - started, 2.0)
        # twistd stops the reactor, shuts down, then dies of the same signal.
        self.assertIn(outcome.signal, (None, signal.SIGTERM), outcome.err + outcome.out)
        self.assertIn(outcome.code, (None, 0))
        self.assertIn(b"Comet stopped", outcome.out)
        self.assertIn(b"Server Shut Down", outcome.out)
        return outcome

    async def test_twistd_plugin(self):
        """C{twistd -n comet --config FILE} starts, serves, and stops on SIGTERM within 2 s."""
        directory = temp_dir(self)
        port = free_port()
        path = write_config(directory, port)
        outcome = await self._start_and_term(
            TWISTD + ["-n", "--pidfile=", "comet", "--config", path], directory, port, _twistd_env()
        )
        self.assertTrue(os.path.exists(os.path.join(directory, "comet.sqlite")))

    async def test_twistd_scrape(self):
        """
        A Prometheus scrape of a real C{twistd} daemon: the scrape token of
        C{[metrics] token_file} reads C{/metrics} (text format, parsed as
        Prometheus does), no token is a 401; C{/health} answers 200 ok.
        """
        from prometheus_client.parser import text_string_to_metric_families

        directory = temp_dir(self)
        port = free_port()
        token_file = os.path.join(directory, "metrics-token")
        scrape_token = "scrape-" + "0123456789abcdef" * 2
        with open(token_file, "w") as f:
            f.write(scrape_token + "\n")
        path = write_config(directory, port, f'[metrics]\ntoken_file = "{token_file}"\n')
        bootstrap(os.path.join(directory, "comet.sqlite"))
        process, done = spawn(TWISTD + ["-n", "--pidfile=", "comet", "--config", path],
                              env=_twistd_env(), path=directory)
        self.addCleanup(lambda: done.called or process.signalProcess("KILL"))
        health = await self._wait_listening(port, done)
        self.assertEqual((health.code, await health.json()), (200, {"status": "ok"}))
        refused = await http().get(f"http://127.0.0.1:{port}/metrics")
        self.assertEqual(refused.code, 401)
        await refused.content()
        response = await http().get(
            f"http://127.0.0.1:{port}/metrics",
            headers={b"Authorization": [f"Bearer {scrape_token}".encode()],
                     b"Accept": [b"application/openmetrics-text;version=1.0.0;q=0.75,"
                                 b"text/plain;version=0.0.4;q=0.5,*/*;q=0.1"]})
        self.assertEqual(response.code, 200)
        text = (await response.content()).decode()
        found = {(s.name, tuple(sorted(s.labels.items()))): s.value
                 for family in text_string_to_metric_families(text) for s in family.samples}
        self.assertGreaterEqual(found["comet_http_requests_total", (
            ("method", "GET"), ("route", "health"), ("status", "200"))], 1)
        self.assertEqual(found["comet_host_up", (("host", "local"),)], 1)
        self.assertEqual(found["comet_lease_held", ()], 1)
        self.assertEqual(found["comet_reconcile_passes_total", (("outcome", "ok"),)], 1)
        process.signalProcess("TERM")
        outcome = await done
        self.assertIn(b"Comet stopped", outcome.out)

    async def test_tac(self):
        """C{twistd -ny comet.tac} with C{COMET_CONFIG} starts and stops the same way."""
        directory = temp_dir(self)
        port = free_port()
        env = _twistd_env()
        env["COMET_CONFIG"] = write_config(directory, port)
        await self._start_and_term(
            TWISTD + ["-n", "--pidfile=", "-y", os.path.join(REPO, "comet.tac")], directory, port, env
        )

    async def test_embedded_default(self):
        """C{twistd -n comet} alone uses comet.sqlite in the working directory."""
        directory = temp_dir(self)
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", 8080)) == 0:
                self.skipTest("port 8080 is in use here")
        # The first admin, made as the README's setup makes it: comet-admin
        # bootstrap in the working directory, on the embedded default.
        made = await run(
            [sys.executable, "-m", "comet.admin", "bootstrap"], env=_twistd_env(), path=directory
        )
        self.assertEqual(made.code, 0, made.err)
        token = made.out.decode().splitlines()[2]
        # The daemon accepts that token: it uses the same comet.sqlite.
        await self._start_and_term(
            TWISTD + ["-n", "--pidfile=", "comet"], directory, 8080, _twistd_env(), token
        )

    async def test_config_error_one_line(self):
        """A bad configuration file stops twistd with one line naming the key, no traceback."""
        directory = temp_dir(self)
        path = write_config(directory, free_port(), "[manhole]\nendpiont = 'x'\n")
        outcome = await run(
            TWISTD + ["-n", "--pidfile=", "comet", "--config", path],
            env=_twistd_env(),
            path=directory,
        )
        self.assertNotEqual(outcome.code, 0)
        text = (outcome.out + outcome.err).decode()
        self.assertIn("unknown key manhole.endpiont", text)
        self.assertNotIn("Traceback", text)

    async def test_readme_config_error(self):
        """
        The README's example of a configuration error is what twistd prints for
        that configuration today (the known keys included).
        """
        with open(os.path.join(REPO, "README.md")) as f:
            readme = " ".join(f.read().split())
        example = re.search(r"`(comet: configuration error: unknown key (\w+)\.(\w+) \(known: [^)]*\))`", readme)
        self.assertIsNotNone(example, "the README shows no configuration error")
        line, table, key = example.groups()
        directory = temp_dir(self)
        path = os.path.join(directory, "comet.toml")
        with open(path, "w") as f:
            f.write(f"[{table}]\n{key} = 'x'\n")
        outcome = await run(
            TWISTD + ["-n", "--pidfile=", "comet", "--config", path], env=_twistd_env(), path=directory
        )
        self.assertNotEqual(outcome.code, 0)
        self.assertEqual((outcome.out + outcome.err).decode().strip(), line)

    async def test_missing_config_file(self):
        directory = temp_dir(self)
        outcome = await run(
            TWISTD + ["-n", "--pidfile=", "comet", "--config", "/nonexistent.toml"],
            env=_twistd_env(),
            path=directory,
        )
        self.assertNotEqual(outcome.code, 0)
        text = (outcome.out + outcome.err).decode()
        self.assertIn("/nonexistent.toml", text)
        self.assertNotIn("Traceback", text)
