"""
The daemon: L{makeService} turns a configuration into the service tree that
C{twistd} runs.

Start order matters and is kept here, in one place: the database is migrated,
the daemon's lease on it is taken (a live daemon already over it: refuse to
start), and tasks a previous process left running are marked failed *before*
the API listens, so no request ever sees a half-migrated schema or a stale task.  Stop
order is the reverse: stop listening, let requests in flight finish (bounded),
stop the adapters (killing their children), then close SQLite.
"""

from __future__ import annotations

import gc
import signal
from typing import Any

from twisted.application.service import MultiService
from twisted.internet import endpoints
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.logger import Logger

from comet import config as _config
from comet.memory import limit_arenas
from comet.model import Models, make_models
from comet.store import Database
from comet.virt import Hypervisors

log = Logger()

#: Seconds that requests in flight get to finish when the daemon stops.
DRAIN_TIMEOUT = 1.5


class CometService(MultiService):
    """
    The whole daemon.

    @ivar ready: fires when the API listens (or fails with why it could not).
    @ivar port: the API's listening port once ready.
    @ivar whole_process: the service is all the process runs (C{twistd}): then
        what start-up made is taken out of the garbage collector's full scans
        (L{freeze_startup_heap}) just before the API listens.
    """

    def __init__(self, config: _config.Config, reactor: Any = None, whole_process: bool = False):
        super().__init__()
        self.whole_process = whole_process
        if reactor is None:
            from twisted.internet import reactor  # type: ignore[no-redef]
        self.config = config
        self.reactor = reactor
        self.db = Database(config.database.path)
        self.models: Models | None = None
        self.hypervisors: Hypervisors | None = None
        self.api = None
        self.port = None
        self.manhole_port = None
        self.ready: Deferred | None = None
        self.stallwatch = None
        self.password_checks = None
        self.reloader = None
        self._previous_sighup: Any = None

    def setServiceParent(self, parent):
        """
        With C{[log] format = "json"}, also hand C{parent} (twistd's
        application) the JSON log observer: twistd logs to the observer its
        application carries (L{comet.logs}).
        """
        if self.config.log.format == "json" and hasattr(parent, "setComponent"):
            from twisted.logger import ILogObserver

            from comet.logs import json_observer

            if parent.getComponent(ILogObserver, None) is None:
                parent.setComponent(ILogObserver, json_observer())
        return super().setServiceParent(parent)

    def namespace(self) -> dict:
        """What the manhole shows: the live service objects."""
        return {
            "service": self,
            "config": self.config,
            "db": self.db,
            "models": self.models,
            "hypervisors": self.hypervisors,
            "api": self.api,
            "reactor": self.reactor,
        }

    def startService(self) -> None:
        super().startService()
        self.ready = ensureDeferred(self._start())
        self.ready.addErrback(self._failed_to_start)

    async def _start(self) -> None:
        from comet.web import CometAPI
        from comet.web.tasks import target_uri

        if self.config.debug.stall_ms > 0:
            from comet.stallwatch import StallWatch

            self.stallwatch = StallWatch(self.reactor, self.config.debug.stall_ms / 1000)
            self.stallwatch.start()
        self.db.open()
        self.hypervisors = Hypervisors(self.reactor, self.config.hosts, self.config.compute)
        self.hypervisors.setServiceParent(self)
        self.models = make_models(self.db, self.hypervisors, self.config, self.reactor,
                                  address=target_uri)
        # Before anything is marked failed or repaired: a live daemon over the
        # same database owns those tasks and locks; refuse to start then.
        await self.models.locks.take_lease(self.config.database.path)
        self.models.locks.start_renewing()
        if self.config.debug.kill_at_file:
            from comet.debug import KillAt

            log.warn("[debug] kill_at_file is set: this daemon kills itself at the steps"
                     " {path} names (for crash tests only)", path=self.config.debug.kill_at_file)
            self.models.intents.halt = KillAt(self.config.debug.kill_at_file)
        await self.models.tasks.recover()
        # Which hosts are in maintenance, before anything places a VM.
        await self.models.hosts.load()
        # Before the API listens: what a crash left half done is finished or
        # undone first (a backend that does not answer is retried later).
        try:
            await self.models.reconciler.run()
        except Exception:
            log.failure("reconciling at start failed")
        self.models.reconciler.start(self.config.reconcile.interval)
        self.models.tasks.start_pruning(
            self.config.tasks.keep_days, self.config.tasks.prune_interval
        )
        self.models.serverwatch.start(self.config.storage.watch_interval)
        from comet.web import (
            Authenticator,
            Guard,
            LoginThrottle,
            OriginPolicy,
            PasswordChecks,
            api_site,
        )

        api = self.config.api
        users = self.models.users
        throttle = LoginThrottle(
            self.reactor, api.login_failures, api.login_failures_per_user, api.login_window
        )
        self.password_checks = PasswordChecks(
            self.reactor, api.password_threads, api.password_checks,
            api.password_checks_per_address,
        )
        authenticator = Authenticator(
            users, self.reactor, throttle, enabled=api.auth, checks=self.password_checks,
            scrape_token=read_scrape_token(self.config.metrics.token_file),
        )
        origins = OriginPolicy(check_host=not api.auth, allowed_hosts=api.allowed_hosts)
        request_log = None
        if self.config.log.format == "json":
            from comet.logs import RequestLog

            request_log = RequestLog()
        self.api = CometAPI(
            self.models, guard=Guard(authenticator, users, api.max_body, self.reactor, origins),
            metrics=self.models.metrics, request_log=request_log, clock=self.reactor,
        )
        if api.auth and await users.count() == 0:
            log.warn(
                "no user exists yet: make the first admin with"
                " 'comet-admin user add NAME --role admin' and 'comet-admin token create NAME'"
            )
        site = api_site(self.api.resource(), api.max_body)
        if self.whole_process:
            freeze_startup_heap()
        api_endpoint = endpoints.serverFromString(self.reactor, self.config.api.endpoint)
        self.port = await api_endpoint.listen(site)
        log.info("Comet API listening on {endpoint}", endpoint=self.config.api.endpoint)
        if self.config.manhole is not None:
            from comet.manhole import manhole_factory

            factory = manhole_factory(self.config.manhole, self.namespace())
            manhole_endpoint = endpoints.serverFromString(
                self.reactor, self.config.manhole.endpoint
            )
            self.manhole_port = await manhole_endpoint.listen(factory)
            log.info("manhole listening on {endpoint}", endpoint=self.config.manhole.endpoint)
        from comet.reload import Reloader

        self.reloader = Reloader(self.config, self.models, self.hypervisors,
                                 make_runner=self._make_runner, prepare=_private_control_dir)
        if self.whole_process:
            self._previous_sighup = signal.signal(signal.SIGHUP, self._sighup)

    def _make_runner(self, server: _config.StorageServerConfig,
                     storage: _config.StorageConfig):
        """The runner of a storage server a reload adds (those of the start: L{make_models})."""
        from comet.remote import SSHRunner

        return SSHRunner(self.reactor, server, storage, metrics=self.models.metrics)

    def _sighup(self, signum, frame) -> None:
        """In the signal handler: the reload runs in the reactor's next turn."""
        self.reactor.callFromThread(self.reload)

    def reload(self) -> Deferred:
        """
        Reread the configuration file and apply what can be applied live
        (L{comet.reload}); fires when done.  Before the API listens there is
        nothing to reload yet: it is refused with a log line.
        """
        if self.reloader is None or not self.running:
            log.warn("reload ignored: the daemon is not serving yet (or is stopping)")
            return succeed(None)

        def applied(outcome):
            self.config = self.reloader.config
            return outcome

        return ensureDeferred(self.reloader.reload()).addCallback(applied)

    def _failed_to_start(self, failure):
        log.critical("Comet cannot start: {reason}", reason=failure.getErrorMessage())
        if self.models is not None and self.models.locks is not None:
            self.models.locks.stop_renewing()
        if self.models is not None and self.models.tasks is not None:
            self.models.tasks.stop_pruning()
        # Stop what did start (the libvirt threads, ssh runners).
        MultiService.stopService(self)
        self._stop_stallwatch()
        # Under twistd (the service has a parent application) there is nothing
        # to run without the API: stop the process.
        if self.parent is not None and self.reactor.running:
            self.reactor.stop()
        return failure

    def stopService(self) -> Deferred:
        return ensureDeferred(self._stop())

    async def _stop(self) -> None:
        if self._previous_sighup is not None:
            signal.signal(signal.SIGHUP, self._previous_sighup)
            self._previous_sighup = None
        self.reloader = None
        if self.models is not None and self.models.reconciler is not None:
            self.models.reconciler.stop()
        if self.models is not None and self.models.tasks is not None:
            self.models.tasks.stop_pruning()
        if self.models is not None and self.models.serverwatch is not None:
            self.models.serverwatch.stop()
        for port in (self.port, self.manhole_port):
            if port is not None:
                await port.stopListening()
        self.port = self.manhole_port = None
        if self.api is not None:
            self.api.close_streams()   # a stream never ends by itself
            drained = self.api.drain()
            drained.addTimeout(DRAIN_TIMEOUT, self.reactor)
            try:
                await drained
            except Exception:
                log.warn("stopping with requests still in flight")
        if self.password_checks is not None:
            self.password_checks.stop()
        # The adapters (libvirt threads, ssh children) stop after the API.
        await MultiService.stopService(self)
        if self.models is not None and self.models.storage is not None:
            await self.models.storage.stop()
            if self.models.networks is not None:
                await self.models.networks.stop()
        if self.models is not None and self.models.locks is not None:
            try:
                await self.models.locks.release_lease()
            except Exception:
                log.failure("releasing the daemon's lease")
        self.db.close()
        self._stop_stallwatch()
        log.info("Comet stopped")

    def _stop_stallwatch(self) -> None:
        if self.stallwatch is not None:
            self.stallwatch.stop()
            self.stallwatch = None


