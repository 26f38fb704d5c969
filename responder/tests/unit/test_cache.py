"""The pre-signed response cache, through the WSGI app on the fake clock: reuse,
refresh after ``refresh_fraction`` of the validity, a status change, eviction by
entry count (least recently used first) and by octets, and a disabled cache.

ECDSA signatures are randomized, so two signatures of the same response differ:
the same bytes twice means the answer came from the cache.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.x509 import ocsp

from ocsp_responder.cache import ENTRY_OVERHEAD
from ocsp_responder.sources import GOOD, CertState, Status

from .support import T0, VALIDITY, Pki, Stack, call, ocsp_request

A, B, C = 0xA, 0xB, 0xC
TABLE = {A: GOOD, B: GOOD, C: GOOD}


def post(stack: Stack, pki: Pki, serial: int) -> bytes:
    reply = call(stack.app, "POST", "/", ocsp_request(pki.ca, serial))
    assert reply.status == "200 OK"
    assert reply.ocsp().response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    return reply.body


def test_second_request_is_served_from_the_cache(
    make_stack: Callable[..., Stack], pki: Pki
) -> None:
    stack = make_stack(TABLE)
    first = post(stack, pki, A)
    stack.clock.advance(1)
    assert post(stack, pki, A) == first
    assert stack.cache.size_bytes == len(first) + ENTRY_OVERHEAD


def test_refresh_after_refresh_fraction_of_the_validity(
    make_stack: Callable[..., Stack], pki: Pki
) -> None:
    """Served from the cache until thisUpdate + refresh_fraction x validity, re-signed
    at that instant (thisUpdate is T0 without its 0.25 s)."""
    fraction = 0.25
    stack = make_stack(TABLE, refresh_fraction=fraction)
    first = post(stack, pki, A)
    this_update = T0.replace(microsecond=0)
    refresh_at = this_update + timedelta(seconds=VALIDITY * fraction)
    stack.clock.set(refresh_at - timedelta(microseconds=1))
    assert post(stack, pki, A) == first
    stack.clock.set(refresh_at)
    renewed = post(stack, pki, A)
    assert renewed != first
    parsed = ocsp.load_der_ocsp_response(renewed)
    assert parsed.this_update_utc == refresh_at.replace(microsecond=0)
    assert parsed.next_update_utc == refresh_at + timedelta(seconds=VALIDITY)
    # the renewed answer replaced the old one: one entry
    assert stack.cache.size_bytes == len(renewed) + ENTRY_OVERHEAD
    stack.clock.advance(1)
    assert post(stack, pki, A) == renewed


def test_status_change_is_not_answered_from_the_cache(
    make_stack: Callable[..., Stack], pki: Pki
) -> None:
    """A revocation published and reloaded: the next answer says revoked, although the
    cached good answer is still before its refresh point."""
    stack = make_stack(TABLE)
    good = post(stack, pki, A)
    revoked_at = datetime(2026, 1, 10, 12, 5, tzinfo=UTC)
    stack.clock.advance(600)
    table = {**TABLE, A: Status(CertState.REVOKED, revoked_at, x509.ReasonFlags.superseded)}
    stack.source.publish(table, stack.clock().replace(microsecond=0))
    assert stack.issuer.data.refresh()
    answer = post(stack, pki, A)
    assert answer != good
    parsed = ocsp.load_der_ocsp_response(answer)
    assert parsed.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert parsed.revocation_time_utc == revoked_at
    assert parsed.revocation_reason == x509.ReasonFlags.superseded


def test_eviction_by_entry_count_drops_the_least_recently_used(
    make_stack: Callable[..., Stack], pki: Pki
) -> None:
    stack = make_stack(TABLE, cache_size=2)
    a1, b1 = post(stack, pki, A), post(stack, pki, B)
    assert post(stack, pki, A) == a1  # A is now the most recently used
    c1 = post(stack, pki, C)  # evicts B, not A
    assert stack.cache.size_bytes == len(a1) + len(c1) + 2 * ENTRY_OVERHEAD
    assert post(stack, pki, A) == a1
    b2 = post(stack, pki, B)  # re-signed; evicts C
    assert b2 != b1
    assert post(stack, pki, A) == a1
    c2 = post(stack, pki, C)  # re-signed; evicts B (A was used since)
    assert c2 != c1
    assert stack.cache.size_bytes == len(a1) + len(c2) + 2 * ENTRY_OVERHEAD


def test_eviction_by_octets(make_stack: Callable[..., Stack], pki: Pki) -> None:
    """``cache_bytes`` holding two entries but not three (an ECDSA signature varies by a
    few octets, an entry is about 1.6 KB): the third evicts the least recently used."""
    probe = make_stack(TABLE)
    size = len(post(probe, pki, A)) + ENTRY_OVERHEAD
    stack = make_stack(TABLE, cache_bytes=size * 5 // 2)
    a1, b1 = post(stack, pki, A), post(stack, pki, B)
    assert stack.cache.size_bytes == len(a1) + len(b1) + 2 * ENTRY_OVERHEAD
    c1 = post(stack, pki, C)  # evicts A
    assert stack.cache.size_bytes == len(b1) + len(c1) + 2 * ENTRY_OVERHEAD
    assert post(stack, pki, B) == b1
    assert post(stack, pki, C) == c1
    assert post(stack, pki, A) != a1


def test_response_larger_than_cache_bytes_is_not_kept(
    make_stack: Callable[..., Stack], pki: Pki
) -> None:
    stack = make_stack(TABLE, cache_bytes=ENTRY_OVERHEAD)  # below any entry's size
    first = post(stack, pki, A)
    assert stack.cache.size_bytes == 0
    assert post(stack, pki, A) != first


@pytest.mark.parametrize(
    "settings", [{"cache_size": 0}, {"cache_bytes": 0}], ids=["cache_size=0", "cache_bytes=0"]
)
def test_disabled_cache_signs_every_request(
    make_stack: Callable[..., Stack], pki: Pki, settings: dict[str, int]
) -> None:
    stack = make_stack(TABLE, **settings)
    answers = {post(stack, pki, A) for _ in range(3)}
    assert len(answers) == 3
    assert stack.cache.size_bytes == 0
    # still cacheable by HTTP caches: the headers do not depend on the in-memory cache
    reply = call(stack.app, "POST", "/", ocsp_request(pki.ca, A))
    assert reply.headers["Cache-Control"].startswith("max-age=")
