"""Command line: ``ocsp-responder serve | check-config``.

``serve`` runs the WSGI app under an embedded gunicorn arbiter in the foreground
(one process tree, fit for a systemd ``ExecStart``). Signals are gunicorn's:

* SIGHUP: re-read the config file. A config with problems is logged and the running
  one kept; a good one replaces it in freshly started workers (old ones drain).
* SIGTERM: graceful stop: stop accepting, finish in-flight requests, exit.

Exit codes: 0 on success; 1 for a configuration problem (messages name file, key
path and problem on stderr); 2 for bad command-line usage.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from .config import ConfigError
from .http import OCSPApp
from .responder import build_responder

log = logging.getLogger("ocsp_responder")


def check_config(path: str) -> int:
    """Validate a config and everything it names; print one line per issuer.

    Returns:
        0 when valid (warnings go to stderr), 1 when not (problems go to stderr).
    """
    try:
        responder = build_responder(path)
    except ConfigError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return 1
    for issuer in responder.issuers.issuers:
        print(issuer.describe())
        for warning in issuer.warnings():
            print(f"warning: {warning}", file=sys.stderr)
    return 0


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
        The exit code (1 when the initial config is invalid).
    """
    try:
        app = OCSPApp(build_responder(path))
    except ConfigError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return 1
    _setup_logging(app.responder.config.server.log_level)
    for issuer in app.responder.issuers.issuers:
        log.info("%s", issuer.describe())
        for warning in issuer.warnings():
            log.warning("%s", warning)
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
    args = parser.parse_args(argv)
    if args.command == "check-config":
        return check_config(args.config)
    if args.workers is not None and not 1 <= args.workers <= 64:
        parser.error("--workers must be between 1 and 64")
    return serve(args.config, args.bind, args.workers)


if __name__ == "__main__":
    sys.exit(main())