def read_scrape_token(path: str) -> str | None:
    """
    The scrape token in C{path} (C{[metrics] token_file}; surrounding blanks
    dropped), C{None} when no file is configured.  A file that cannot be
    read, or is empty, stops the start: a Prometheus server configured with
    a token would otherwise be refused without anyone knowing why.
    """
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            token = f.read().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise _config.ConfigError(f"metrics.token_file: cannot read {path}: {e}") from None
    if len(token) < 16 or any(c.isspace() for c in token):
        raise _config.ConfigError(
            f"metrics.token_file: {path} must hold one token of at least 16 characters"
            " and no blanks")
    return token


def freeze_startup_heap() -> None:
    """
    Take every object alive now out of the cyclic garbage collector's scans.

    Start-up makes a few hundred thousand objects that live as long as the
    process (modules, classes, the route and schema tables, the
    configuration).  CPython's full collection walks all of them each time,
    and under load it runs about twice a second: measured with C{bench/api.py}
    at 1,000 VMs, each took 42-55 ms, a pause of the reactor that was most of
    the p99 of every figure (C{GET /cluster} during 50 starts, the list of
    1,000).  Frozen, a full collection takes ~1.3 ms.  Garbage first, so that
    none of it is kept for ever; what dies later among the frozen objects is
    never reclaimed, which is why only start-up's objects are frozen.
    """
    gc.collect()
    gc.freeze()


