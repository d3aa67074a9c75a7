"""
Helpers for integration tests against the real test stack.

``testbed/stack up`` writes ``stack.json`` into its state directory
(``testbed/state`` or ``$COMET_TESTBED_STATE``).  Tests call
L{requireTestbed} (or decorate with L{skipUnlessTestbed}): when the stack is
absent or ``testbed/stack status`` fails they are skipped, not failed.

The helpers here are deliberately small: ssh through the ``ssh`` client,
libvirt through libvirt-python in a thread, and a guest's serial console
through a unix socket (``<serial type='unix' mode='bind'>``) plus the
console log file libvirt writes.  ``comet.remote`` and ``comet.virt`` will
take over from them.
"""

import functools
import itertools
import json
import os
import re
import subprocess
import unittest
from xml.sax.saxutils import escape

from twisted.internet import defer, protocol, reactor, task
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.threads import deferToThread

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STACK = os.path.join(REPO, "testbed", "stack")
NOT_UP = "testbed is not up: run testbed/stack up"


def stateDir():
    """
    The testbed state directory: C{$COMET_TESTBED_STATE} or C{testbed/state}.
    """
    return os.environ.get("COMET_TESTBED_STATE") or os.path.join(REPO, "testbed", "state")


def loadStack():
    """
    Read C{stack.json} from the state directory.

    @rtype: L{dict}
    """
    with open(os.path.join(stateDir(), "stack.json")) as f:
        return json.load(f)


_checked = None


def _check():
    path = os.path.join(stateDir(), "stack.json")
    if not os.path.exists(path):
        return None, "%s (no %s)" % (NOT_UP, path)
    if os.geteuid() != 0:
        return None, "%s (integration tests need root for qemu:///system)" % (NOT_UP,)
    try:
        result = subprocess.run(
            [STACK, "status"], capture_output=True, text=True, timeout=120,
            env=dict(os.environ, COMET_TESTBED_STATE=stateDir()))
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, "%s (status: %s)" % (NOT_UP, e)
    if result.returncode != 0:
        lines = [l for l in result.stdout.splitlines() if "DOWN" in l or "FAILED" in l]
        return None, "%s (status: %s)" % (NOT_UP, "; ".join(lines) or result.stdout.strip())
    return loadStack(), None


def requireTestbed():
    """
    Return the parsed C{stack.json}, or raise L{unittest.SkipTest} if the
    testbed is not up.  The check (which runs C{testbed/stack status}) is
    made once per process.
    """
    global _checked
    if _checked is None:
        _checked = _check()
    stack, reason = _checked
    if stack is None:
        raise unittest.SkipTest(reason)
    return stack


def skipUnlessTestbed(obj):
    """
    Decorate a test method, or a TestCase class (its C{setUp}), to be skipped
    unless the testbed is up.  A decorated class gets C{self.stack}.
    """
    if isinstance(obj, type):
        original = obj.setUp

        @functools.wraps(original)
        def setUp(self, *args, **kwargs):
            self.stack = requireTestbed()
            return original(self, *args, **kwargs)

        obj.setUp = setUp
        return obj

    @functools.wraps(obj)
    def wrapper(*args, **kwargs):
        requireTestbed()
        return obj(*args, **kwargs)

    return wrapper


# --- processes and ssh ------------------------------------------------------


class ProcessFailed(Exception):
    """
    A command exited non-zero.  C{args}: (argv or command, code, out, err).
    """


class _Collect(protocol.ProcessProtocol):
    def __init__(self, done):
        self.done = done
        self.out = []
        self.err = []

    def childDataReceived(self, fd, data):
        (self.out if fd == 1 else self.err).append(data)

    def processEnded(self, reason):
        self.done.callback((b"".join(self.out), b"".join(self.err), reason.value.exitCode))


def run(argv, stdinPath=None, timeout=120):
    """
    Run C{argv}; stdin from the file C{stdinPath} (or nothing).

    @return: L{Deferred} firing with C{(out, err, code)} (bytes, bytes, int);
        a process still running after C{timeout} seconds is killed.
    """
    done = defer.Deferred()
    proto = _Collect(done)
    stdin = open(stdinPath, "rb") if stdinPath else None
    try:
        childFDs = {0: stdin.fileno() if stdin else "w", 1: "r", 2: "r"}
        transport = reactor.spawnProcess(proto, argv[0], argv, env=os.environ.copy(),
                                         childFDs=childFDs)
    finally:
        if stdin:
            stdin.close()
    if not stdinPath:
        transport.closeStdin()
    killer = reactor.callLater(timeout, transport.signalProcess, "KILL")

    def stop(result):
        if killer.active():
            killer.cancel()
        return result

    return done.addBoth(stop)


