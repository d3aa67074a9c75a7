"""
The daemon's Prometheus metrics (C{GET /metrics}).

Each daemon has its own L{Metrics}: its own C{CollectorRegistry}, never the
library's global default, handed by constructor to what updates it (the
API's request accounting, each storage server's ssh runner), so that two
daemons in one process (the tests) never count into one another.

Two kinds of figures:

  - B{Counted as they happen} (counters and histograms, updated inline):
    requests by route, method and status with their latency, ssh commands
    with their latency.  An update is a few additions in memory, no I/O.
  - B{Read when scraped} (L{ModelCollector}): what the models already know
    (VMs by state and host, task counts, host and storage-server
    reachability, reconciler passes and repairs, the lease, pool space as
    last read).  L{ModelCollector.refresh} reads what needs the database
    (the VM list) before the text is made; nothing new is asked of a
    storage server per scrape (pool space is the figure of the last read
    Comet made, with its time).

Per-VM CPU, disk and network counters are read at scrape time only: one
bulk C{virConnectGetAllDomainStats} (C{cpu-total}, C{block}, C{interface})
per compute host with placed VMs (L{comet.virt._counters}), in parallel,
within the same bound.  They are kept from L{ModelCollector.refresh} to the
C{collect} right after it, then dropped: a daemon of 10,000 VMs holds no
per-VM figures between scrapes.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from twisted.logger import Logger

log = Logger()

#: The media type of the text format C{generate_latest} writes.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Methods counted by name; any other (a client may send anything) is C{other}.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})

#: The route label of a request no route matched (404, 405, a bad URI).
UNMATCHED = "(unmatched)"

#: Seconds the scrape-time reads may take before the last figures are served.
REFRESH_TIMEOUT = 5.0

#: Latency buckets (seconds) of an API request: most answers are milliseconds.
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

#: Latency buckets (seconds) of an ssh command: tens of ms to minutes (a send).
SSH_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class Metrics:
    """
    One daemon's registry and the instruments updated inline.

    @param timer: a monotonic clock in seconds (latencies are measured on it).
    """

    def __init__(self, timer: Callable[[], float] = time.monotonic):
        self.registry = CollectorRegistry(auto_describe=True)
        self.timer = timer
        self.requests = Counter(
            "comet_http_requests", "API requests answered, by route, method and status.",
            ("route", "method", "status"), registry=self.registry)
        self.request_seconds = Histogram(
            "comet_http_request_duration_seconds",
            "Time from a request's arrival to the end of its answer, by route and method.",
            ("route", "method"), buckets=REQUEST_BUCKETS, registry=self.registry)
        self.ssh_seconds = Histogram(
            "comet_ssh_command_duration_seconds",
            "Time an ssh command on a storage server took, by server, command and outcome.",
            ("server", "command", "outcome"), buckets=SSH_BUCKETS, registry=self.registry)
        self.collector: ModelCollector | None = None

    # Inline updates -----------------------------------------------------------

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        """A request was answered (L{comet.web.CometAPI} calls this as each one finishes)."""
        method = method if method in METHODS else "other"
        self.requests.labels(route, method, str(status)).inc()
        self.request_seconds.labels(route, method).observe(seconds)

    def ssh_command(self, server: str, command: str, ok: bool, seconds: float) -> None:
        """An ssh command ended (L{comet.remote.SSHRunner} calls this)."""
        self.ssh_seconds.labels(server, command, "ok" if ok else "failed").observe(seconds)

    # Scrape time ---------------------------------------------------------------

    def watch(self, models: Any, clock=None) -> "ModelCollector":
        """
        Export what C{models} know at each scrape (L{ModelCollector}); the
        reads a scrape makes are bounded on C{clock} (C{callLater}).
        """
        self.collector = ModelCollector(models, clock)
        self.registry.register(self.collector)
        return self.collector

    async def scrape(self) -> bytes:
        """The text format of every metric, the models' figures read now."""
        if self.collector is not None:
            await self.collector.refresh()
        return generate_latest(self.registry)


