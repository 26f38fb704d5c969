"""OCSPRequest DER -> a small typed request (RFC 6960 section 4.1, RFC 9654 nonce).

:mod:`cryptography.x509.ocsp` decodes the request. It exposes neither
TBSRequest.version nor singleRequestExtensions, and (in 48, the pinned release)
accepts a v2 request. A request that is exactly what cryptography's
OCSPRequestBuilder encodes for its CertID and extensions (what OCSP clients send)
has neither; any other is read with asn1crypto for those two fields (60-90
microseconds for a typical 100-octet request, where pyasn1 with pyasn1-alt-modules
takes about 200-450). Every exception raised while decoding or
inspecting a request becomes one :class:`MalformedRequest`, which the HTTP layer
answers with the OCSP status ``malformedRequest``; nothing a client sends reaches
the signer or the cache unless it passes every check.

Which requests get ``malformedRequest`` (and which are answered although outside the
lightweight profile of RFC 5019/9919) is the table "Protocol details" in the
project's README.md. A serial is limited to MAX_SERIAL_OCTETS (22) content octets in
two's complement: RFC 5280 section 4.1.2.2 caps serials at 20 octets; the 2 octets of
slack admit a 20-octet value whose top bit needs a leading zero octet, and CAs
slightly out of profile, while a 9,000-octet serial never makes an 18,000-octet cache
entry.
"""

from __future__ import annotations

from dataclasses import dataclass

from asn1crypto import ocsp as asn1_ocsp
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

#: RFC 9654 section 2.1: responders accept 1..32 octets and may accept more; we accept up to 128.
MAX_NONCE_OCTETS = 128

#: RFC 5280 section 4.1.2.2: serial numbers are at most 20 octets long...
RFC5280_SERIAL_OCTETS = 20
#: ... and we accept 2 octets more (a 20-octet value with its top bit set takes 21
#: content octets in two's complement; some CAs are slightly out of profile).
SERIAL_SLACK_OCTETS = 2
#: The longest serial number accepted, in DER INTEGER content octets.
MAX_SERIAL_OCTETS = RFC5280_SERIAL_OCTETS + SERIAL_SLACK_OCTETS


class MalformedRequest(Exception):
    """The request cannot be decoded or is outside what we answer; the message says why."""


