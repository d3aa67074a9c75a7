"""
Comet's configuration: one TOML file turned into frozen ``attrs`` objects.

Every key has a default, so that no file at all gives the embedded default (API on
127.0.0.1:8080, ``comet.sqlite`` in the working directory, one compute host on
libvirt's in-process ``test:///default`` driver).  The schema below is the only
list of keys: an unknown key, a value of the wrong type or an unreadable file is a
L{ConfigError} whose message names the key or the file, so that the daemon stops
with one clear line instead of a traceback.
"""

from __future__ import annotations

import ipaddress
import math
import tomllib
from typing import Any

import attrs

from comet._exposure import check_exposure
from comet.hostconfig import HostConfig, NetworkConfig, check_cpu_mode, check_network


class ConfigError(Exception):
    """The configuration cannot be used; the message says which file or key."""


@attrs.frozen
class APIConfig:
    #: A Twisted server endpoint string (``tcp:…`` or ``ssl:…``).
    endpoint: str = "tcp:8080:interface=127.0.0.1"
    #: Largest request body accepted, in bytes.
    max_body: int = 1024 * 1024
    #: Require credentials (a token or a password) on every endpoint but /health.
    auth: bool = True
    #: Allow a plain ``tcp:`` endpoint (or ``auth = false``) on a non-loopback address.
    allow_insecure: bool = False
    #: With ``auth = false``: host names (no port) answered besides loopback
    #: ones; any other ``Host`` is refused 403 (DNS rebinding).
    allowed_hosts: tuple[str, ...] = ()
    #: Failed password logins allowed for one user name from one address,
    #: and from all addresses, per ``login_window`` seconds; more: 429.
    login_failures: int = 5
    login_failures_per_user: int = 20
    login_window: float = 600.0
    #: Threads that check passwords (scrypt, ~0.6 s of CPU and 64 MiB each).
    password_threads: int = 2
    #: Password checks in flight (running or waiting) at most, in all (more:
    #: 503) and from one address (more: 429).
    password_checks: int = 8
    password_checks_per_address: int = 2


@attrs.frozen
class DatabaseConfig:
    #: Path of the SQLite file, relative to the working directory unless absolute.
    path: str = "comet.sqlite"


@attrs.frozen
class StorageServerConfig:
    host: str
    ssh_user: str = "root"
    ssh_port: int = 22
    ssh_identity: str = "/etc/comet/id_ed25519"
    ssh_known_hosts: str = "/etc/comet/known_hosts"
    #: Commands in flight at once over the shared ssh connection: below the
    #: server's sshd ``MaxSessions`` (10 by default), which refuses more.
    max_sessions: int = 8


@attrs.frozen
class StoragePoolConfig:
    name: str
    server: str
    dataset: str


@attrs.frozen
class ManholeConfig:
    #: A Twisted server endpoint string; loopback by default.
    endpoint: str = "tcp:2222:interface=127.0.0.1"
    #: An OpenSSH ``authorized_keys`` file: the only keys the manhole accepts.
    authorized_keys: str = "/etc/comet/manhole_keys"
    #: Where the manhole's own SSH host key lives; made on first start if absent.
    host_key: str = "manhole_host_key"


@attrs.frozen
class ComputeConfig:
    #: How many VMs a cluster ``start``/``stop`` acts on at once.
    cluster_concurrency: int = 4
    #: Threads in the pool that runs libvirt calls (all hosts together).
    libvirt_threads: int = 8
    #: Seconds a libvirt call may take before its host is reported unreachable.
    libvirt_timeout: float = 30.0
    #: Seconds a live migration may take; then it is cancelled and the VM
    #: keeps running where it was.
    migration_timeout: float = 300.0
    #: Milliseconds a migrating guest may be paused for its last copy
    #: (libvirt's C{migrateSetMaxDowntime}).
    migration_max_downtime: int = 300


