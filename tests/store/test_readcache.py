"""The read caches: hits while their generation is unchanged, nothing after a write to its tables."""

import os
import sqlite3
import sys

from twisted.trial.unittest import TestCase

from comet.admin import connect
from comet.credentials import token_hash
from comet.store import users
from comet.store import in_transaction
from comet.store._readcache import ReadCache
from comet.store.users import Users
from tests._api import temp_database
from tests._process import run


class ReadCacheTests(TestCase):
    def setUp(self):
        self.db = temp_database(self)
        with connect(self.db.path) as conn:
            users.add_user(conn, "ann", "operator", None)
            self.record, self.token = in_transaction(conn, users.create_token, "ann")
        self.users = Users(self.db)
        self.trips = 0
        real = self.db.read

        def counting(fn, *args):
            self.trips += 1
            return real(fn, *args)

        self.patch(self.db, "read", counting)

    async def test_hit(self):
        """A second lookup of a token is answered from memory."""
        first = await self.users.by_token(self.token)
        second = await self.users.by_token(self.token)
        self.assertEqual((first.name, second.name), ("ann", "ann"))
        self.assertEqual(self.trips, 1)

    async def test_unknown_not_cached(self):
        """A token that is not there is looked up again each time."""
        self.assertIsNone(await self.users.by_token(self.token + "x"))
        self.assertIsNone(await self.users.by_token(self.token + "x"))
        self.assertEqual(self.trips, 2)

    async def test_revoked_elsewhere_in_process(self):
        """A revocation on another connection empties the cache before the next lookup."""
        self.assertIsNotNone(await self.users.by_token(self.token))
        with connect(self.db.path) as conn:
            in_transaction(conn, users.revoke_token, self.record.id)
        self.assertIsNone(await self.users.by_token(self.token))
        self.assertEqual(self.trips, 2)

    async def test_revoked_by_comet_admin(self):
        """C{comet-admin token revoke} in another process: refused at the next lookup."""
        self.assertIsNotNone(await self.users.by_token(self.token))
        self.assertIsNotNone(await self.users.by_token(self.token))
        config = os.path.join(os.path.dirname(self.db.path), "comet.toml")
        with open(config, "w") as f:
            f.write(f'[database]\npath = "{self.db.path}"\n')
        env = dict(os.environ, PYTHONPATH=os.getcwd())
        done = await run(
            [sys.executable, "-m", "comet.admin", "--config", config,
             "token", "revoke", str(self.record.id)],
            env=env, path=os.path.dirname(self.db.path),
        )
        self.assertEqual(done.code, 0, done.err)
        self.assertIsNone(await self.users.by_token(self.token))

    async def test_other_commits_keep_it(self):
        """A commit to a table the counter does not count (the audit log) keeps the entries."""
        await self.users.by_token(self.token)
        await self.users.audit(1, "ann", "POST", "/cluster", 201, None)
        await self.users.by_token(self.token)
        self.assertEqual(self.trips, 1)

    async def test_daemon_commit_empties(self):
        """The daemon's own writes (its connection is not the watcher's) count too."""
        await self.users.by_token(self.token)
        await self.db.transact(users.revoke_token, self.record.id)
        self.assertIsNone(await self.users.by_token(self.token))

    async def test_role_change(self):
        """A user's new role is seen at the next request."""
        self.assertEqual((await self.users.by_token(self.token)).role, "operator")
        with connect(self.db.path) as conn:
            conn.execute("UPDATE users SET role = 'viewer' WHERE name = 'ann'")
        self.assertEqual((await self.users.by_token(self.token)).role, "viewer")

    def test_put_after_a_commit_is_dropped(self):
        """A lookup that a commit overtook is not remembered."""
        cache = ReadCache(self.db.path, "users")
        self.addCleanup(cache.close)
        version = cache.version()
        with connect(self.db.path) as conn:
            conn.execute("UPDATE users SET role = 'viewer' WHERE name = 'ann'")
        cache.put("digest", "stale", version)
        cache.version()
        self.assertIsNone(cache.get("digest"))

    def test_unreadable_version(self):
        """If the counter cannot be read, the cache is not used at all."""
        cache = ReadCache(self.db.path, "users")
        self.addCleanup(cache.close)
        version = cache.version()
        cache.put("digest", "user", version)
        self.assertEqual(cache.get("digest"), "user")

        class Broken:
            def execute(self, sql):
                raise sqlite3.OperationalError("database is locked")

            def close(self):
                pass

        cache._conn = Broken()
        self.assertIsNone(cache.version())
        self.assertIsNone(cache.get("digest"))
        cache.put("digest", "user", None)
        self.assertIsNone(cache.get("digest"))

    def test_size(self):
        """The least recently used entries go first."""
        cache = ReadCache(self.db.path, "users", size=2)
        self.addCleanup(cache.close)
        version = cache.version()
        for name in "abc":
            cache.put(token_hash(name), name, version)
        self.assertEqual([cache.get(token_hash(n)) for n in "abc"], [None, "b", "c"])

    async def test_without_cache(self):
        """C{Users(db, cache=False)} looks every token up."""
        store = Users(self.db, cache=False)
        self.assertEqual((await store.by_token(self.token)).name, "ann")
        self.assertIsNone(store.tokens)
