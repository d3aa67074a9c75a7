"""Configuration: defaults, every key, and one clear error per bad key or file."""

import json
import math
import os

import attrs
from hypothesis import given
from hypothesis import strategies as st
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

    def test_network_keys(self):
        c = config.parse(
            "[network]\nvni_range = '100-199'\nmtu = 8950\n"
            "[[hosts]]\nname = 'a'\nuri = 'qemu:///system'\n"
            "bridges = {public = 'br0', dmz = 'br1'}\ntunnel_address = '10.0.0.1'\n"
            "ssh = 'root@10.0.0.1'\n", "c.toml")
        self.assertEqual(c.network.vnis(), range(100, 200))
        self.assertEqual(c.network.mtu, 8950)
        self.assertEqual(c.hosts[0].bridges, (("dmz", "br1"), ("public", "br0")))
        self.assertEqual((c.hosts[0].tunnel_address, c.hosts[0].ssh), ("10.0.0.1", "root@10.0.0.1"))
        default = config.parse("", "c.toml")
        self.assertEqual(default.network.vnis(), range(10000, 20000))
        self.assertEqual(default.network.mtu, 1450)
        self.assertEqual(default.hosts[0].bridges, ())

    def test_local_dataset(self):
        """A host offers local-copy mode with a dataset over its ssh; no tunnel needed."""
        c = config.parse(
            "[[hosts]]\nname = 'a'\nuri = 'qemu+ssh://root@h/system'\n"
            "ssh = 'root@h'\nlocal_dataset = 'tank/comet-local'\n", "c.toml")
        self.assertEqual((c.hosts[0].local_dataset, c.hosts[0].tunnel_address),
                         ("tank/comet-local", ""))
        self.assertEqual(config.parse("", "c.toml").hosts[0].local_dataset, "")

    def test_local_keep(self):
        """A host with a local dataset may keep its copies as caches; by default it does not."""
        host = ("[[hosts]]\nname = 'a'\nuri = 'qemu+ssh://root@h/system'\n"
                "ssh = 'root@h'\nlocal_dataset = 'tank/comet-local'\n")
        self.assertIs(config.parse(host, "c.toml").hosts[0].local_keep, False)
        self.assertIs(config.parse(host + "local_keep = true\n", "c.toml").hosts[0].local_keep,
                      True)
        self.assertIs(config.parse("", "c.toml").hosts[0].local_keep, False)
        plain = "[[hosts]]\nname = 'a'\nuri = 'x'\n"
        self.assertIs(config.parse(plain + "local_keep = false\n", "c.toml").hosts[0].local_keep,
                      False)

    def test_cpu_mode(self):
        host = "[[hosts]]\nname = 'a'\nuri = 'qemu:///system'\n"
        for mode in ("host-passthrough", "host-model", "Haswell-noTSX", "qemu64"):
            c = config.parse(f"{host}cpu_mode = '{mode}'\n", "c.toml")
            self.assertEqual(c.hosts[0].cpu_mode, mode)
        c = config.parse(f"{host}domain_type = 'qemu'\ncpu_mode = 'host-model'\n", "c.toml")
        self.assertEqual(c.hosts[0].cpu_mode, "host-model")
        self.assertEqual(config.parse(host, "c.toml").hosts[0].cpu_mode, "")

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

    def test_bad_network_keys(self):
        host = "[[hosts]]\nname = 'a'\nuri = 'x'\n"
        for text, part in [
            ("[network]\nvni_range = '5'", "vni_range"),
            ("[network]\nvni_range = '9-3'", "vni_range"),
            ("[network]\nvni_range = '1-16777216'", "vni_range"),
            ("[network]\nmtu = 1500.5", "mtu"),
            ("[network]\nmtu = 9001", "mtu"),
            ("[network]\nmtu = '1450'", "mtu"),
            (host + "bridges = {public = 3}", "table of strings"),
            (host + "bridges = ['br0']", "table of strings"),
            (host + "bridges = {private = 'br0'}", "cannot name a network"),
            (host + "bridges = {public = 'br0;rm'}", "not an interface name"),
            (host + "bridges = {public = 'bridge-name-too-long'}", "not an interface name"),
            (host + "tunnel_address = 'x'\nssh = 'root@x'", "not an IP address"),
            (host + "tunnel_address = '10.0.0.1'\nssh = '-oProxyCommand=x'", "user@address"),
            (host + "tunnel_address = '10.0.0.1'", "needs ssh with tunnel_address or local_dataset"),
            (host + "ssh = 'root@10.0.0.1'", "needs ssh with tunnel_address or local_dataset"),
            (host + "local_dataset = 'tank/local'", "needs ssh with tunnel_address or local_dataset"),
            (host + "local_dataset = 'tank'\nssh = 'root@h'", "not a ZFS dataset name"),
            (host + "local_dataset = 'tank/a b'\nssh = 'root@h'", "not a ZFS dataset name"),
            (host + "local_dataset = 'tank/-R'\nssh = 'root@h'", "not a ZFS dataset name"),
            (host + "local_dataset = 'tank/x@s'\nssh = 'root@h'", "not a ZFS dataset name"),
            (host + "local_keep = true", "local_keep of 'a' needs local_dataset"),
            (host + "local_keep = true\nssh = 'root@h'\ntunnel_address = '10.0.0.1'",
             "local_keep of 'a' needs local_dataset"),
            (host + "local_keep = 'yes'\nssh = 'root@h'\nlocal_dataset = 'tank/l'",
             "hosts[0].local_keep must be a bool, not str"),
            (host + "local_keep = 1\nssh = 'root@h'\nlocal_dataset = 'tank/l'",
             "hosts[0].local_keep must be a bool, not int"),
        ]:
            self.assertConfigError(text, part)

    def test_bad_cpu_mode(self):
        host = "[[hosts]]\nname = 'a'\nuri = 'x'\n"
        for text, part in [
            (host + "cpu_mode = 'a b'", "cpu_mode a b of 'a' is not host-passthrough"),
            (host + "cpu_mode = '-cpu'", "is not host-passthrough, host-model or a CPU model"),
            (host + "cpu_mode = 3", "hosts[0].cpu_mode must be a str"),
            (host + "domain_type = 'qemu'\ncpu_mode = 'host-passthrough'",
             "host-passthrough of 'a' needs KVM"),
        ]:
            self.assertConfigError(text, part)

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

    def test_storage_watch_interval(self):
        """[storage] watch_interval: 10 s by default, 0 for no checks, never negative."""
        self.assertEqual(config.Config().storage.watch_interval, 10.0)
        self.assertEqual(config.parse("[storage]\nwatch_interval = 0").storage.watch_interval, 0.0)
        self.assertConfigError("[storage]\nwatch_interval = -1", "storage.watch_interval")

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

    def test_out_of_range(self):
        """Numbers that would hang or break the daemon (0 threads, no time) are refused."""
        self.assertConfigError("[compute]\ncluster_concurrency=0", "compute.cluster_concurrency must be at least 1")
        self.assertConfigError("[compute]\nlibvirt_threads=-3", "libvirt_threads", "-3")
        self.assertConfigError("[compute]\nlibvirt_timeout=nan", "libvirt_timeout", "nan")
        self.assertConfigError("[storage]\ncommand_timeout=inf", "command_timeout", "inf")
        self.assertConfigError("[api]\nmax_body=0", "api.max_body must be at least 1")
        self.assertConfigError("[debug]\nstall_ms=-1", "stall_ms", "-1")
        self.assertConfigError(
            "[[storageservers]]\nhost='s'\nssh_port=65536", "ssh_port must be from 1 to 65535"
        )

    def test_unprintable_key(self):
        """A quoted key with a line break is shown escaped, so the error stays one line."""
        self.assertConfigError('"a\\nb" = 1', "unknown key 'a\\nb'")
        self.assertConfigError('[api]\n"x\\ty" = 1', "unknown key api.'x\\ty'")

    def test_not_toml(self):
        self.assertConfigError("[api", "not valid TOML")

    def test_unreadable(self):
        e = self.assertRaises(ConfigError, config.load, "/nonexistent/comet.toml")
        self.assertIn("/nonexistent/comet.toml", str(e))


