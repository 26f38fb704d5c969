"""The WSGI app in-process: caching headers, ETag/304, GET path forms, POST, the HTTP
errors (405, 413, 414) and malformedRequest, against the README's "Protocol details".

Every expected value is computed from the fake clock and the stack's settings.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from garbage_input import GARBAGE_GET_PATHS

from ocsp_responder.config import max_request_target
from ocsp_responder.sources import GOOD, CertState, Status

from .support import (
    CACHE_MAX_AGE,
    MAX_REQUEST_SIZE,
    T0,
    VALIDITY,
    Pki,
    Reply,
    Stack,
    call,
    ocsp_request,
)

SERIAL = 0x1001
REVOKED_SERIAL = 0x1002
REVOKED_AT = datetime(2025, 6, 1, 8, 30, tzinfo=UTC)
TABLE = {
    SERIAL: GOOD,
    REVOKED_SERIAL: Status(CertState.REVOKED, REVOKED_AT, x509.ReasonFlags.key_compromise),
}
CACHEABLE = "public, no-transform, must-revalidate"
NO_STORE = "no-cache, no-store"
OK = ocsp.OCSPResponseStatus.SUCCESSFUL
MALFORMED = ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def b64_path(der: bytes) -> str:
    return "/" + quote(base64.b64encode(der).decode(), safe="")


def http_date(when: datetime) -> str:
    return format_datetime(when.astimezone(UTC), usegmt=True)


def assert_ocsp_error(reply: Reply, status: ocsp.OCSPResponseStatus) -> None:
    assert reply.status == "200 OK", reply
    assert reply.ocsp().response_status == status
    assert reply.headers["Cache-Control"] == NO_STORE
    assert reply.headers["Content-Type"] == "application/ocsp-response"
    assert "ETag" not in reply.headers


@pytest.fixture
def stack(make_stack: Callable[..., Stack]) -> Stack:
    return make_stack(TABLE)


# ---------------------------------------------------------------- caching headers


def test_headers_of_a_fresh_answer(stack: Stack, pki: Pki) -> None:
    """thisUpdate = the clock without microseconds, nextUpdate = + response_validity;
    max-age capped at http_cache_max_age; Last-Modified, Expires, ETag as computed."""
    reply = call(stack.app, "GET", b64_path(ocsp_request(pki.ca, SERIAL)))
    assert reply.status == "200 OK"
    parsed = reply.ocsp()
    this_update = T0.replace(microsecond=0)
    next_update = this_update + timedelta(seconds=VALIDITY)
    assert parsed.response_status == OK
    assert parsed.certificate_status == ocsp.OCSPCertStatus.GOOD
    assert parsed.serial_number == SERIAL
    assert parsed.this_update_utc == this_update
    assert parsed.next_update_utc == next_update
    # 3599.75 s to nextUpdate, above the cap
    assert VALIDITY - 1 > CACHE_MAX_AGE
    assert reply.headers["Cache-Control"] == f"max-age={CACHE_MAX_AGE}, {CACHEABLE}"
    assert (
        reply.headers["Last-Modified"]
        == http_date(this_update)
        == ("Sat, 10 Jan 2026 12:00:00 GMT")
    )
    assert reply.headers["Expires"] == http_date(next_update) == "Sat, 10 Jan 2026 13:00:00 GMT"
    assert reply.headers["ETag"] == '"' + hashlib.sha256(reply.body).hexdigest()[:40] + '"'
    assert reply.headers["Content-Type"] == "application/ocsp-response"
    assert reply.headers["Content-Length"] == str(len(reply.body))


def test_max_age_is_bounded_by_next_update(make_stack: Callable[..., Stack], pki: Pki) -> None:
    """A cached answer served late: max-age = whole seconds left to nextUpdate (< cap)."""
    stack = make_stack(TABLE, refresh_fraction=1.0)
    request = b64_path(ocsp_request(pki.ca, SERIAL))
    first = call(stack.app, "GET", request)
    next_update = T0.replace(microsecond=0) + timedelta(seconds=VALIDITY)
    stack.clock.advance(VALIDITY - 200)  # 199.75 s left
    late = call(stack.app, "GET", request)
    assert late.body == first.body  # the same pre-signed answer
    left = int((next_update - stack.clock()).total_seconds())
    assert left == 199 < CACHE_MAX_AGE
    assert late.headers["Cache-Control"] == f"max-age={left}, {CACHEABLE}"
    assert late.headers["Expires"] == first.headers["Expires"] == http_date(next_update)
    assert late.headers["ETag"] == first.headers["ETag"]


def test_max_age_is_bounded_by_data_expiry(make_stack: Callable[..., Stack], pki: Pki) -> None:
    """Data expiring in 300 s: nextUpdate = the expiry, max-age = seconds left to it."""
    max_data_age = 86400
    confirmed = T0.replace(microsecond=0) - timedelta(seconds=max_data_age - 300)
    stack = make_stack(TABLE, confirmed_at=confirmed, max_data_age=max_data_age)
    reply = call(stack.app, "GET", b64_path(ocsp_request(pki.ca, SERIAL)))
    expiry = confirmed + timedelta(seconds=max_data_age)
    assert reply.ocsp().next_update_utc == expiry
    assert reply.headers["Cache-Control"] == f"max-age=299, {CACHEABLE}"  # 299.75 s left
    assert reply.headers["Expires"] == http_date(expiry)


def test_max_age_zero_when_the_cap_is_zero(make_stack: Callable[..., Stack], pki: Pki) -> None:
    stack = make_stack(TABLE, http_cache_max_age=0)
    reply = call(stack.app, "GET", b64_path(ocsp_request(pki.ca, SERIAL)))
    assert reply.headers["Cache-Control"] == f"max-age=0, {CACHEABLE}"


def test_revoked_answer_carries_time_and_reason(stack: Stack, pki: Pki) -> None:
    reply = call(stack.app, "POST", "/", ocsp_request(pki.ca, REVOKED_SERIAL))
    parsed = reply.ocsp()
    assert parsed.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert parsed.revocation_time_utc == REVOKED_AT
    assert parsed.revocation_reason == x509.ReasonFlags.key_compromise
    assert reply.headers["Cache-Control"] == f"max-age={CACHE_MAX_AGE}, {CACHEABLE}"


def test_serial_not_in_the_table_is_unknown(stack: Stack, pki: Pki) -> None:
    reply = call(stack.app, "POST", "/", ocsp_request(pki.ca, 0x4242))
    assert reply.ocsp().certificate_status == ocsp.OCSPCertStatus.UNKNOWN


@pytest.mark.parametrize(
    "if_none_match",
    ["{etag}", "W/{etag}", '"other", {etag}', "  {etag}  ", "*"],
)
def test_if_none_match_gives_304(stack: Stack, pki: Pki, if_none_match: str) -> None:
    """If-None-Match with the ETag (weak comparison, in a list, or ``*``) -> 304, no body,
    the same caching headers."""
    path = b64_path(ocsp_request(pki.ca, SERIAL))
    first = call(stack.app, "GET", path)
    etag = first.headers["ETag"]
    again = call(stack.app, "GET", path, headers={"If-None-Match": if_none_match.format(etag=etag)})
    assert again.status == "304 Not Modified"
    assert again.body == b""
    for name in ("Cache-Control", "Last-Modified", "Expires", "ETag"):
        assert again.headers[name] == first.headers[name], name
    assert "Content-Length" not in again.headers


def test_other_etag_gives_200_with_the_same_body(stack: Stack, pki: Pki) -> None:
    path = b64_path(ocsp_request(pki.ca, SERIAL))
    first = call(stack.app, "GET", path)
    other = call(stack.app, "GET", path, headers={"If-None-Match": '"not-it"'})
    assert other.status == "200 OK"
    assert other.body == first.body


def test_nonce_answer_is_no_store_and_echoes_it(stack: Stack, pki: Pki) -> None:
    nonce = bytes(range(1, 17))
    reply = call(stack.app, "POST", "/", ocsp_request(pki.ca, SERIAL, nonce=nonce))
    assert reply.headers["Cache-Control"] == NO_STORE
    assert "ETag" not in reply.headers and "Expires" not in reply.headers
    ext = reply.ocsp().extensions.get_extension_for_class(x509.OCSPNonce)
    assert ext.value.nonce == nonce
    assert stack.cache.size_bytes == 0  # never cached


def test_head_has_the_headers_of_get_without_body(stack: Stack, pki: Pki) -> None:
    path = b64_path(ocsp_request(pki.ca, SERIAL))
    got = call(stack.app, "GET", path)
    head = call(stack.app, "HEAD", path)
    assert head.status == "200 OK"
    assert head.body == b""
    assert head.header_list == got.header_list


@pytest.mark.parametrize(
    "algorithm",
    [hashes.SHA1(), hashes.SHA256(), hashes.SHA384(), hashes.SHA512()],
    ids=lambda algorithm: algorithm.name,
)
def test_request_built_from_the_certificates(
    stack: Stack, pki: Pki, algorithm: hashes.HashAlgorithm
) -> None:
    """A request made by OCSPRequestBuilder.add_certificate (leaf + CA, each CertID hash)
    finds the issuer; the response echoes the CertID."""
    leaf = pki.leaf(SERIAL)
    request = ocsp.OCSPRequestBuilder().add_certificate(leaf, pki.ca, algorithm).build()
    der = request.public_bytes(serialization.Encoding.DER)
    assert der == ocsp_request(pki.ca, SERIAL, algorithm=algorithm)
    parsed = call(stack.app, "POST", "/", der).ocsp()
    assert parsed.certificate_status == ocsp.OCSPCertStatus.GOOD
    assert parsed.hash_algorithm.name == algorithm.name
    assert parsed.issuer_name_hash == request.issuer_name_hash
    assert parsed.issuer_key_hash == request.issuer_key_hash
    assert parsed.serial_number == leaf.serial_number


def test_unknown_issuer_is_unauthorized(stack: Stack, pki: Pki) -> None:
    reply = call(stack.app, "POST", "/", ocsp_request(pki.stranger, SERIAL))
    assert_ocsp_error(reply, ocsp.OCSPResponseStatus.UNAUTHORIZED)


# ---------------------------------------------------------------- GET path forms


def awkward_request(pki: Pki) -> tuple[bytes, str]:
    """A nonce request whose base64 holds ``+``, ``/`` and ``=`` padding (and so
    differs from its URL-safe form); the nonce is varied until one does."""
    for attempt in range(2000):
        nonce = hashlib.sha256(attempt.to_bytes(4, "big")).digest()[:16]
        der = ocsp_request(pki.ca, SERIAL, nonce=nonce, algorithm=hashes.SHA256())
        text = base64.b64encode(der).decode()
        if "+" in text and "/" in text and text.endswith("="):
            return der, text
    raise AssertionError("no request with +, / and = in its base64")


GET_FORMS: dict[str, Callable[[str], str]] = {
    "escaped": lambda b64: "/" + quote(b64, safe=""),
    "unescaped": lambda b64: "/" + b64,
    "prefix": lambda b64: "/ocsp/" + quote(b64, safe=""),
    "prefix-unescaped": lambda b64: "/pki/ocsp/v1/" + b64,
    "doubled-slash": lambda b64: "//" + quote(b64, safe=""),
    "lowercase-escapes": lambda b64: (
        "/" + quote(b64, safe="").replace("%2B", "%2b").replace("%2F", "%2f").replace("%3D", "%3d")
    ),
    "plus-as-space": lambda b64: "/" + quote(b64, safe="").replace("%2B", "%20"),
    "no-padding": lambda b64: "/" + quote(b64.rstrip("="), safe=""),
    "urlsafe-alphabet": lambda b64: "/" + b64.replace("+", "-").replace("/", "_"),
    "urlsafe-no-padding": lambda b64: (
        "/ocsp/" + b64.replace("+", "-").replace("/", "_").rstrip("=")
    ),
    "query-string-ignored": lambda b64: "/" + quote(b64, safe="") + "?x=1",
    "absolute-target": lambda b64: "http://ocsp.example.com/" + quote(b64, safe=""),
}


@pytest.mark.parametrize("form", sorted(GET_FORMS))
def test_get_path_forms(stack: Stack, pki: Pki, form: str) -> None:
    """Each form decodes to the very request: its nonce comes back."""
    der, text = awkward_request(pki)
    reply = call(stack.app, "GET", GET_FORMS[form](text))
    assert reply.status == "200 OK"
    parsed = reply.ocsp()
    assert parsed.response_status == OK
    assert parsed.serial_number == SERIAL
    assert parsed.hash_algorithm.name == "sha256"
    expected = ocsp.load_der_ocsp_request(der).extensions.get_extension_for_class(x509.OCSPNonce)
    got = parsed.extensions.get_extension_for_class(x509.OCSPNonce)
    assert got.value.nonce == expected.value.nonce


def test_get_without_raw_uri_uses_path_info(stack: Stack, pki: Pki) -> None:
    """A server that sets only (decoded) PATH_INFO: the unescaped base64 is read from it."""
    _, text = awkward_request(pki)
    reply = call(stack.app, "GET", "/ocsp/" + quote(text, safe=""), raw_uri=False)
    assert reply.ocsp().response_status == OK


def test_post_to_any_path_gives_the_get_answer(stack: Stack, pki: Pki) -> None:
    der = ocsp_request(pki.ca, SERIAL)
    by_post = call(stack.app, "POST", "/some/prefix/ocsp", der)
    by_get = call(stack.app, "GET", b64_path(der))
    assert by_post.status == "200 OK"
    assert by_post.ocsp().certificate_status == ocsp.OCSPCertStatus.GOOD
    assert by_post.body == by_get.body  # the same pre-signed response


# ---------------------------------------------------------------- limits and errors


def test_body_over_max_request_size_is_413(stack: Stack) -> None:
    reply = call(stack.app, "POST", "/", b"\x30" * (MAX_REQUEST_SIZE + 1))
    assert reply.status == "413 Content Too Large"
    assert reply.body == b"request body too large\n"
    assert reply.headers["Cache-Control"] == NO_STORE


def test_chunked_body_over_max_request_size_is_413(stack: Stack) -> None:
    reply = call(stack.app, "POST", "/", b"\x30" * (MAX_REQUEST_SIZE + 1), content_length=False)
    assert reply.status == "413 Content Too Large"


@pytest.mark.parametrize("content_length", [True, False])
def test_body_at_max_request_size_is_read(stack: Stack, content_length: bool) -> None:
    """Exactly max_request_size octets are read (garbage: malformedRequest)."""
    reply = call(stack.app, "POST", "/", b"\x00" * MAX_REQUEST_SIZE, content_length=content_length)
    assert_ocsp_error(reply, MALFORMED)


def test_get_target_over_the_limit_is_414(stack: Stack, pki: Pki) -> None:
    """A target of max_request_target(max_request_size) characters is answered; one more
    character -> 414."""
    limit = max_request_target(MAX_REQUEST_SIZE)
    assert limit == MAX_REQUEST_SIZE * 4 // 3 + 1024
    tail = b64_path(ocsp_request(pki.ca, SERIAL))
    fits = "/" + "x" * (limit - len(tail) - 1) + tail
    assert len(fits) == limit
    assert call(stack.app, "GET", fits).ocsp().response_status == OK
    over = call(stack.app, "GET", "/x" + fits)
    assert over.status == "414 URI Too Long"
    assert over.body == b"request URI too long\n"


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS", "BREW"])
def test_other_methods_are_405(stack: Stack, pki: Pki, method: str) -> None:
    reply = call(stack.app, method, "/", ocsp_request(pki.ca, SERIAL))
    assert reply.status == "405 Method Not Allowed"
    assert reply.headers["Allow"] == "GET, HEAD, POST"


# An unparsable absolute request-target too: the unit layer hands it to the app as
# is (a real server may refuse it before the app sees it).
@pytest.mark.parametrize("path", [*GARBAGE_GET_PATHS, "http://["])
def test_garbage_get_path_is_malformed_request(stack: Stack, path: str) -> None:
    assert_ocsp_error(call(stack.app, "GET", path), MALFORMED)


@pytest.mark.parametrize(
    "body",
    [b"", b"garbage", bytes.fromhex("3003020100"), bytes.fromhex("3084ffffffff") + bytes(10)],
    ids=["empty", "text", "der-integer-sequence", "huge-length-prefix"],
)
def test_garbage_post_body_is_malformed_request(stack: Stack, body: bytes) -> None:
    assert_ocsp_error(call(stack.app, "POST", "/", body), MALFORMED)


def test_truncated_and_padded_requests_are_malformed(stack: Stack, pki: Pki) -> None:
    der = ocsp_request(pki.ca, SERIAL)
    assert_ocsp_error(call(stack.app, "POST", "/", der[:-7]), MALFORMED)
    assert_ocsp_error(call(stack.app, "POST", "/", der + b"\x00\x00"), MALFORMED)
    assert_ocsp_error(call(stack.app, "GET", b64_path(der[:-7])), MALFORMED)


def test_http_dates_parse_back(stack: Stack, pki: Pki) -> None:
    """Last-Modified and Expires are RFC 9110 HTTP dates of thisUpdate and nextUpdate."""
    reply = call(stack.app, "GET", b64_path(ocsp_request(pki.ca, SERIAL)))
    parsed = reply.ocsp()
    assert parsedate_to_datetime(reply.headers["Last-Modified"]) == parsed.this_update_utc
    assert parsedate_to_datetime(reply.headers["Expires"]) == parsed.next_update_utc
