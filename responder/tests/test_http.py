"""The HTTP side (RFC 6960 appendix A, RFC 9919): GET decoding, methods, limits,
caching headers, ETag, pre-signed reuse, and garbage in -> OCSP error out.

Requests are built by ``openssl ocsp -reqout`` and sent with http.client;
answers go back to ``openssl ocsp -respin`` for verification and are looked
into with ``cryptography``.
"""

from __future__ import annotations

import base64
import random
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import quote, unquote

import pytest
from cryptography import x509
from cryptography.x509 import ocsp
from garbage_input import GARBAGE_GET_PATHS
from openssl_ocsp import check_response, make_request, run_ocsp
from responder_process import (
    HttpAnswer,
    Responder,
    assert_ocsp_error,
    cache_control,
    get_path,
    http_call,
    post_ocsp,
)
from scenario import HTTP_CACHE_MAX_AGE, MAX_REQUEST_SIZE, LiveIssuer, Pki

from ocsp_responder.config import ServerConfig, max_request_target

OK = ocsp.OCSPResponseStatus.SUCCESSFUL
MALFORMED = ocsp.OCSPResponseStatus.MALFORMED_REQUEST


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("http")


@pytest.fixture(scope="module")
def good_request(pki: Pki, workdir: Path) -> bytes:
    """A non-nonce request for pki.rsa's good-1 (SHA-1 CertID)."""
    return make_request(workdir / "good.der", pki.rsa.ca.cert, [pki.rsa.leaves["good-1"].cert])


def nonce_of_request(der: bytes, workdir: Path) -> bytes:
    """The nonce of a DER request, as ``openssl ocsp -req_text`` prints it."""
    (workdir / "nonce-req.der").write_bytes(der)
    text = run_ocsp(["-reqin", workdir / "nonce-req.der", "-req_text"]).printed
    match = re.search(r"OCSP Nonce: *\n\s*([0-9A-Fa-f]+)", text)
    assert match, text
    value = bytes.fromhex(match.group(1))
    assert value[0] == 0x04 and value[1] == len(value) - 2, text  # an OCTET STRING
    return value[2:]


def nonce_of_response(answer: HttpAnswer) -> bytes | None:
    """The nonce extension of a response, or None."""
    try:
        ext = answer.ocsp().extensions.get_extension_for_class(x509.OCSPNonce)
    except x509.ExtensionNotFound:
        return None
    return ext.value.nonce


# ---------------------------------------------------------------- GET


@pytest.fixture(scope="module")
def awkward_request(pki: Pki, workdir: Path) -> bytes:
    """A nonce request for pki.rsa good-1 whose base64 holds ``+``, ``/`` and ``=``.

    The nonce is random, and the CertID hash changes the length (hence padding),
    so a few tries find one.
    """
    leaf = pki.rsa.leaves["good-1"].cert
    for attempt in range(600):
        digest = ("sha1", "sha384", "sha512")[attempt % 3]
        der = make_request(
            workdir / "awkward.der", pki.rsa.ca.cert, [leaf], digest=digest, nonce=True
        )
        text = base64.b64encode(der).decode()
        if "+" in text and "/" in text and text.endswith("="):
            return der
    raise AssertionError("no request with +, / and = in its base64 in 600 tries")


def _escaped(text: str) -> str:
    return quote(text, safe="")


GET_FORMS: dict[str, Callable[[str], str]] = {
    "escaped": lambda b64: "/" + _escaped(b64),
    "prefix": lambda b64: "/ocsp/" + _escaped(b64),
    "deep-prefix": lambda b64: "/pki/ocsp/v1/" + _escaped(b64),
    "doubled-slash": lambda b64: "//" + _escaped(b64),
    "prefix-doubled-slash": lambda b64: "/ocsp//" + _escaped(b64),
    "unescaped": lambda b64: "/" + b64,
    "prefix-unescaped": lambda b64: "/ocsp/" + b64,
    "lowercase-escapes": lambda b64: (
        "/" + _escaped(b64).replace("%2B", "%2b").replace("%2F", "%2f").replace("%3D", "%3d")
    ),
    "plus-as-space": lambda b64: "/" + _escaped(b64).replace("%2B", "%20"),
    "no-padding": lambda b64: "/" + _escaped(b64.rstrip("=")),
}


