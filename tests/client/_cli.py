"""
The real C{comet} command against a real daemon, for the client's tests.

  - L{client_venv}: the client installed as the README says (C{pip install
    ./client}) in a virtualenv of its own, C{build/client-venv}, made or
    refreshed by C{scripts/client-venv} once per test run.
  - L{Daemon}: C{twistd -n comet} in a child process on the embedded
    default configuration (one compute host on libvirt's C{test:///default}
    driver, no storage), with only the API's port and the database moved
    into a temporary directory; its first admin's token, and a user with a
    password.
  - L{Comet}: runs the command with a config directory and environment of
    its own (no login unless a test makes one).

Everything here is synchronous (C{subprocess}, C{urllib}): the daemon and
the client are other processes, and these tests use no reactor.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

from tests.test_service import REPO, TWISTD, _twistd_env, free_port, write_config

_VENV: list[str] = []


def client_venv() -> str:
    """The client's virtualenv, made (or brought up to date) on first use in this run."""
    if not _VENV:
        made = subprocess.run([os.path.join(REPO, "scripts", "client-venv")], capture_output=True,
                              text=True, timeout=600)
        if made.returncode != 0:
            raise RuntimeError(f"scripts/client-venv failed:\n{made.stderr}")
        _VENV.append(made.stdout.strip())
    return _VENV[0]


PASSWORD = "correct horse battery staple"


class Daemon:
    """A C{twistd -n comet} child on a free port, with the admin C{admin} (token) and C{alice} (password)."""

    def __init__(self):
        self.directory = tempfile.mkdtemp(prefix="comet-client-")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = write_config(self.directory, self.port)
        admin = [sys.executable, "-m", "comet.admin", "--config", config]
        made = self._run(admin + ["bootstrap"])
        self.token = made.splitlines()[2]
        self._run(admin + ["user", "add", "alice", "--role", "operator", "--password-stdin"],
                  stdin=PASSWORD + "\n")
        self.log = open(os.path.join(self.directory, "twistd.out"), "wb")
        self.process = subprocess.Popen(
            TWISTD + ["-n", "--pidfile=", "--logfile", os.path.join(self.directory, "twistd.log"),
                      "comet", "--config", config],
            cwd=self.directory, env=_twistd_env(), stdout=self.log, stderr=subprocess.STDOUT)
        self._wait_listening()

    def _run(self, argv, stdin=None) -> str:
        done = subprocess.run(argv, input=stdin, capture_output=True, text=True, cwd=self.directory,
                              env=_twistd_env(), timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"{argv} failed: {done.stderr}")
        return done.stdout

    def _wait_listening(self, timeout: float = 60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"twistd exited: {self.process.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("twistd did not listen in time")

    def api(self, method: str, uri: str, body=None):
        """C{(code, JSON body or None)} of a request with the admin's token."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + uri, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Accept": "application/json",
            **({"Content-Type": "application/json"} if data is not None else {})})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw, code = response.read(), response.status
        except urllib.error.HTTPError as e:
            raw, code = e.read(), e.code
        return code, (json.loads(raw) if raw else None)

    def get(self, uri: str):
        code, body = self.api("GET", uri)
        if code != 200:
            raise AssertionError(f"GET {uri}: {code} {body}")
        return body

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()
        shutil.rmtree(self.directory, ignore_errors=True)


def _default_sigint() -> None:
    """In a child before C{exec}: SIGINT's default action (see L{Comet.popen})."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Comet:
    """Runs the installed C{comet} with a config directory of its own."""

    def __init__(self, testcase, url: str | None = None, token: str | None = None):
        self.executable = os.path.join(client_venv(), "bin", "comet")
        self.home = tempfile.mkdtemp(prefix="comet-client-home-")
        testcase.addCleanup(shutil.rmtree, self.home, True)
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": self.home,
            "XDG_CONFIG_HOME": os.path.join(self.home, "config"),
            "COLUMNS": "200",
            "LANG": "C.UTF-8",
        }
        if url:
            self.env["COMET_URL"] = url
        if token:
            self.env["COMET_TOKEN"] = token

    @property
    def login_file(self) -> str:
        return os.path.join(self.env["XDG_CONFIG_HOME"], "comet", "login.json")

    def __call__(self, *args: str, stdin: str | None = None, env: dict | None = None,
                 timeout: float = 60, umask: int = 0o022) -> subprocess.CompletedProcess:
        return subprocess.run([self.executable, *args], input=stdin, capture_output=True, text=True,
                              env={**self.env, **(env or {})}, timeout=timeout, umask=umask)

    def popen(self, *args: str) -> subprocess.Popen:
        """
        Start C{comet ARGS} (text pipes), with SIGINT's default action as
        at a terminal, whatever the test run's: a run started in the
        background by a shell ignores SIGINT, its children inherit that,
        and Python then installs no KeyboardInterrupt for Ctrl-C.
        """
        return subprocess.Popen([self.executable, *args], env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)

    def json(self, *args: str):
        """The JSON a command printed with C{--json}; it must exit 0."""
        done = self(*args, "--json")
        if done.returncode != 0:
            raise AssertionError(f"comet {' '.join(args)} --json: exit {done.returncode}: {done.stderr}")
        return json.loads(done.stdout)
