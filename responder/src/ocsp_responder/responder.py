"""The Responder: a decoded request in, a signed OCSPResponse out (no HTTP here).

Modelled on Boulder's and CFSSL's responders: the HTTP layer hands over request bytes
and gets back response bytes plus what it needs for caching headers; issuer lookup,
status, pre-signed cache and live signing happen here.

Which answer each request gets (malformedRequest, unauthorized, tryLater, successful
with or without a nonce, internalError) is the table "Protocol details" in the
project's README.md; how a certificate's status is decided is its section "How
certificate status is decided".

Metrics (:mod:`ocsp_responder.metrics`): successful answers by issuer and
certificate status, tryLater answers by issuer (data or signer not valid), tryLater
answers for want of a live-signing slot by issuer, cache hits and misses (requests
without a nonce), and the time of every signature.

Live signings are bounded per worker process (``[server] max_live_signings``, as
Boulder bounds its in-flight signings): a request that must be signed while it waits
(one with a nonce, RFC 9654, and one without a nonce whose pre-signed answer is not
in the cache, is past its refresh point, states another status or outlives what
the issuer may vouch for) takes one of the worker's slots for the signature and
gives it back in ``finally``. A request waits at most :data:`LIVE_SIGNING_WAIT`
(0.25 s) for a slot: a burst of clients is signed in turn (a signature takes about
a millisecond, so 0.25 s holds a queue of well over a hundred), while under a flood
the answer is tryLater (RFC 6960 section 2.3) after that wait, counted by
``ocsp_responder_live_signing_rejected_total{issuer}``. A request answered from the
pre-signed cache never takes a slot nor waits for one.

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
from .config import DEFAULT_MAX_LIVE_SIGNINGS
from .issuers import Issuer, IssuerSet
from .request import CertID, Request
from .signing import SignedResponse, sign_response, unsuccessful
from .snapshot import Snapshot
from .sources import Status
from .status_data import Clock, utc_now

log = logging.getLogger(__name__)

#: Seconds a request that must be signed now waits for a live-signing slot before it
#: is answered tryLater (see the module docstring).
LIVE_SIGNING_WAIT = 0.25

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
        max_live_signings: ``[server] max_live_signings``: how many signatures this
            process makes at once for requests that wait for them (at least 1); see
            the module's docstring.
        live_signing_wait: seconds a request waits for a free slot before it is
            answered tryLater (0: not at all).

    Attributes:
        live_signings: the slots, a :class:`threading.BoundedSemaphore` of
            ``max_live_signings`` (one slot per signature in progress).
    """

    def __init__(
        self,
        issuers: IssuerSet,
        cache: ResponseCache,
        clock: Clock = utc_now,
        *,
        max_live_signings: int = DEFAULT_MAX_LIVE_SIGNINGS,
        live_signing_wait: float = LIVE_SIGNING_WAIT,
    ) -> None:
        if max_live_signings < 1:
            raise ValueError(f"max_live_signings must be at least 1, not {max_live_signings}")
        self.issuers = issuers
        self.max_live_signings = max_live_signings
        self.live_signings = threading.BoundedSemaphore(max_live_signings)
        self.live_signing_wait = live_signing_wait
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
            The :class:`Answer`; OCSP error statuses are answers, not exceptions:
            tryLater (RFC 6960 section 2.3) when the issuer's data or signer is not
            valid now, or when the answer must be signed now and every live-signing
            slot of this process stays taken for ``live_signing_wait``.

        Raises:
            Exception: only for internal failures (the caller answers internalError);
                a slot taken for a signature that raises is given back.
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
            signed = self._sign_live(issuer, cert_id, status, now, nonce=request.nonce, until=until)
            if signed is None:
                return Answer(TRY_LATER)
            counters.answers[status.state].inc()
            return Answer(signed.der, signed, cacheable=False)
        key = (issuer.signing_context, cert_id.serial_number, algorithm)
        signed_or_none = self.cache.get(key, status, now, until)
        if signed_or_none is None:
            self._cache_misses.inc()
            signed_or_none = self._sign_live(issuer, cert_id, status, now, nonce=None, until=until)
            if signed_or_none is None:
                return Answer(TRY_LATER)
            # another worker's response for the same key, when it stored one first
            signed_or_none = self.cache.put(key, signed_or_none, now, until)
        else:
            self._cache_hits.inc()
        counters.answers[status.state].inc()
        return Answer(signed_or_none.der, signed_or_none, cacheable=True)

    def _sign_live(
        self,
        issuer: Issuer,
        cert_id: CertID,
        status: Status,
        now: datetime,
        *,
        nonce: bytes | None,
        until: datetime,
    ) -> SignedResponse | None:
        """Sign now in one of :attr:`live_signings`, waiting up to
        :attr:`live_signing_wait` seconds for one; None (counted in
        ``live_signing_rejected``) when none became free. The slot is given back
        however the signature ends."""
        if not self.live_signings.acquire(timeout=self.live_signing_wait):
            self._issuer_metrics[issuer.name].live_signing_rejected.inc()
            return None
        try:
            started = time.perf_counter()
            signed = sign_response(issuer, cert_id, status, now, nonce, until=until)
            self._signing.observe(time.perf_counter() - started)
            return signed
        finally:
            self.live_signings.release()

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
