"""Command line: ``ocsp-responder serve | check-config | accept-data | receive``.

``serve`` runs the WSGI app under an embedded gunicorn arbiter in the foreground
(one process tree, fit for a systemd ``ExecStart``). Signals are gunicorn's:

* SIGHUP: re-read the config file. A config with problems is logged and the running
  one kept; a good one replaces it in freshly started workers (old ones drain).
* SIGTERM: graceful stop: stop accepting, finish in-flight requests, exit.

Before anything else ``serve`` makes ``[server] metrics_dir`` prometheus_client's
multiprocess directory (emptied of the ``*.db`` files of an earlier run), so the
metrics of all workers add up; gunicorn's ``child_exit`` hook forgets the gauges of
a worker that exited (:mod:`ocsp_responder.metrics`). A directory ``serve`` made
under the system's temporary directory is removed when it stops.

``check-config`` loads everything read-only (nothing is written to ``state_dir``),
prints one line per issuer with its data expiry and signer notAfter, and fails when
either has passed. ``accept-data`` is the operator's explicit override for a
deliberate restore: it makes the issuer's current files the data in service even
when they are older than what was accepted before (see :mod:`ocsp_responder.snapshot`).
``receive`` is the forced command of the CA host publisher's SSH key: it validates
one pushed status file and installs it atomically (:mod:`ocsp_responder.receive`).
``fetch-crls`` keeps the CRLs of ``crl`` sources' ``urls`` under ``state_dir``
(:mod:`ocsp_responder.fetch`): once with ``--once``, else until SIGTERM/SIGINT.

Exit codes: 0 on success; 1 for a configuration problem, expired data or signer, or
data that cannot be accepted (messages name file, key path and problem on stderr);
2 for bad command-line usage. ``fetch-crls`` differs: 1 when a fetch failed
(``--once``), 2 for a configuration problem.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import metrics, receive
from .config import RANGES, ConfigError, read_config
from .http import OCSPApp
from .issuers import load_ca_certificate, status_parts
from .responder import build_responder
from .snapshot import SnapshotError, override
from .sources import SourceError
from .status_data import utc_now

log = logging.getLogger("ocsp_responder")


def check_config(path: str, allow_unfetched: bool = False) -> int:
    """Validate a config and everything it names, read-only; print one line per issuer.

    Each line gives the issuer's source, serial count, data expiry (plus grace) and
    signer notAfter. Status files that would be rejected (older than the snapshot in
    ``state_dir``, unparsable) are reported as errors.

    Args:
        path: the config file.
        allow_unfetched: a CRL URL that ``fetch-crls`` has not fetched yet is a
            warning, not an error (for validating a new config before its first
            fetch, as the role does); every other problem still fails.

    Returns:
        0 when valid (warnings go to stderr), 1 when not: a config problem, data past
        its expiry, a signer outside its validity, or rejected status files
        (problems go to stderr).
    """
    try:
        responder = build_responder(path, persist=False)
    except ConfigError as exc:
        _print_problems(exc)
        return 1
    status = 0
    now = utc_now()
    for issuer in responder.issuers.issuers:
        print(issuer.describe())
        for warning in issuer.warnings():
            print(f"warning: {warning}", file=sys.stderr)
        data = issuer.data
        excused = allow_unfetched and data.pending
        problem = issuer.unavailable(now)
        if excused and not data.has_data and issuer.signer_unavailable(now) is None:
            problem = None  # "no status data yet": only the first fetch is missing
        if problem is not None:
            print(f"error: {problem}: it answers tryLater", file=sys.stderr)
            status = 1
        if excused:
            meanwhile = "the kept data is served" if data.has_data else "it answers tryLater"
            print(
                f"warning: issuer {issuer.name}: {data.last_error}; fetch-crls installs it "
                f"(until then {meanwhile})",
                file=sys.stderr,
            )
        elif data.last_error is not None:
            print(
                f"error: issuer {issuer.name}: the status files are not used: {data.last_error}",
                file=sys.stderr,
            )
            status = 1
    return status


def accept_data(path: str, name: str) -> int:
    """Make an issuer's current status files the data in service, older or not.

    For a deliberate restore (an index.txt or CRL brought back from a backup on
    purpose), or to start over after the snapshot file was damaged: the files must
    still parse and verify; the snapshot in ``state_dir`` and its remembered
    revocations are replaced (a damaged snapshot file is first moved aside to
    ``NAME.json.damaged-TIME``); running processes adopt the result (a new epoch
    outranks whatever they hold) within ``reload_interval``. Logged at WARNING.

    Returns:
        0 when accepted; 1 for an unknown issuer, a config problem or files that
        cannot be used.
    """
    _setup_logging("info")
    try:
        config, problems = read_config(path)
    except ConfigError as exc:
        _print_problems(exc)
        return 1
    found = [cfg for cfg in config.issuers if cfg.name == name]
    if not found:
        problems.add("issuer", f"no issuer named {name!r}")
    ca = load_ca_certificate(found[0], problems) if found else None
    if ca is None or problems.lines:
        _print_problems(ConfigError(problems.lines))
        return 1
    source, store = status_parts(found[0], ca, config.server.state_dir)
    now = utc_now()
    try:
        read = source.read(now)
        store.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with store.lock():
            try:
                previous = store.load()
            except SnapshotError as exc:
                aside = store.move_aside(f"damaged-{now:%Y%m%dT%H%M%SZ}")
                log.warning("issuer %s: %s; moved to %s", name, exc, aside)
                previous = None
            snapshot = override(previous, read, issuer=name, ca_identity=store.ca_identity, now=now)
            store.save(snapshot)
    except SourceError as exc:
        print(f"issuer {name}: not accepted: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"issuer {name}: cannot write {store.path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    log.warning(
        "issuer %s: operator override (accept-data): %s accepted as given: %d serials, "
        "generation %d, epoch %d; remembered revocations reset to the %d in this data",
        name,
        source.describe(),
        len(snapshot.table),
        snapshot.generation,
        snapshot.epoch,
        len(snapshot.remembered),
    )
    return 0


class _Stop(BaseException):
    """Raised by the SIGTERM/SIGINT handler of ``fetch-crls`` to end it at once (a
    BaseException, so that no ``except Exception`` in a fetch in progress keeps it)."""


def fetch_crls(path: str, once: bool, issuer: str | None) -> int:
    """Fetch the CRLs of every ``crl`` source's ``urls`` (or of one issuer).

    Args:
        path: the config file.
        once: fetch every URL now (conditional GET still applies), print one line per
            URL (``issuer NAME: URL: installed CRL number N`` / ``not modified`` on
            stdout, ``issuer NAME: URL: error: WHY`` on stderr) and return. Otherwise
            run until SIGTERM/SIGINT, fetching each URL when due and logging one line
            per outcome (:mod:`ocsp_responder.fetch`); a failed fetch never ends it.
        issuer: only this issuer's URLs (None: all).

    Returns:
        0 when every fetch succeeded (and after SIGTERM/SIGINT), 1 when any fetch
        failed (``--once``), 2 for a configuration problem or an unknown issuer.
    """
    from . import fetch

    try:
        config, problems = read_config(path)
    except ConfigError as exc:
        _print_problems(exc)
        return 2
    targets = fetch.fetch_targets(config, problems, issuer)
    if problems.lines:
        _print_problems(ConfigError(problems.lines))
        return 2
    fetcher = fetch.Fetcher()
    if once:
        failed = False
        for target in targets:
            outcome = fetcher.fetch(target)
            print(outcome.line(), file=sys.stdout if outcome.ok else sys.stderr, flush=True)
            failed = failed or not outcome.ok
        if not targets:
            print("no CRL URLs configured (crl sources' urls): nothing to fetch", file=sys.stderr)
        return 1 if failed else 0

    _setup_logging(config.server.log_level)

    def stop(signum: int, frame: object) -> None:
        raise _Stop

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def report(outcome: fetch.Outcome) -> None:
        if outcome.ok:
            log.info("%s", outcome.line())
        else:
            log.error("%s", outcome.line())

    log.info("fetch-crls: %d URL(s) of %s", len(targets), config.path)
    if not targets:
        log.warning("no CRL URLs configured (crl sources' urls): nothing to fetch")
    try:
        fetch.run_forever(targets, fetcher, report)
    except _Stop:
        log.info("fetch-crls: stopping on a signal")
    return 0


def _print_problems(exc: ConfigError) -> None:
    for line in exc.problems:
        print(line, file=sys.stderr)


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        stream=sys.stderr,
        format="%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s",
    )
    logging.getLogger("ocsp_responder").setLevel(getattr(logging, level.upper()))


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
    _setup_logging("info")
    try:
        configured = read_config(path)[0].server.metrics_dir  # problems: reported below
    except ConfigError as exc:
        _print_problems(exc)
        return 1
    metrics_dir = configured or metrics.default_dir()
    # made by default_dir() under the temporary directory: ours to remove at exit
    temporary = configured is None and not os.environ.get("RUNTIME_DIRECTORY")
    owner = os.getpid()
    try:
        return _serve(path, bind, workers, metrics_dir, configured)
    finally:
        if temporary and os.getpid() == owner:  # not in a gunicorn worker leaving
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _serve(
    path: str,
    bind: str | None,
    workers: int | None,
    metrics_dir: Path,
    configured: Path | None,
) -> int:
    """:func:`serve` once the metrics directory is chosen."""
    try:
        metrics.use_multiprocess_dir(metrics_dir)
    except metrics.MetricsDirError as exc:
        print(f"{path}: server.metrics_dir: cannot use {exc}", file=sys.stderr)
        return 1
    log.info("metrics of all processes are kept in %s", metrics_dir)
    try:
        app = OCSPApp(build_responder(path))
    except ConfigError as exc:
        _print_problems(exc)
        return 1
    _setup_logging(app.responder.config.server.log_level)
    now = utc_now()
    for issuer in app.responder.issuers.issuers:
        log.info("%s", issuer.describe())
        for warning in issuer.warnings():
            log.warning("%s", warning)
        problem = issuer.unavailable(now)
        if problem is not None:
            log.error("answering tryLater: %s", problem)
    from gunicorn.app.base import BaseApplication

    class Server(BaseApplication):  # type: ignore[misc]
        """gunicorn embedded: the app is built in the arbiter, workers inherit it."""

        def __init__(self) -> None:
            self.app = app
            super().__init__()

        def load_config(self) -> None:
            if getattr(self, "loaded", False):  # SIGHUP: re-read the file
                try:
                    self.app = OCSPApp(build_responder(path))
                except ConfigError as exc:
                    log.error("reload refused, keeping the running config:\n%s", exc)
                else:
                    log.info("reloaded config %s", path)
                    if self.app.responder.config.server.metrics_dir != configured:
                        log.warning(
                            "server.metrics_dir changed: it takes effect at the next start; "
                            "metrics stay in %s",
                            metrics_dir,
                        )
            self.loaded = True
            server = self.app.responder.config.server
            settings: dict[str, Any] = {
                "bind": [bind or server.bind],
                "workers": workers or server.workers,
                # gthread keeps nginx's upstream connections alive (sync workers close
                # every connection, which costs more than the response itself).
                "worker_class": "gthread",
                "threads": server.threads,
                "timeout": 30,
                "graceful_timeout": 10,
                "keepalive": 5,
                "limit_request_line": 8190,
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

        def load(self) -> OCSPApp:
            return self.app

    def _start_watcher(worker: Any) -> None:  # noqa: ANN401 (gunicorn Worker, untyped)
        worker.wsgi.responder.watcher.ensure_running()

    def _child_exit(server: Any, worker: Any) -> None:  # noqa: ANN401 (gunicorn, untyped)
        metrics.mark_process_dead(worker.pid)

    Server().run()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ocsp-responder`` console script; returns the exit code."""
    parser = argparse.ArgumentParser(prog="ocsp-responder", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="run the OCSP responder under gunicorn")
    serve_cmd.add_argument("--config", required=True, help="TOML configuration file")
    serve_cmd.add_argument("--bind", help="HOST:PORT or unix:PATH (overrides server.bind)")
    serve_cmd.add_argument(
        "--workers", type=int, help="worker processes (overrides server.workers)"
    )
    check_cmd = commands.add_parser("check-config", help="validate a configuration file")
    check_cmd.add_argument("config", help="TOML configuration file")
    check_cmd.add_argument(
        "--allow-unfetched",
        action="store_true",
        help="a CRL URL not fetched yet by fetch-crls is a warning, not an error",
    )
    accept_cmd = commands.add_parser(
        "accept-data",
        help="operator override: serve an issuer's current status files even if older",
    )
    accept_cmd.add_argument("--config", required=True, help="TOML configuration file")
    accept_cmd.add_argument("issuer", help="the [[issuer]] name")
    receive_cmd = commands.add_parser(
        "receive",
        help="install a status file pushed by the CA host's publisher (SSH forced command)",
    )
    receive_cmd.add_argument("--config", required=True, help="receive.toml")
    receive_cmd.add_argument(
        "request",
        nargs="*",
        help="ISSUER NAME (default: $SSH_ORIGINAL_COMMAND); the file comes on stdin",
    )
    fetch_cmd = commands.add_parser(
        "fetch-crls", help="fetch the CRLs of crl sources' urls into state_dir"
    )
    fetch_cmd.add_argument("--config", required=True, help="TOML configuration file")
    fetch_cmd.add_argument(
        "--once", action="store_true", help="fetch every URL once, print the outcomes, exit"
    )
    fetch_cmd.add_argument("--issuer", help="only this [[issuer]]'s URLs")
    args = parser.parse_args(argv)
    if args.command != "serve":
        # only serve shares metrics between processes; the others keep theirs in memory
        os.environ.pop(metrics.MULTIPROC_ENV, None)
    if args.command == "check-config":
        return check_config(args.config, args.allow_unfetched)
    if args.command == "accept-data":
        return accept_data(args.config, args.issuer)
    if args.command == "fetch-crls":
        return fetch_crls(args.config, args.once, args.issuer)
    if args.command == "receive":
        command = " ".join(args.request) if args.request else os.environ.get("SSH_ORIGINAL_COMMAND")
        return receive.main(Path(args.config), command, sys.stdin.buffer)
    if args.workers is not None:
        problem = RANGES["server.workers"].check(args.workers)
        if problem:
            parser.error(f"--workers {problem}")
    return serve(args.config, args.bind, args.workers)


if __name__ == "__main__":
    sys.exit(main())