def _toml(value) -> str:
    """A TOML value (JSON's strings, numbers and arrays are TOML's; tables inline)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # nan, inf, -inf and 1e+20 are TOML too
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_string(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, str):
        return _string(value)
    return json.dumps(value)


def _string(text: str) -> str:
    """A TOML basic string: control characters, quotes and backslashes escaped."""
    escaped = "".join(
        f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F else "\\" + c if c in '"\\' else c
        for c in text
    )
    return f'"{escaped}"'


def _document(tables: dict) -> str:
    lines = []
    for name, table in tables.items():
        for item in table if isinstance(table, list) else [table]:
            lines.append(f"[[{name}]]" if isinstance(table, list) else f"[{name}]")
            lines.extend(f"{_string(k)} = {_toml(v)}" for k, v in item.items())
    return "\n".join(lines) + "\n"


_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
_ANY = st.one_of(
    _TEXT, st.integers(-(2**63), 2**63 - 1), st.floats(), st.booleans(), st.lists(st.integers(), max_size=2)
)
_FIELDS = {name: [f.name for f in attrs.fields(cls)] for name, (cls, _) in config._TABLES.items()}


@st.composite
def _any_tables(draw):
    """Known tables with known and unknown keys, of any type."""
    tables = {}
    for name in draw(st.lists(st.sampled_from(sorted(_FIELDS)), unique=True, max_size=4)):
        keys = st.one_of(st.sampled_from(_FIELDS[name]), _TEXT)
        items = [draw(st.dictionaries(keys, _ANY, max_size=4)) for _ in range(draw(st.integers(1, 2)))]
        tables[name] = items if config._TABLES[name][1] else items[0]
    return tables


_NAME = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,20}\Z")


def _valid(field: attrs.Attribute):
    low, high = config._RANGES.get(field.name, (-(2**40), 2**40))
    kind = config._field_type(field)
    if kind == "bool":
        return st.booleans()
    if field.name == "endpoint":
        # Where credentials travel: a loopback one passes the exposure rules.
        return st.integers(1, 65535).map(lambda port: f"tcp:{port}:interface=127.0.0.1")
    if kind == "int":
        return st.integers(int(math.ceil(low)), int(min(high, 2**40)))
    if kind == "float":
        return st.floats(low, min(high, 1e9), allow_nan=False)
    if field.name == "name":
        return _NAME
    if field.name == "format":  # [log]: one of two words
        return st.sampled_from(["text", "json"])
    if field.name == "vni_range":
        return st.tuples(st.integers(1, 10**6), st.integers(0, 10**6)).map(
            lambda t: f"{t[0]}-{t[0] + t[1]}")
    if kind == "strings":  # download_allow: addresses and networks
        networks = st.ip_addresses().flatmap(
            lambda a: st.integers(0, a.max_prefixlen).map(lambda n: f"{a}/{n}")
        )
        return st.lists(networks, max_size=3).map(tuple)
    return _TEXT


class PropertyTests(TestCase):
    """Hypothesis: the parser's promises hold for any input, not just the examples above."""

    @given(st.text())
    def test_any_text(self, text):
        """Any text is a Config or one ConfigError of one line, never another exception."""
        try:
            config.parse(text, "c.toml")
        except ConfigError as e:
            self.assertNotIn("\n", str(e))

    @given(_any_tables())
    def test_any_values(self, tables):
        """Known tables with any keys and values: a Config whose values have the right types, or one line."""
        try:
            parsed = config.parse(_document(tables), "c.toml")
        except ConfigError as e:
            self.assertNotIn("\n", str(e))
            self.assertTrue(str(e))
            return
        for name, (cls, many) in config._TABLES.items():
            for item in getattr(parsed, name) if many else [getattr(parsed, name)]:
                if item is None:
                    continue
                for field in attrs.fields(cls):
                    kind = config._TYPES[config._field_type(field)]
                    self.assertIsInstance(getattr(item, field.name), kind)

    @given(st.data())
    def test_round_trip(self, data):
        """Every key of every single table, given a valid value, is read back as written."""
        tables = {}
        for name, (cls, many) in config._TABLES.items():
            if many:
                continue
            tables[name] = {f.name: data.draw(_valid(f), label=f"{name}.{f.name}") for f in attrs.fields(cls)}
        parsed = config.parse(_document(tables), "c.toml")
        for name, values in tables.items():
            for key, value in values.items():
                self.assertEqual(getattr(getattr(parsed, name), key), value)


