"""
Comet installed the way a Python developer installs a project: C{pip install .}
and C{pip install -e .} into a fresh virtualenv each give a C{twistd} that
knows the C{comet} command (the plugin in twisted/plugins/comet_plugin.py),
without help from scripts/setup.

Each virtualenv borrows the dependencies already installed for this test run
(a C{.pth} naming this interpreter's site-packages) so that nothing is
downloaded or compiled: only Comet itself is built and installed, from a copy
of the checkout (so that the build leaves nothing in the working tree).
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
import time

from twisted.trial.unittest import TestCase

from twisted.internet import reactor
from twisted.internet.task import deferLater

from tests._process import run, spawn
from tests._util import temp_dir
from tests._util import http
from tests.test_service import REPO, free_port

#: What a build of Comet needs from the checkout.
SOURCES = ("setup.py", "comet", "twisted")

#: The environment of every command: nothing on the path but what the venv has.
ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}

#: C{twistd}, as the console script Twisted installs runs it.
TWISTD = "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; sys.exit(run())"


class InstallTests(TestCase):
    timeout = 240

    async def _venv(self, directory: str) -> str:
        """A fresh virtualenv in C{directory}; its python."""
        made = await run([sys.executable, "-m", "venv", "--without-pip", directory], env=ENV, timeout=60)
        self.assertEqual(made.code, 0, made.err)
        python = os.path.join(directory, "bin", "python")
        asked = await run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], env=ENV)
        site = asked.out.decode().strip()
        here = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
        with open(os.path.join(site, "zz-borrowed-dependencies.pth"), "w") as f:
            f.write("".join(path + "\n" for path in sorted(here)))
        return python

    def _checkout(self) -> str:
        """A copy of what the build reads, without caches and build leftovers."""
        copy = os.path.join(temp_dir(self, "comet-checkout-"), "comet")
        os.mkdir(copy)
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "dropin.cache", "*.egg-info")
        for name in SOURCES:
            source = os.path.join(REPO, name)
            if os.path.isdir(source):
                shutil.copytree(source, os.path.join(copy, name), ignore=ignore)
            else:
                shutil.copy(source, copy)
        return copy

    async def _twistd_commands(self, python: str, path: str) -> str:
        """The commands C{twistd --help} lists, as it lists them."""
        answer = await run([python, "-c", TWISTD, "--help"], env=ENV, path=path, timeout=60)
        self.assertEqual(answer.code, 0, answer.err)
        return answer.out.decode().partition("\nCommands:\n")[2]

    async def _check_install(self, *pip_args: str):
        checkout = self._checkout()
        elsewhere = temp_dir(self)
        python = await self._venv(os.path.join(temp_dir(self), "venv"))
        # Before Comet is installed, twistd does not know it: the borrowed
        # dependencies do not bring it in by themselves.
        self.assertNotIn("    comet ", await self._twistd_commands(python, elsewhere))
        installed = await run(
            [python, "-m", "pip", "install", "--disable-pip-version-check", "--no-deps", *pip_args, checkout],
            env=ENV, path=elsewhere, timeout=150,
        )
        self.assertEqual(installed.code, 0, installed.out + installed.err)
        commands = await self._twistd_commands(python, elsewhere)
        self.assertIn("    comet ", commands)
        # ...and the command works, from the installed Comet.
        answer = await run([python, "-c", TWISTD, "comet", "--help"], env=ENV, path=elsewhere, timeout=60)
        self.assertEqual(answer.code, 0, answer.err)
        self.assertIn(b"--config", answer.out)
        return python, checkout, elsewhere

    async def test_install(self):
        """
        C{pip install .} puts the plugin in the venv's twisted/plugins, and the
        installed release starts with the example configuration
        (packaging/comet.toml, its service paths moved into a temporary
        directory standing for /var/lib/comet and /run/comet).
        """
        python, _, elsewhere = await self._check_install()
        state, runtime = temp_dir(self), temp_dir(self)
        os.chmod(runtime, 0o700)
        port = free_port()
        with open(os.path.join(REPO, "packaging", "comet.toml")) as f:
            example = f.read()
        config = os.path.join(elsewhere, "comet.toml")
        with open(config, "w") as f:
            f.write(example.replace("/var/lib/comet", state).replace("/run/comet", runtime)
                    .replace("tcp:8080:", f"tcp:{port}:"))
        process, done = spawn([python, "-c", TWISTD, "-n", "--pidfile=", "comet", "--config",
                               config], env=ENV, path=state)
        self.addCleanup(lambda: done.called or process.signalProcess("KILL"))
        deadline = time.monotonic() + 60
        while True:
            self.assertFalse(done.called, "the installed daemon exited before listening")
            try:
                health = await http().get(f"http://127.0.0.1:{port}/health")
                break
            except Exception:
                self.assertLess(time.monotonic(), deadline, "the installed daemon did not listen")
                await deferLater(reactor, 0.2, lambda: None)
        self.assertEqual(health.code, 200)
        await health.content()
        self.assertEqual(os.stat(os.path.join(state, "comet.sqlite")).st_mode & 0o777, 0o600)
        process.signalProcess("TERM")
        outcome = await done
        self.assertIn(b"Comet stopped", outcome.out)

    async def test_editable_install(self):
        """
        C{pip install -e .} makes twistd find the checkout's plugin, and a change
        to the checkout's plugin is seen without reinstalling.
        """
        python, checkout, elsewhere = await self._check_install("-e")
        plugin = os.path.join(checkout, "twisted", "plugins", "comet_plugin.py")
        with open(plugin) as f:
            text = f.read()
        with open(plugin, "w") as f:
            f.write(text.replace('"comet",\n)', '"comet-edited",\n)'))
        self.assertIn("    comet-edited ", await self._twistd_commands(python, elsewhere))


class ServiceUnitTests(TestCase):
    """packaging/comet.service, as systemd itself reads it."""

    def _unit(self) -> str:
        """The unit, its ExecStart naming this run's twistd (verify checks it exists)."""
        with open(os.path.join(REPO, "packaging", "comet.service")) as f:
            text = f.read()
        self.assertIn("ExecStart=/opt/comet/bin/twistd -n --pidfile= comet --config"
                      " /etc/comet/comet.toml\n", text)
        # systemctl reload: SIGHUP rereads the configuration (tests/test_reload.py).
        self.assertIn("ExecReload=/bin/kill -HUP $MAINPID\n", text)
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        path = os.path.join(temp_dir(self), "comet.service")
        with open(path, "w") as f:
            f.write(text.replace("/opt/comet/bin/twistd", twistd))
        return path

    async def test_verify(self):
        """C{systemd-analyze verify} finds nothing to say."""
        answer = await run(["systemd-analyze", "verify", self._unit()], env=ENV, timeout=60)
        self.assertEqual((answer.code, answer.out + answer.err), (0, b""))

    async def test_security(self):
        """C{systemd-analyze security} rates the sandbox OK: exposure 2.0 or less (of 10)."""
        answer = await run(["systemd-analyze", "security", "--offline=true", "--threshold=20",
                            self._unit()], env=ENV, timeout=60)
        self.assertEqual(answer.code, 0, answer.out + answer.err)
        self.assertRegex(answer.out.decode(), r"Overall exposure level for comet.service: [0-2]\.\d OK")
