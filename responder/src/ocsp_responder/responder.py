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
known issuer, no nonce          successful, pre-signed (cache) or signed now
known issuer, nonce             successful, signed now with the nonce echoed
anything raising unexpectedly   internalError (cause logged by the HTTP layer)
==============================  ==========================================
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.x509 import ocsp

from .cache import ResponseCache
from .config import Config, read_config
from .issuers import IssuerSet, load_issuers
from .request import Request
from .signing import SignedResponse, sign_response, unsuccessful
from .sources import SourceWatcher

log = logging.getLogger(__name__)

MALFORMED_REQUEST = unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
UNAUTHORIZED = unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED)
INTERNAL_ERROR = unsuccessful(ocsp.OCSPResponseStatus.INTERNAL_ERROR)


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


class Responder:
    """Answers OCSP requests for a set of issuers.

    Args:
        config: the validated configuration.
        issuers: the loaded issuers (with their status sources).
    """

    def __init__(self, config: Config, issuers: IssuerSet) -> None:
        self.config = config
        self.issuers = issuers
        self.cache = ResponseCache(config.server.cache_size, config.server.refresh_fraction)
        self.watcher = SourceWatcher(
            [issuer.source for issuer in issuers.issuers], config.server.reload_interval
        )

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
        status = issuer.source.lookup(cert_id.serial_number)
        now = datetime.now(UTC)
        if request.nonce is not None:
            signed = sign_response(issuer, cert_id, status, now, request.nonce)
            return Answer(signed.der, signed, cacheable=False)
        key = (issuer.name, cert_id.serial_number, algorithm)
        signed_or_none = self.cache.get(key, status, now)
        if signed_or_none is None:
            signed_or_none = sign_response(issuer, cert_id, status, now)
            self.cache.put(key, signed_or_none)
        return Answer(signed_or_none.der, signed_or_none, cacheable=True)


def build_responder(config_path: str | Path) -> Responder:
    """Load a config file and everything it names into a ready :class:`Responder`.

    The source watcher is not started (see :meth:`SourceWatcher.ensure_running`).

    Raises:
        ConfigError: every problem found, with file and key path.
    """
    config, problems = read_config(config_path)
    return Responder(config, load_issuers(config, problems=problems))