#: The name of a test-side ControlMaster socket in a C{control} directory
#: (L{sshArgv}); C{%C}: a hash of the connection's user, host and port.
_MASTER = "t-%C"


def sshArgv(stack, server, command, control=None):
    """
    The ssh command line for running C{command} (a shell command string) as
    root on storage server C{server} (an entry of C{stack["servers"]}), with
    the testbed key and strict host key checking against its known_hosts.

    With C{control} (a short private directory), the command shares one
    connection per server (an ssh ControlMaster, kept a minute after its last
    use) with the other commands given the same directory: a new connection
    costs a handshake with the TCG-emulated storage VM (2 to 9 s on a loaded
    machine), a session on an open one a third of a second.  Whoever made the
    directory closes its masters (L{closeMasters}) before removing it.
    """
    ssh = stack["ssh"]
    shared = [] if control is None else [
        "-o", "ControlMaster=auto", "-o", "ControlPath=" + os.path.join(control, _MASTER),
        # A master dropped after 10 s without an answer (the first choice)
        # takes every command sharing it down with it if the TCG-emulated VM
        # stalls that long (suspected, not proven, in three vm.start kill cases
        # failing together in one CI run); a hung one is still found, within
        # two minutes (as long as L{run}'s own timeout).
        "-o", "ControlPersist=60", "-o", "ServerAliveInterval=10",
        "-o", "ServerAliveCountMax=12"]
    return ["ssh", "-i", ssh["identity"], "-o", "IdentitiesOnly=yes",
            "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", "UserKnownHostsFile=" + ssh["known_hosts"],
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10",
            "-o", "LogLevel=ERROR", *shared, "-p", str(server.get("ssh_port", ssh["port"])),
            "%s@%s" % (ssh["user"], server["address"]), command]


def closeMasters(control):
    """
    Ask every test-side ssh master in C{control} (L{sshArgv}) to exit, so that
    none outlives the tests (C{testbed/check-down} looks for leftovers).
    Blocking: for class clean-ups, between tests.
    """
    try:
        names = os.listdir(control)
    except OSError:
        return
    for name in names:
        if name.startswith(_MASTER[:2]):
            subprocess.run(["ssh", "-o", "ControlPath=" + os.path.join(control, name),
                            "-O", "exit", "storage-server"], capture_output=True, timeout=30)


@defer.inlineCallbacks
def ssh(stack, server, command, stdinPath=None, check=True, timeout=120, control=None):
    """
    Run C{command} on storage server C{server} over ssh (on the connection
    shared through C{control}, if given: L{sshArgv}).

    @return: L{Deferred} firing with stdout as text; with C{check} a non-zero
        exit fails with L{ProcessFailed}; without, fires C{(out, err, code)}.
    """
    out, err, code = yield run(sshArgv(stack, server, command, control), stdinPath, timeout)
    if not check:
        return out.decode(errors="replace"), err.decode(errors="replace"), code
    if code != 0:
        raise ProcessFailed(command, code, out.decode(errors="replace"), err.decode(errors="replace"))
    return out.decode(errors="replace")


# --- libvirt (libvirt-python, blocking calls in threads) --------------------


_quiet = []


def _libvirtCall(uri, fn):
    import libvirt

    if not _quiet:   # errors are raised as libvirtError; do not also print them
        libvirt.registerErrorHandler(lambda ctx, err: None, None)
        _quiet.append(True)
    conn = libvirt.open(uri)
    try:
        return fn(conn)
    finally:
        conn.close()


def libvirtCall(stack, fn):
    """
    Call C{fn(conn)} with a fresh connection to the testbed's host, in a
    thread.  @return: L{Deferred} with C{fn}'s result.
    """
    return deferToThread(_libvirtCall, stack["host_uri"], fn)


def computeHosts(stack):
    """
    The testbed's compute hosts from C{stack.json}: C{name}, C{uri},
    C{domain_type}, C{address} each (C{local}, the machine's own libvirtd,
    first; then C{host2}, reached over C{qemu+libssh2}).
    """
    return stack["hosts"]


def localHosts(stack):
    """
    The testbed's compute hosts with a local ZFS dataset (C{stack.json}'s
    C{local_hosts}: C{host3}, a VM running OpenZFS and libvirtd), for
    local-copy mode (issue 21): each C{name}, C{uri}, C{domain_type},
    C{address}, C{ssh}, C{local_dataset}.  Not among L{computeHosts}: a test
    opts in to them.  One is also a server for L{ssh} (its C{address}).
    """
    return stack.get("local_hosts", [])


def computeHost(stack, name):
    """The compute host C{name} of L{computeHosts} or L{localHosts}."""
    for host in computeHosts(stack) + localHosts(stack):
        if host["name"] == name:
            return host
    raise KeyError("the testbed has no compute host %r" % (name,))


