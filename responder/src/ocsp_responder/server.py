"""``ocsp-responder serve``: the WSGI app under an embedded granian server.

One process tree in the foreground, fit for a systemd ``ExecStart``: the main process
builds the service (:func:`ocsp_responder.loader.load_service`), opens the one
listening socket and forks ``[server] workers`` granian workers (native HTTP/1.1
parsing and connections, one event loop each) that inherit both; each serves the app
through :class:`~ocsp_responder.rsgi.RSGIApp`. Every worker accepts on the same
socket, so a worker that is replaced resets no queued connection. A worker that dies
is replaced after :data:`RESPAWN_DELAY` seconds (two deaths of one worker within
5.5 s: granian stops the service, exit code 1, for systemd to restart it).

The socket: ``HOST:PORT``; ``unix:PATH`` (mode 0660, a stale socket file at PATH is
removed first); or, under systemd socket activation (``LISTEN_FDS``: the role's
``ocsp-responder.socket`` for a ``unix:PATH`` bind), the socket systemd handed over,
whatever ``bind`` says.

Signals:

* SIGHUP: re-read the config file in the main process. A config with problems is
  logged and the running one kept; a good one is taken by fresh workers, started one
  at a time while the old ones drain. ``bind`` and ``metrics_dir`` keep their values
  until a restart (a warning names the new value).
* SIGTERM, SIGINT: graceful stop: stop accepting, finish in-flight requests (at most
  :data:`GRACEFUL_TIMEOUT` seconds), exit 0.

Before anything else ``serve`` makes ``[server] metrics_dir`` prometheus_client's
multiprocess directory (emptied of the ``*.db`` files of an earlier run), so the
metrics of all workers add up; the gauges of a replaced worker are forgotten
(:mod:`ocsp_responder.metrics`). A directory ``serve`` made under the system's
temporary directory is removed when it stops.

The workers share one pre-signed store (:mod:`ocsp_responder.cache`), the SQLite
file :data:`PRESIGNED_STORE` in ``$RUNTIME_DIRECTORY`` (systemd's
``RuntimeDirectory=``) or in a directory of its own under the temporary directory;
``serve`` empties it at start, so a restart signs afresh.

HTTP limits: a request head larger than
:func:`~ocsp_responder.config.request_head_limit` of ``max_request_size`` gets HTTP
431 from granian, a longer GET target than
:func:`~ocsp_responder.config.max_request_target` 414 from the app, a body over
``max_request_size`` 413. A request head must arrive within
:data:`HEADER_READ_TIMEOUT` seconds, and an idle keep-alive connection is closed
after as long; a POST body gets :data:`~ocsp_responder.rsgi.BODY_TIMEOUT` (then 408).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

from granian._granian import ListenerSpec, SocketHolder, UnixListenerSpec
from granian.constants import HTTPModes, Interfaces, Loops
from granian.http import HTTP1Settings
from granian.log import LogLevels
from granian.server.mp import MPServer

from . import metrics
from .config import ConfigError, read_config, request_head_limit
from .loader import LOG_FORMAT, Service, load_service, print_problems, setup_logging
from .rsgi import RSGIApp
from .status_data import utc_now

log = logging.getLogger("ocsp_responder")

#: The pre-signed store's file name, in ``$RUNTIME_DIRECTORY`` under systemd (a
#: tmpfs), else in a directory ``serve`` makes under the temporary directory.
PRESIGNED_STORE = "presigned.sqlite3"

#: Seconds a worker gets to finish its in-flight requests at a stop or replacement
#: before it is killed.
GRACEFUL_TIMEOUT = 10
#: Seconds a request head may take to arrive; also how long an idle keep-alive
#: connection is kept.
HEADER_READ_TIMEOUT = 10
#: Seconds between starting a fresh worker and stopping the one it replaces (SIGHUP).
RESPAWN_DELAY = 1.0
#: Pending connections the listening socket queues (granian's default).
BACKLOG = 1024
#: Mode of a ``unix:PATH`` socket that ``serve`` creates itself.
UNIX_SOCKET_MODE = 0o660


def _parse_bind(bind: str) -> tuple[str, int, Path | None]:
    """``HOST:PORT`` or ``unix:PATH`` (checked by :func:`~ocsp_responder.config.check_bind`)
    as granian's (address, port, uds)."""
    if bind.startswith("unix:"):
        return "127.0.0.1", 0, Path(bind[len("unix:") :])
    host, _, port = bind.rpartition(":")
    return host.strip("[]"), int(port), None


