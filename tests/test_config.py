"""Configuration: defaults, every key, and one clear error per bad key or file."""

import os

from twisted.trial.unittest import TestCase

from comet import config
from comet.config import ConfigError
from tests._util import temp_dir

FULL = """
[api]
endpoint = "tcp:8099:interface=127.0.0.1"
max_body = 2048

[database]
path = "/var/lib/comet/comet.sqlite"

[[hosts]]
name = "local"
uri = "qemu:///system"
domain_type = "qemu"

[[hosts]]
name = "far"
uri = "qemu+ssh://root@far/system"

[[storageservers]]
host = "10.200.0.20"
ssh_user = "root"
ssh_port = 22
ssh_identity = "/etc/comet/id_ed25519"
ssh_known_hosts = "/etc/comet/known_hosts"

[[storagepools]]
name = "vmpool"
server = "10.200.0.20"
dataset = "tank/comet"

[manhole]
endpoint = "tcp:2222:interface=127.0.0.1"
authorized_keys = "/etc/comet/manhole_keys"

[compute]
cluster_concurrency = 2
libvirt_timeout = 5

[storage]
iqn_domain = "org.example"
"""


class DefaultTests(TestCase):
    def test_embedded_default(self):
        """No file gives the API on loopback 8080, comet.sqlite and test:///default."""
        c = config.load(None)
        self.assertEqual(c.api.endpoint, "tcp:8080:interface=127.0.0.1")
        self.assertEqual(c.database.path, "comet.sqlite")
        self.assertEqual([(h.name, h.uri) for h in c.hosts], [("local", "test:///default")])
        self.assertIsNone(c.manhole)
        self.assertEqual(c.storageservers, ())

    def test_empty_file(self):
        """An empty file is the embedded default."""
        self.assertEqual(config.parse("").hosts, config.load(None).hosts)


class FullTests(TestCase):
    def test_every_key(self):
        """Every documented key is read."""
        c = config.parse(FULL, "comet.toml")
        self.assertEqual(c.api.max_body, 2048)
        self.assertEqual(c.hosts[1].domain_type, "kvm")
        self.assertEqual(c.storageservers[0].ssh_identity, "/etc/comet/id_ed25519")
        self.assertEqual(c.storagepools[0].dataset, "tank/comet")
        self.assertEqual(c.manhole.authorized_keys, "/etc/comet/manhole_keys")
        self.assertEqual(c.compute.libvirt_timeout, 5.0)
        self.assertEqual(c.storage.iqn_domain, "org.example")

    def test_from_file(self):
        path = os.path.join(temp_dir(self), "c.toml")
        with open(path, "w") as f:
            f.write(FULL)
        self.assertEqual(config.load(path).source, path)


class ErrorTests(TestCase):
    def assertConfigError(self, text, *parts):
        e = self.assertRaises(ConfigError, config.parse, text, "c.toml")
        for part in parts:
            self.assertIn(part, str(e))
        self.assertNotIn("\n", str(e))

    def test_unknown_table(self):
        self.assertConfigError("[apii]\nendpoint='x'", "unknown key apii", "c.toml")

    def test_unknown_key(self):
        self.assertConfigError("[api]\nendpont='x'", "unknown key api.endpont")

    def test_wrong_type(self):
        self.assertConfigError("[api]\nendpoint=8080", "api.endpoint must be a str")
        self.assertConfigError("[api]\nmax_body='big'", "api.max_body must be an int")
        self.assertConfigError("[api]\nmax_body=true", "api.max_body must be an int")

    def test_reconcile_interval(self):
        """[reconcile] interval: 60 s by default, 0 for only at start, never negative."""
        self.assertEqual(config.Config().reconcile.interval, 60.0)
        self.assertEqual(config.parse("[reconcile]\ninterval = 0").reconcile.interval, 0.0)
        self.assertEqual(config.parse("[reconcile]\ninterval = 5").reconcile.interval, 5.0)
        self.assertConfigError("[reconcile]\ninterval = -1", "reconcile.interval")

    def test_missing_key(self):
        self.assertConfigError("[[hosts]]\nname='a'", "hosts[0] needs uri")

    def test_array_expected(self):
        self.assertConfigError("[hosts]\nname='a'\nuri='test:///default'", "array of tables")

    def test_duplicate_names(self):
        self.assertConfigError(
            "[[hosts]]\nname='a'\nuri='x'\n[[hosts]]\nname='a'\nuri='y'", "appears twice"
        )

    def test_pool_on_unknown_server(self):
        self.assertConfigError(
            "[[storagepools]]\nname='p'\nserver='s'\ndataset='t/c'", "not in storageservers"
        )

    def test_invalid_name(self):
        self.assertConfigError("[[hosts]]\nname='a b'\nuri='x'", "not a valid name")

    def test_not_toml(self):
        self.assertConfigError("[api", "not valid TOML")

    def test_unreadable(self):
        e = self.assertRaises(ConfigError, config.load, "/nonexistent/comet.toml")
        self.assertIn("/nonexistent/comet.toml", str(e))


class ExposureTests(TestCase):
    """Credentials never cross a network in the clear, unless the file says so."""

    def parse(self, api: str):
        return config.parse("[api]\n" + api + "\n")

    def test_auth_keys(self):
        c = self.parse("auth = false\nallow_insecure = true")
        self.assertEqual((c.api.auth, c.api.allow_insecure), (False, True))
        self.assertEqual((config.load(None).api.auth, config.load(None).api.allow_insecure), (True, False))
        e = self.assertRaises(ConfigError, self.parse, "auth = 1")
        self.assertEqual(str(e), "api.auth must be a bool, not int")

    def test_loopback_is_fine(self):
        for endpoint in ["tcp:80:interface=127.0.0.1", r"tcp6:80:interface=\\:\\:1",
                         "unix:/run/comet.sock"]:
            self.assertEqual(self.parse(f'endpoint = "{endpoint}"').api.endpoint,
                             endpoint.replace("\\\\", "\\"))

    def test_plain_tcp_beyond_loopback(self):
        """A plain tcp: endpoint on every or a public address is refused in one line."""
        for endpoint in ["tcp:8080", "tcp:8080:interface=0.0.0.0", "tcp:8080:interface=10.0.0.5",
                         r"tcp6:8080:interface=\\:\\:"]:
            e = self.assertRaises(ConfigError, self.parse, f'endpoint = "{endpoint}"')
            self.assertIn("without TLS", str(e))
            self.assertIn("allow_insecure", str(e))
            self.assertNotIn("\n", str(e))
            self.parse(f'endpoint = "{endpoint}"\nallow_insecure = true')

    def test_tls_beyond_loopback(self):
        """ssl: is fine anywhere, unless credentials are off."""
        endpoint = 'endpoint = "ssl:8443:privateKey=/etc/comet/key.pem:certKey=/etc/comet/cert.pem"'
        self.assertTrue(self.parse(endpoint).api.endpoint.startswith("ssl:"))
        e = self.assertRaises(ConfigError, self.parse, endpoint + "\nauth = false")
        self.assertIn("api.auth = false", str(e))