@attrs.frozen
class StorageConfig:
    #: The domain part of iSCSI target names: ``iqn.<yyyy-mm>.<iqn_domain>:<pool>.<volume>``.
    iqn_domain: str = "org.comet"
    #: Seconds an ssh connection may take to open.
    connect_timeout: int = 5
    #: Seconds a command on a storage server may run before it is killed.
    command_timeout: float = 120.0
    #: Directory for the ssh ControlMaster sockets; "": ``comet-ssh`` beside
    #: the database (L{comet.remote._controldir}).  Must be the daemon's own, 0700.
    control_dir: str = ""
    #: Seconds between two checks of every storage server (its boot id): one
    #: that answers again, or from a new boot, gets its lost exports made
    #: again at once (L{comet.model.serverwatch}); 0: no checks.
    watch_interval: float = 10.0
    #: CIDRs that volume downloads may reach besides public addresses (by
    #: default only globally routable ones: no loopback, link-local, private).
    download_allow: tuple[str, ...] = ()
    #: Seconds a download's TCP connection may take to open.
    download_connect_timeout: float = 10.0
    #: Seconds a download may go without receiving a byte (while not paused
    #: by a full pipe to the storage server) before it is ended.
    download_idle_timeout: float = 60.0
    #: Seconds a whole download (every redirect, the body) may take.
    download_timeout: float = 3600.0
    #: Downloads running at once; more wait in line (their tasks say so).
    max_downloads: int = 2


@attrs.frozen
class ConsoleConfig:
    #: Seconds after which a browser console session is closed (0: never).
    max_session: float = 4 * 3600.0
    #: Largest websocket message (and frame) a console accepts from the browser, in bytes.
    max_message: int = 256 * 1024


@attrs.frozen
class TasksConfig:
    #: Finished and failed tasks older than this many days are deleted (0: kept for ever).
    keep_days: float = 30.0
    #: Seconds between two prunings of old tasks.
    prune_interval: float = 3600.0


@attrs.frozen
class ReconcileConfig:
    #: Seconds between two runs of the reconciler (it also runs at start); 0: only at start.
    interval: float = 60.0


@attrs.frozen
class MetricsConfig:
    #: A file holding the token a Prometheus server sends (C{Bearer}) to read
    #: C{/metrics} and nothing else; "": only users' tokens (a viewer's) may.
    token_file: str = ""


@attrs.frozen
class LogConfig:
    #: C{text}: twistd's own lines.  C{json}: one JSON object a line
    #: (Twisted's C{jsonFileLogObserver}) on standard output, with one event
    #: per API request (L{comet.logs}).
    format: str = "text"


@attrs.frozen
class DebugConfig:
    #: Tests only: a file naming checkpoints (``<kind> <step> <before|after>``)
    #: at which the daemon kills itself with SIGKILL (L{comet.debug}); "": off.
    kill_at_file: str = ""
    #: Log the reactor thread's stack whenever it has not run for this many
    #: milliseconds (L{comet.stallwatch}); 0: off.
    stall_ms: float = 0.0


@attrs.frozen
class Config:
    api: APIConfig = attrs.Factory(APIConfig)
    database: DatabaseConfig = attrs.Factory(DatabaseConfig)
    hosts: tuple[HostConfig, ...] = (
        HostConfig(name="local", uri="test:///default", domain_type="test"),
    )
    storageservers: tuple[StorageServerConfig, ...] = ()
    storagepools: tuple[StoragePoolConfig, ...] = ()
    manhole: ManholeConfig | None = None
    compute: ComputeConfig = attrs.Factory(ComputeConfig)
    storage: StorageConfig = attrs.Factory(StorageConfig)
    reconcile: ReconcileConfig = attrs.Factory(ReconcileConfig)
    console: ConsoleConfig = attrs.Factory(ConsoleConfig)
    tasks: TasksConfig = attrs.Factory(TasksConfig)
    metrics: MetricsConfig = attrs.Factory(MetricsConfig)
    log: LogConfig = attrs.Factory(LogConfig)
    debug: DebugConfig = attrs.Factory(DebugConfig)
    network: NetworkConfig = attrs.Factory(NetworkConfig)
    #: The file this came from, or ``None`` for the embedded default.
    source: str | None = None


