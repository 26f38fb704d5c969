"""Fetching CRLs from http(s) URLs: what ``ocsp-responder fetch-crls`` does.

For each URL in an issuer's ``[issuer.source] urls`` (a ``crl`` source), a
conditional GET (RFC 9110 section 13.1.2 ``If-None-Match`` with the stored ETag,
section 13.1.3 ``If-Modified-Since`` with the stored Last-Modified; RFC 9111 for
the validators) through urllib3:

* **200**: the body (at most ``fetch_max_bytes`` octets, streamed) must be a CRL the
  ``crl`` source accepts (:func:`~ocsp_responder.sources.crl.load_crl`: PEM or DER,
  a complete CRL, RFC 5280 section 5, issued and signed by the issuer's CA
  certificate), must not go backwards against the last good copy (a lower cRLNumber,
  RFC 5280 section 5.2.3, or an earlier thisUpdate, section 5.1.2.4) and must not be
  past its nextUpdate (section 5.1.2.5). Only then it replaces the last good copy
  atomically, with its JSON sidecar (ETag, Last-Modified, times, CRL number).
* **304**: the copy is kept; the sidecar records when it was confirmed.
* anything else (connection error, timeout, another HTTP status, a body too big, a
  bad, older or expired CRL): the last good copy is left untouched; the
  :class:`Outcome` names the issuer, the URL and the error.

Files (see :func:`fetched_crl_path`), all under ``[server] state_dir``::

    STATE_DIR/crl/ISSUER/HASH.crl    the last good CRL, exactly as fetched (PEM or DER)
    STATE_DIR/crl/ISSUER/HASH.json   its sidecar (format 1, see :func:`_sidecar`)
    STATE_DIR/crl/ISSUER/HASH.lock   flock held while one fetch of that URL runs

where HASH is the first 16 hex digits of the SHA-256 of the URL. The issuer's
``crl`` source reads ``paths`` plus these ``.crl`` files, so everything ``serve``
does with CRL files (snapshot acceptance, expiry from nextUpdate, health, metrics,
``tryLater``) applies to them unchanged; ``serve`` never contacts the URLs.

Scheduling (:func:`next_delay`): each URL is fetched again ``fetch_interval``
seconds after its last attempt; sooner after a failure (``min(fetch_interval, 30)``)
and as the kept CRL's nextUpdate nears (less than 2 x ``fetch_interval`` left:
every ``max(10, left / 4)`` seconds).

HTTP is urllib3's: https is verified against the system's CA store, up to
:data:`MAX_REDIRECTS` redirects are followed (only to http or https URLs), no
retries, and proxies come only from ``proxy`` (never from the environment).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import urllib3
from cryptography import x509

from . import __version__
from .atomic import locked, state_owner, write_atomically
from .config import Config, Problems
from .sources import CRLInfo, SourceError
from .sources.crl import crl_info, load_crl

log = logging.getLogger(__name__)

#: Redirects followed per fetch (to http or https URLs only).
MAX_REDIRECTS = 3
#: After a failure the URL is due again after min(fetch_interval, this) seconds.
RETRY_AFTER_FAILURE = 30
#: With less than NEAR_NEXT_UPDATE x fetch_interval left before the kept CRL's
#: nextUpdate, fetch every max(MIN_DELAY, time left / 4) seconds.
NEAR_NEXT_UPDATE = 2
MIN_DELAY = 10
#: Octets read from the connection at a time.
CHUNK = 65536
#: Version of the sidecar's JSON layout.
SIDECAR_FORMAT = 1
USER_AGENT = f"ocsp-responder-fetch-crls/{__version__}"


def fetched_crl_path(state_dir: Path, issuer: str, url: str) -> Path:
    """Where the last good CRL fetched from ``url`` for ``issuer`` is kept.

    Args:
        state_dir: ``[server] state_dir``.
        issuer: the issuer name (safe as a file name, see config.NAME_RE).
        url: the URL as configured.

    Returns:
        ``state_dir/crl/ISSUER/HASH.crl``, HASH = first 16 hex digits of SHA-256(url).
    """
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return state_dir / "crl" / issuer / f"{digest}.crl"


@dataclass(frozen=True)
class Target:
    """One URL of one issuer, with its fetch settings.

    Attributes:
        issuer: the issuer name.
        url: the http(s) URL.
        ca: the CA certificate the CRL must be issued and signed by.
        state_dir: ``[server] state_dir``.
        interval: ``fetch_interval``, seconds.
        timeout: ``fetch_timeout`` (connect, and each read), seconds.
        max_bytes: ``fetch_max_bytes``, octets.
        proxy: ``proxy`` URL, ``""`` for direct connections.
    """

    issuer: str
    url: str
    ca: x509.Certificate
    state_dir: Path
    interval: int
    timeout: int
    max_bytes: int
    proxy: str = ""

    @property
    def path(self) -> Path:
        """The last good CRL file (:func:`fetched_crl_path`)."""
        return fetched_crl_path(self.state_dir, self.issuer, self.url)

    @property
    def sidecar(self) -> Path:
        """The JSON sidecar beside :attr:`path`."""
        return self.path.with_suffix(".json")


def fetch_targets(config: Config, problems: Problems, issuer: str | None = None) -> list[Target]:
    """Every URL of every ``crl`` issuer of ``config`` (or of ``issuer`` only), in order.

    Args:
        config: the configuration.
        problems: where an unreadable CA certificate or an unknown ``issuer`` is recorded.
        issuer: only this issuer's URLs (None: all).

    Returns:
        The targets (possibly empty); check ``problems`` before using them.
    """
    from .issuers import load_ca_certificate  # issuers imports this module

    chosen = [cfg for cfg in config.issuers if issuer is None or cfg.name == issuer]
    if issuer is not None and not chosen:
        problems.add("issuer", f"no issuer named {issuer!r}")
    targets: list[Target] = []
    for cfg in chosen:
        source = cfg.source
        if source.kind != "crl" or not source.urls:
            continue
        ca = load_ca_certificate(cfg, problems)
        if ca is None:
            continue
        targets += [
            Target(
                issuer=cfg.name,
                url=url,
                ca=ca,
                state_dir=config.server.state_dir,
                interval=source.fetch_interval,
                timeout=source.fetch_timeout,
                max_bytes=source.fetch_max_bytes,
                proxy=source.proxy,
            )
            for url in source.urls
        ]
    return targets


class FetchError(Exception):
    """One fetch failed; the message says why (without issuer and URL)."""


@dataclass(frozen=True)
class Outcome:
    """The result of one fetch of one URL.

    Attributes:
        target: what was fetched.
        ok: True for a CRL installed or confirmed (HTTP 200 or 304).
        message: ``installed CRL number N``, ``not modified`` (or ``not modified
            (same CRL, number N)``), or the error.
        next_update: nextUpdate of the CRL kept now (None: none kept, or it has none).
    """

    target: Target
    ok: bool
    message: str
    next_update: datetime | None = None

    def line(self) -> str:
        """``issuer NAME: URL: MESSAGE`` (errors as ``error: MESSAGE``)."""
        what = self.message if self.ok else f"error: {self.message}"
        return f"issuer {self.target.issuer}: {self.target.url}: {what}"


@dataclass(frozen=True)
class _Kept:
    """The last good copy on disk: its bytes and what it says."""

    data: bytes
    info: CRLInfo


class Fetcher:
    """Fetches targets, one HTTP connection pool per proxy setting.

    Args:
        clock: returns the current time, aware UTC.
    """

    def __init__(self, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.clock = clock
        self._pools: dict[str, urllib3.PoolManager] = {}

    def _pool(self, proxy: str) -> urllib3.PoolManager:
        if proxy not in self._pools:
            common: dict[str, Any] = {"cert_reqs": "CERT_REQUIRED", "headers": _HEADERS}
            self._pools[proxy] = (
                urllib3.ProxyManager(proxy, **common) if proxy else urllib3.PoolManager(**common)
            )
        return self._pools[proxy]

    def fetch(self, target: Target) -> Outcome:
        """Fetch ``target`` once (conditionally when a good copy is kept) and install it.

        Never raises for a network, HTTP, CRL or file-system problem: each is an
        :class:`Outcome` with ``ok`` False, and the last good copy stays as it was.
        """
        try:
            for directory in (target.state_dir, target.path.parent.parent, target.path.parent):
                directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            _own_tree(target)
            with _locked(target):
                return self._fetch(target)
        except FetchError as exc:
            return Outcome(target, False, str(exc), _kept_next_update(target))
        except OSError as exc:
            return Outcome(
                target,
                False,
                f"cannot write under {target.path.parent}: {exc.strerror or exc}",
                _kept_next_update(target),
            )
        except Exception as exc:  # a bug must not stop the other URLs
            return Outcome(
                target, False, f"{type(exc).__name__}: {str(exc)[:300]}", _kept_next_update(target)
            )

    def _fetch(self, target: Target) -> Outcome:
        _remove_temporaries(target)
        kept = _kept(target)
        meta = _read_sidecar(target)
        headers: dict[str, str] = {}
        if kept is not None:  # without the file, the validators would only get a 304
            if isinstance(meta.get("etag"), str):
                headers["If-None-Match"] = meta["etag"]
            if isinstance(meta.get("last_modified"), str):
                headers["If-Modified-Since"] = meta["last_modified"]
        status, reason, response_headers, body = self._get(target, headers)
        now = self.clock()
        if status == 304 and kept is not None:
            _write_sidecar(target, {**meta, "checked_at": now.isoformat()})
            return Outcome(target, True, "not modified", kept.info.next_update)
        if status != 200:
            raise FetchError(f"HTTP {status} {reason}".rstrip())
        try:
            crl = load_crl(body, target.path, target.ca)
            info = crl_info(crl, target.path)
        except SourceError as exc:
            raise FetchError(f"not a usable CRL: {exc.reason}") from exc
        if info.next_update is not None and info.next_update <= now:
            raise FetchError(
                f"CRL number {info.number} is past its nextUpdate "
                f"{info.next_update.isoformat()}: not installed"
            )
        _check_not_older(info, kept.info if kept is not None else _sidecar_info(meta))
        record = {
            "format": SIDECAR_FORMAT,
            "url": target.url,
            "etag": response_headers.get("ETag"),
            "last_modified": response_headers.get("Last-Modified"),
            "fetched_at": now.isoformat(),
            "checked_at": now.isoformat(),
            "sha256": hashlib.sha256(body).hexdigest(),
            "crl_number": info.number,
            "this_update": info.this_update.isoformat(),
            "next_update": info.next_update.isoformat() if info.next_update else None,
        }
        if kept is not None and kept.data == body:
            _write_sidecar(target, {**record, "fetched_at": meta.get("fetched_at")})
            return Outcome(
                target, True, f"not modified (same CRL, number {info.number})", info.next_update
            )
        _atomic_write(target, target.path, body)
        _write_sidecar(target, record)
        return Outcome(target, True, f"installed CRL number {info.number}", info.next_update)

    def _get(
        self, target: Target, headers: dict[str, str]
    ) -> tuple[int, str, urllib3.HTTPHeaderDict, bytes]:
        """GET ``target.url``; the body is read (capped) only for a 200."""
        try:
            response = self._pool(target.proxy).request(
                "GET",
                target.url,
                headers={**_HEADERS, **headers},
                preload_content=False,
                timeout=urllib3.Timeout(connect=target.timeout, read=target.timeout),
                retries=urllib3.Retry(
                    total=MAX_REDIRECTS,
                    connect=0,
                    read=0,
                    status=0,
                    other=0,
                    redirect=MAX_REDIRECTS,
                    raise_on_redirect=True,
                    raise_on_status=False,
                ),
                redirect=True,
            )
        except urllib3.exceptions.MaxRetryError as exc:
            raise FetchError(_network_error(exc.reason or exc)) from exc
        except urllib3.exceptions.HTTPError as exc:
            raise FetchError(_network_error(exc)) from exc
        try:
            body = _read_capped(response, target.max_bytes) if response.status == 200 else b""
        except urllib3.exceptions.HTTPError as exc:
            response.close()
            raise FetchError(_network_error(exc)) from exc
        except FetchError:
            response.close()
            raise
        finally:
            response.release_conn()
        return response.status, response.reason or "", response.headers, body


_HEADERS = {"User-Agent": USER_AGENT, "Accept": "application/pkix-crl, */*;q=0.1"}


def _network_error(exc: BaseException) -> str:
    """A short description of a urllib3 error (the pool's repr is noise)."""
    if isinstance(exc, urllib3.exceptions.ResponseError) and "redirect" in str(exc):
        return f"too many redirects (more than {MAX_REDIRECTS})"
    if isinstance(exc, urllib3.exceptions.LocationValueError):  # URLSchemeUnknown too
        return f"redirected to a URL that is not http(s) with a host: {exc}"
    if isinstance(exc, urllib3.exceptions.NewConnectionError):  # before TimeoutError
        return f"cannot connect: {str(exc).split(': ', 1)[-1]}"
    if isinstance(exc, urllib3.exceptions.TimeoutError):
        return f"timed out ({type(exc).__name__})"
    return f"{type(exc).__name__}: {exc}"


def _read_capped(response: urllib3.BaseHTTPResponse, max_bytes: int) -> bytes:
    """The whole body, or FetchError past ``max_bytes`` octets (decoded)."""
    length = response.headers.get("Content-Length", "")
    if length.isdigit() and int(length) > max_bytes:
        raise FetchError(f"body of {length} octets is over fetch_max_bytes ({max_bytes})")
    chunks: list[bytes] = []
    size = 0
    for chunk in response.stream(CHUNK):
        size += len(chunk)
        if size > max_bytes:
            raise FetchError(f"body is over fetch_max_bytes ({max_bytes} octets)")
        chunks.append(chunk)
    return b"".join(chunks)


def _check_not_older(new: CRLInfo, old: CRLInfo | None) -> None:
    """FetchError when ``new`` goes backwards against ``old`` (RFC 5280 5.2.3, 5.1.2.4)."""
    if old is None:
        return
    if old.number is not None and (new.number is None or new.number < old.number):
        raise FetchError(
            f"cRLNumber {new.number} is lower than {old.number} of the CRL kept: an older "
            "CRL? not installed"
        )
    if new.this_update < old.this_update:
        raise FetchError(
            f"thisUpdate {new.this_update.isoformat()} is earlier than "
            f"{old.this_update.isoformat()} of the CRL kept: an older CRL? not installed"
        )


def _kept(target: Target) -> _Kept | None:
    """The last good copy, if it is there and still verifies against the CA."""
    try:
        data = target.path.read_bytes()
        return _Kept(data, crl_info(load_crl(data, target.path, target.ca), target.path))
    except (OSError, SourceError):
        return None


def _kept_next_update(target: Target) -> datetime | None:
    kept = _kept(target)
    return kept.info.next_update if kept is not None else None


def _read_sidecar(target: Target) -> dict[str, Any]:
    """The sidecar's document, ``{}`` when it is missing, damaged or for another URL."""
    try:
        document = json.loads(target.sidecar.read_bytes())
    except (OSError, ValueError):
        return {}
    if not isinstance(document, dict) or document.get("url") != target.url:
        return {}
    return document


def _sidecar_info(meta: dict[str, Any]) -> CRLInfo | None:
    """The CRL number and thisUpdate the sidecar recorded (a baseline without the file)."""
    try:
        this_update = datetime.fromisoformat(meta["this_update"])
        number = meta.get("crl_number")
    except (KeyError, TypeError, ValueError):
        return None
    if this_update.tzinfo is None or not (number is None or isinstance(number, int)):
        return None
    return CRLInfo(path="", number=number, this_update=this_update, next_update=None)


def _write_sidecar(target: Target, document: dict[str, Any]) -> None:
    """Write the sidecar atomically.

    The document (format 1): ``format``, ``url``, ``etag`` and ``last_modified`` (the
    response's validators, or null), ``fetched_at`` (when the kept CRL was installed),
    ``checked_at`` (last 200 or 304), ``sha256`` of the CRL file, ``crl_number``,
    ``this_update``, ``next_update`` (ISO 8601, UTC).
    """
    payload = json.dumps(document, indent=1, sort_keys=True).encode() + b"\n"
    _atomic_write(target, target.sidecar, payload)


def _atomic_write(target: Target, path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically (:func:`~ocsp_responder.atomic.write_atomically`),
    owned by the state directory's owner.

    Raises:
        OSError: nothing is left behind but the old file.
    """
    write_atomically(path, data, owner=state_owner(target.state_dir))


def _remove_temporaries(target: Target) -> None:
    """Remove what a fetch killed mid-write left (hold :func:`_locked`)."""
    for name in (target.path.name, target.sidecar.name):
        for temp in target.path.parent.glob(f".{name}.*"):
            with contextlib.suppress(OSError):
                temp.unlink()


def _locked(target: Target) -> contextlib.AbstractContextManager[None]:
    """Hold the URL's flock (``HASH.lock``): one fetch of a URL at a time."""
    return locked(target.path.with_suffix(".lock"), state_owner(target.state_dir))


def _own_tree(target: Target) -> None:
    """The same for the ``crl`` and ``crl/ISSUER`` directories."""
    owner = state_owner(target.state_dir)
    if owner is not None:
        for directory in (target.path.parent.parent, target.path.parent):
            os.chown(directory, *owner)


def next_delay(target: Target, outcome: Outcome, now: datetime) -> float:
    """Seconds from ``now`` until ``target`` is due again after ``outcome``.

    ``fetch_interval`` after a success, ``min(fetch_interval, 30)`` after a failure;
    and when the kept CRL's nextUpdate is less than 2 x ``fetch_interval`` away, at
    most ``max(10, time left / 4)``.
    """
    delay = float(target.interval if outcome.ok else min(target.interval, RETRY_AFTER_FAILURE))
    if outcome.next_update is not None:
        left = (outcome.next_update - now).total_seconds()
        if left < NEAR_NEXT_UPDATE * target.interval:
            delay = min(delay, max(MIN_DELAY, left / 4))
    return delay


def run_forever(
    targets: Sequence[Target],
    fetcher: Fetcher,
    report: Callable[[Outcome], None],
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Fetch each target when due, forever; ``report`` gets every :class:`Outcome`.

    Returns only by an exception (the caller's signal handler raises a BaseException,
    which :meth:`Fetcher.fetch` does not catch); a failed fetch is an outcome like
    any other. With no targets it just sleeps.
    """
    due = [0.0] * len(targets)  # monotonic time at which each target is due: all now
    while True:
        for number, target in enumerate(targets):
            if due[number] <= time.monotonic():
                outcome = fetcher.fetch(target)
                report(outcome)
                due[number] = time.monotonic() + next_delay(target, outcome, fetcher.clock())
        wake = min(due, default=time.monotonic() + 3600)
        sleep(max(0.0, wake - time.monotonic()))
