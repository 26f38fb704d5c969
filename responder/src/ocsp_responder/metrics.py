"""Prometheus metrics (prometheus_client), summed over every process of the service.

Counters, histograms and the cache gauges live in one process-wide :class:`Metrics`
(:func:`get`), created on first use. Under ``ocsp-responder serve`` they use
prometheus_client's multiprocess mode: each process (the main process and every
worker) writes its values to its own files in ``PROMETHEUS_MULTIPROC_DIR``
(``[server] metrics_dir``), and a scrape, answered by any worker, adds up the files
of all of them (:func:`scrape_registry`), so counts never depend on which worker
answered the scrape. ``serve`` prepares the directory before any metric exists
(:func:`use_multiprocess_dir`: created, its ``*.db`` files removed) and removes the
gauge files of a worker that exited (:func:`mark_process_dead`), so the cache gauges
(``multiprocess_mode="livemostrecent"``: the host's one pre-signed store, as the
live worker that changed it last saw it) come from live workers only; the counter files of
exited workers stay, so totals never go down while ``serve`` runs.

Without ``PROMETHEUS_MULTIPROC_DIR`` (the WSGI callable ``make_app`` under another
server, ``check-config``) the metrics are ordinary in-process metrics in their own
registry.

prometheus_client chooses between the two modes when it is first imported, so this
module imports it only inside functions: nothing imports it before ``serve`` has
set the variable.

Metric names, labels and units are a contract with the alert rules in
``monitoring/``: see the README, "Monitoring". This module defines the counters,
histograms and cache gauges; the per-issuer gauges (``ocsp_responder_issuer_up``,
``_data_age_seconds``, ``_data_expiry_seconds``, ``_signer_expiry_seconds``,
``_serials``, ``_last_reload_success_timestamp_seconds``,
``_data_expiry_warning_seconds``, ``_signer_expiry_warning_seconds``) are computed
at scrape time by :class:`ocsp_responder.monitoring.IssuerCollector`.

Hot paths hold label-bound children (:attr:`Metrics.requests`,
:meth:`Metrics.issuer`) instead of calling ``labels()`` per request.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .sources import CertState

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import Collector

#: The environment variable that switches prometheus_client to multiprocess mode.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
PREFIX = "ocsp_responder_"
#: ``method`` label values; any other method counts as ``other``.
METHODS = ("GET", "POST", "HEAD", "other")
#: ``response`` label values of ``ocsp_responder_requests_total``.
RESPONSES = (
    "successful",
    "malformedRequest",
    "internalError",
    "tryLater",
    "unauthorized",
    "not_modified",
    "http_error",
)
#: ``cert_status`` label values of ``ocsp_responder_answers_total``.
CERT_STATUSES = {state: state.value for state in CertState}
#: Buckets (seconds): one signature is 0.05 ms (Ed25519) to ~10 ms (RSA-4096).
SIGNING_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
#: Buckets (seconds): a cached answer takes ~0.1 ms in the app, a signed one ~1 ms.
REQUEST_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)


def multiprocess() -> bool:
    """True when the metrics of this process are written to ``PROMETHEUS_MULTIPROC_DIR``."""
    return bool(os.environ.get(MULTIPROC_ENV))


@dataclass(frozen=True)
class IssuerMetrics:
    """The label-bound children of one issuer.

    Attributes:
        answers: ``ocsp_responder_answers_total{issuer, cert_status}`` by state.
        try_later: ``ocsp_responder_try_later_total{issuer}``.
        reload_failures: ``ocsp_responder_reload_failures_total{issuer}``.
        live_signing_rejected: ``ocsp_responder_live_signing_rejected_total{issuer}``.
    """

    answers: dict[CertState, Counter]
    try_later: Counter
    reload_failures: Counter
    live_signing_rejected: Counter


class Metrics:
    """Every counter, histogram and multiprocess gauge of the responder (one per process).

    Raises:
        RuntimeError: prometheus_client was imported in single-process mode before
            ``PROMETHEUS_MULTIPROC_DIR`` was set (the counts would not add up).
    """

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values

        if multiprocess() and not getattr(values.ValueClass, "_multiprocess", False):
            raise RuntimeError(f"prometheus_client was imported before {MULTIPROC_ENV} was set")
        #: The registry of these metrics in single-process mode; None in multiprocess
        #: mode (a scrape reads the files instead, see :func:`scrape_registry`).
        self.registry: CollectorRegistry | None = (
            None if multiprocess() else CollectorRegistry(auto_describe=True)
        )
        registry = self.registry
        requests = Counter(
            PREFIX + "requests_total",
            "OCSP HTTP requests, by method and by what was answered (OCSP responseStatus, "
            "not_modified for 304, http_error for 4xx); the /-/ endpoints are not counted",
            ["method", "response"],
            registry=registry,
        )
        #: (method, response) -> child counter; every combination exists from the start.
        self.requests: dict[tuple[str, str], Counter] = {
            (method, response): requests.labels(method, response)
            for method in METHODS
            for response in RESPONSES
        }
        self._answers = Counter(
            PREFIX + "answers_total",
            "Successful OCSP answers, by issuer and certificate status",
            ["issuer", "cert_status"],
            registry=registry,
        )
        self._try_later = Counter(
            PREFIX + "try_later_total",
            "tryLater answers of an issuer whose data or signer is not valid now",
            ["issuer"],
            registry=registry,
        )
        self._live_signing_rejected = Counter(
            PREFIX + "live_signing_rejected_total",
            "tryLater answers to requests that had to be signed now (a nonce, a cache miss) "
            "while every live-signing slot of the worker was taken (max_live_signings)",
            ["issuer"],
            registry=registry,
        )
        self._reload_failures = Counter(
            PREFIX + "reload_failures_total",
            "Status file reads that failed and new status data that was rejected",
            ["issuer"],
            registry=registry,
        )
        self.cache_hits = Counter(
            PREFIX + "cache_hits_total",
            "Requests without a nonce answered from the pre-signed response cache",
            registry=registry,
        )
        self.cache_misses = Counter(
            PREFIX + "cache_misses_total",
            "Requests without a nonce that had to be signed (not cached, stale, status changed)",
            registry=registry,
        )
        self.cache_evictions = Counter(
            PREFIX + "cache_evictions_total",
            "Pre-signed responses dropped to keep the cache within cache_size and cache_bytes",
            registry=registry,
        )
        self.cache_bytes: Gauge = Gauge(
            PREFIX + "cache_bytes",
            "Octets charged to the host's pre-signed response store "
            "(DER length + 1024 per entry)",
            registry=registry,
            multiprocess_mode="livemostrecent",
        )
        self.cache_entries: Gauge = Gauge(
            PREFIX + "cache_entries",
            "Pre-signed responses in the host's store",
            registry=registry,
            multiprocess_mode="livemostrecent",
        )
        self.signing_duration: Histogram = Histogram(
            PREFIX + "signing_duration_seconds",
            "Time to sign and encode one OCSP response",
            registry=registry,
            buckets=SIGNING_BUCKETS,
        )
        self.request_duration: Histogram = Histogram(
            PREFIX + "request_duration_seconds",
            "Time to serve one OCSP request in the app (from the WSGI call to the body)",
            registry=registry,
            buckets=REQUEST_BUCKETS,
        )
        self._issuers: dict[str, IssuerMetrics] = {}
        self._lock = threading.Lock()

    def issuer(self, name: str) -> IssuerMetrics:
        """The children of issuer ``name`` (made, at zero, on the first call)."""
        found = self._issuers.get(name)
        if found is not None:
            return found
        with self._lock:
            if name not in self._issuers:
                self._issuers[name] = IssuerMetrics(
                    answers={
                        state: self._answers.labels(name, label)
                        for state, label in CERT_STATUSES.items()
                    },
                    try_later=self._try_later.labels(name),
                    reload_failures=self._reload_failures.labels(name),
                    live_signing_rejected=self._live_signing_rejected.labels(name),
                )
            return self._issuers[name]


_metrics: Metrics | None = None
_metrics_lock = threading.Lock()


def get() -> Metrics:
    """This process's :class:`Metrics` (created on the first call)."""
    global _metrics  # noqa: PLW0603 (one set of metrics per process)
    if _metrics is None:
        with _metrics_lock:
            if _metrics is None:
                _metrics = Metrics()
    return _metrics