#: Per-VM counters: (metric name without _total, help, DomainCounters field, divisor).
_VM_COUNTERS = (
    ("comet_vm_cpu_seconds", "CPU time the VM used since it started, in seconds.", "cpu_ns", 1e9),
    ("comet_vm_disk_read_bytes", "Bytes read from all the VM's disks.", "disk_read_bytes", 1),
    ("comet_vm_disk_written_bytes", "Bytes written to all the VM's disks.",
     "disk_write_bytes", 1),
    ("comet_vm_disk_reads", "Read requests of all the VM's disks.", "disk_read_requests", 1),
    ("comet_vm_disk_writes", "Write requests of all the VM's disks.", "disk_write_requests", 1),
    ("comet_vm_network_receive_bytes", "Bytes the VM received on all its interfaces.",
     "net_receive_bytes", 1),
    ("comet_vm_network_transmit_bytes", "Bytes the VM sent on all its interfaces.",
     "net_transmit_bytes", 1),
    ("comet_vm_network_receive_packets", "Packets the VM received on all its interfaces.",
     "net_receive_packets", 1),
    ("comet_vm_network_transmit_packets", "Packets the VM sent on all its interfaces.",
     "net_transmit_packets", 1),
)


class ModelCollector:
    """
    The figures the models already hold, turned into metric families when
    the registry is collected.  C{collect} must not wait (the library calls
    it synchronously), so what needs the database is read before, by
    L{refresh}; the rest (reachability, counts kept in memory) is read in
    C{collect} itself.
    """

    def __init__(self, models: Any, clock=None):
        self._models = models
        self._clock = clock
        #: (host or "", state) -> VMs, from the last L{refresh} that ended.
        self.vm_states: dict[tuple[str, str], int] = {}
        #: Whether the last L{refresh} read the VMs.
        self.vms_read = False
        #: ((cluster, vm, host), L{DomainCounters}) of the running VMs, read
        #: by L{refresh} for the C{collect} that follows, which drops them.
        self.vm_counters: list[tuple[tuple[str, str, str], Any]] = []
        #: host -> 1 when its counters were read by the last L{refresh}, else 0.
        self.counters_read: dict[str, int] = {}

    async def refresh(self) -> None:
        """Read the VMs and their states (the same reads as C{GET /vms})."""
        from twisted.internet.defer import ensureDeferred

        vms = getattr(self._models, "vms", None)
        if vms is None:
            return
        d = ensureDeferred(vms.list())
        if self._clock is not None:
            d.addTimeout(REFRESH_TIMEOUT, self._clock)
        try:
            listed = await d
        except Exception as e:
            log.warn("metrics: the VMs could not be read: {error}", error=e)
            self.vms_read = False
            return
        counts: dict[tuple[str, str], int] = {}
        placed: dict[str, tuple[str, str, str]] = {}
        for vm in listed:
            key = (vm.record.host or "", vm.state)
            counts[key] = counts.get(key, 0) + 1
            if vm.record.host is not None:
                placed[vm.record.domain_name] = (vm.record.cluster, vm.record.name, vm.record.host)
        self.vm_states = counts
        self.vms_read = True
        await self._read_counters(placed)

    async def _read_counters(self, placed: dict[str, tuple[str, str, str]]) -> None:
        """The counters of the placed VMs: one bulk read per host, at once, bounded."""
        from twisted.internet.defer import DeferredList

        hypervisors = getattr(getattr(self._models, "context", None), "hypervisors", None)
        hosts = sorted({where[2] for where in placed.values()})
        if hypervisors is None or not hosts:
            self.vm_counters, self.counters_read = [], {}
            return
        reads = []
        for host in hosts:
            d = hypervisors.domain_counters(host)
            if self._clock is not None:
                d.addTimeout(REFRESH_TIMEOUT, self._clock)
            reads.append(d)
        counters, read = [], {}
        for host, (ok, value) in zip(hosts, await DeferredList(reads, consumeErrors=True)):
            read[host] = 1 if ok else 0
            if not ok:
                log.warn("metrics: the VM counters of {host} could not be read: {error}",
                         host=host, error=value.getErrorMessage())
                continue
            for domain in value:
                where = placed.get(domain.name)
                if where is not None and where[2] == host:
                    counters.append((where, domain))
        self.vm_counters, self.counters_read = counters, read

    def describe(self):
        return []   # families vary with the models: nothing to check at registration

    def collect(self):
        models = self._models
        yield from self._vms()
        yield from self._vm_counters()
        yield from self._tasks(getattr(models, "tasks", None))
        yield from self._hosts(models)
        yield from self._servers(getattr(models, "serverwatch", None))
        yield from self._reconciler(getattr(models, "reconciler", None))
        yield from self._lease(getattr(models, "locks", None))
        yield from self._pools(getattr(models, "storage", None))

    def _vms(self):
        ok = GaugeMetricFamily("comet_vms_read", "1 when the last scrape could read the VMs.")
        ok.add_metric([], 1 if self.vms_read else 0)
        yield ok
        family = GaugeMetricFamily("comet_vms", "VMs by state and compute host (\"\": not placed).",
                                   labels=("host", "state"))
        for (host, state), n in sorted(self.vm_states.items()):
            family.add_metric([host, state], n)
        yield family

    def _vm_counters(self):
        read = GaugeMetricFamily("comet_vm_counters_read", "1 when the last scrape read the VM"
                                 " counters of the compute host.", labels=("host",))
        for host, ok in sorted(self.counters_read.items()):
            read.add_metric([host], ok)
        yield read
        labels = ("cluster", "vm", "host")
        families = [(CounterMetricFamily(name, text, labels=labels), field, scale)
                    for name, text, field, scale in _VM_COUNTERS]
        for where, domain in self.vm_counters:
            for family, field, scale in families:
                value = getattr(domain, field)
                family.add_metric(where, value / scale if scale != 1 else value)
        self.vm_counters = []   # read again at the next scrape; not kept
        for family, _, _ in families:
            yield family

    def _tasks(self, tasks):
        if tasks is None:
            return
        ended = CounterMetricFamily("comet_tasks_ended", "Tasks this daemon ran that ended,"
                                    " by the kind of resource and how they ended.",
                                    labels=("kind", "status"))
        for (kind, status), n in sorted(tasks.ended_counts().items()):
            ended.add_metric([kind, status], n)
        yield ended
        running = GaugeMetricFamily("comet_tasks_running", "Tasks running now, by kind of resource.",
                                    labels=("kind",))
        for kind, n in sorted(tasks.running_counts().items()):
            running.add_metric([kind], n)
        yield running

    def _hosts(self, models):
        context = getattr(models, "context", None)
        hypervisors = getattr(context, "hypervisors", None)
        if hypervisors is None:
            return
        family = GaugeMetricFamily("comet_host_up", "1 when Comet is connected to the compute host.",
                                   labels=("host",))
        for status in hypervisors.statuses():
            family.add_metric([status.name], 1 if status.state == "connected" else 0)
        yield family

    def _servers(self, watch):
        if watch is None:
            return
        family = GaugeMetricFamily(
            "comet_storage_server_up", "1 when the storage server answered its last check"
            " (absent before the first).", labels=("server",))
        for server, state in sorted(watch.states.items()):
            family.add_metric([server], 1 if state == "reachable" else 0)
        yield family

    def _reconciler(self, reconciler):
        if reconciler is None:
            return
        passes = CounterMetricFamily("comet_reconcile_passes", "Reconciler passes ended, by outcome.",
                                     labels=("outcome",))
        for outcome, n in sorted(reconciler.pass_counts.items()):
            passes.add_metric([outcome], n)
        yield passes
        repairs = CounterMetricFamily("comet_reconcile_repairs",
                                      "Repairs the reconciler made (one per sentence it logged).")
        repairs.add_metric([], reconciler.repairs_total)
        yield repairs
        last = reconciler.last_pass
        if last is not None:
            ended = GaugeMetricFamily("comet_reconcile_last_pass_timestamp_seconds",
                                      "When the last reconciler pass ended (Unix time).")
            ended.add_metric([], last.ended)
            yield ended

    def _lease(self, locks):
        if locks is None:
            return
        family = GaugeMetricFamily("comet_lease_held", "1 while this daemon holds its database lease.")
        family.add_metric([], 1 if locks.leased else 0)
        yield family

    def _pools(self, storage):
        pools = getattr(storage, "pool_set", None)
        if pools is None:
            return
        known = pools.known_space()
        free = GaugeMetricFamily("comet_pool_available_bytes", "A storage pool's free space, as"
                                 " last read by Comet (no read is made for a scrape).",
                                 labels=("pool", "server"))
        size = GaugeMetricFamily("comet_pool_capacity_bytes", "A storage pool's capacity, as last read.",
                                 labels=("pool", "server"))
        when = GaugeMetricFamily("comet_pool_space_read_timestamp_seconds",
                                 "When a pool's space was last read (Unix time).",
                                 labels=("pool", "server"))
        for name, (space, read_at) in sorted(known.items()):
            labels = [name, space.pool.server]
            free.add_metric(labels, space.available)
            size.add_metric(labels, space.capacity)
            when.add_metric(labels, read_at)
        yield free
        yield size
        yield when