def _activated_socket() -> tuple[int, bool] | None:
    """The socket systemd handed over (``LISTEN_PID`` is this process, ``LISTEN_FDS`` >=
    1, sd_listen_fds(3)): (file descriptor 3, whether it is a unix socket); None when
    not socket-activated. The variables are removed, so workers do not see them."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    try:
        count = int(os.environ.get("LISTEN_FDS", "0"))
    except ValueError:
        return None
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    if count < 1:
        return None
    if count > 1:
        log.warning("systemd handed over %d sockets: serving on the first only", count)
    probe = socket.socket(fileno=3)
    try:
        return 3, probe.family == socket.AF_UNIX
    finally:
        probe.detach()


def log_dictconfig() -> dict[str, Any]:
    """granian's logging config: its lines in our format, on standard error."""
    handler = {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"}
    return {
        "formatters": {
            "generic": {"()": "logging.Formatter", "fmt": LOG_FORMAT},
            "access": {"()": "logging.Formatter", "fmt": "%(message)s"},
        },
        "handlers": {
            "console": {**handler, "formatter": "generic"},
            "access": {**handler, "formatter": "access"},
        },
    }


class _Granian(MPServer):
    """granian's multi-process server with one shared socket opened in the main process
    (or systemd's), and the gauges of replaced workers forgotten."""

    display_bind = ""

    @property
    def _bind_addr_fmt(self) -> str:
        return self.display_bind

    def _init_shared_socket(self) -> None:
        activated = _activated_socket()
        holder: Any  # granian's SocketHolder (its stub lacks the constructor's arguments)
        if activated is not None:
            fd, is_uds = activated
            holder = SocketHolder(fd, is_uds, self.backlog)  # type: ignore[call-arg]
            self.bind_uds = None  # systemd's file: never removed at shutdown
            self.display_bind = f"the socket systemd handed over (fd {fd})"
        elif self.bind_uds is not None:
            path = Path(self.bind_uds)
            if path.is_socket():  # left by a run that did not stop cleanly
                path.unlink()
            holder = UnixListenerSpec(str(path), self.backlog, UNIX_SOCKET_MODE).build()
            self.display_bind = f"unix:{path}"
        else:
            holder = ListenerSpec(self.bind_addr, self.bind_port, self.backlog).build()
            self.display_bind = f"{self.bind_addr}:{self.bind_port}"
        self._shd = holder
        self._ssp = None
        self._sfd = holder.get_fd()
        self._sso = socket.socket(fileno=self._sfd)
        self._sso.set_inheritable(True)

    def _respawn_workers(
        self,
        workers: list[int],
        spawn_target: Any,  # noqa: ANN401 (granian's untyped callables)
        target_loader: Any,  # noqa: ANN401
        delay: float = 0,
    ) -> None:
        replaced = [self.wrks[idx].inner.pid for idx in workers]
        super()._respawn_workers(workers, spawn_target, target_loader, delay)
        for pid in replaced:
            if pid is not None:
                metrics.mark_process_dead(pid)


class GranianServer:
    """granian embedded: the service is built in the main process, workers inherit it.

    Args:
        path: the config file (re-read on SIGHUP).
        service: the service built from it at start.
        bind: overrides ``[server] bind`` (None: the config's).
        workers: overrides ``[server] workers`` (None: the config's).
        metrics_dir: the multiprocess metrics directory in use (fixed until restart).
        store: the pre-signed store shared by all workers (fixed until restart).
    """

    def __init__(
        self,
        path: str,
        service: Service,
        *,
        bind: str | None,
        workers: int | None,
        metrics_dir: Path,
        store: Path,
    ) -> None:
        self.path = path
        self.store = store
        self.service = service
        self.bind = bind
        self.metrics_dir = metrics_dir
        self.started_metrics_dir = service.config.server.metrics_dir
        self.started_bind = bind or service.config.server.bind
        server = service.config.server
        address, port, uds = _parse_bind(self.started_bind)
        self.granian = _Granian(
            target="ocsp_responder",  # unused: workers load the app from self
            address=address,
            port=port,
            uds=uds,
            interface=Interfaces.RSGI,
            workers=workers or server.workers,
            loop=Loops.asyncio,
            http=HTTPModes.http1,
            websockets=False,
            backlog=BACKLOG,
            http1_settings=HTTP1Settings(
                header_read_timeout=HEADER_READ_TIMEOUT * 1000,  # milliseconds
                keep_alive=True,
                max_buffer_size=request_head_limit(server.max_request_size),
            ),
            log_level=LogLevels(server.log_level),
            log_dictconfig=log_dictconfig(),
            log_access=server.access_log,
            respawn_failed_workers=True,
            respawn_interval=RESPAWN_DELAY,
            workers_kill_timeout=GRACEFUL_TIMEOUT,
        )
        self.granian.on_reload(self._reload)

    def _reload(self) -> None:
        """SIGHUP: replace the service with one built from the file; keep it on problems."""
        try:
            service = load_service(self.path, presigned_store=self.store)
        except ConfigError as exc:
            log.error("reload refused, keeping the running config:\n%s", exc)
            return
        log.info("reloaded config %s", self.path)
        server = service.config.server
        if server.metrics_dir != self.started_metrics_dir:
            log.warning(
                "server.metrics_dir changed: it takes effect at the next start; "
                "metrics stay in %s",
                self.metrics_dir,
            )
        if self.bind is None and server.bind != self.started_bind:
            where = (
                "the socket systemd handed over stays in use until the service and its "
                "socket unit are restarted"
                if self.granian.display_bind.startswith("the socket systemd")
                else f"{self.started_bind} stays in use until the service is restarted"
            )
            log.warning("server.bind changed to %s: %s", server.bind, where)
        self.service = service

    def _worker_app(self) -> Any:  # noqa: ANN401 (an RSGIApp; granian wants a callable)
        """granian's loader, in each worker after the fork: the RSGI app (an
        :class:`~ocsp_responder.rsgi.RSGIApp`)."""
        service = self.service
        service.app.prepare()  # the status watcher of this worker
        return RSGIApp(service.app, service.config.server.max_request_size)

    def run(self) -> None:
        """Serve until SIGTERM/SIGINT (granian's loop, in this process)."""
        self.granian.serve(target_loader=self._worker_app, wrap_loader=False)


def serve(path: str, bind: str | None, workers: int | None) -> int:
    """Run the responder under granian until SIGTERM/SIGINT.

    Args:
        path: the config file.
        bind: overrides ``server.bind``.
        workers: overrides ``server.workers``.

    Returns:
        The exit code (1 when the initial config is invalid or the metrics directory
        cannot be used).
    """
    setup_logging("info")
    try:
        configured = read_config(path)[0].server.metrics_dir  # problems: reported below
    except ConfigError as exc:
        print_problems(exc)
        return 1
    metrics_dir = configured or metrics.default_dir()
    runtime = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    # made under the temporary directory: ours to remove at exit
    temporary = [] if runtime else [Path(tempfile.mkdtemp(prefix="ocsp-responder-presigned-"))]
    if configured is None and not runtime:
        temporary.append(metrics_dir)
    store = Path(runtime or temporary[0]) / PRESIGNED_STORE
    owner = os.getpid()
    try:
        return _serve(path, bind, workers, metrics_dir, store)
    finally:
        if os.getpid() == owner:  # not in a worker leaving
            for directory in temporary:
                shutil.rmtree(directory, ignore_errors=True)


def _fresh_store(store: Path) -> None:
    """Remove the pre-signed store an earlier run left (its WAL and shared-memory
    files too): every start of ``serve`` begins with an empty one.

    Raises:
        OSError: one of them exists and cannot be removed.
    """
    for name in (store.name, store.name + "-wal", store.name + "-shm"):
        (store.parent / name).unlink(missing_ok=True)


def _serve(
    path: str, bind: str | None, workers: int | None, metrics_dir: Path, store: Path
) -> int:
    """:func:`serve` once the metrics directory and the pre-signed store are chosen."""
    try:
        metrics.use_multiprocess_dir(metrics_dir)
    except metrics.MetricsDirError as exc:
        print(f"{path}: server.metrics_dir: cannot use {exc}", file=sys.stderr)
        return 1
    log.info("metrics of all processes are kept in %s", metrics_dir)
    try:
        _fresh_store(store)
    except OSError as exc:
        print(f"{store}: cannot remove the last run's pre-signed store: {exc}", file=sys.stderr)
        return 1
    log.info("pre-signed responses of all workers are kept in %s", store)
    try:
        service = load_service(path, presigned_store=store)
    except ConfigError as exc:
        print_problems(exc)
        return 1
    setup_logging(service.config.server.log_level)
    now = utc_now()
    for issuer in service.issuers.issuers:
        log.info("%s", issuer.describe())
        for warning in issuer.warnings(now):
            log.warning("%s", warning)
        problem = issuer.unavailable(now)
        if problem is not None:
            log.error("answering tryLater: %s", problem)
    GranianServer(
        path, service, bind=bind, workers=workers, metrics_dir=metrics_dir, store=store
    ).run()
    return 0