@pytest.mark.parametrize("form", sorted(GET_FORMS))
def test_get_decoding_forms(
    pki: Pki, responder: Responder, awkward_request: bytes, workdir: Path, form: str
) -> None:
    """GET tolerates prefixes, doubled slashes, %2B/%2F/%3D, '+' as space, no padding."""
    path = GET_FORMS[form](base64.b64encode(awkward_request).decode())
    answer = http_call(responder.port, "GET", path)
    assert answer.status == 200, answer.describe()
    assert answer.ocsp().response_status == OK, f"GET {path}\n{answer.describe()}"
    leaf = pki.rsa.leaves["good-1"].cert
    digest = answer.ocsp().hash_algorithm.name
    run = check_response(
        answer.body,
        workdir,
        pki.rsa.trust,
        pki.rsa.ca.cert,
        [leaf],
        digest=digest,
        request=awkward_request,
    )
    assert run.verified and not run.complaints, run.output
    assert run.status_of(leaf).status == "good", run.output
    assert nonce_of_response(answer) == nonce_of_request(awkward_request, workdir)


@pytest.mark.parametrize(
    ("ca_name", "label", "digest", "expected"),
    [
        ("rsa", "good-2", "sha1", "good"),
        ("rsa", "keyCompromise", "sha256", "revoked"),
        ("ec", "superseded", "sha1", "revoked"),
        ("crl", "good", "sha256", "good"),
    ],
)
def test_get_status_verifies(
    pki: Pki,
    responder: Responder,
    workdir: Path,
    ca_name: str,
    label: str,
    digest: str,
    expected: str,
) -> None:
    """A plain non-nonce GET is answered, verifies with the chain, and has the right status."""
    ca = getattr(pki, ca_name)
    leaf = ca.leaves[label].cert
    der = make_request(workdir / "get.der", ca.ca.cert, [leaf], digest=digest)
    answer = http_call(responder.port, "GET", get_path(der))
    assert answer.status == 200, answer.describe()
    run = check_response(
        answer.body, workdir, ca.trust, ca.ca.cert, [leaf], digest=digest, request=der
    )
    assert run.verified and not run.complaints, run.output
    assert run.status_of(leaf).status == expected, run.output


def test_get_with_nonce_echoes_it_and_is_not_stored(
    pki: Pki, responder: Responder, workdir: Path
) -> None:
    """A nonce request over GET: nonce echoed, ``no-store``, no caching directives."""
    leaf = pki.ec.leaves["good"].cert
    der = make_request(workdir / "nonce.der", pki.ec.ca.cert, [leaf], nonce=True)
    answer = http_call(responder.port, "GET", get_path(der, "/ocsp/"))
    assert answer.status == 200, answer.describe()
    run = check_response(answer.body, workdir, pki.ec.trust, pki.ec.ca.cert, [leaf], request=der)
    assert run.verified and not run.complaints, run.output
    assert nonce_of_response(answer) == nonce_of_request(der, workdir)
    directives = cache_control(answer)
    assert "no-store" in directives, answer.describe()
    assert "max-age" not in directives and "public" not in directives, answer.describe()


def test_head_is_answered_like_get(responder: Responder, good_request: bytes) -> None:
    """HEAD gets GET's status and headers, without a body."""
    path = get_path(good_request)
    got = http_call(responder.port, "GET", path)
    head = http_call(responder.port, "HEAD", path)
    assert head.status == 200 and head.body == b"", head.describe()
    for name in ("Content-Type", "ETag", "Last-Modified", "Expires"):
        assert head.headers.get(name) == got.headers.get(name), name


