"""The Responder: a decoded request in, a signed OCSPResponse out (no HTTP here).

Modelled on Boulder's and CFSSL's responders: the HTTP layer hands over request bytes
and gets back response bytes plus what it needs for caching headers; issuer lookup,
status, pre-signed cache and live signing happen here.

Which answer each request gets (malformedRequest, unauthorized, tryLater, successful
with or without a nonce, internalError) is the table "Protocol details" in the
project's README.md; how a certificate's status is decided is its section "How
certificate status is decided".

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

from cryptography.x509 import ocsp

from . import metrics
from .cache import ResponseCache
from .issuers import Issuer, IssuerSet
from .request import Request
from .signing import SignedResponse, sign_response, unsuccessful
from .snapshot import Snapshot
from .status_data import Clock, utc_now

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
        issuers: the loaded issuers (with their status data).
        cache: where pre-signed responses are kept.
        clock: returns the current time, aware UTC (thisUpdate, producedAt, and the
            validity checks of data and signer all use it).
    """

    def __init__(self, issuers: IssuerSet, cache: ResponseCache, clock: Clock = utc_now) -> None:
        self.issuers = issuers
        self.clock = clock
        self._unavailable: dict[str, str] = {}
        self._state_lock = threading.Lock()
        self.cache = cache
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

