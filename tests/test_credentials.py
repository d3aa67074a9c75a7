"""Password hashes and API tokens."""

from twisted.trial.unittest import TestCase

from comet import credentials


class PasswordTests(TestCase):
    def test_round_trip(self):
        """A password matches its own hash only; each hash has its own salt."""
        stored = credentials.hash_password("correct horse")
        self.assertTrue(stored.startswith("scrypt$16384$8$1$"))
        self.assertTrue(credentials.verify_password("correct horse", stored))
        self.assertFalse(credentials.verify_password("correct horse!", stored))
        self.assertNotEqual(stored, credentials.hash_password("correct horse"))
        self.assertNotIn("correct horse", stored)

    def test_no_hash(self):
        """No stored hash (unknown user, token-only user) never matches, whatever the password."""
        self.assertFalse(credentials.verify_password("", None))
        self.assertFalse(credentials.verify_password("x", None))

    def test_corrupt(self):
        """A corrupt stored hash refuses instead of raising."""
        self.assertFalse(credentials.verify_password("x", "md5$abc"))
        self.assertFalse(credentials.verify_password("x", "scrypt$a$b$c$d$e"))


class TokenTests(TestCase):
    def test_tokens(self):
        """Tokens are long, random, recognisable, and stored as their SHA-256."""
        a, b = credentials.new_token(), credentials.new_token()
        self.assertNotEqual(a, b)
        self.assertTrue(a.startswith("comet_"))
        self.assertGreaterEqual(len(a), 6 + 43)
        self.assertEqual(len(credentials.token_hash(a)), 64)
        self.assertNotIn(a, credentials.token_hash(a))
