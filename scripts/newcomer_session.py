"""
Records a newcomer's terminal session with the real `comet` command against a
real daemon on the testbed, and writes it as docs/newcomer-session.md.

Not a test (the suite does not run or read it): the proof issue 19 asks for,
that a person can drive a cluster from a terminal with nothing but the README.
Run by scripts/newcomer-session (which makes the virtualenv with pexpect and
pyte this needs); the testbed must be up.

What it does, in three pseudo-terminals (pexpect) running bash:
  1. installs the client as the README says (python3 -m venv, pip install ./client);
  2. takes the testbed's lock (/tmp/comet-testbed.lock), writes a daemon config
     from the testbed's (its hosts, storage servers and pools; the API on a free
     loopback port, a database of its own), makes an admin user with a password
     (comet-admin) and starts `twistd -n comet`; serves the guest image on loopback;
  3. the session: login with user and password, hosts/servers/pools, a volume
     downloaded from the image (progress bar), a template with that disk, a
     cluster, a VM, `comet events` and `comet vm list --watch` in two other
     terminals, start, the serial console (the guest's prompt, a command, Ctrl-]),
     stop --no-wait and `task wait`, and deleting everything again;
  4. tears down (whatever is left is deleted through the API), stops the daemon.

The raw terminal output goes through pyte (a VT100 emulator) so the document
shows what the screen showed, not the progress bar's redraw codes.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time

import pexpect
import pyte

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STATE = os.environ.get("COMET_TESTBED_STATE", "/work/main/testbed/state")
WORK = os.environ.get("NEWCOMER_DIR", "/tmp/newcomer/session")
COLUMNS, ROWS = 110, 40
USER, PASSWORD = "alice", "correct horse battery"
PROMPT = "$ "


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Screen:
    """What a terminal of COLUMNS shows for the bytes written to it (pexpect's logfile)."""

    def __init__(self, lines: int = 4000, frames: bool = False):
        self.keep_frames = frames
        self.screen = pyte.Screen(COLUMNS, lines)
        self.stream = pyte.Stream(self.screen)
        self.frames: list[tuple[float, str]] = []
        self.raw: list[str] = []
        # (A reading thread writes while the main thread may look.)
        self.lock = threading.Lock()

    # pexpect's logfile interface
    def write(self, data: str):
        with self.lock:
            self.raw.append(data)
            self.stream.feed(data)
            if self.keep_frames:
                text = self._text()
                if not self.frames or self.frames[-1][1] != text:
                    self.frames.append((time.time(), text))

    def flush(self):
        pass

    def text(self) -> str:
        with self.lock:
            return self._text()

    def _text(self) -> str:
        lines = [line.rstrip() for line in self.screen.display]
        while lines and not lines[-1]:
            lines.pop()
        return "\n".join(lines)


class Terminal:
    """A bash in a pseudo-terminal, its screen recorded."""

    def __init__(self, env: dict, cwd: str, frames: bool = False):
        self.screen = Screen(400 if frames else 4000, frames)
        # (No bracketed paste: its codes would wrap every prompt.)
        inputrc = os.path.join(WORK, "inputrc")
        with open(inputrc, "w") as f:
            f.write("set enable-bracketed-paste off\n")
        self.sh = pexpect.spawn("bash", ["--norc", "--noprofile"], encoding="utf-8", timeout=600,
                                env={**env, "PS1": PROMPT, "INPUTRC": inputrc}, cwd=cwd,
                                dimensions=(ROWS, COLUMNS))
        self.sh.logfile_read = self.screen
        self.sh.expect_exact(PROMPT)

    def run(self, command: str, timeout: float = 600) -> str:
        """Type C{command}, wait for the next prompt; what it printed."""
        self.sh.sendline(command)
        self.sh.expect(r"\r\n\$ $", timeout=timeout)
        return self.sh.before

    def start(self, command: str):
        """
        Type C{command} and return at once (it runs until interrupted); a
        thread reads its output as it comes, so the screen's frames have
        their true times.
        """
        self.sh.sendline(command)
        self._reading = threading.Event()
        self._reading.set()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        while self._reading.is_set():
            try:
                self.sh.read_nonblocking(4096, timeout=0.2)
            except pexpect.TIMEOUT:
                continue
            except pexpect.EOF:
                return

    def interrupt(self):
        """Ctrl-C the command L{start} typed, and wait for the prompt."""
        self._reading.clear()
        self._reader.join()
        self.sh.sendintr()
        # (After a redrawn screen the prompt follows the cursor's show code, not a newline.)
        self.sh.expect(r"\$ $", timeout=30)

    def close(self):
        self.sh.sendline("exit")
        self.sh.expect(pexpect.EOF, timeout=30)


def daemon_config(directory: str, port: int) -> str:
    """The testbed's config (stack up wrote it) with our API port, database and control dir."""
    with open(os.path.join(STATE, "comet.toml")) as f:
        text = f.read()
    text = re.sub(r'^endpoint = .*$', f'endpoint = "tcp:{port}:interface=127.0.0.1"', text, flags=re.M)
    text = re.sub(r'^path = .*comet\.sqlite"$', f'path = "{directory}/comet.sqlite"', text, flags=re.M)
    # ssh's ControlMaster sockets: a short path of our own (mode 0700, or the daemon refuses it).
    control = os.path.join(directory, "ssh")
    os.mkdir(control, 0o700)
    text = text.replace("[storage]\n", "[storage]\n"
                        '# the session serves the guest image on loopback\n'
                        'download_allow = ["127.0.0.0/8"]\n'
                        f'control_dir = "{control}"\n', 1)
    path = os.path.join(directory, "comet.toml")
    with open(path, "w") as f:
        f.write(text)
    return path


def commit() -> str:
    return subprocess.run(["git", "-C", REPO, "log", "-1", "--format=%h"], capture_output=True,
                          text=True).stdout.strip()


def main():
    shutil.rmtree(WORK, ignore_errors=True)
    home = os.path.join(WORK, "home")
    os.makedirs(home)
    venv = os.path.join(REPO, ".venv", "bin")
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": home, "TERM": "xterm-256color",
           "COLUMNS": str(COLUMNS), "LINES": str(ROWS), "LANG": "C.UTF-8"}
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    one = Terminal(env, REPO)
    # 1. The client, as the README installs it (no lock: nothing touches the testbed).
    one.run("python3 -m venv ~/comet-client && ~/comet-client/bin/pip install -q ./client")
    one.run("export PATH=~/comet-client/bin:$PATH")
    one.run('eval "$(comet completion bash)"')
    one.run("comet --version")

    # 2. The daemon, under the testbed's lock.
    lock = open("/tmp/comet-testbed.lock", "w")
    print("waiting for the testbed lock", flush=True)
    fcntl.flock(lock, fcntl.LOCK_EX)
    print("testbed lock held", flush=True)
    port, files = free_port(), free_port()
    config = daemon_config(WORK, port)
    admin = [os.path.join(venv, "comet-admin"), "--config", config]
    made = subprocess.run(admin + ["bootstrap"], check=True, capture_output=True, text=True, cwd=WORK)
    token = made.stdout.splitlines()[2]
    subprocess.run(admin + ["user", "add", USER, "--role", "admin", "--password-stdin"],
                   input=PASSWORD + "\n", text=True, check=True, capture_output=True, cwd=WORK)
    daemon_log = os.path.join(WORK, "twistd.log")
    daemon = subprocess.Popen([os.path.join(venv, "twistd"), "-n", "--pidfile=", "--logfile", daemon_log,
                               "comet", "--config", config], cwd=WORK,
                              stdout=open(os.path.join(WORK, "twistd.out"), "w"),
                              stderr=subprocess.STDOUT)
    with open(os.path.join(STATE, "stack.json")) as f:
        image = json.load(f)["guest"]["image"]
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(files), "--bind", "127.0.0.1",
                               "--directory", os.path.dirname(image)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    image_url = f"http://127.0.0.1:{files}/{os.path.basename(image)}"
    others: list[Terminal] = []
    try:
        for _ in range(120):
            if daemon.poll() is not None:
                raise SystemExit(f"twistd exited {daemon.returncode}; see {daemon_log} and twistd.out")
            if subprocess.run(["curl", "-sf", f"{url}/health"], capture_output=True).returncode == 0:
                break
            time.sleep(1)
        session(one, others, env, url, image_url)
    finally:
        teardown(url, token)
        for terminal in others:
            terminal.sh.terminate(force=True)
        daemon.terminate()
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        server.terminate()
        server.wait()
        fcntl.flock(lock, fcntl.LOCK_UN)
        print("testbed lock released", flush=True)
        write_document(started, one, others, url, image_url)