def makeService(
    config: _config.Config | str | None = None, whole_process: bool = False
) -> CometService:
    """
    The service tree for C{config}: a L{Config}, the path of a TOML file, or
    C{None} for the embedded default.  C{whole_process}: see L{CometService}
    (C{twistd comet} and C{comet.tac} set it; tests that run a service in
    their own process do not).

    A configuration that cannot be used stops the program with one line that
    names the file or key (not a traceback).
    """
    try:
        if not isinstance(config, _config.Config):
            config = _config.load(config)
        config = _private_control_dir(config)
    except _config.ConfigError as e:
        raise SystemExit(f"comet: configuration error: {e}")
    if whole_process:
        # before the service's thread pools start (L{comet.memory})
        limit_arenas()
    return CometService(config, whole_process=whole_process)


def _private_control_dir(config: _config.Config) -> _config.Config:
    """
    C{config} with its ssh control directory resolved, made and checked
    (L{comet.remote.private_control_dir}) when there are storage servers: a directory
    another user could plant sockets in stops the start here, as a
    configuration error, instead of failing each command later.
    """
    if not config.storageservers:
        return config
    import attrs

    from comet.remote import private_control_dir

    directory = private_control_dir(config.storage.control_dir, config.database.path)
    return attrs.evolve(config, storage=attrs.evolve(config.storage, control_dir=directory))

