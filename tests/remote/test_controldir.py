"""
The ssh control directory: another local user must not be able to plant the
ControlMaster socket every command (and CHAP secret) goes through.
"""

import os

import attrs
from twisted.trial.unittest import TestCase

from comet import config
from comet.config import ConfigError, StorageConfig, StorageServerConfig
from comet.remote import SSHRunner, private_control_dir
from comet.remote._controldir import MAX_DIR, control_dir, default_control_dir, ensure_private_dir
from comet.service import makeService
from tests._util import temp_dir

_SERVER = StorageServerConfig(host="10.200.0.21")


class ControlDirTests(TestCase):
    def setUp(self):
        self.base = temp_dir(self)

    def test_default_is_beside_the_database(self):
        """No control_dir: comet-ssh in the database's directory, not a shared /tmp one."""
        self.assertEqual(config.Config().storage.control_dir, "")
        db = os.path.join(self.base, "comet.sqlite")
        self.assertEqual(control_dir("", db), os.path.join(self.base, "comet-ssh"))

    def test_made_private(self):
        """An absent directory is made 0700, whatever the umask."""
        old = os.umask(0)
        self.addCleanup(os.umask, old)
        d = ensure_private_dir(os.path.join(self.base, "ctl"))
        self.assertEqual(os.stat(d).st_mode & 0o777, 0o700)

    def test_private_control_dir(self):
        """What the daemon makes at start: the default beside the database, made 0700."""
        d = private_control_dir("", os.path.join(self.base, "comet.sqlite"))
        self.assertEqual(d, os.path.join(self.base, "comet-ssh"))
        self.assertEqual(os.stat(d).st_mode & 0o777, 0o700)
        os.chmod(d, 0o755)
        self.assertRaises(ConfigError, private_control_dir, d, "unused.sqlite")

    def test_symlink_refused(self):
        """A symlink (even to a private directory of ours) is refused: it can be re-pointed."""
        target = ensure_private_dir(os.path.join(self.base, "real"))
        link = os.path.join(self.base, "ctl")
        os.symlink(target, link)
        e = self.assertRaises(ConfigError, ensure_private_dir, link)
        self.assertIn("symlink", str(e))

    def test_open_mode_refused(self):
        """A directory others can enter or write (a planted /tmp/comet-ssh, 0777) is refused."""
        d = os.path.join(self.base, "ctl")
        os.mkdir(d)
        os.chmod(d, 0o1777)
        e = self.assertRaises(ConfigError, ensure_private_dir, d)
        self.assertIn("0700", str(e))

    def test_other_owner_refused(self):
        """A directory another user made first is refused, even with mode 0700."""
        if os.geteuid() != 0:
            self.skipTest("only root can give a directory to another user")
        d = os.path.join(self.base, "ctl")
        os.mkdir(d, 0o700)
        os.chown(d, 65534, 65534)
        e = self.assertRaises(ConfigError, ensure_private_dir, d)
        self.assertIn("uid 65534", str(e))

    def test_not_a_directory_refused(self):
        d = os.path.join(self.base, "ctl")
        open(d, "w").close()
        self.assertRaises(ConfigError, ensure_private_dir, d)

    def test_socket_paths_fit(self):
        """
        A database deep enough that <dir>/comet-ssh would not leave room for
        ssh's socket names falls back to a private /tmp directory of its own;
        a configured one that long is refused.  ControlPath plus the 17
        characters ssh appends while binding fits in 107 bytes.
        """
        deep = os.path.join(self.base, "d" * 90, "comet.sqlite")
        d = default_control_dir(deep)
        self.assertTrue(d.startswith(f"/tmp/comet-ssh-{os.geteuid()}-"), d)
        self.assertNotEqual(d, default_control_dir(os.path.join(self.base, "e" * 90, "x")))
        self.assertRaises(ConfigError, control_dir, "/" + "c" * MAX_DIR, "comet.sqlite")
        runner = SSHRunner(None, _SERVER, StorageConfig(control_dir="/" + "c" * (MAX_DIR - 1)))
        self.assertLessEqual(len(runner.control_path) + 17, 107)
        self.assertIn(f"ControlPath={runner.control_path}", runner.ssh_argv())

    def test_daemon_refuses_to_start(self):
        """makeService stops with one configuration error line naming the directory."""
        d = os.path.join(self.base, "ctl")
        os.mkdir(d)
        os.chmod(d, 0o755)
        c = attrs.evolve(
            config.Config(storageservers=(_SERVER,)),
            storage=StorageConfig(control_dir=d),
            database=config.DatabaseConfig(path=os.path.join(self.base, "comet.sqlite")),
        )
        e = self.assertRaises(SystemExit, makeService, c)
        self.assertIn("configuration error: storage.control_dir", str(e))
        self.assertIn(d, str(e))

    def test_daemon_makes_the_default(self):
        """Without control_dir, the daemon makes <db dir>/comet-ssh, 0700, and its runners use it."""
        c = attrs.evolve(
            config.Config(storageservers=(_SERVER,)),
            database=config.DatabaseConfig(path=os.path.join(self.base, "comet.sqlite")),
        )
        service = makeService(c)
        d = os.path.join(self.base, "comet-ssh")
        self.assertEqual(service.config.storage.control_dir, d)
        self.assertEqual(os.stat(d).st_mode & 0o777, 0o700)

    async def test_runner_refuses_an_unsafe_directory(self):
        """A directory made unsafe after start: the command is refused as unavailable, ssh never runs."""
        from comet.errors import Unavailable

        d = os.path.join(self.base, "ctl")
        os.mkdir(d, 0o777)
        os.chmod(d, 0o777)

        class NoSpawn:
            def spawnProcess(self, *a, **kw):
                raise AssertionError("ssh was started")

        runner = SSHRunner(NoSpawn(), _SERVER, StorageConfig(control_dir=d), ssh="/bin/true")
        e = await self.assertFailure(runner.run(["true"]), Unavailable)
        self.assertIn("0700", str(e))
