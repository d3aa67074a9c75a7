"""
Tests for L{comet.remote._command}: argument lists become one remote shell
string that every POSIX shell reads back byte for byte.
"""

from __future__ import annotations

import os
import subprocess

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from comet.errors import InvalidInput
from comet.remote import check_argv, remote_command
from comet.remote._command import describe

#: POSIX shells found here; the storage servers run busybox ash, the
#: developer machines bash and dash.
SHELLS = [argv for argv in (["/bin/sh"], ["/usr/bin/dash"], ["/bin/bash"],
                            ["/usr/bin/busybox", "sh"]) if os.access(argv[0], os.X_OK)]

#: Text a shell could read specially; any Unicode except NUL and surrogates.
arguments = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"))


def through_shell(shell: list[str], argv: list[str]) -> list[str]:
    """Run C{printf '%s\\0' ARGS} as a shell runs the remote command; return what it got."""
    out = subprocess.run(shell + ["-c", remote_command(["printf", r"%s\0"] + argv)],
                         capture_output=True, check=True, env={"PATH": "/usr/bin:/bin"}).stdout
    return out.decode("utf-8", "surrogateescape").split("\0")[:-1]


class RemoteCommandTests(SynchronousTestCase):
    """L{remote_command} quotes every argument."""

    def test_plain(self):
        self.assertEqual(remote_command(["zfs", "list", "-H"]), "zfs list -H")

    def test_quoted(self):
        self.assertEqual(remote_command(["echo", "a b", "it's", "$(x)", ""]),
                         "echo 'a b' 'it'\"'\"'s' '$(x)' ''")

    def test_hostile_through_shells(self):
        """Known troublemakers arrive unchanged in every shell available here."""
        hostile = ["a;b", "$(touch /tmp/comet-pwned)", "`id`", " x ", "'", '"', "\n", "-n",
                   "--", "*", "~root", "$HOME", "\\", "\t", "", "&", "|", "<>", "#", "!",
                   "{a,b}", "[a]", "ünïcødé", "\x01\x1b[31m"]
        for shell in SHELLS:
            self.assertEqual(through_shell(shell, hostile), hostile, shell)
        self.assertFalse(os.path.exists("/tmp/comet-pwned"))

    @settings(max_examples=200, deadline=None)
    @given(st.lists(arguments, min_size=1, max_size=6))
    def test_round_trip(self, argv):
        """Any text arguments survive quoting through a POSIX shell."""
        for shell in SHELLS:
            self.assertEqual(through_shell(shell, argv), argv, shell)


class CheckArgvTests(SynchronousTestCase):
    """L{check_argv} refuses what cannot be run."""

    def test_good(self):
        self.assertEqual(check_argv(("zfs", "list")), ["zfs", "list"])

    def test_bad(self):
        for bad in ([], "zfs list", b"zfs", ["zfs", 1], ["zfs", b"x"], ["a\0b"], None):
            self.assertRaises(InvalidInput, check_argv, bad)

    def test_remote_command_checks(self):
        self.assertRaises(InvalidInput, remote_command, ["echo", "nul\0"])


class DescribeTests(SynchronousTestCase):
    """L{describe} gives a short quoted rendering for messages."""

    def test_short(self):
        self.assertEqual(describe(["zfs", "destroy", "a b"]), "zfs destroy 'a b'")

    def test_long(self):
        text = describe(["x" * 500])
        self.assertEqual(len(text), 120)
        self.assertTrue(text.endswith("…"))