def wait_for(terminal: Terminal, text: str, timeout: float):
    """Until C{text} is on the screen of a terminal that L{Terminal.start} is reading."""
    deadline = time.time() + timeout
    while text not in terminal.screen.text():
        if time.time() > deadline:
            raise TimeoutError(f"{text!r} not on the screen: {terminal.screen.text()[-1000:]}")
        time.sleep(0.2)


def session(one: Terminal, others: list, env: dict, url: str, image_url: str):
    sh = one.sh
    sh.sendline(f"comet login {url}")
    sh.expect_exact("User: ")
    sh.sendline(USER)
    sh.expect_exact("Password: ")
    sh.sendline(PASSWORD)
    sh.expect(r"\r\n\$ $", timeout=60)
    one.run("ls -l ~/.config/comet/")
    one.run("comet host list")
    one.run("comet server list")
    one.run("comet pool list")
    one.run(f"comet volume create pool1/guest-base --url {image_url}")
    one.run("comet template create small --memory 256 --cpus 1 --disk pool1/guest-base")
    one.run("comet template list")
    one.run("comet cluster create demo --description 'first try'")

    # Terminals 2 and 3: the event stream and a watched list, while terminal 1 works.
    two = Terminal({**env, "PATH": os.path.join(env["HOME"], "comet-client/bin") + ":" + env["PATH"]},
                   env["HOME"])
    others.append(two)
    two.start("comet events --resource /cluster/demo")
    one.run("comet vm create demo/vm1 -t small")
    three = Terminal({**env, "PATH": os.path.join(env["HOME"], "comet-client/bin") + ":" + env["PATH"]},
                     env["HOME"], frames=True)
    others.append(three)
    three.start("comet vm list demo --watch")
    wait_for(three, "vm1", 60)
    one.run("comet vm start demo/vm1")
    one.run("comet vm show demo/vm1")

    # The serial console: Enter until the guest's shell answers, a command, Ctrl-].
    sh.sendline("comet vm console demo/vm1 --serial")
    sh.expect_exact("Ctrl-] leaves", timeout=60)
    deadline = time.time() + 300
    while True:
        sh.send("\r")
        try:
            sh.expect_exact("comet-guest# ", timeout=5)
            break
        except pexpect.TIMEOUT:
            if time.time() > deadline:
                raise
    sh.send("uname -sr; cat /proc/uptime; ls /dev/comet-*\r")
    sh.expect(r"/dev/comet-\S+\s+.*comet-guest# ", timeout=60)
    sh.send("\x1d")
    sh.expect(r"\r\n\$ $", timeout=60)
    one.run("echo exit=$?")

    one.run("comet vm suspend demo/vm1")
    one.run("comet vm resume demo/vm1")
    output = one.run("comet vm stop demo/vm1 --timeout 20 --force --no-wait")
    task = re.search(r"comet task wait (\d+)", output).group(1)
    one.run(f"comet task wait {task}")
    one.run("comet vm list demo")
    time.sleep(1)   # the last events reach terminals 2 and 3
    three.interrupt()
    one.run("comet task list")
    one.run("comet vm delete demo/vm1")
    one.run("comet cluster delete demo")
    one.run("comet template delete small")
    one.run("comet volume delete pool1/guest-base")
    one.run("comet volume list pool1")
    two.interrupt()
    one.run("comet logout")