def hostLibvirtCall(stack, host, fn):
    """
    Call C{fn(conn)} with a fresh connection to compute host C{host} (a name
    of L{computeHosts}), in a thread.  @return: L{Deferred} with C{fn}'s result.
    """
    return deferToThread(_libvirtCall, computeHost(stack, host)["uri"], fn)


def hostLibvirtdPid(stack, host):
    """
    The PID of compute host C{host}'s libvirtd (to freeze it), from its pid
    file named in C{stack.json}.
    """
    with open(computeHost(stack, host)["libvirtd_pidfile"]) as f:
        return int(f.read().strip())


def removeDomainsEverywhere(stack, names):
    """
    L{removeDomainsWith} on every compute host of the testbed (a VM Comet
    started may be on any of them).  @return: L{Deferred} with what was
    removed, by host.
    """
    async def remove():
        gone = {}
        for host in computeHosts(stack):
            gone[host["name"]] = await hostLibvirtCall(
                stack, host["name"], lambda conn: removeDomainsWith(conn, names))
        return gone

    return defer.ensureDeferred(remove())


def defineIscsiSecret(stack, usage, password):
    """
    Define a libvirt secret of usage type iscsi with C{password}.
    @return: L{Deferred} firing with its UUID string.
    """
    xml = ("<secret ephemeral='no' private='yes'><usage type='iscsi'>"
           "<target>%s</target></usage></secret>" % escape(usage))

    def define(conn):
        secret = conn.secretDefineXML(xml, 0)
        secret.setValue(password.encode(), 0)
        return secret.UUIDString()

    return libvirtCall(stack, define)


def undefineSecret(stack, uuid):
    """
    Undefine the libvirt secret C{uuid}, if it exists.
    """
    import libvirt

    def undefine(conn):
        try:
            conn.secretLookupByUUIDString(uuid).undefine()
        except libvirt.libvirtError:
            pass

    return libvirtCall(stack, undefine)


def createDomain(stack, xml):
    """
    Create (start) a transient domain from C{xml}.
    """
    return libvirtCall(stack, lambda conn: conn.createXML(xml, 0).name())


def destroyDomain(stack, name):
    """
    Destroy domain C{name} if it runs (transient domains then vanish).
    """
    import libvirt

    def destroy(conn):
        try:
            conn.lookupByName(name).destroy()
        except libvirt.libvirtError:
            pass

    return libvirtCall(stack, destroy)


def removeDomainsWith(conn, names):
    """
    On the open libvirt connection C{conn}: destroy (if running) and undefine
    (if persistent) each domain of C{names} that exists.  @return: what was
    removed, and what could not be with libvirt's reason.
    """
    import libvirt

    gone = []
    for name in names:
        try:
            domain = conn.lookupByName(name)
        except libvirt.libvirtError:
            continue
        try:
            if domain.isActive():
                domain.destroy()
            if domain.isPersistent():
                domain.undefine()
            gone.append(name)
        except libvirt.libvirtError as e:
            gone.append(f"{name}: {e}")
    return gone


def removeDomains(stack, names):
    """
    L{removeDomainsWith} on a fresh connection, in a thread: a test's clean-up
    by hand.  @return: L{Deferred} with what was removed.
    """
    return libvirtCall(stack, lambda conn: removeDomainsWith(conn, names))


def domainActive(stack, name):
    """
    @return: L{Deferred} firing True if domain C{name} exists and runs.
    """
    import libvirt

    def active(conn):
        try:
            return bool(conn.lookupByName(name).isActive())
        except libvirt.libvirtError:
            return False

    return libvirtCall(stack, active)


def shutdownDomain(stack, name):
    """
    Ask domain C{name} to shut down (ACPI power button).
    """
    return libvirtCall(stack, lambda conn: conn.lookupByName(name).shutdown())


def iscsiGuestXML(stack, name, server, iqn, user, secretUsage, consoleSocket, consoleLog,
                  memoryMiB=256):
    """
    Domain XML for a TCG guest booting (SeaBIOS, syslinux) from LUN 1 of
    iSCSI target C{iqn} on C{server}, with CHAP user C{user} whose password
    is in the libvirt secret C{secretUsage}.  Its serial console is the unix
    socket C{consoleSocket} (QEMU listens) and is logged to C{consoleLog}.
    """
    return """\
<domain type='%(type)s'>
  <name>%(name)s</name>
  <memory unit='MiB'>%(mem)d</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='network' device='disk'>
      <driver name='qemu' type='raw' cache='none'/>
      <source protocol='iscsi' name='%(iqn)s/1'>
        <host name='%(host)s' port='%(port)d'/>
      </source>
      <auth username='%(user)s'><secret type='iscsi' usage='%(usage)s'/></auth>
      <target dev='vda' bus='virtio'/>
    </disk>
    <serial type='unix'>
      <source mode='bind' path='%(sock)s'/>
      <log file='%(log)s' append='off'/>
      <target port='0'/>
    </serial>
    <console type='unix'>
      <source mode='bind' path='%(sock)s'/>
      <target type='serial' port='0'/>
    </console>
  </devices>
</domain>
""" % dict(type=stack["domain_type"], name=escape(name), mem=memoryMiB, iqn=escape(iqn),
           host=server["address"], port=server.get("iscsi_port", 3260), user=escape(user),
           usage=escape(secretUsage), sock=escape(consoleSocket), log=escape(consoleLog))