# table name -> (class, is an array of tables)
_TABLES: dict[str, tuple[type, bool]] = {
    "api": (APIConfig, False),
    "database": (DatabaseConfig, False),
    "hosts": (HostConfig, True),
    "storageservers": (StorageServerConfig, True),
    "storagepools": (StoragePoolConfig, True),
    "manhole": (ManholeConfig, False),
    "compute": (ComputeConfig, False),
    "storage": (StorageConfig, False),
    "reconcile": (ReconcileConfig, False),
    "console": (ConsoleConfig, False),
    "tasks": (TasksConfig, False),
    "metrics": (MetricsConfig, False),
    "log": (LogConfig, False),
    "debug": (DebugConfig, False),
    "network": (NetworkConfig, False),
}

_TYPES: dict[str, tuple[type, ...]] = {
    "bool": (bool,),
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "strings": (tuple,),  # a TOML array of strings, kept as a tuple
    "names": (tuple,),  # a TOML table of strings, kept as sorted (key, value) pairs
}


#: Numeric keys and the (inclusive) range they must be in: a pool of no
#: threads, a concurrency of 0 or a timeout of 0 would hang or fail every call.
_RANGES: dict[str, tuple[float, float]] = {
    "max_body": (1, math.inf),
    "ssh_port": (1, 65535),
    "max_sessions": (1, math.inf),
    "cluster_concurrency": (1, math.inf),
    "stall_ms": (0, math.inf),
    "libvirt_threads": (1, math.inf),
    "libvirt_timeout": (0.001, 1e9),
    "migration_timeout": (0.001, 1e9),
    "migration_max_downtime": (1, 1e9),
    "connect_timeout": (1, 1e9),
    "command_timeout": (0.001, 1e9),
    "interval": (0, 1e9),   # [reconcile]: 0 = only at start
    "download_connect_timeout": (0.001, 1e9),
    "download_idle_timeout": (0.001, 1e9),
    "download_timeout": (0.001, 1e9),
    "max_downloads": (1, math.inf),
    "login_failures": (1, math.inf),
    "login_failures_per_user": (1, math.inf),
    "login_window": (1, 1e9),
    "password_threads": (1, 64),
    "password_checks": (1, math.inf),
    "password_checks_per_address": (1, math.inf),
    "max_session": (0, 1e9),
    "max_message": (1024, 1 << 30),
    "keep_days": (0, 1e6),
    "prune_interval": (1, 1e9),
    "watch_interval": (0, 1e9),   # [storage]: 0 = no checks
    "mtu": (576, 9000),   # [network]: private NICs'
}


def _key(key: str) -> str:
    """A key as an error message shows it: as written, unless that would break the line."""
    return key if key.isprintable() else repr(key)


def _field_type(field: attrs.Attribute) -> str:
    """The TOML type a field accepts, read from its annotation."""
    if str(field.type).startswith("tuple[tuple[str, str]"):
        return "names"
    if str(field.type).startswith("tuple[str"):
        return "strings"
    return str(field.type).split()[0]


