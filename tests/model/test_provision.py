"""
First-boot provisioning (L{comet.model.provision}): what is accepted, and
the NoCloud seed ISO read back with an ISO 9660 reader.
"""

from __future__ import annotations

import io
import json

import pycdlib
from twisted.trial.unittest import TestCase

from comet.errors import InvalidInput
from comet.model.provision import (MAX_USER_DATA, SEED_LABEL, Provisioning, check_hostname,
                                   check_ssh_key, default_hostname, seed_iso)

#: A real ed25519 public key (ssh-keygen -t ed25519), and one of RSA.
ED25519 = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGlHnkyUmYzXOlh7Aiu9CMnJKuxsBK53NlwYe8qH8Ksw"
           " someone@example")
RSA = ("ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDDHr/jh2Jy4yALcK4JyWbVkPRaWmhck3IgCoeOO3z1e2dBow"
       "LhyffHM5b4g6C2+NE9AvEkQ6tRcSMNkmPt5Jb3Z8Zy3jlwoP2X8bEywMyvnvF4TkLx4M9wJ0kVnXKNsm1c5rX4n0"
       "3e8EbiiJ8hpP4D2I3eUlpbhqQZ2mSqvtuNVQ==")


def read_iso(image: bytes) -> tuple[str, dict[str, bytes]]:
    """The volume label of ISO C{image} and its files by Rock Ridge name."""
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(image))
    try:
        label = iso.pvd.volume_identifier.decode().strip()
        files = {}
        for name in ("user-data", "meta-data"):
            out = io.BytesIO()
            iso.get_file_from_iso_fp(out, rr_path=f"/{name}")
            files[name] = out.getvalue()
        return label, files
    finally:
        iso.close()


class ValidationTests(TestCase):
    def test_hostnames(self):
        for good in ("db", "web-1", "a.example.org", "x" * 63):
            self.assertEqual(check_hostname(good), good)
        for bad in ("", "-a", "a-", "a_b", "a..b", "x" * 64, "a b", "a;reboot", 5, None,
                    ".".join(["x" * 60] * 5)):
            with self.assertRaises(InvalidInput, msg=repr(bad)):
                check_hostname(bad)

    def test_default_hostname(self):
        """A VM's name becomes its host name, what a host name cannot hold made '-'."""
        self.assertEqual(default_hostname("web3"), "web3")
        self.assertEqual(default_hostname("db_primary.1"), "db-primary-1")
        self.assertEqual(default_hostname("_x_"), "x")
        self.assertEqual(default_hostname("x" * 64), "x" * 63)
        check_hostname(default_hostname("a" + "_" * 63))

    def test_ssh_keys(self):
        self.assertEqual(check_ssh_key(ED25519), ED25519)
        self.assertEqual(check_ssh_key(RSA + "\n"), RSA)
        blob = ED25519.split()[1]
        for bad in (
            "", "hello", f"ssh-rsa {blob}",            # the blob encodes another type
            f"ssh-foo {blob}", f"ssh-ed25519 {blob[:-5]}",   # unknown type, broken base64
            f"ssh-ed25519 {blob} comment\nssh-ed25519 {blob}",  # two lines
            "ssh-ed25519 AAAA", 42, None,
        ):
            with self.assertRaises(InvalidInput, msg=repr(bad)):
                check_ssh_key(bad)

    def test_from_request(self):
        p = Provisioning.from_request(None, [ED25519], "#cloud-config\n")
        self.assertEqual((p.hostname, p.ssh_keys, p.user_data),
                         (None, (ED25519,), "#cloud-config\n"))
        Provisioning.from_request("h", None, "x" * MAX_USER_DATA)
        for args in (
            ("h", None, "x" * (MAX_USER_DATA + 1)),
            ("h", None, "é" * (MAX_USER_DATA // 2 + 1)),   # counted in UTF-8 bytes
            ("h", None, "a\x00b"),
            ("h", None, 5),
            ("h", ED25519, None),                           # not a list
            ("h", [ED25519] * 33, None),
            ("h", ["nope"], None),
            ("bad_host", None, None),
        ):
            with self.assertRaises(InvalidInput, msg=repr(args)[:80]):
                Provisioning.from_request(*args)

    def test_summary_hides_user_data(self):
        """The summary says how long user_data is and its hash, never what it holds."""
        summary = Provisioning("h", (ED25519,), "password: hunter2\n").summary()
        self.assertNotIn("hunter2", json.dumps(summary))
        self.assertEqual(summary["user_data_bytes"], len("password: hunter2\n"))
        self.assertEqual(len(summary["user_data_sha256"]), 64)
        self.assertIsNone(Provisioning("h").summary()["user_data_sha256"])


class SeedTests(TestCase):
    def test_nocloud_seed(self):
        """The seed is an ISO labelled cidata with user-data as given and meta-data."""
        user_data = "#cloud-config\nruncmd: [echo MARKER-é]\n"
        label, files = read_iso(seed_iso(Provisioning("db1", (ED25519, RSA), user_data), "u-1"))
        self.assertEqual(label, SEED_LABEL)
        self.assertEqual(files["user-data"], user_data.encode())
        self.assertEqual(json.loads(files["meta-data"]), {
            "instance-id": "u-1", "local-hostname": "db1", "public-keys": [ED25519, RSA]})

    def test_seed_without_user_data(self):
        """Without user_data, an empty cloud-config; without keys, no public-keys."""
        label, files = read_iso(seed_iso(Provisioning("db1"), "u-1"))
        self.assertTrue(files["user-data"].startswith(b"#cloud-config\n"))
        self.assertEqual(json.loads(files["meta-data"]),
                         {"instance-id": "u-1", "local-hostname": "db1"})

    def test_largest_seed_fits(self):
        seed_iso(Provisioning("h" * 63, (RSA,) * 32, "x" * MAX_USER_DATA), "u" * 36)