def teardown(url: str, token: str):
    """Delete whatever the session left (it stopped half way): VM, cluster, template, volume."""
    home = os.path.join(WORK, "home")
    binary = os.path.join(home, "comet-client", "bin", "comet")
    if not os.path.exists(binary):
        return
    deleted = []
    for args in (["vm", "delete", "demo/vm1", "--force"], ["cluster", "delete", "demo", "--force"],
                 ["template", "delete", "small"], ["volume", "delete", "pool1/guest-base", "--force"]):
        done = subprocess.run([binary, "--url", url, "--token", token, *args], capture_output=True,
                              text=True, env={"HOME": home, "PATH": "/usr/bin:/bin"}, timeout=300)
        if done.returncode == 0:
            deleted.append(" ".join(args))
    if deleted:
        print("teardown deleted what the session left:", deleted, flush=True)


def write_document(started: str, one: Terminal, others: list, url: str, image_url: str):
    out = os.path.join(REPO, "docs", "newcomer-session.md")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    for name, terminal in (("one", one), *zip(("two", "three"), others)):
        with open(os.path.join(WORK, f"terminal-{name}.raw"), "w") as f:
            f.write("".join(terminal.screen.raw))
    parts = [
        "# A newcomer's terminal session with `comet`",
        "",
        f"Recorded {started} at commit `{commit()}` by `scripts/newcomer-session`",
        "(pexpect drives three bash shells in pseudo-terminals of "
        f"{COLUMNS}x{ROWS}; pyte renders what each screen showed, so a progress bar",
        "appears as it ended, not as its redraws).  The daemon is `twistd -n comet` on the",
        "testbed's configuration (compute hosts `local` and `host2`, storage servers",
        "10.200.0.21/22, pools `pool1` and `pool2`), its API on a loopback port, a fresh",
        "database; the only preparation outside the session was `comet-admin bootstrap` and",
        f"`comet-admin user add {USER} --role admin --password-stdin`.  The guest image is served",
        "on loopback by `python3 -m http.server`.  The session starts in a clone of the",
        "repository, with nothing installed.",
        "",
        "## Terminal 1",
        "",
        "```console",
        one.screen.text(),
        "```",
    ]
    if others:
        parts += ["", "## Terminal 2: `comet events` while terminal 1 works", "",
                  "```console", others[0].screen.text(), "```"]
    if len(others) > 1:
        frames = others[1].screen.frames
        parts += ["", "## Terminal 3: `comet vm list demo --watch`, redrawn on each event", "",
                  "Each frame is the screen after one redraw (times from the first).", ""]
        shown = [f for f in frames if "NAME" in f[1]]
        kept: list[tuple[float, str]] = []
        for when, text in shown:
            table = text[text.index("NAME"):].split("\n$")[0]
            if not kept or kept[-1][1] != table:
                kept.append((when, table))
        t0 = kept[0][0] if kept else 0
        for when, table in kept:
            parts += [f"+{when - t0:.1f} s:", "", "```", table, "```", ""]
    with open(out, "w") as f:
        f.write("\n".join(parts) + "\n")
    print("wrote", out, flush=True)


if __name__ == "__main__":
    main()
