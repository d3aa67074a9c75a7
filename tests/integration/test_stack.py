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
from twisted.trial.unittest import TestCase

from ._testbed import (
    SerialConsole,
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
                                            "domain_type": self.stack["domain_type"]}])
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
