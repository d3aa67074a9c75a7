"""
The real test stack works: on each storage server a zvol made over ssh shows
in C{zfs list}; exported by tgt (target, LUN, CHAP account) it boots a TCG
guest over iSCSI through libvirt from the guest disk image copied into it;
a write typed into the guest's serial console is in a ZFS snapshot taken
after C{sync}; and everything made is removed again.

Needs C{testbed/stack up}; skipped otherwise.
"""

import os
import secrets
import shutil
import tempfile
import tomllib

from twisted.internet import defer, reactor, task
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from ._testbed import (
    SerialConsole,
    computeHost,
    hostLibvirtCall,
    removeDomainsEverywhere,
    createDomain,
    defineIscsiSecret,
    destroyDomain,
    domainActive,
    iscsiGuestXML,
    libvirtCall,
    run,
    shutdownDomain,
    skipUnlessTestbed,
    ssh,
    sshArgv,
    undefineSecret,
    waitForLog,
)

#: Seconds a TCG guest may take from start to "COMET-GUEST: ready" over iSCSI
#: (about 8 s measured on a 2-core machine).
BOOT_TIMEOUT = 120


def _token():
    return secrets.token_hex(4)


def sleep(seconds):
    return task.deferLater(reactor, seconds, lambda: None)


@skipUnlessTestbed
class StackConfigTests(TestCase):
    """
    The files C{testbed/stack up} writes agree with each other.
    """

    def test_cometConfig(self):
        """
        C{comet.toml} names the host, both storage servers with the testbed's
        ssh key and known_hosts, and a storage pool on each.
        """
        with open(self.stack["comet_config"], "rb") as f:
            config = tomllib.load(f)
        self.assertEqual(config["hosts"], [{"name": "local", "uri": self.stack["host_uri"],
                                            "domain_type": self.stack["domain_type"]},
                                           {"name": "host2", "uri": self.stack["hosts"][1]["uri"],
                                            "domain_type": self.stack["domain_type"]}])
        self.assertEqual([(h["name"], h["uri"]) for h in self.stack["hosts"]],
                         [(h["name"], h["uri"]) for h in config["hosts"]])
        # host2 is remote: its URI names its address, the testbed's key and
        # known_hosts (strict checking, no no_verify)
        uri = self.stack["hosts"][1]["uri"]
        self.assertTrue(uri.startswith("qemu+libssh2://root@%s/system?" % (
            self.stack["hosts"][1]["address"],)), uri)
        self.assertIn("keyfile=%s" % (self.stack["ssh"]["identity"],), uri)
        self.assertIn("known_hosts=%s" % (self.stack["ssh"]["known_hosts"],), uri)
        self.assertNotIn("no_verify", uri)
        self.assertEqual([s["host"] for s in config["storageservers"]],
                         [s["address"] for s in self.stack["servers"]])
        for server in config["storageservers"]:
            self.assertEqual(server["ssh_identity"], self.stack["ssh"]["identity"])
            self.assertEqual(server["ssh_known_hosts"], self.stack["ssh"]["known_hosts"])
        self.assertEqual(
            [(p["name"], p["server"], p["dataset"]) for p in config["storagepools"]],
            [(s["storagepool"], s["address"], s["dataset"]) for s in self.stack["servers"]])

    def test_files(self):
        """
        The guest image, kernel and ssh files named in C{stack.json} exist.
        """
        guest = self.stack["guest"]
        self.assertEqual(os.path.getsize(guest["image"]), guest["image_size"])
        self.assertLessEqual(guest["image_used_bytes"], guest["image_size"])
        self.assertLessEqual(guest["data_offset"] + guest["data_size"], guest["image_size"])
        for path in (guest["kernel"], guest["initrd"], self.stack["ssh"]["identity"],
                     self.stack["ssh"]["known_hosts"]):
            self.assertTrue(os.path.exists(path), path)


def _diskless_guest_xml(stack, name):
    """A 256 MiB TCG guest booting the testbed's kernel + busybox initramfs, no disk."""
    guest = stack["guest"]
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><kernel>{guest['kernel']}</kernel>
    <initrd>{guest['initrd']}</initrd><cmdline>{guest['cmdline']}</cmdline></os>
  <features><acpi/></features>
  <devices><emulator>/usr/bin/qemu-system-x86_64</emulator>
    <serial type='pty'><target port='0'/></serial></devices>
