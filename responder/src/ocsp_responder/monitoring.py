"""The monitoring endpoints under ``/-/``: health and Prometheus metrics.

=====================  ======================================================
request                answer (always ``Cache-Control: no-store``)
=====================  ======================================================
GET ``/-/health``      200 when every issuer can vouch (fresh data, valid
                       signer), else 503; JSON, one entry per issuer
GET ``/-/health?brief``  the same status code, body ``ok`` or ``unavailable``
GET ``/-/metrics``     Prometheus text exposition (:mod:`ocsp_responder.metrics`
                       plus the per-issuer gauges of :class:`IssuerCollector`)
any other ``/-/`` path 404
another method         405 (``Allow: GET, HEAD``); HEAD answers like GET, bodiless
=====================  ======================================================

Both endpoints first bring every issuer's data up to date with what other
processes of the service accepted (:meth:`StatusData.sync`), so any worker gives
the same answer. No base64 OCSP request starts with ``-`` (a DER SEQUENCE encodes
as ``M...``), so ``/-/`` never hides an OCSP GET request; it is not usable as an
OCSP URL prefix.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from . import metrics
from .config import ServerConfig
from .issuers import Issuer, IssuerSet
from .snapshot import Snapshot
from .status_data import Clock, utc_now

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

#: Where the endpoints live (``PATH_INFO`` prefix).
PREFIX = "/-/"
HEALTH = "/-/health"
METRICS = "/-/metrics"

#: (HTTP status line, headers, body) of one endpoint answer.
Reply = tuple[str, list[tuple[str, str]], bytes]

NO_STORE = "no-store"
JSON_TYPE = "application/json"
TEXT_TYPE = "text/plain; charset=utf-8"
#: The classic text exposition format, which prometheus_client's generate_latest writes.
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when is not None else None


def data_age_since(snap: Snapshot) -> datetime:
    """The time an issuer's data counts its age from: ``index``: when index.txt was last
    confirmed current; ``crl``: the oldest thisUpdate of its CRLs."""
    if snap.kind == "crl" and snap.crls:
        return min(info.this_update for info in snap.crls)
    return snap.confirmed_at or snap.accepted_at


def issuer_health(issuer: Issuer, now: datetime, snap: Snapshot) -> dict[str, Any]:
    """One entry of the health report's ``issuers`` list (see the README, "Monitoring").

    Args:
        issuer: the issuer.
        now: aware UTC.
        snap: the snapshot it answers from (:meth:`StatusData.sync`).
    """
    data = issuer.data
    problem = issuer.unavailable(now, snap)
    return {
        "name": issuer.name,
        "source": data.source.kind,
        "paths": [str(path) for path in data.source.files.paths],
        "serials": len(snap.served),
        "generation": snap.generation,
        "last_success": _iso(snap.accepted_at),
        "confirmed_at": _iso(snap.confirmed_at),
        "data_expires": _iso(data.expires_at(snap)),
        "signer_not_after": _iso(issuer.signer_certificate.not_valid_after_utc),
        "available": problem is None,
        "problem": problem,
        "last_error": data.last_error,
    }


def health(issuers: IssuerSet, now: datetime) -> tuple[bool, dict[str, Any]]:
    """Every issuer's state at ``now`` after :meth:`StatusData.sync`.

    Returns:
        (True when every issuer can vouch now, the JSON report).
    """
    snaps = [issuer.data.sync() for issuer in issuers.issuers]
    entries = [
        issuer_health(issuer, now, snap)
        for issuer, snap in zip(issuers.issuers, snaps, strict=True)
    ]
    ok = all(entry["available"] for entry in entries)
    return ok, {"status": "ok" if ok else "unavailable", "issuers": entries}


class IssuerCollector:
    """The per-issuer gauges, computed at scrape time from this process's (synced) data.

    They are not kept in the multiprocess files: every process serves the same
    snapshots (:mod:`ocsp_responder.status_data`), so the scraping process's view,
    synced first, is the service's.

    Args:
        issuers: the issuers to describe.
        server: the ``[server]`` settings (the alert windows are exported too).
        clock: returns the current time, aware UTC.
    """

    def __init__(self, issuers: IssuerSet, server: ServerConfig, clock: Clock) -> None:
        self.issuers = issuers
        self.server = server
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        """The gauge families, one sample per issuer."""
        from prometheus_client.core import GaugeMetricFamily

        server = self.server
        issuers = self.issuers.issuers
        snaps = [issuer.data.sync() for issuer in issuers]
        now = self.clock()
        p = metrics.PREFIX

        def family(name: str, text: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(p + name, text, labels=["issuer"])

        up = family("issuer_up", "1 when the issuer answers, 0 when it answers tryLater")
        age = family(
            "data_age_seconds",
            "Age of the status data in service: since index.txt was last confirmed "
            "current, or since the oldest CRL's thisUpdate",
        )
        expiry = family(
            "data_expiry_seconds",
            "Seconds until the status data expires (incl. data_expiry_grace); negative once passed",
        )
        signer = family("signer_expiry_seconds", "Seconds until the signer certificate's notAfter")
        serials = family("serials", "Serial numbers in the status data in service")
        success = family(
            "last_reload_success_timestamp_seconds",
            "Unix time the status data in service was accepted",
        )
        data_warning = family(
            "data_expiry_warning_seconds", "[server] data_expiry_warning: the alert window"
        )
        signer_warning = family(
            "signer_expiry_warning_seconds", "[server] signer_expiry_warning: the alert window"
        )
        for issuer, snap in zip(issuers, snaps, strict=True):
            labels = [issuer.name]
            data = issuer.data
            up.add_metric(labels, 0.0 if issuer.unavailable(now, snap) else 1.0)
            age.add_metric(labels, (now - data_age_since(snap)).total_seconds())
            expiry.add_metric(labels, (data.expires_at(snap) - now).total_seconds())
            signer.add_metric(
                labels, (issuer.signer_certificate.not_valid_after_utc - now).total_seconds()
            )
            serials.add_metric(labels, float(len(snap.served)))
            success.add_metric(labels, snap.accepted_at.timestamp())
            data_warning.add_metric(labels, float(server.data_expiry_warning))
            signer_warning.add_metric(labels, float(server.signer_expiry_warning))
        yield from (up, age, expiry, signer, serials, success, data_warning, signer_warning)


class Monitoring:
    """Answers the ``/-/`` paths (health and metrics) for a set of issuers.

    Args:
        issuers: the issuers whose state is reported.
        server: the ``[server]`` settings.
        clock: returns the current time, aware UTC.
        before_scrape: called before each ``/-/metrics`` answer (the pre-signed
            store's gauges read afresh).
    """

    def __init__(
        self,
        issuers: IssuerSet,
        server: ServerConfig,
        clock: Clock = utc_now,
        before_scrape: Callable[[], None] = lambda: None,
    ) -> None:
        self.issuers = issuers
        self.clock = clock
        self.before_scrape = before_scrape
        self._registry = metrics.scrape_registry([IssuerCollector(issuers, server, clock)])

    def answer(self, method: str, path: str, query: str) -> Reply:
        """The answer to ``method`` on ``path`` (under ``/-/``) with query string ``query``."""
        if path not in (HEALTH, METRICS):
            return _reply("404 Not Found", TEXT_TYPE, b"not found\n")
        if method not in ("GET", "HEAD"):
            return _reply(
                "405 Method Not Allowed",
                TEXT_TYPE,
                b"use GET or HEAD\n",
                [("Allow", "GET, HEAD")],
            )
        if path == METRICS:
            from prometheus_client import generate_latest

            self.before_scrape()
            return _reply("200 OK", METRICS_TYPE, generate_latest(self._registry))
        ok, report = health(self.issuers, self.clock())
        status = "200 OK" if ok else "503 Service Unavailable"
        if _brief(query):
            return _reply(status, TEXT_TYPE, b"ok\n" if ok else b"unavailable\n")
        body = json.dumps(report, indent=1).encode() + b"\n"
        return _reply(status, JSON_TYPE, body)


def _brief(query: str) -> bool:
    """``brief`` is one of the query's parameters (``?brief``, ``?brief=1``)."""
    return any(part.split("=", 1)[0] == "brief" for part in query.split("&"))


def _reply(
    status: str, content_type: str, body: bytes, extra: list[tuple[str, str]] | None = None
) -> Reply:
    headers = [
        ("Content-Type", content_type),
        ("Content-Length", str(len(body))),
        ("Cache-Control", NO_STORE),
        *(extra or []),
    ]
    return status, headers, body