def scrape_registry(collectors: Iterable[Collector]) -> CollectorRegistry:
    """A registry for one exposition: this module's metrics plus ``collectors``.

    In multiprocess mode the metrics come from the files of every process in
    ``PROMETHEUS_MULTIPROC_DIR``; otherwise from this process's registry.
    """
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry(auto_describe=False)
    if multiprocess():
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        own = get().registry
        assert own is not None  # noqa: S101 (single-process mode has its registry)
        registry.register(_Forward(own))
    for collector in collectors:
        registry.register(collector)
    return registry


class _Forward:
    """A collector that yields what another registry collects."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterable[Metric]:
        """The other registry's metric families."""
        return self.registry.collect()


class MetricsDirError(Exception):
    """The multiprocess directory cannot be made ready; the message names it."""


def default_dir() -> Path:
    """``$RUNTIME_DIRECTORY/metrics`` when systemd sets RUNTIME_DIRECTORY, else a fresh
    directory under the system's temporary directory."""
    runtime = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    if runtime:
        return Path(runtime) / "metrics"
    return Path(tempfile.mkdtemp(prefix="ocsp-responder-metrics-"))


def use_multiprocess_dir(directory: Path) -> None:
    """Make ``directory`` the multiprocess directory of this process and its children.

    Creates it (mode 0700) if needed, removes the ``*.db`` files a previous run left
    (its counts would otherwise be added to this run's), and sets
    ``PROMETHEUS_MULTIPROC_DIR``. Must run before the first metric is created.

    Raises:
        MetricsDirError: it cannot be created or emptied, or it is not writable.
        RuntimeError: metrics were already created in this process.
    """
    if _metrics is not None:
        raise RuntimeError("use_multiprocess_dir() after metrics were created")
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink()
    except OSError as exc:
        raise MetricsDirError(f"{directory}: {exc.strerror or exc}") from exc
    if not os.access(directory, os.W_OK | os.X_OK):
        raise MetricsDirError(f"{directory}: not writable by this user")
    os.environ[MULTIPROC_ENV] = str(directory)


def mark_process_dead(pid: int) -> None:
    """Forget the cache gauges of process ``pid``, which exited (a worker replaced by ``serve``)."""
    if multiprocess():
        from prometheus_client import multiprocess as mp

        mp.mark_process_dead(pid)  # type: ignore[no-untyped-call]
