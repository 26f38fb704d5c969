"""The one place a configuration file becomes a running service's parts.

Config -> issuers (certificates, signer keys, status data) -> status watcher ->
responder (with its pre-signed cache) -> monitoring -> WSGI app: built here, and
only here, by :func:`load_service`. ``serve``, ``check-config`` and
:func:`ocsp_responder.http.make_app` all go through it; :func:`print_problems` is
how every command reports a :class:`~ocsp_responder.config.ConfigError`, and
:func:`setup_logging` how every long-running command logs.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from .cache import ResponseCache
from .config import Config, ConfigError, read_config
from .http import OCSPApp
from .issuers import IssuerSet, load_issuers
from .monitoring import Monitoring
from .responder import Responder
from .status_data import Clock, DataWatcher, utc_now


@dataclass(frozen=True)
class Service:
    """Everything one configuration file builds, for one process.

    Attributes:
        config: the validated configuration.
        issuers: the loaded issuers and their status data.
        watcher: re-checks the status data every ``reload_interval`` (started on the
            first request in each process, or by ``serve`` in each worker).
        responder: answers decoded requests.
        app: the WSGI callable.
    """

    config: Config
    issuers: IssuerSet
    watcher: DataWatcher
    responder: Responder
    app: OCSPApp


def load_service(
    config_path: str | Path,
    *,
    persist: bool = True,
    check_validity: bool = False,
    clock: Clock = utc_now,
    presigned_store: Path | None = None,
) -> Service:
    """Load a config file and everything it names into a ready :class:`Service`.

    The data watcher is not started (see :meth:`DataWatcher.ensure_running`).

    Args:
        config_path: the TOML file.
        persist: keep accepted status data in ``[server] state_dir`` (``serve``);
            False reads without writing anything (``check-config``).
        check_validity: treat a signer outside its validity period as a config
            problem; ``serve`` starts anyway and answers tryLater for that issuer.
        clock: returns the current time, aware UTC; every part gets this one.
        presigned_store: the SQLite file of pre-signed responses shared by the
            processes of the host (``serve``: see :mod:`ocsp_responder.cache`); None
            keeps them in memory, private to each process.

    Raises:
        ConfigError: every problem found, each line naming file, key path and problem.
    """
    config, problems = read_config(config_path)
    issuers = load_issuers(
        config, problems, persist=persist, clock=clock, check_validity=check_validity
    )
    server = config.server
    watcher = DataWatcher([issuer.data for issuer in issuers.issuers], server.reload_interval)
    cache = ResponseCache(
        server.cache_size, server.cache_bytes, server.refresh_fraction, path=presigned_store
    )
    responder = Responder(issuers, cache, clock, max_live_signings=server.max_live_signings)

    def prepare() -> None:
        """Before each request (and at worker start under ``serve``): the watcher
        running and the pre-signed store open in this process."""
        watcher.ensure_running()
        cache.open()

    app = OCSPApp(
        responder,
        Monitoring(issuers, server, clock, before_scrape=cache.publish),
        max_request_size=server.max_request_size,
        http_cache_max_age=server.http_cache_max_age,
        prepare=prepare,
        clock=clock,
    )
    return Service(config, issuers, watcher, responder, app)


def print_problems(exc: ConfigError, stream: TextIO | None = None) -> None:
    """Print every problem of ``exc``, one line each (``FILE: key.path: problem``).

    Args:
        exc: the error.
        stream: where to (default: standard error).
    """
    for line in exc.problems:
        print(line, file=stream or sys.stderr)


#: Each log line: time, process ID, level, logger name, message (granian's lines too).
LOG_FORMAT = "%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s"


def setup_logging(level: str) -> None:
    """Log to standard error (the journal under systemd) at ``level`` (``info`` ...),
    each line with time, process ID, level and logger name."""
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        stream=sys.stderr,
        format=LOG_FORMAT,
    )
    logging.getLogger("ocsp_responder").setLevel(getattr(logging, level.upper()))
