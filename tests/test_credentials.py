"""Password hashes and API tokens."""

from twisted.trial.unittest import TestCase

from comet import credentials


class PasswordTests(TestCase):
    def test_round_trip(self):
        """A password matches its own hash only; each hash has its own salt."""
        stored = credentials.hash_password("correct horse")
        self.assertTrue(stored.startswith("scrypt$65536$8$2$"))
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


    def test_old_parameters(self):
        """
        A hash keeps its parameters: one made with older ones still verifies,
        and is said to need hashing again; one made with today's is not.
        """
        old = credentials.hash_password("correct horse", n=2**10, r=8, p=1)
        self.assertTrue(credentials.verify_password("correct horse", old))
        self.assertFalse(credentials.verify_password("correct horse!", old))
        self.assertTrue(credentials.needs_rehash(old))
        self.assertTrue(credentials.needs_rehash("md5$abc"))
        self.assertFalse(credentials.needs_rehash(None))
        self.assertFalse(credentials.needs_rehash(credentials.hash_password("correct horse")))

    def test_strength(self):
        """Passwords shorter than the minimum are refused, with the minimum named."""
        from comet.errors import InvalidInput

        n = credentials.MIN_PASSWORD_LENGTH
        self.assertGreaterEqual(n, 12)
        e = self.assertRaises(InvalidInput, credentials.check_password_strength, "a" * (n - 1))
        self.assertIn(f"at least {n} characters", e.reason)
        credentials.check_password_strength("a" * n)


class TokenTests(TestCase):
    def test_tokens(self):
        """Tokens are long, random, recognisable, and stored as their SHA-256."""
        a, b = credentials.new_token(), credentials.new_token()
        self.assertNotEqual(a, b)
        self.assertTrue(a.startswith("comet_"))
        self.assertGreaterEqual(len(a), 6 + 43)
        self.assertEqual(len(credentials.token_hash(a)), 64)
        self.assertNotIn(a, credentials.token_hash(a))