@dataclass(frozen=True)
class CertID:
    """RFC 6960 section 4.1.1 CertID.

    Attributes:
        hash_algorithm: the algorithm of the two hashes (e.g. ``hashes.SHA1()``).
        issuer_name_hash: hash of the issuer's DER-encoded subject name, octets.
        issuer_key_hash: hash of the issuer's subjectPublicKey BIT STRING value, octets.
        serial_number: the certificate's serial number, 0 .. 2**175 - 1 (at most
            MAX_SERIAL_OCTETS content octets).
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
    """Decode and check a DER OCSPRequest (see the module docstring for what is refused).

    Args:
        der: the request body (POST) or the base64-decoded GET path, octets.

    Returns:
        The decoded :class:`Request`.

    Raises:
        MalformedRequest: undecodable DER, a version other than v1, several CertIDs,
            an unsupported CertID hash algorithm or issuer hashes not of its digest
            size, a negative or overlong serial number, a bad nonce, duplicate
            extensions, an unrecognised critical extension or singleRequestExtension;
            and any other exception raised while decoding or inspecting the request
            (its type and message are kept in the message).
    """
    try:
        return _decode(der)
    except MalformedRequest:
        raise
    except Exception as exc:  # whatever the libraries raise for odd input
        raise MalformedRequest(f"undecodable request: {type(exc).__name__}: {exc}") from exc


def serial_octets(serial: int) -> int:
    """Content octets of ``serial`` as a DER INTEGER (two's complement, X.690 8.3).

    Args:
        serial: any integer.

    Returns:
        The length, octets: 1 for 0 .. 127 and -128 .. -1, 2 for 128 .. 32767, ...
    """
    magnitude = serial if serial >= 0 else -serial - 1
    return magnitude.bit_length() // 8 + 1


def _decode(der: bytes) -> Request:
    try:
        parsed = ocsp.load_der_ocsp_request(der)
    except NotImplementedError as exc:  # cryptography's answer to several Requests
        raise MalformedRequest(f"only one CertID per request is supported: {exc}") from exc
    except ValueError as exc:
        raise MalformedRequest(f"not a DER OCSPRequest: {exc}") from exc
    try:
        hash_algorithm = parsed.hash_algorithm
    except UnsupportedAlgorithm as exc:
        raise MalformedRequest(f"unsupported CertID hash algorithm: {exc}") from exc
    for name, value in (
        ("issuerNameHash", parsed.issuer_name_hash),
        ("issuerKeyHash", parsed.issuer_key_hash),
    ):
        if len(value) != hash_algorithm.digest_size:
            raise MalformedRequest(
                f"{name} of {len(value)} octets for {hash_algorithm.name} "
                f"(a digest of {hash_algorithm.digest_size} octets; RFC 6960 section 4.1.1)"
            )
    serial = parsed.serial_number
    if serial < 0:
        raise MalformedRequest("negative serial number (RFC 5280 section 4.1.2.2)")
    if serial_octets(serial) > MAX_SERIAL_OCTETS:
        raise MalformedRequest(
            f"serial number of {serial_octets(serial)} octets (accepted: up to "
            f"{MAX_SERIAL_OCTETS}; RFC 5280 section 4.1.2.2)"
        )
    cert_id = CertID(
        hash_algorithm=hash_algorithm,
        issuer_name_hash=parsed.issuer_name_hash,
        issuer_key_hash=parsed.issuer_key_hash,
        serial_number=serial,
    )
    nonce = _nonce(parsed)
    if not _is_canonical_v1(der, parsed):
        _check_version_and_single_extensions(der)
    return Request(cert_id=cert_id, nonce=nonce)


def _nonce(parsed: ocsp.OCSPRequest) -> bytes | None:
    try:
        extensions = parsed.extensions
    except x509.DuplicateExtension as exc:
        raise MalformedRequest(f"duplicate request extension: {exc}") from exc
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


def _is_canonical_v1(der: bytes, parsed: ocsp.OCSPRequest) -> bool:
    """Whether ``der`` is octet for octet the request that cryptography's
    OCSPRequestBuilder makes from the parsed CertID and request extensions: a v1
    request (version absent, its DEFAULT) with no requestorName, no
    singleRequestExtensions and no signature, which is what OCSP clients send.

    The fast path of :func:`_decode` (about 20 microseconds where asn1crypto takes
    60-90): True proves that :func:`_check_version_and_single_extensions` would pass;
    False (any other encoding, or an extension the builder cannot make) only means the
    full check runs.
    """
    try:
        builder = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
            parsed.issuer_name_hash,
            parsed.issuer_key_hash,
            parsed.serial_number,
            parsed.hash_algorithm,
        )
        for extension in parsed.extensions:
            builder = builder.add_extension(extension.value, extension.critical)
        return builder.build().public_bytes(serialization.Encoding.DER) == der
    except Exception:  # anything the builder refuses: the full check decides
        return False


def _check_version_and_single_extensions(der: bytes) -> None:
    """Refuse a version other than v1 and any critical singleRequestExtension.

    cryptography has already accepted ``der`` (strict DER, exactly one Request);
    asn1crypto parses lazily, so only the fields read here are decoded.
    """
    tbs = asn1_ocsp.OCSPRequest.load(der)["tbs_request"]
    version = tbs["version"].native
    if version != "v1":
        shown = version if isinstance(version, int) and abs(version) < 1 << 32 else "(huge)"
        raise MalformedRequest(f"request version {shown} (only v1 = 0 is defined, RFC 6960 4.1.1)")
    for extension in tbs["request_list"][0]["single_request_extensions"] or ():
        if extension["critical"].native:
            raise MalformedRequest(
                "unrecognised critical singleRequestExtension "
                + str(extension["extn_id"].dotted)[:100]
            )
