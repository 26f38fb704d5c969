"""Build and sign OCSP responses with :class:`cryptography.x509.ocsp.OCSPResponseBuilder`.

A successful response is a BasicOCSPResponse (RFC 6960 section 4.2.1) with one
SingleResponse that echoes the request's CertID (same hash algorithm), thisUpdate =
the signing time (whole seconds), nextUpdate = min(thisUpdate + the issuer's
response_validity, the time up to which the issuer may vouch), producedAt set by the
library at signing, the ResponderID in the issuer's configured form, the signer
certificate in ``certs``, and the request's nonce echoed when there was one (RFC 9654).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import ocsp

from .issuers import Issuer
from .request import CertID
from .sources import CertState, Status

_CERT_STATUS = {
    CertState.GOOD: ocsp.OCSPCertStatus.GOOD,
    CertState.REVOKED: ocsp.OCSPCertStatus.REVOKED,
    CertState.UNKNOWN: ocsp.OCSPCertStatus.UNKNOWN,
}


@dataclass(frozen=True)
class SignedResponse:
    """A signed, DER-encoded OCSPResponse and what the HTTP layer needs to serve it.

    Attributes:
        der: the OCSPResponse, octets.
        status: the certificate status it states.
        this_update, next_update: its validity window (aware UTC).
        etag: strong HTTP entity tag, quoted (RFC 9110 section 8.8.3).
        last_modified, expires: thisUpdate and nextUpdate as HTTP dates.
    """

    der: bytes
    status: Status
    this_update: datetime
    next_update: datetime
    etag: str
    last_modified: str
    expires: str


def sign_response(
    issuer: Issuer,
    cert_id: CertID,
    status: Status,
    now: datetime,
    nonce: bytes | None = None,
    *,
    until: datetime | None = None,
) -> SignedResponse:
    """Sign a response for one CertID.

    Args:
        issuer: whose signer signs it.
        cert_id: the request's CertID, echoed unchanged.
        status: the status to state.
        now: the signing time (aware UTC); thisUpdate is ``now`` without microseconds.
        nonce: the request's nonce to echo, or None.
        until: the latest nextUpdate allowed (data expiry, signer notAfter), or None;
            the caller answers tryLater rather than sign when it is not after ``now``.

    Returns:
        The :class:`SignedResponse`.

    Raises:
        ValueError, TypeError: from the library, for a key or algorithm it rejects
            (the HTTP layer answers ``internalError``).
    """
    this_update = now.replace(microsecond=0)
    next_update = this_update + issuer.response_validity
    if until is not None and until < next_update:
        # whole seconds, as encoded; never before thisUpdate (the last second of the data)
        next_update = max(this_update, until.replace(microsecond=0))
    builder = ocsp.OCSPResponseBuilder().add_response_by_hash(
        issuer_name_hash=cert_id.issuer_name_hash,
        issuer_key_hash=cert_id.issuer_key_hash,
        serial_number=cert_id.serial_number,
        algorithm=cert_id.hash_algorithm,
        cert_status=_CERT_STATUS[status.state],
        this_update=this_update,
        next_update=next_update,
        revocation_time=status.revocation_time,
        revocation_reason=status.reason,
    )
    builder = builder.responder_id(issuer.responder_encoding, issuer.signer_certificate)
    builder = builder.certificates([issuer.signer_certificate])
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    response = builder.sign(issuer.signer_key, issuer.signature_hash)
    der = response.public_bytes(serialization.Encoding.DER)
    return SignedResponse(
        der=der,
        status=status,
        this_update=this_update,
        next_update=next_update,
        etag='"' + hashlib.sha256(der).hexdigest()[:40] + '"',
        last_modified=format_datetime(this_update, usegmt=True),
        expires=format_datetime(next_update, usegmt=True),
    )


def unsuccessful(status: ocsp.OCSPResponseStatus) -> bytes:
    """DER OCSPResponse carrying only an error ``responseStatus`` (RFC 6960 section 4.2.1).

    Args:
        status: malformedRequest, internalError, tryLater or unauthorized.
    """
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(
        serialization.Encoding.DER
    )
