"""The comet-admin tool."""

import io
import os
import sys

from twisted.trial.unittest import TestCase

from comet import admin
from comet.store import users
from tests._process import run
from tests._util import temp_dir


class AdminTests(TestCase):
    def setUp(self):
        self.dir = temp_dir(self)
        self.db = os.path.join(self.dir, "comet.sqlite")
        self.config = os.path.join(self.dir, "comet.toml")
        with open(self.config, "w") as f:
            f.write(f'[database]\npath = "{self.db}"\n')
        with admin.connect(self.db):
            pass   # the database a daemon's first start makes

    def admin(self, *argv, stdin=""):
        out = io.StringIO()
        admin.run(["--config", self.config, *argv], io.StringIO(stdin), out)
        return out.getvalue()

    def test_users_and_tokens(self):
        self.assertIn("user alice (admin) created", self.admin("user", "add", "alice", "--role", "admin"))
        self.admin("user", "add", "bob", "--role", "viewer", "--password-stdin", stdin="s3cret horse battery\n")
        listed = self.admin("user", "list").splitlines()
        self.assertEqual([line.split("\t")[:3] for line in listed],
                         [["alice", "admin", "tokens"], ["bob", "viewer", "password+tokens"]])
        out = self.admin("token", "create", "bob").splitlines()
        self.assertEqual(out[0], "token 1 for bob (shown only now):")
        token = out[1]
        with admin.connect(self.db) as conn:
            self.assertEqual(users.user_of_token(conn, token).name, "bob")
            self.assertTrue(users.get_user(conn, "bob").password.startswith("scrypt$"))
        self.assertNotIn(token, self.admin("token", "list"))
        self.assertEqual(self.admin("token", "revoke", "1"), "token 1 revoked\n")
        with admin.connect(self.db) as conn:
            self.assertIsNone(users.user_of_token(conn, token))

    def test_user_role_and_delete(self):
        """role changes a user's role; delete removes the user and its tokens."""
        self.admin("user", "add", "bob", "--role", "viewer")
        token = self.admin("token", "create", "bob").splitlines()[1]
        self.assertEqual(self.admin("user", "role", "bob", "operator"), "user bob is now operator\n")
        with admin.connect(self.db) as conn:
            self.assertEqual(users.user_of_token(conn, token).role, "operator")
        self.assertEqual(self.admin("user", "delete", "bob"), "user bob deleted, with its tokens\n")
        with admin.connect(self.db) as conn:
            self.assertIsNone(users.user_of_token(conn, token))
            self.assertEqual(users.list_tokens(conn), [])
        from comet.errors import NotFound
        self.assertRaises(NotFound, self.admin, "user", "delete", "bob")
        self.assertRaises(NotFound, self.admin, "user", "role", "bob", "admin")

    def test_token_expiry(self):
        """--expires DAYS: the token is refused from then on; list shows when."""
        import time

        self.admin("user", "add", "bob", "--role", "viewer")
        out = self.admin("token", "create", "bob", "--expires", "1").splitlines()
        self.assertRegex(out[0], r"^token 1 for bob, valid until \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"
                                 r" \(shown only now\):$")
        token = out[1]
        forever = self.admin("token", "create", "bob").splitlines()[1]
        listed = [line.split("\t")[3] for line in self.admin("token", "list").splitlines()]
        self.assertTrue(listed[0].startswith("expires 20"), listed)
        self.assertEqual(listed[1], "expires never")
        with admin.connect(self.db) as conn:
            now = time.time()
            self.assertEqual(users.user_of_token(conn, token, now=now).name, "bob")
            self.assertIsNone(users.user_of_token(conn, token, now=now + 86400 + 1))
            self.assertEqual(users.user_of_token(conn, forever, now=now + 10**9).name, "bob")
        from comet.errors import InvalidInput
        self.assertRaises(InvalidInput, self.admin, "token", "create", "bob", "--expires", "0")

    def test_short_password_refused(self):
        """A password shorter than the minimum is refused, and no user is made."""
        from comet.credentials import MIN_PASSWORD_LENGTH
        from comet.errors import InvalidInput

        short = "x" * (MIN_PASSWORD_LENGTH - 1)
        e = self.assertRaises(InvalidInput, self.admin, "user", "add", "bob", "--role", "admin",
                              "--password-stdin", stdin=short + "\n")
        self.assertEqual(
            e.reason, f"a password needs at least {MIN_PASSWORD_LENGTH} characters, not {len(short)}"
        )
        self.assertEqual(self.admin("user", "list"), "")
        self.admin("user", "add", "bob", "--role", "admin", "--password-stdin", stdin=short + "y\n")
        self.assertEqual(self.admin("user", "list").split("\t")[:3], ["bob", "admin", "password+tokens"])

    def test_bootstrap(self):
        """bootstrap makes the first admin and prints its token once; later it does nothing."""
        out = self.admin("bootstrap")
        token = out.splitlines()[2]
        with admin.connect(self.db) as conn:
            self.assertEqual(users.user_of_token(conn, token).role, "admin")
        self.assertEqual(self.admin("bootstrap"), "")

    async def test_command(self):
        """The console script's errors are one line and exit 1; the default config is comet.sqlite here."""
        env = dict(os.environ, PYTHONPATH=os.getcwd())
        argv = [sys.executable, "-m", "comet.admin"]
        os.unlink(self.db)
        refused = await run(argv + ["user", "add", "ann", "--role", "operator"], env=env,
                            path=self.dir)
        self.assertEqual(refused.code, 1)
        self.assertIn(b"the database comet.sqlite does not exist", refused.err)
        self.assertFalse(os.path.exists(self.db))   # a mistyped --config makes no database
        made = await run(argv + ["bootstrap"], env=env, path=self.dir)
        self.assertEqual(made.code, 0, made.err)
        self.assertTrue(os.path.exists(self.db))
        done = await run(argv + ["user", "add", "ann", "--role", "operator"], env=env, path=self.dir)
        self.assertEqual(done.code, 0, done.err)
        again = await run(argv + ["user", "add", "ann", "--role", "operator"], env=env, path=self.dir)
        self.assertEqual((again.code, again.err), (1, b"comet-admin: user 'ann' already exists\n"))
        missing = await run(argv + ["token", "create", "nobody"], env=env, path=self.dir)
        self.assertEqual(missing.err, b"comet-admin: user 'nobody' does not exist\n")
        bad = await run(argv + ["--config", "/nonexistent.toml", "user", "list"], env=env, path=self.dir)
        self.assertEqual(bad.code, 1)
        self.assertIn(b"configuration error", bad.err)


class AdminFileModeTests(TestCase):
    def test_database_is_private(self):
        """comet-admin on a fresh install makes the database 0600, whatever the umask."""
        old = os.umask(0o022)
        self.addCleanup(os.umask, old)
        path = os.path.join(temp_dir(self), "comet.sqlite")
        self.assertIsNotNone(admin.bootstrap(path))
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
