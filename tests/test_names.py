"""The name rule (C{comet.names}), as properties over any input."""

import string

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import TestCase

from comet.names import NAME_PATTERN, check_name

_FIRST = set(string.ascii_letters + string.digits)
_REST = _FIRST | set("_.-")


def _rule(name: str) -> bool:
    """The rule in words: 1 to 64 ASCII letters, digits, C{_ . -}; a letter or digit first."""
    return 1 <= len(name) <= 64 and name[0] in _FIRST and all(c in _REST for c in name)


_NAMES = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")


class NameRuleTests(TestCase):
    @given(st.one_of(st.text(max_size=80), st.text(alphabet="".join(sorted(_REST)) + " \n/$;", max_size=70)))
    def test_is_the_rule(self, text):
        """C{check_name} is exactly the rule in words, for any text."""
        self.assertEqual(check_name(text), _rule(text), repr(text))

    @given(_NAMES)
    def test_pattern_names_are_valid(self, name):
        self.assertTrue(check_name(name))

    @given(_NAMES, st.sampled_from(["\n", "\r", " ", "/", ";", "$", "\x00", "'", "\u0660", "\u00e9", "\uff21"]))
    def test_one_bad_character_anywhere(self, name, bad):
        """One character a shell or a path reads specially (or a non-ASCII one) anywhere: refused."""
        for i in range(len(name) + 1):
            self.assertFalse(check_name(name[:i] + bad + name[i:]), repr(name[:i] + bad + name[i:]))

    @given(_NAMES)
    def test_length_and_first_character(self, name):
        self.assertFalse(check_name("-" + name))
        self.assertFalse(check_name("." + name))
        self.assertFalse(check_name("_" + name))
        self.assertEqual(check_name(name + "x" * (64 - len(name))), True)
        self.assertFalse(check_name(name + "x" * (65 - len(name))))

    @given(st.one_of(st.none(), st.integers(), st.binary(), st.lists(st.text())))
    def test_only_strings(self, value):
        self.assertFalse(check_name(value))

    def test_pattern(self):
        """The pattern the API documents is the one checked."""
        self.assertEqual(NAME_PATTERN, r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
        self.assertFalse(check_name("lab\n"))
