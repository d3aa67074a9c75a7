"""Users, tokens and the audit log in SQLite."""

from twisted.trial.unittest import TestCase

from comet.admin import connect
from comet.errors import Conflict, InvalidInput, NotFound
from comet.store import users
from comet.store.users import Users
from tests._api import temp_database


class UserStoreTests(TestCase):
    def setUp(self):
        self.db = temp_database(self)

    def test_users_and_tokens(self):
        with connect(self.db.path) as conn:
            users.add_user(conn, "ann", "admin", "pw-long-enough")
            users.add_user(conn, "tom", "viewer", None)
            self.assertRaises(Conflict, users.add_user, conn, "ann", "viewer", None)
            self.assertRaises(InvalidInput, users.add_user, conn, "x", "root", None)
            self.assertRaises(InvalidInput, users.add_user, conn, "a:b", "viewer", None)
            self.assertEqual([(u.name, u.role) for u in users.list_users(conn)],
                             [("ann", "admin"), ("tom", "viewer")])
            record, token = users.create_token(conn, "tom")
            self.assertEqual(users.user_of_token(conn, token).name, "tom")
            # Only the hash is stored.
            dump = "\n".join(conn.iterdump())
            self.assertNotIn(token, dump)
            self.assertNotIn("pw-long-enough", dump)
            self.assertRaises(NotFound, users.create_token, conn, "nobody")
            users.revoke_token(conn, record.id)
            self.assertIsNone(users.user_of_token(conn, token))
            self.assertRaises(NotFound, users.revoke_token, conn, record.id)

    async def test_expired_token_refused_even_when_cached(self):
        """A token is refused from its expiry on, though its lookup was cached before."""
        from twisted.internet.task import Clock

        clock = Clock()
        clock.advance(1000)
        store = Users(self.db, clock=clock)
        with connect(self.db.path) as conn:
            users.add_user(conn, "ann", "operator", None)
            record, token = users.create_token(conn, "ann", now=1000, lifetime=60)
        self.assertEqual(record.expires, 1060)
        self.assertEqual((await store.by_token(token)).name, "ann")
        clock.advance(59)
        self.assertEqual((await store.by_token(token)).name, "ann")
        clock.advance(1)
        self.assertIsNone(await store.by_token(token))

    async def test_async(self):
        store = Users(self.db)
        self.assertEqual(await store.count(), 0)
        with connect(self.db.path) as conn:
            _, token = users.create_token(conn, users.add_user(conn, "ann", "operator", None).name)
        self.assertEqual((await store.by_token(token)).role, "operator")
        self.assertIsNone(await store.by_token(token + "x"))
        await store.audit(5, "ann", "POST", "/cluster", 201, None)
        await store.audit(9, "bob", "DELETE", "/cluster/a", 204, 3)
        entries = await store.audit_log(since=6)
        self.assertEqual([(e.user, e.task_id) for e in entries], [("bob", 3)])
        self.assertEqual(len(await store.audit_log(user="ann", limit=5, offset=0)), 1)