@pytest.mark.parametrize("path", GARBAGE_GET_PATHS)
def test_garbage_get_path_is_malformed_request(responder: Responder, path: str) -> None:
    """A GET path holding no OCSPRequest -> HTTP 200 with malformedRequest, never a 5xx."""
    assert_ocsp_error(http_call(responder.port, "GET", path), MALFORMED)


def test_truncated_request_in_get_path_is_malformed(
    responder: Responder, good_request: bytes
) -> None:
    """The base64 of a request cut short -> malformedRequest."""
    answer = http_call(responder.port, "GET", get_path(good_request[:-7]))
    assert_ocsp_error(answer, MALFORMED)


def test_overlong_get_path_is_414(responder: Responder) -> None:
    """A GET path longer than 4/3 of max_request_size + 1024 -> 414 (docs/config.md)."""
    limit = max_request_target(MAX_REQUEST_SIZE)
    assert limit == MAX_REQUEST_SIZE * 4 // 3 + 1024
    answer = http_call(responder.port, "GET", "/" + "A" * (limit + 100))
    assert answer.status == 414, answer.describe()


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("filler", ["x", "%78"])
def test_get_target_limit_at_the_default_max_request_size(
    live_issuer: Callable[..., LiveIssuer], method: str, filler: str
) -> None:
    """With the default max_request_size (10240) the longest target ``serve`` answers is
    max_request_target(10240) characters of percent-decoded path (granian hands the app
    the decoded path, docs/config.md); one character more -> 414 from the app, never a
    400, 431 or 5xx. With the padding percent-encoded (``%78`` for each ``x``) the raw
    target is nearly 3 times as long, and still within the request head ``serve``
    reads."""
    live = live_issuer()  # every [server] setting at its default
    limit = max_request_target(ServerConfig().max_request_size)
    assert limit == 8176  # below 4/3 x 10240 + 1024: nginx's request line (8190) bounds it
    tail = "/" + quote(base64.b64encode(live.request("a")).decode(), safe="")
    fits = "/" + filler * (limit - len(unquote(tail)) - 1) + tail
    assert len(unquote(fits)) == limit
    answer = http_call(live.server.port, method, fits)
    assert answer.status == 200, answer.describe()
    if method == "GET":
        assert answer.ocsp().certificate_status == ocsp.OCSPCertStatus.GOOD
    over = "/" + filler + fits
    assert len(unquote(over)) == limit + 2
    answer = http_call(live.server.port, method, over)
    assert answer.status == 414, answer.describe()


# ---------------------------------------------------------------- POST


def _garbage_bodies(good: bytes, other_response: bytes) -> dict[str, bytes]:
    rng = random.Random(6960)
    return {
        "empty": b"",
        "text": b"garbage",
        "der-integer-sequence": bytes.fromhex("3003020100"),
        "truncated-request": good[:-7],
        "trailing-junk": good + b"\x00\x00",
        "response-instead-of-request": other_response,
        "random-bytes": rng.randbytes(500),
        "base64-instead-of-der": base64.b64encode(good),
        "huge-length-prefix": bytes.fromhex("3084ffffffff") + b"\x00" * 10,
    }


GARBAGE = sorted(_garbage_bodies(b"", b""))


@pytest.mark.parametrize("name", GARBAGE)
def test_garbage_post_body_is_malformed_request(
    responder: Responder, good_request: bytes, name: str
) -> None:
    """A body that is no OCSPRequest -> HTTP 200 with malformedRequest, never a 5xx."""
    other = post_ocsp(responder.port, good_request).body
    body = _garbage_bodies(good_request, other)[name]
    assert_ocsp_error(post_ocsp(responder.port, body), MALFORMED)


def test_post_to_any_path(responder: Responder, good_request: bytes) -> None:
    """POST works on any path, not just ``/``."""
    answer = post_ocsp(responder.port, good_request, path="/some/prefix/ocsp")
    assert answer.status == 200, answer.describe()
    assert answer.ocsp().response_status == OK
    assert answer.ocsp().certificate_status == ocsp.OCSPCertStatus.GOOD