def _build(cls: type, table: Any, where: str) -> Any:
    """Make one C{cls} from a TOML table, naming C{where} in every error."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    fields = {f.name: f for f in attrs.fields(cls)}
    kwargs = {}
    for key, value in table.items():
        if key not in fields:
            raise ConfigError(
                f"unknown key {where}.{_key(key)} (known: {', '.join(sorted(fields))})"
            )
        expected = _field_type(fields[key])
        if expected == "strings":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{where}.{key} must be an array of strings")
            kwargs[key] = tuple(value)
            continue
        if expected == "names":
            if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                raise ConfigError(f"{where}.{key} must be a table of strings")
            kwargs[key] = tuple(sorted(value.items()))
            continue
        if (isinstance(value, bool) != (expected == "bool")) or not isinstance(
            value, _TYPES[expected]
        ):
            raise ConfigError(
                f"{where}.{key} must be a{'n' if expected == 'int' else ''} {expected},"
                f" not {type(value).__name__}"
            )
        low, high = _RANGES.get(key, (-math.inf, math.inf))
        if expected in ("int", "float") and not low <= value <= high:
            limit = f"at least {low:g}" if high == math.inf else f"from {low:g} to {high:g}"
            raise ConfigError(f"{where}.{key} must be {limit}, not {value!r}")
        kwargs[key] = float(value) if expected == "float" else value
    missing = [
        name
        for name, f in fields.items()
        if f.default is attrs.NOTHING and name not in kwargs
    ]
    if missing:
        raise ConfigError(f"{where} needs {', '.join(missing)}")
    return cls(**kwargs)


def _check(config: Config) -> Config:
    """Rules across keys: unique names, pools on known servers."""
    for what, items, key in [
        ("hosts", config.hosts, "name"),
        ("storageservers", config.storageservers, "host"),
        ("storagepools", config.storagepools, "name"),
    ]:
        seen = set()
        for item in items:
            value = getattr(item, key)
            if value in seen:
                raise ConfigError(f"{what}: {key} {value!r} appears twice")
            seen.add(value)
    if not config.hosts:
        raise ConfigError("hosts: at least one compute host is needed")
    servers = {s.host for s in config.storageservers}
    for pool in config.storagepools:
        if pool.server not in servers:
            raise ConfigError(
                f"storagepools.{pool.name}: server {pool.server!r} is not in storageservers"
            )
    try:
        check_exposure(config.api)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if config.log.format not in ("text", "json"):
        raise ConfigError(f"log.format must be \"text\" or \"json\", not {config.log.format!r}")
    for cidr in config.storage.download_allow:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise ConfigError(
                f"storage.download_allow: {_key(cidr)!s} is not an address or network (CIDR)"
            ) from None
    # Names a client sees must follow the API's own name rule.
    from comet.names import check_name

    for host in config.hosts:
        if not check_name(host.name):
            raise ConfigError(f"hosts: name {host.name!r} is not a valid name")
    for host in config.hosts:
        if host.storage_address:
            try:
                ipaddress.ip_address(host.storage_address)
            except ValueError:
                raise ConfigError(
                    f"hosts: storage_address {_key(host.storage_address)!s} of {host.name!r}"
                    " is not an IP address"
                ) from None
    for pool in config.storagepools:
        if not check_name(pool.name):
            raise ConfigError(f"storagepools: name {pool.name!r} is not a valid name")
    try:
        check_network(config)
        for host in config.hosts:
            check_cpu_mode(host)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return config


def parse(text: str, source: str | None = None) -> Config:
    """Parse TOML text into a L{Config}."""
    where = source or "<config>"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{where}: not valid TOML: {e}") from None
    kwargs: dict[str, Any] = {"source": source}
    for key, value in data.items():
        if key not in _TABLES:
            raise ConfigError(
                f"unknown key {_key(key)} in {where} (known: {', '.join(sorted(_TABLES))})"
            )
        cls, many = _TABLES[key]
        if many:
            if not isinstance(value, list):
                raise ConfigError(f"{key} must be an array of tables ([[{key}]])")
            kwargs[key] = tuple(
                _build(cls, item, f"{key}[{i}]") for i, item in enumerate(value)
            )
        else:
            kwargs[key] = _build(cls, value, key)
    return _check(Config(**kwargs))


def load(path: str | None) -> Config:
    """
    Read the configuration file at C{path}, or the embedded default when
    C{path} is C{None}.
    """
    if path is None:
        return Config()
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read configuration file {path}: {e}") from None
    return parse(text, source=path)
