"""Command line: ``ocsp-responder serve | check-config | accept-data | receive``.

``serve`` runs the responder under an embedded granian server in the foreground
(:mod:`ocsp_responder.server`: signals, workers, metrics directory).

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
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from . import metrics, receive
from .config import RANGES, ConfigError, read_config
from .issuers import load_ca_certificate, status_parts
from .loader import load_service, print_problems, setup_logging
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
        service = load_service(path, persist=False)
    except ConfigError as exc:
        print_problems(exc)
        return 1
    status = 0
    now = utc_now()
    for issuer in service.issuers.issuers:
        print(issuer.describe())
        for warning in issuer.warnings(now):
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
    setup_logging("info")
    try:
        config, problems = read_config(path)
    except ConfigError as exc:
        print_problems(exc)
        return 1
    found = [cfg for cfg in config.issuers if cfg.name == name]
    if not found:
        problems.add("issuer", f"no issuer named {name!r}")
    ca = load_ca_certificate(found[0], problems) if found else None
    if ca is None or problems.lines:
        print_problems(ConfigError(problems.lines))
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
        print_problems(exc)
        return 2
    targets = fetch.fetch_targets(config, problems, issuer)
    if problems.lines:
        print_problems(ConfigError(problems.lines))
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

    setup_logging(config.server.log_level)

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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ocsp-responder`` console script; returns the exit code."""
    parser = argparse.ArgumentParser(prog="ocsp-responder", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="run the OCSP responder (embedded granian)")
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
    from .server import serve  # imports granian: only for this command

    return serve(args.config, args.bind, args.workers)


if __name__ == "__main__":
    sys.exit(main())