# --- serial console ----------------------------------------------------------


def _readText(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


@defer.inlineCallbacks
def waitForLog(path, regex, timeout=120, interval=0.25):
    """
    Poll the console log file C{path} until C{regex} (a text regex) matches.

    @return: L{Deferred} firing with the L{re.Match}; fails with
        L{TimeoutError} (message: the log's tail) after C{timeout} seconds.
    """
    pattern = re.compile(regex)
    waited = 0.0
    while True:
        text = _readText(path)
        match = pattern.search(text)
        if match:
            return match
        if waited >= timeout:
            raise TimeoutError("no %r in %s after %ss; tail:\n%s" % (regex, path, timeout, text[-2000:]))
        yield task.deferLater(reactor, interval, lambda: None)
        waited += interval


class _ConsoleProtocol(protocol.Protocol):
    def __init__(self):
        self.buffer = b""
        self.waiters = []
        self.closed = False

    def dataReceived(self, data):
        self.buffer += data
        self._check()

    def connectionLost(self, reason):
        self.closed = True
        waiters, self.waiters = self.waiters, []
        for _, _, d in waiters:
            d.errback(ConnectionError("console closed; buffer tail:\n%r" % (self.buffer[-1000:],)))

    def waitFor(self, pattern, start):
        def cancel(d):
            self.waiters[:] = [w for w in self.waiters if w[2] is not d]

        d = defer.Deferred(cancel)
        self.waiters.append((pattern, start, d))
        self._check()
        return d

    def _check(self):
        for waiter in list(self.waiters):
            pattern, start, d = waiter
            match = pattern.search(self.buffer, start)
            if match:
                self.waiters.remove(waiter)
                d.callback(match)


class SerialConsole:
    """
    The serial console of a guest whose C{<serial type='unix' mode='bind'>}
    socket is C{socketPath}: type shell commands, read their output.
    (Output sent before L{connect} is only in the console log file.)
    """

    _ids = itertools.count(1)

    def __init__(self, socketPath):
        self.socketPath = socketPath
        self.protocol = None

    @defer.inlineCallbacks
    def connect(self, timeout=30):
        """
        Connect to the socket (retrying while QEMU has not created it yet).
        """
        waited = 0.0
        while True:
            try:
                self.protocol = yield UNIXClientEndpoint(reactor, self.socketPath).connect(
                    protocol.Factory.forProtocol(_ConsoleProtocol))
                return self
            except Exception:
                if waited >= timeout:
                    raise
                yield task.deferLater(reactor, 0.2, lambda: None)
                waited += 0.2

    @property
    def output(self):
        """
        Everything received so far, as text.
        """
        return self.protocol.buffer.decode(errors="replace") if self.protocol else ""

    def waitFor(self, regex, timeout=60, start=0):
        """
        @return: L{Deferred} firing with the L{re.Match} of C{regex} (bytes)
            in the output from offset C{start}.
        """
        d = self.protocol.waitFor(re.compile(regex), start)
        return d.addTimeout(timeout, reactor)

    @defer.inlineCallbacks
    def run(self, command, timeout=60):
        """
        Type C{command} into the guest's shell and wait until it finished.

        @return: L{Deferred} firing with C{(status, output)}: the command's
            exit status and the console output (echo included) up to the end.
        """
        n = next(self._ids)
        start = len(self.protocol.buffer)
        # the quotes keep the echoed command line from matching the end marker
        line = '%s; echo "__COMET_""DONE_%d_$?__"\r' % (command, n)
        self.protocol.transport.write(line.encode())
        try:
            match = yield self.waitFor(rb"__COMET_DONE_%d_(\d+)__" % n, timeout, start)
        except defer.TimeoutError:
            raise TimeoutError("%r did not finish in %ss; console:\n%s"
                               % (command, timeout, self.protocol.buffer[start:].decode(errors="replace")))
        output = self.protocol.buffer[start:match.start()].decode(errors="replace")
        return int(match.group(1)), output

    def close(self):
        """
        Disconnect (the guest keeps running).
        """
        if self.protocol and not self.protocol.closed:
            self.protocol.transport.loseConnection()