def test_body_over_max_request_size_is_413(responder: Responder) -> None:
    """A Content-Length body one octet over max_request_size -> 413, read by the client
    every time (the body it is still sending is drained, not met with a reset)."""
    size = MAX_REQUEST_SIZE
    for _ in range(10):
        answer = post_ocsp(responder.port, b"\x30" * (size + 1))
        assert answer.status == 413, answer.describe()
        assert answer.headers.get("Connection") == "close", answer.describe()


def test_chunked_body_is_411_and_the_client_reads_it(
    responder: Responder, good_request: bytes
) -> None:
    """A chunked POST body (no Content-Length) gets 411 Length Required, small or over
    max_request_size, and the client reads the answer every time, even when it sends
    its chunks slowly: granian cannot tell a cut chunked body from a whole one, so no
    chunked body is ever served (OCSP clients and nginx send a Content-Length)."""
    size = MAX_REQUEST_SIZE

    def slowly(chunks: list[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            time.sleep(0.005)
            yield chunk

    bodies = {
        "a whole OCSPRequest": [good_request],
        "over max_request_size": [b"\x30" * 512] * (size // 512 + 2),
    }
    for label, chunks in bodies.items():
        for attempt in range(10):
            source = slowly(chunks) if attempt % 2 else iter(chunks)
            answer = http_call(
                responder.port, "POST", "/", source, {"Content-Type": "application/ocsp-request"}
            )
            assert answer.status == 411, (label, answer.describe())
            assert b"Content-Length" in answer.body, (label, answer.describe())


def test_body_at_max_request_size_is_read(responder: Responder) -> None:
    """A body of exactly max_request_size is read (and, being garbage, malformedRequest)."""
    size = MAX_REQUEST_SIZE
    assert_ocsp_error(post_ocsp(responder.port, b"\x00" * size), MALFORMED)


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_are_405(responder: Responder, good_request: bytes, method: str) -> None:
    """Methods other than GET/HEAD/POST -> 405 with an Allow header (RFC 9110 15.5.6)."""
    answer = http_call(responder.port, method, "/", good_request)
    assert answer.status == 405, answer.describe()
    allowed = {m.strip() for m in (answer.headers.get("Allow") or "").split(",")}
    assert {"GET", "POST"} <= allowed, answer.describe()


# ---------------------------------------------------------------- caching


def _http_date(answer: HttpAnswer, name: str) -> datetime:
    value = answer.headers.get(name)
    assert value, f"no {name}:\n{answer.describe()}"
    return parsedate_to_datetime(value).astimezone(UTC)


@pytest.mark.parametrize(("ca_name", "label"), [("rsa", "good-1"), ("ec", "good")])
def test_caching_headers_match_the_response(
    pki: Pki, responder: Responder, workdir: Path, ca_name: str, label: str
) -> None:
    """Non-nonce answers: max-age = min(seconds to nextUpdate, http_cache_max_age), public,
    no-transform, must-revalidate; Last-Modified = thisUpdate; Expires = nextUpdate.

    pki.rsa's validity (1 h) is below the 2 h cap, pki.ec's (1 day) above it.
    """
    ca = getattr(pki, ca_name)
    der = make_request(workdir / "cache.der", ca.ca.cert, [ca.leaves[label].cert])
    before = datetime.now(UTC)
    answer = http_call(responder.port, "GET", get_path(der))
    after = datetime.now(UTC)
    assert answer.status == 200, answer.describe()
    assert answer.headers.get("Content-Type") == "application/ocsp-response"
    parsed = answer.ocsp()
    this_update = parsed.this_update_utc
    next_update = parsed.next_update_utc
    assert next_update is not None

    assert _http_date(answer, "Last-Modified") == this_update.replace(microsecond=0)
    assert _http_date(answer, "Expires") == next_update.replace(microsecond=0)

    directives = cache_control(answer)
    assert {"public", "no-transform", "must-revalidate"} <= directives.keys(), answer.describe()
    assert "no-store" not in directives and "no-cache" not in directives, answer.describe()
    max_age = int(directives["max-age"] or "")
    cap = HTTP_CACHE_MAX_AGE
    # The responder computed it between `before` and `after`; allow 1 s of rounding.
    highest = min((next_update - before).total_seconds(), cap)
    lowest = min((next_update - after).total_seconds(), cap)
    assert lowest - 1 <= max_age <= highest + 1, (max_age, lowest, highest)


def test_etag_and_if_none_match(responder: Responder, good_request: bytes) -> None:
    """A strong ETag; If-None-Match with it -> 304 without body; with another tag -> 200."""
    path = get_path(good_request)
    first = http_call(responder.port, "GET", path)
    etag = first.headers.get("ETag")
    assert etag and re.fullmatch(r'"[^"]+"', etag), first.describe()  # strong: no W/
    again = http_call(responder.port, "GET", path, headers={"If-None-Match": etag})
    assert again.status == 304, again.describe()
    assert again.body == b""
    listed = http_call(responder.port, "GET", path, headers={"If-None-Match": f'"x", {etag}'})
    assert listed.status == 304, listed.describe()
    other = http_call(responder.port, "GET", path, headers={"If-None-Match": '"not-it"'})
    assert other.status == 200 and other.body == first.body, other.describe()


def test_nonce_post_is_echoed_and_not_stored(pki: Pki, responder: Responder, workdir: Path) -> None:
    """POST with a nonce: echoed, ``no-store``, and two such requests get different answers."""
    leaf = pki.rsa.leaves["good-1"].cert
    bodies = []
    for n in range(2):
        der = make_request(workdir / f"nonce-{n}.der", pki.rsa.ca.cert, [leaf], nonce=True)
        answer = post_ocsp(responder.port, der)
        assert answer.status == 200, answer.describe()
        assert nonce_of_response(answer) == nonce_of_request(der, workdir)
        assert "no-store" in cache_control(answer), answer.describe()
        run = check_response(
            answer.body, workdir, pki.rsa.trust, pki.rsa.ca.cert, [leaf], request=der
        )
        assert run.verified and not run.complaints, run.output
        bodies.append(answer.body)
    assert bodies[0] != bodies[1]


def test_presigned_response_is_reused(pki: Pki, responder: Responder, workdir: Path) -> None:
    """Identical non-nonce requests, by POST or GET, get byte-identical pre-signed answers.

    pki.ec signs with ECDSA, whose signatures are randomized: two live signatures
    of the same response would differ.
    """
    der = make_request(workdir / "reuse.der", pki.ec.ca.cert, [pki.ec.leaves["good"].cert])
    first = post_ocsp(responder.port, der)
    second = post_ocsp(responder.port, der)
    by_get = http_call(responder.port, "GET", get_path(der))
    assert first.status == second.status == by_get.status == 200
    assert first.ocsp().response_status == OK
    assert first.body == second.body == by_get.body
    assert first.headers.get("ETag") == second.headers.get("ETag") == by_get.headers.get("ETag")


def test_presigned_cache_is_bounded(live_issuer: Callable[..., LiveIssuer], tmp_path: Path) -> None:
    """``cache_size = 1``: a second serial evicts the first, which is then signed anew.

    ECDSA signatures are randomized, so a re-signed answer has different bytes.
    """
    live = live_issuer(cache_size=1)
    port = live.server.port
    req = {
        label: make_request(tmp_path / f"{label}.der", live.ca.cert, [leaf.cert])
        for label, leaf in live.issuing.leaves.items()
    }
    first_a = post_ocsp(port, req["a"]).body
    assert post_ocsp(port, req["a"]).body == first_a  # kept while it is the only one
    post_ocsp(port, req["b"])
    second_a = post_ocsp(port, req["a"]).body
    assert second_a != first_a  # a was evicted by b
    assert post_ocsp(port, req["a"]).body == second_a