class DownloadConfigTests(TestCase):
    def test_download_allow(self):
        c = config.parse('[storage]\ndownload_allow = ["10.0.0.0/8", "127.0.0.1", "fd00::/8"]\n')
        self.assertEqual(c.storage.download_allow, ("10.0.0.0/8", "127.0.0.1", "fd00::/8"))
        self.assertEqual(config.load(None).storage.download_allow, ())
        for bad, words in [('"10.0.0.0/8"', "must be an array of strings"),
                           ("[10]", "must be an array of strings"),
                           ('["10.0.0.0/33"]', "not an address or network"),
                           ('["intranet"]', "not an address or network")]:
            e = self.assertRaises(ConfigError, config.parse, f"[storage]\ndownload_allow = {bad}\n")
            self.assertIn("download_allow", str(e))
            self.assertIn(words, str(e))

    def test_download_limits(self):
        for key in ("download_connect_timeout", "download_idle_timeout", "download_timeout",
                    "max_downloads"):
            e = self.assertRaises(ConfigError, config.parse, f"[storage]\n{key} = 0\n")
            self.assertIn(f"storage.{key} must be", str(e))


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

    def test_bypasses_of_the_plain_http_refusal(self):
        """
        Endpoints that a regular expression read as loopback but on which
        Twisted listens on every address in plain HTTP are refused: a
        repeated interface= (Twisted keeps the last), a positional interface,
        and wrapping prefixes; systemd: (an inherited socket, address and TLS
        unknown) and unknown kinds too.
        """
        for endpoint in [
            "tcp:8080:interface=127.0.0.1:interface=0.0.0.0",
            "tcp:8080:0.0.0.0",
            "haproxy:tcp:8080:interface=0.0.0.0",
            "haproxy:tcp:8080",
            "haproxy:tcp:8080:interface=127.0.0.1:interface=0.0.0.0",
            r"tcp6:8080:interface=\\:\\:1:interface=\\:\\:",
            "tcp6:8080",
        ]:
            e = self.assertRaises(ConfigError, self.parse, f'endpoint = "{endpoint}"')
            self.assertIn("without TLS", str(e), endpoint)
            self.parse(f'endpoint = "{endpoint}"\nallow_insecure = true')
        for endpoint in ["systemd:domain=INET:index=0", "tls:8443:interface=127.0.0.1", "stdio:"]:
            e = self.assertRaises(ConfigError, self.parse, f'endpoint = "{endpoint}"')
            self.assertIn("cannot tell", str(e), endpoint)
            self.assertIn("allow_insecure", str(e), endpoint)
            self.parse(f'endpoint = "{endpoint}"\nallow_insecure = true')

    def test_loopback_as_twisted_reads_it(self):
        """The address Twisted binds decides: the last interface=, a positional one, a wrapped one."""
        for endpoint in [
            "tcp:8080:interface=0.0.0.0:interface=127.0.0.1",
            "tcp:8080:127.0.0.2",
            "haproxy:tcp:8080:interface=127.0.0.1",
            "tcp:8080:interface=localhost",
        ]:
            self.assertEqual(self.parse(f'endpoint = "{endpoint}"').api.endpoint, endpoint)

    def test_malformed_endpoint(self):
        """An endpoint Twisted could not build is one line naming it."""
        e = self.assertRaises(ConfigError, self.parse, 'endpoint = "tcp:8080:nosuchkey=1"')
        self.assertIn("api.endpoint", str(e))

    def test_tls_beyond_loopback(self):
        """ssl: is fine anywhere, unless credentials are off."""
        endpoint = 'endpoint = "ssl:8443:privateKey=/etc/comet/key.pem:certKey=/etc/comet/cert.pem"'
        self.assertTrue(self.parse(endpoint).api.endpoint.startswith("ssl:"))
        e = self.assertRaises(ConfigError, self.parse, endpoint + "\nauth = false")
        self.assertIn("api.auth = false", str(e))


class MetricsConfigTests(TestCase):
    def test_token_file(self):
        """C{[metrics] token_file}: a path (default "": only users' tokens read /metrics)."""
        self.assertEqual(config.Config().metrics.token_file, "")
        cfg = config.parse('[metrics]\ntoken_file = "/etc/comet/metrics-token"\n')
        self.assertEqual(cfg.metrics.token_file, "/etc/comet/metrics-token")
        with self.assertRaises(ConfigError) as e:
            config.parse("[metrics]\ntoken = 'x'\n")
        self.assertIn("unknown key metrics.token", str(e.exception))
