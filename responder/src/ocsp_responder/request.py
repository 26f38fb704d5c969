"""OCSPRequest DER -> a small typed request (RFC 6960 section 4.1, RFC 9654 nonce).

All ASN.1 work is done by :mod:`cryptography.x509.ocsp`; every exception it raises
for a bad request becomes one :class:`MalformedRequest`, which the HTTP layer answers
with the OCSP status ``malformedRequest``.

Documented answers for requests outside the lightweight profile (RFC 5019/9919):

* several CertIDs in one request: ``malformedRequest`` (RFC 5019 section 2.1.1: a
  request carries exactly one Request).
* a signed request (optionalSignature): answered like an unsigned one; the signature
  is not checked (RFC 6960 section 4.1.2 leaves signed requests optional).
* request extensions: the nonce is echoed (1 .. 128 octets, RFC 9654 section 2.1; an
  empty or longer nonce is ``malformedRequest``); other non-critical extensions are
  ignored; an unrecognised *critical* extension is ``malformedRequest``
  (RFC 5280 section 4.2 semantics).
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.x509 import ocsp

#: RFC 9654 section 2.1: responders accept 1..32 octets and may accept more; we accept up to 128.
MAX_NONCE_OCTETS = 128


class MalformedRequest(Exception):
    """The request cannot be decoded or is outside what we answer; the message says why."""


@dataclass(frozen=True)
class CertID:
    """RFC 6960 section 4.1.1 CertID.

    Attributes:
        hash_algorithm: the algorithm of the two hashes (e.g. ``hashes.SHA1()``).
        issuer_name_hash: hash of the issuer's DER-encoded subject name, octets.
        issuer_key_hash: hash of the issuer's subjectPublicKey BIT STRING value, octets.
        serial_number: the certificate's serial number.
    """

    hash_algorithm: hashes.HashAlgorithm
    issuer_name_hash: bytes
    issuer_key_hash: bytes
    serial_number: int


@dataclass(frozen=True)
class Request:
    """A decoded single-CertID OCSPRequest.

    Attributes:
        cert_id: the certificate asked about.
        nonce: the RFC 9654 nonce value (1..128 octets) or None.
    """

    cert_id: CertID
    nonce: bytes | None


def decode_request(der: bytes) -> Request:
    """Decode a DER OCSPRequest.

    Args:
        der: the request body (POST) or the base64-decoded GET path.

    Returns:
        The decoded :class:`Request`.

    Raises:
        MalformedRequest: undecodable DER, several CertIDs, an unsupported CertID hash
            algorithm, a bad nonce, or an unrecognised critical extension.
    """
    try:
        parsed = ocsp.load_der_ocsp_request(der)
    except NotImplementedError as exc:  # cryptography's answer to several Requests
        raise MalformedRequest(f"only one CertID per request is supported: {exc}") from exc
    except ValueError as exc:
        raise MalformedRequest(f"not a DER OCSPRequest: {exc}") from exc
    try:
        cert_id = CertID(
            hash_algorithm=parsed.hash_algorithm,
            issuer_name_hash=parsed.issuer_name_hash,
            issuer_key_hash=parsed.issuer_key_hash,
            serial_number=parsed.serial_number,
        )
    except UnsupportedAlgorithm as exc:
        raise MalformedRequest(f"unsupported CertID hash algorithm: {exc}") from exc
    return Request(cert_id=cert_id, nonce=_nonce(parsed))


def _nonce(parsed: ocsp.OCSPRequest) -> bytes | None:
    try:
        extensions = parsed.extensions
    except ValueError as exc:
        raise MalformedRequest(f"bad request extensions: {exc}") from exc
    nonce: bytes | None = None
    for extension in extensions:
        if isinstance(extension.value, x509.OCSPNonce):
            nonce = extension.value.nonce
            if not 1 <= len(nonce) <= MAX_NONCE_OCTETS:
                raise MalformedRequest(
                    f"nonce of {len(nonce)} octets (accepted: 1..{MAX_NONCE_OCTETS})"
                )
        elif extension.critical:
            raise MalformedRequest(f"unrecognised critical extension {extension.oid.dotted_string}")
    return nonce