</domain>"""


@skipUnlessTestbed
class SecondHostTests(TestCase):
    """
    Compute host C{host2}: another libvirtd, reached over C{qemu+libssh2} with
    the testbed's key and known_hosts, that libvirt treats as another host.
    """

    timeout = 300

    @defer.inlineCallbacks
    def test_identity(self):
        """
        host2 answers over its remote URI with its own hostname and host UUID,
        neither that of the machine's libvirtd.
        """
        def identity(conn):
            import xml.etree.ElementTree as ET

            uuid = ET.fromstring(conn.getCapabilities()).findtext("host/uuid")
            return conn.getHostname(), uuid

        local_name, local_uuid = yield hostLibvirtCall(self.stack, "local", identity)
        name, uuid = yield hostLibvirtCall(self.stack, "host2", identity)
        host2 = computeHost(self.stack, "host2")
        self.assertEqual((name, uuid), (host2["hostname"], host2["host_uuid"]))
        self.assertNotEqual(local_name, name)
        self.assertNotEqual(local_uuid, uuid)

    @defer.inlineCallbacks
    def test_hostKeyChecked(self):
        """
        With an empty known_hosts file, host2's URI is refused: the host key
        is checked, not accepted blindly.
        """
        fd, empty = tempfile.mkstemp(prefix="comet-it-known_hosts-")
        os.close(fd)
        self.addCleanup(os.remove, empty)
        uri = computeHost(self.stack, "host2")["uri"].replace(
            self.stack["ssh"]["known_hosts"], empty)

        def refused():
            import libvirt

            try:
                libvirt.open(uri).close()
            except libvirt.libvirtError as e:
                return str(e)
            return None

        reason = yield deferToThread(refused)
        self.assertIsNotNone(reason, "host2 accepted with an empty known_hosts")
        self.assertIn("host key", reason)
        ok = yield hostLibvirtCall(self.stack, "host2", lambda conn: conn.getHostname())
        self.assertEqual(ok, computeHost(self.stack, "host2")["hostname"])

    @defer.inlineCallbacks
    def test_liveMigration(self):
        """
        A running TCG guest live-migrates local -> host2 -> local (the client
        holding both connections), running on exactly one host after each.
        """
        import libvirt

        name = "comet-it-mig-" + _token()
        self.addCleanup(removeDomainsEverywhere, self.stack, [name])
        xml = _diskless_guest_xml(self.stack, name)
        yield hostLibvirtCall(self.stack, "local", lambda conn: conn.createXML(xml, 0).name())
        uris = {h: computeHost(self.stack, h)["uri"] for h in ("local", "host2")}

        def migrate(source, dest):
            src = libvirt.open(uris[source])
            try:
                dst = libvirt.open(uris[dest])
                try:
                    src.lookupByName(name).migrate(dst, libvirt.VIR_MIGRATE_LIVE, None, None, 0)
                finally:
                    dst.close()
            finally:
                src.close()

        def running(conn):
            try:
                return bool(conn.lookupByName(name).isActive())
            except libvirt.libvirtError:
                return False

        for source, dest in (("local", "host2"), ("host2", "local")):
            yield deferToThread(migrate, source, dest)
            on_dest = yield hostLibvirtCall(self.stack, dest, running)
            on_source = yield hostLibvirtCall(self.stack, source, running)
            self.assertEqual((on_source, on_dest), (False, True), (source, dest))


@skipUnlessTestbed
class StorageServerTests(TestCase):
    """
    Each storage server, over ssh, with ZFS, tgt and a guest on a zvol.
    """

    timeout = 600

    def server(self, index):
        servers = self.stack["servers"]
        if index >= len(servers):
            self.skipTest("the testbed has %d storage servers" % (len(servers),))
        return servers[index]

    def ssh(self, server, command, **kwargs):
        return ssh(self.stack, server, command, **kwargs)

    # --- ssh and host keys ---------------------------------------------------

    @defer.inlineCallbacks
    def checkHostKey(self, server):
        ok = yield self.ssh(server, "hostname; zpool list -H -o name %s" % (server["zpool"],))
        self.assertEqual(ok.split(), [server["name"], server["zpool"]])
        # with an empty known_hosts strict checking refuses the server
        fd, empty = tempfile.mkstemp(prefix="comet-it-known_hosts-")
        os.close(fd)
        self.addCleanup(os.remove, empty)
        argv = [a.replace(self.stack["ssh"]["known_hosts"], empty) for a in sshArgv(self.stack, server, "true")]
        out, err, code = yield run(argv)
        self.assertNotEqual(code, 0)
        self.assertIn(b"Host key verification failed", err)

    def test_hostKeyStorage1(self):
        """
        Storage server 1 answers over ssh with its known host key only.
        """
        return self.checkHostKey(self.server(0))

    def test_hostKeyStorage2(self):
        """
        Storage server 2 answers over ssh with its known host key only.
        """
        return self.checkHostKey(self.server(1))

    # --- zvols ----------------------------------------------------------------

    @defer.inlineCallbacks
    def makeZvol(self, server, size):
        name = "%s/it-%s" % (server["dataset"], _token())
        self.addCleanup(self.ssh, server, "zfs destroy -R %s 2>/dev/null; true" % (name,))
        device = yield self.ssh(server, "zfs create -V %d %s && zvol-dev %s" % (size, name, name))
        return name, device.strip()

    @defer.inlineCallbacks
    def checkZvolListed(self, server):
        size = 64 * 1024 * 1024
        name, device = yield self.makeZvol(server, size)
        self.assertTrue(device.startswith("/dev/zd"), device)
        listing = yield self.ssh(server, "zfs list -H -p -t volume -o name,volsize; readlink /dev/zvol/%s" % (name,))
        rows = [line.split("\t") for line in listing.splitlines() if "\t" in line]
        self.assertIn([name, str(size)], rows)
        self.assertEqual(listing.splitlines()[-1], device)   # the udev-like link
        yield self.ssh(server, "zfs destroy %s" % (name,))
        listing = yield self.ssh(server, "zfs list -H -p -t all -o name")
        self.assertNotIn(name, listing.split())

    def test_zvolListedStorage1(self):
        """
        A zvol created over ssh on storage server 1 is in C{zfs list -H -p}
        with its size, has a /dev/zvol link, and is gone when destroyed.
        """
        return self.checkZvolListed(self.server(0))

    def test_zvolListedStorage2(self):
        """
        The same on storage server 2.
        """
        return self.checkZvolListed(self.server(1))

    # --- a guest on a zvol over iSCSI ------------------------------------------

    @defer.inlineCallbacks
    def exportZvol(self, server, name, iqn, user, password):
        """
        Export zvol C{name} as LUN 1 of a new tgt target C{iqn} with CHAP
        account C{user}; returns the target id.
        """
        script = """set -e
