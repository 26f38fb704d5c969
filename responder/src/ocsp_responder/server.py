"""``ocsp-responder serve``: the WSGI app under an embedded gunicorn arbiter.

One process tree in the foreground, fit for a systemd ``ExecStart``: the arbiter
builds the service (:func:`ocsp_responder.loader.load_service`) and forks
``[server] workers`` workers (gthread, ``threads`` connections each) that inherit
it; a worker that dies is replaced. Signals are gunicorn's:

* SIGHUP: re-read the config file. A config with problems is logged and the running
  one kept; a good one replaces it in freshly started workers (old ones drain).
  Under systemd socket activation (``LISTEN_FDS``: the role's ``ocsp-responder.socket``
  for a ``unix:PATH`` bind) the sockets systemd handed over are kept whatever
  ``bind`` says now (a warning names the new value): a new bind takes effect when
  the socket unit and the service are restarted.
* SIGTERM: graceful stop: stop accepting, finish in-flight requests, exit.

Before anything else ``serve`` makes ``[server] metrics_dir`` prometheus_client's
multiprocess directory (emptied of the ``*.db`` files of an earlier run), so the
metrics of all workers add up; gunicorn's ``child_exit`` hook forgets the gauges of
a worker that exited (:mod:`ocsp_responder.metrics`). A directory ``serve`` made
under the system's temporary directory is removed when it stops.

The workers share one pre-signed store (:mod:`ocsp_responder.cache`), the SQLite
file :data:`PRESIGNED_STORE` in ``$RUNTIME_DIRECTORY`` (systemd's
``RuntimeDirectory=``) or in a directory of its own under the temporary directory;
``serve`` empties it at start, so a restart signs afresh.

HTTP limits: the request line is limited to
:func:`~ocsp_responder.config.request_line_limit` of ``max_request_size`` (a longer
GET target gets HTTP 414 from gunicorn); bodies are bounded by the app (413).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication

from . import metrics
from .config import ConfigError, read_config, request_line_limit
from .loader import Service, load_service, print_problems, setup_logging
from .status_data import utc_now

log = logging.getLogger("ocsp_responder")

#: The pre-signed store's file name, in ``$RUNTIME_DIRECTORY`` under systemd (a
#: tmpfs), else in a directory ``serve`` makes under the temporary directory.
PRESIGNED_STORE = "presigned.sqlite3"

#: gunicorn's worker timeout, graceful stop timeout and keep-alive, seconds.
WORKER_TIMEOUT = 30
GRACEFUL_TIMEOUT = 10
KEEPALIVE = 5


class GunicornServer(BaseApplication):  # type: ignore[misc]
    """gunicorn embedded: the service is built in the arbiter, workers inherit it.

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
        self.workers = workers
        self.metrics_dir = metrics_dir
        self.started_metrics_dir = service.config.server.metrics_dir
        # systemd socket activation (gunicorn takes the sockets and clears these
        # variables when its arbiter starts, after the first load_config)
        self.socket_activated = os.environ.get("LISTEN_PID") == str(os.getpid()) and (
            os.environ.get("LISTEN_FDS", "0") not in ("", "0")
        )
        self.started_bind = bind or service.config.server.bind
        self.loaded = False
        super().__init__()

    def load_config(self) -> None:
        """gunicorn's hook, at start and on SIGHUP: (re)build the service, apply settings."""
        if self.loaded:  # SIGHUP: re-read the file
            self._reload()
        self.loaded = True
        server = self.service.config.server
        bind = self.bind or server.bind
        if self.socket_activated and bind != self.started_bind:
            # gunicorn would close systemd's sockets and bind the new address itself
            log.warning(
                "server.bind changed to %s: the sockets systemd handed over stay in use "
                "until the service and its socket unit are restarted",
                bind,
            )
            bind = self.started_bind
        settings: dict[str, Any] = {
            "bind": [bind],
            "workers": self.workers or server.workers,
            # gthread keeps nginx's upstream connections alive (sync workers close
            # every connection, which costs more than the response itself).
            "worker_class": "gthread",
            "threads": server.threads,
            "timeout": WORKER_TIMEOUT,
            "graceful_timeout": GRACEFUL_TIMEOUT,
            "keepalive": KEEPALIVE,
            "limit_request_line": request_line_limit(server.max_request_size),
            "loglevel": server.log_level,
            "errorlog": "-",
            "accesslog": "-" if server.access_log else None,
            "proc_name": "ocsp-responder",
            "post_worker_init": _start_watcher,
            "child_exit": _child_exit,
            # gunicorn >= 27 opens a control socket under $HOME; a service has no use
            # for it (and ProtectHome= forbids it).
            "control_socket_disable": True,
        }
        for key, value in settings.items():
            if key in self.cfg.settings:  # skip settings this gunicorn version lacks
                self.cfg.set(key, value)

    def _reload(self) -> None:
        """Replace the service with one built from the file; keep it on problems."""
        try:
            service = load_service(self.path, presigned_store=self.store)
        except ConfigError as exc:
            log.error("reload refused, keeping the running config:\n%s", exc)
            return
        log.info("reloaded config %s", self.path)
        if service.config.server.metrics_dir != self.started_metrics_dir:
            log.warning(
                "server.metrics_dir changed: it takes effect at the next start; "
                "metrics stay in %s",
                self.metrics_dir,
            )
        self.service = service

    def load(self) -> Any:  # noqa: ANN401 (the WSGI callable, as gunicorn types it)
        """gunicorn's hook in each worker: the WSGI app."""
        return self.service.app


def _start_watcher(worker: Any) -> None:  # noqa: ANN401 (gunicorn Worker, untyped)
    """post_worker_init: start the status watcher before the worker serves."""
    worker.wsgi.prepare()


def _child_exit(server: Any, worker: Any) -> None:  # noqa: ANN401 (gunicorn, untyped)
    """child_exit: forget the gauges of a worker that exited."""
    metrics.mark_process_dead(worker.pid)


def serve(path: str, bind: str | None, workers: int | None) -> int:
    """Run the responder under gunicorn until SIGTERM/SIGINT.

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
        if os.getpid() == owner:  # not in a gunicorn worker leaving
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
    GunicornServer(
        path, service, bind=bind, workers=workers, metrics_dir=metrics_dir, store=store
    ).run()
    return 0
