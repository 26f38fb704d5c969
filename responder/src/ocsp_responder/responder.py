"""The Responder: a decoded request in, a signed OCSPResponse out (no HTTP here).

Modelled on Boulder's and CFSSL's responders: the HTTP layer hands over request bytes
and gets back response bytes plus what it needs for caching headers; issuer lookup,
status, pre-signed cache and live signing happen here.

==============================  ==========================================
request                         answer
==============================  ==========================================
undecodable / several CertIDs   malformedRequest
/ bad nonce / unknown critical
extension
CertID of an issuer we do not   unauthorized (RFC 6960 section 2.3)
serve (or another hash algo)
known issuer whose data is      tryLater (RFC 6960 section 2.3); an ERROR is
past its expiry (+ grace), or   logged once per change of that state
whose signer is not valid now
known issuer, no nonce          successful, pre-signed (cache) or signed now
known issuer, nonce             successful, signed now with the nonce echoed
anything raising unexpectedly   internalError (cause logged by the HTTP layer)
==============================  ==========================================

Metrics (:mod:`ocsp_responder.metrics`): successful answers by issuer and
certificate status, tryLater answers by issuer, cache hits and misses (requests
without a nonce), and the time of every signature.

Every successful answer's nextUpdate is at most the issuer's
:meth:`~ocsp_responder.issuers.Issuer.vouch_until` (data expiry + grace, signer
notAfter): no answer is valid longer than the data and the signer behind it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.x509 import ocsp

from . import metrics
from .cache import ResponseCache
from .config import Config, read_config
from .issuers import Issuer, IssuerSet, load_issuers
from .request import Request
from .signing import SignedResponse, sign_response, unsuccessful
from .snapshot import Snapshot
from .status_data import Clock, DataWatcher, utc_now

log = logging.getLogger(__name__)

MALFORMED_REQUEST = unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
UNAUTHORIZED = unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED)
INTERNAL_ERROR = unsuccessful(ocsp.OCSPResponseStatus.INTERNAL_ERROR)
TRY_LATER = unsuccessful(ocsp.OCSPResponseStatus.TRY_LATER)
#: The ``response`` metric label of each OCSP error body.
_ERROR_NAMES = {
    MALFORMED_REQUEST: "malformedRequest",
    UNAUTHORIZED: "unauthorized",
    INTERNAL_ERROR: "internalError",
    TRY_LATER: "tryLater",
}


@dataclass(frozen=True)
class Answer:
    """What the Responder returns for one request.

    Attributes:
        der: the DER OCSPResponse to send.
        signed: the signed response details for a successful answer, else None.
        cacheable: True for a successful answer without a nonce (HTTP caches may keep it).
    """

    der: bytes
    signed: SignedResponse | None = None
    cacheable: bool = False

    @property
    def response_status(self) -> str:
        """The OCSPResponseStatus name as RFC 6960 spells it: ``successful``,
        ``malformedRequest``, ``internalError``, ``tryLater`` or ``unauthorized``."""
        if self.signed is not None:
            return "successful"
        return _ERROR_NAMES.get(self.der, "internalError")


class Responder:
    """Answers OCSP requests for a set of issuers.

    Args:
        config: the validated configuration.
        issuers: the loaded issuers (with their status data).
        clock: returns the current time, aware UTC.
    """

    def __init__(self, config: Config, issuers: IssuerSet, clock: Clock = utc_now) -> None:
        self.config = config
        self.issuers = issuers
        self.clock = clock
        self._unavailable: dict[str, str] = {}
        self._state_lock = threading.Lock()
        self.cache = ResponseCache(
            config.server.cache_size, config.server.cache_bytes, config.server.refresh_fraction
        )
        self.watcher = DataWatcher(
            [issuer.data for issuer in issuers.issuers], config.server.reload_interval
        )
        found = metrics.get()
        self._issuer_metrics = {
            issuer.name: found.issuer(issuer.name) for issuer in issuers.issuers
        }
        self._cache_hits = found.cache_hits
        self._cache_misses = found.cache_misses
        self._signing = found.signing_duration

    def respond(self, request: Request) -> Answer:
        """Answer one decoded OCSP request.

        Args:
            request: the decoded request (see :func:`~ocsp_responder.request.decode_request`;
                a request that does not decode is answered with MALFORMED_REQUEST by the
                caller).

        Returns:
            The :class:`Answer`; OCSP error statuses are answers, not exceptions.

        Raises:
            Exception: only for internal failures (the caller answers internalError).
        """
        cert_id = request.cert_id
        algorithm = cert_id.hash_algorithm.name
        issuer = self.issuers.find(algorithm, cert_id.issuer_name_hash, cert_id.issuer_key_hash)
        if issuer is None:
            log.info(
                "unauthorized: no issuer for CertID %s issuerNameHash=%s issuerKeyHash=%s",
                algorithm,
                cert_id.issuer_name_hash.hex(),
                cert_id.issuer_key_hash.hex(),
            )
            return Answer(UNAUTHORIZED)
        snapshot = issuer.data.sync()  # one snapshot for the whole answer
        now = self.clock()
        counters = self._issuer_metrics[issuer.name]
        if not self._available(issuer, now, snapshot):
            counters.try_later.inc()
            return Answer(TRY_LATER)
        status = issuer.data.lookup(cert_id.serial_number, snapshot)
        until = issuer.vouch_until(snapshot)
        if request.nonce is not None:
            started = time.perf_counter()
            signed = sign_response(issuer, cert_id, status, now, request.nonce, until=until)
            self._signing.observe(time.perf_counter() - started)
            counters.answers[status.state].inc()
            return Answer(signed.der, signed, cacheable=False)
        key = (issuer.name, cert_id.serial_number, algorithm)
        signed_or_none = self.cache.get(key, status, now)
        if signed_or_none is None or signed_or_none.next_update > until:
            self._cache_misses.inc()
            started = time.perf_counter()
            signed_or_none = sign_response(issuer, cert_id, status, now, until=until)
            self._signing.observe(time.perf_counter() - started)
            self.cache.put(key, signed_or_none)
        else:
            self._cache_hits.inc()
        counters.answers[status.state].inc()
        return Answer(signed_or_none.der, signed_or_none, cacheable=True)

    def _available(self, issuer: Issuer, now: datetime, snapshot: Snapshot) -> bool:
        """False (and an ERROR on the change) when ``issuer`` cannot vouch at ``now``."""
        problem = issuer.unavailable(now, snapshot)
        if problem == self._unavailable.get(issuer.name):
            return problem is None
        with self._state_lock:
            before = self._unavailable.get(issuer.name)
            if problem == before:
                return problem is None
            if problem is None:
                del self._unavailable[issuer.name]
                log.warning("issuer %s: answering again (data and signer valid)", issuer.name)
            else:
                self._unavailable[issuer.name] = problem
                log.error("answering tryLater: %s", problem)
        return problem is None


def build_responder(
    config_path: str | Path, *, persist: bool = True, check_validity: bool = False
) -> Responder:
    """Load a config file and everything it names into a ready :class:`Responder`.

    The data watcher is not started (see :meth:`DataWatcher.ensure_running`).

    Args:
        config_path: the TOML file.
        persist: keep accepted status data in ``[server] state_dir`` (``serve``);
            False reads without writing anything (``check-config``).
        check_validity: treat a signer outside its validity period as a config
            problem; ``serve`` starts anyway and answers tryLater for that issuer.

    Raises:
        ConfigError: every problem found, with file and key path.
    """
    config, problems = read_config(config_path)
    issuers = load_issuers(
        config, problems=problems, persist=persist, check_validity=check_validity
    )
    return Responder(config, issuers)