tid=$(tgtadm --lld iscsi --op show --mode target | sed -n 's/^Target \\([0-9]*\\):.*/\\1/p' | sort -n | tail -n 1)
tid=$(( ${tid:-0} + 1 ))
tgtadm --lld iscsi --op new --mode target --tid $tid -T %(iqn)s
tgtadm --lld iscsi --op new --mode logicalunit --tid $tid --lun 1 -b $(zvol-dev %(name)s)
tgtadm --lld iscsi --op new --mode account --user %(user)s --password %(password)s
tgtadm --lld iscsi --op bind --mode account --tid $tid --user %(user)s
tgtadm --lld iscsi --op bind --mode target --tid $tid -I ALL
echo $tid""" % dict(iqn=iqn, name=name, user=user, password=password)
        tid = int((yield self.ssh(server, script)).split()[-1])
        self.addCleanup(self.unexport, server, tid, user)
        return tid

    def unexport(self, server, tid, user):
        return self.ssh(server, "tgtadm --lld iscsi --op delete --mode target --tid %d --force 2>/dev/null; "
                                "tgtadm --lld iscsi --op delete --mode account --user %s 2>/dev/null; true"
                        % (tid, user))

    @defer.inlineCallbacks
    def bootGuest(self, server, name, iqn, user, usage, directory, boot):
        socket = os.path.join(directory, "console%d.sock" % (boot,))
        log = os.path.join(directory, "console%d.log" % (boot,))
        xml = iscsiGuestXML(self.stack, name, server, iqn, user, usage, socket, log)
        yield createDomain(self.stack, xml)
        try:
            yield waitForLog(log, r"COMET-GUEST: ready", BOOT_TIMEOUT)
        except TimeoutError:
            yield destroyDomain(self.stack, name)
            raise
        marker = yield waitForLog(log, r"COMET-GUEST: marker=(\S*)", 1)
        return socket, log, marker.group(1)

    @defer.inlineCallbacks
    def checkGuestOnZvol(self, server):
        stack = self.stack
        guest = stack["guest"]
        token = _token()
        domain = "comet-it-%s" % (token,)
        iqn = "iqn.2026-01.org.comet.testbed:%s.it-%s" % (server["name"], token)
        user, password = "it%s" % (token,), secrets.token_hex(8)
        usage = "comet-it-%s" % (token,)
        directory = tempfile.mkdtemp(prefix="comet-it-", dir="/tmp")   # unix socket paths are short
        self.addCleanup(shutil.rmtree, directory, True)

        # 1. a zvol holding the guest image (a fresh zvol reads as zeros, so
        #    the image's non-zero prefix is all that needs copying)
        name, device = yield self.makeZvol(server, 128 * 1024 * 1024)
        prefix = os.path.join(directory, "image-prefix")
        with open(guest["image"], "rb") as src, open(prefix, "wb") as dst:
            dst.write(src.read(guest["image_used_bytes"]))
        yield self.ssh(server, "dd of=%s bs=1M conv=fsync 2>/dev/null" % (device,), stdinPath=prefix)

        # 2. exported over iSCSI with CHAP; the password in a libvirt secret
        tid = yield self.exportZvol(server, name, iqn, user, password)
        uuid = yield defineIscsiSecret(stack, usage, password)
        self.addCleanup(undefineSecret, stack, uuid)

        # 3. the guest boots from it (SeaBIOS -> syslinux -> kernel, over iSCSI)
        self.addCleanup(destroyDomain, stack, domain)
        socket, log, marker = yield self.bootGuest(server, domain, iqn, user, usage, directory, 1)
        self.assertEqual(marker, "")
        self.assertIn("disk=/dev/vda data=/dev/vda2", open(log).read())

        # 4. a write typed into its serial console ...
        console = SerialConsole(socket)
        yield console.connect()
        self.addCleanup(console.close)
        written = "COMET-IT-%s" % (token,)
        status, output = yield console.run("echo %s | dd of=/dev/comet-data conv=fsync" % (written,))
        self.assertEqual(status, 0, output)

        # 5. ... is in a snapshot taken after sync on the server: clone the
        #    snapshot and read the data area of the clone
        clone = "%s-clone" % (name,)
        read = yield self.ssh(server, "sync && zfs snapshot %(n)s@it && zfs clone %(n)s@it %(c)s && "
                                      "dd if=$(zvol-dev %(c)s) bs=512 skip=%(skip)d count=1 2>/dev/null | head -n 1"
                              % dict(n=name, c=clone, skip=guest["data_offset"] // 512))
        self.assertEqual(read.strip("\x00\n"), written)

        # 6. ACPI shutdown powers the guest off; booted again it prints the marker
        yield shutdownDomain(stack, domain)
        for _ in range(120):
            if not (yield domainActive(stack, domain)):
                break
            yield sleep(0.5)
        self.assertFalse((yield domainActive(stack, domain)), "guest ignored the ACPI shutdown")
        console.close()
        socket, log, marker = yield self.bootGuest(server, domain, iqn, user, usage, directory, 2)
        self.assertEqual(marker, written)
        yield destroyDomain(stack, domain)

        # 7. everything goes away again
        yield self.unexport(server, tid, user)
        yield undefineSecret(stack, uuid)
        yield self.ssh(server, "zfs destroy -R %s" % (name,))
        left = yield self.ssh(server, "zfs list -H -t all -o name; tgtadm --lld iscsi --op show --mode target; "
                                      "tgtadm --lld iscsi --op show --mode account")
        self.assertNotIn(name, left)
        self.assertNotIn(iqn, left)
        self.assertNotIn(user, left)
        secrets_left = yield libvirtCall(stack, lambda conn: conn.listSecrets())
        self.assertNotIn(uuid, secrets_left)
        self.assertFalse((yield domainActive(stack, domain)))

    def test_guestOnZvolStorage1(self):
        """
        A TCG guest boots over iSCSI from a zvol on storage server 1; its
        write is in a snapshot taken after C{sync}; everything is removed.
        """
        return self.checkGuestOnZvol(self.server(0))

    def test_guestOnZvolStorage2(self):
        """
        The same on storage server 2.
        """
        return self.checkGuestOnZvol(self.server(1))
