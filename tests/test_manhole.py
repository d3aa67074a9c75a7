"""
The manhole accepts the configured key and refuses any other, tested with the
real OpenSSH client against a real port.
"""

import os
import shutil
import subprocess

from twisted.trial.unittest import TestCase

from comet import config
from comet.manhole import host_key
from comet.service import makeService
from tests._process import run
from tests._util import temp_dir
from tests.test_service import free_port

SSH = shutil.which("ssh")


def keygen(path: str) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", path], check=True
    )


class ManholeTests(TestCase):
    if SSH is None:
        skip = "the OpenSSH client (ssh) is not installed"

    async def setUp(self):
        self.dir = temp_dir(self)
        self.good = os.path.join(self.dir, "good")
        self.bad = os.path.join(self.dir, "bad")
        keygen(self.good)
        keygen(self.bad)
        keys = os.path.join(self.dir, "manhole_keys")
        shutil.copy(self.good + ".pub", keys)
        self.port = free_port()
        text = (
            f'[api]\nendpoint = "tcp:0:interface=127.0.0.1"\n'
            f'[database]\npath = "{self.dir}/comet.sqlite"\n'
            f'[manhole]\nendpoint = "tcp:{self.port}:interface=127.0.0.1"\n'
            f'authorized_keys = "{keys}"\nhost_key = "{self.dir}/host_key"\n'
        )
        self.service = makeService(config.parse(text))
        self.service.startService()
        await self.service.ready

    async def tearDown(self):
        await self.service.stopService()

    def ssh(self, key: str, stdin: bytes):
        return run(
            [
                SSH, "-tt", "-i", key, "-p", str(self.port),
                "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "LogLevel=ERROR", "admin@127.0.0.1",
            ],
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            stdin=stdin,
            close_stdin=False,
            timeout=20,
        )

    async def test_configured_key(self):
        """The configured key gets a Python prompt with the live service objects."""
        outcome = await self.ssh(
            self.good, b"print('MAN' + 'HOLE-' + config.api.endpoint)\r\x04"
        )
        self.assertIn(b"MANHOLE-tcp:0:interface=127.0.0.1", outcome.out)

    async def test_other_key_refused(self):
        """Any other key is refused before a prompt."""
        outcome = await self.ssh(self.bad, b"print('MAN' + 'HOLE-' + 'x')\r\x04")
        self.assertEqual(outcome.code, 255)
        self.assertIn(b"Permission denied", outcome.err)
        self.assertNotIn(b"MANHOLE-", outcome.out)

    def test_host_key_is_kept(self):
        """The host key is made once, private, and reused."""
        path = os.path.join(self.dir, "host_key")
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        self.assertEqual(host_key(path).fingerprint(), host_key(path).fingerprint())
