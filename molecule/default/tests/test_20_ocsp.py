"""Real `openssl ocsp` queries from the CA instance through nginx.

Expected statuses come from the CA's own database as `openssl ca` keeps it:
index.txt of an OpenSSL CA directory (V -> good, R -> revoked with its time
and reason, a serial the CA never issued -> unknown) or, for a key pair CA
that publishes CRLs, the revocations behind its CRL (listed -> revoked,
anything else -> good). Every answer must verify against the CA chain.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from ocsp_testlib import CaInstance, OcspAnswer

DIGESTS = ["sha1", "sha256"]


def check_answer(
    answer: OcspAnswer, ca: CaInstance, issuer: str, serial: str, what: str
) -> None:
    """Assert `answer` matches the CA database row of `serial` and verified."""
    assert answer.verify_ok, f"{what}: no 'Response verify OK'\n{answer.output}"
    want, entry = ca.expected(issuer, serial)
    assert answer.status == want, (
        f"{what}: {answer.status}, CA database says {want}\n{answer.output}"
    )
    now = datetime.now(UTC)
    assert answer.this_update is not None and answer.this_update <= now + timedelta(
        minutes=5
    )
    assert answer.next_update is not None and answer.next_update > now, answer.output
    if want == "revoked":
        assert entry is not None
        assert answer.reason == entry.reason, (
            f"{what}: reason {answer.reason}, CA has {entry.reason}"
        )
        assert answer.revoked_at == entry.revoked_at, (
            f"{what}: time {answer.revoked_at}, CA has {entry.revoked_at}"
        )


def test_the_test_pki_has_good_and_revoked_certificates(ca: CaInstance) -> None:
    statuses = set()
    for issuer in ca.manifest["issuers"]:
        for leaf in ca.leaves(issuer["name"]):
            statuses.add(ca.expected(issuer["name"], ca.serial(leaf["cert"]))[0])
    assert {"good", "revoked"} <= statuses


@pytest.mark.parametrize("digest", DIGESTS)
@pytest.mark.parametrize("nonce", [True, False], ids=["nonce", "no_nonce"])
def test_post_answers_like_the_ca_database(
    ca: CaInstance, digest: str, nonce: bool
) -> None:
    for issuer in ca.manifest["issuers"]:
        name = issuer["name"]
        for leaf in ca.leaves(name):
            answer = ca.query_post(name, cert=leaf["cert"], digest=digest, nonce=nonce)
            assert answer.rc == 0, answer.output
            if nonce:
                assert "WARNING: no nonce in response" not in answer.output
            check_answer(
                answer, ca, name, ca.serial(leaf["cert"]), f"POST {leaf['name']}"
            )
        serial = ca.unissued_serial(name)
        answer = ca.query_post(name, serial=serial, digest=digest, nonce=nonce)
        assert answer.rc == 0, answer.output
        check_answer(
            answer, ca, name, serial[2:], f"POST never-issued serial {serial} of {name}"
        )


@pytest.mark.parametrize("digest", DIGESTS)
@pytest.mark.parametrize("nonce", [True, False], ids=["nonce", "no_nonce"])
def test_get_answers_like_the_ca_database(
    ca: CaInstance, digest: str, nonce: bool
) -> None:
    for issuer in ca.manifest["issuers"]:
        name = issuer["name"]
        for leaf in ca.leaves(name):
            answer = ca.query_get(name, cert=leaf["cert"], digest=digest, nonce=nonce)
            assert answer.http_status == 200, answer.headers
            assert answer.headers.get("content-type") == "application/ocsp-response"
            assert answer.rc == 0, answer.output
            if nonce:
                assert (
                    answer.nonce_request
                    and answer.nonce_response == answer.nonce_request
                )
            else:
                assert answer.nonce_response is None
            check_answer(
                answer, ca, name, ca.serial(leaf["cert"]), f"GET {leaf['name']}"
            )
        serial = ca.unissued_serial(name)
        answer = ca.query_get(name, serial=serial, digest=digest, nonce=nonce)
        assert answer.http_status == 200
        check_answer(
            answer, ca, name, serial[2:], f"GET never-issued serial {serial} of {name}"
        )


def _a_good_leaf(ca: CaInstance) -> tuple[str, dict[str, str]]:
    for issuer in ca.manifest["issuers"]:
        for leaf in ca.leaves(issuer["name"]):
            if ca.expected(issuer["name"], ca.serial(leaf["cert"]))[0] == "good":
                return issuer["name"], leaf
    raise AssertionError("the test PKI has no good certificate")


def test_repeated_get_is_served_from_the_nginx_cache(ca: CaInstance) -> None:
    issuer, leaf = _a_good_leaf(ca)
    first = ca.query_get(issuer, cert=leaf["cert"], tag="cache1")
    second = ca.query_get(issuer, cert=leaf["cert"], tag="cache2")
    assert first.verify_ok and second.verify_ok
    assert second.headers.get("x-cache-status") == "HIT", second.headers
    assert second.body_sha256 == first.body_sha256
    # The responder's caching headers reach the client unchanged.
    cache_control = second.headers.get("cache-control", "")
    assert "max-age=" in cache_control and "public" in cache_control, cache_control
    assert (
        "etag" in second.headers
        and "last-modified" in second.headers
        and "expires" in second.headers
    )


def test_nonce_responses_are_not_cached(ca: CaInstance) -> None:
    issuer, leaf = _a_good_leaf(ca)
    first = ca.query_get(issuer, cert=leaf["cert"], nonce=True, tag="nonce1")
    # The very same request bytes again: still not a cache hit.
    status, headers, _ = ca.http(
        f'{ca.url.rstrip("/")}/"$(base64 -w0 /root/ocsp-tests/nonce1.req)"'
    )
    assert first.verify_ok and status == 200
    assert "no-store" in first.headers.get("cache-control", ""), first.headers
    assert headers.get("x-cache-status") != "HIT", headers


def test_repeated_post_without_nonce_is_served_from_the_cache(ca: CaInstance) -> None:
    issuer, leaf = _a_good_leaf(ca)
    ca.run_checked(
        [
            "openssl",
            "ocsp",
            "-issuer",
            ca.issuer(issuer)["ca_cert"],
            "-cert",
            leaf["cert"],
            "-no_nonce",
            "-reqout",
            "/root/ocsp-tests/post.req",
        ]
    )
    post = f"-X POST -H 'Content-Type: application/ocsp-request' --data-binary @/root/ocsp-tests/post.req {ca.url}"
    status1, _, body1 = ca.http(post)
    status2, headers2, body2 = ca.http(post)
    assert status1 == status2 == 200
    assert headers2.get("x-cache-status") == "HIT", headers2
    assert body1 == body2
