"""Data expiry on the fake clock: once the status data's validity (confirmation +
max_data_age, plus data_expiry_grace) has passed, every answer is tryLater, never
good; nextUpdate never reaches past it; new data makes the issuer answer again."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.x509 import ocsp

from ocsp_responder.sources import GOOD, CertState, Status

from .support import T0, VALIDITY, Pki, Reply, Stack, call, ocsp_request

GOOD_SERIAL, REVOKED_SERIAL, ABSENT_SERIAL = 0x51, 0x52, 0x53
TABLE = {
    GOOD_SERIAL: GOOD,
    REVOKED_SERIAL: Status(
        CertState.REVOKED, datetime(2025, 12, 1, tzinfo=UTC), x509.ReasonFlags.key_compromise
    ),
}
MAX_DATA_AGE = 2 * 3600
CONFIRMED = T0.replace(microsecond=0)
EXPIRY = CONFIRMED + timedelta(seconds=MAX_DATA_AGE)


def get(stack: Stack, pki: Pki, serial: int) -> Reply:
    return call(stack.app, "POST", "/", ocsp_request(pki.ca, serial))


def assert_try_later(reply: Reply) -> None:
    assert reply.status == "200 OK"
    assert reply.ocsp().response_status == ocsp.OCSPResponseStatus.TRY_LATER
    assert reply.headers["Cache-Control"] == "no-cache, no-store"
    assert "ETag" not in reply.headers


@pytest.fixture
def stack(make_stack: Callable[..., Stack]) -> Stack:
    return make_stack(TABLE, confirmed_at=CONFIRMED, max_data_age=MAX_DATA_AGE, refresh_fraction=1)


def test_last_second_before_expiry_is_good_up_to_the_expiry(stack: Stack, pki: Pki) -> None:
    stack.clock.set(EXPIRY - timedelta(seconds=1))
    reply = get(stack, pki, GOOD_SERIAL)
    parsed = reply.ocsp()
    assert parsed.certificate_status == ocsp.OCSPCertStatus.GOOD
    assert parsed.this_update_utc == EXPIRY - timedelta(seconds=1)
    assert parsed.next_update_utc == EXPIRY  # not thisUpdate + VALIDITY
    assert reply.headers["Cache-Control"].startswith("max-age=1,")


@pytest.mark.parametrize("serial", [GOOD_SERIAL, REVOKED_SERIAL, ABSENT_SERIAL])
def test_at_expiry_every_answer_is_try_later(stack: Stack, pki: Pki, serial: int) -> None:
    """Also for a serial whose good answer was cached (refresh_fraction 1) just before."""
    stack.clock.set(EXPIRY - timedelta(seconds=VALIDITY // 2))
    cached = get(stack, pki, serial)
    assert cached.ocsp().response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    assert cached.ocsp().next_update_utc == EXPIRY
    stack.clock.set(EXPIRY)
    assert_try_later(get(stack, pki, serial))
    stack.clock.advance(86400)
    assert_try_later(get(stack, pki, serial))


def test_grace_extends_the_data_and_bounds_next_update(
    make_stack: Callable[..., Stack], pki: Pki
) -> None:
    grace = 600
    stack = make_stack(TABLE, confirmed_at=CONFIRMED, max_data_age=MAX_DATA_AGE, grace=grace)
    stack.clock.set(EXPIRY + timedelta(seconds=grace - 1))
    parsed = get(stack, pki, GOOD_SERIAL).ocsp()
    assert parsed.certificate_status == ocsp.OCSPCertStatus.GOOD
    assert parsed.next_update_utc == EXPIRY + timedelta(seconds=grace)
    stack.clock.set(EXPIRY + timedelta(seconds=grace))
    assert_try_later(get(stack, pki, GOOD_SERIAL))


def test_health_turns_503_at_expiry(stack: Stack) -> None:
    stack.clock.set(EXPIRY - timedelta(microseconds=1))
    assert call(stack.app, "GET", "/-/health?brief").status == "200 OK"
    stack.clock.set(EXPIRY)
    unhealthy = call(stack.app, "GET", "/-/health?brief")
    assert unhealthy.status == "503 Service Unavailable"
    assert unhealthy.body.strip() == b"unavailable"


def test_newly_confirmed_data_answers_again(stack: Stack, pki: Pki) -> None:
    stack.clock.set(EXPIRY + timedelta(seconds=30))
    assert_try_later(get(stack, pki, GOOD_SERIAL))
    confirmed = stack.clock().replace(microsecond=0)
    stack.source.publish(TABLE, confirmed)
    assert stack.issuer.data.refresh()
    parsed = get(stack, pki, GOOD_SERIAL).ocsp()
    assert parsed.certificate_status == ocsp.OCSPCertStatus.GOOD
    assert parsed.this_update_utc == confirmed
    assert parsed.next_update_utc == confirmed + timedelta(seconds=VALIDITY)


def test_confirmation_in_the_future_counts_from_the_read(
    make_stack: Callable[..., Stack], pki: Pki
) -> None:
    """A confirmation time ahead of the clock does not extend the data: it is
    confirmed as of the time it was read (T0, fraction included)."""
    future = T0 + timedelta(days=3)
    stack = make_stack(TABLE, confirmed_at=future, max_data_age=MAX_DATA_AGE)
    expiry = T0 + timedelta(seconds=MAX_DATA_AGE)
    stack.clock.set(expiry - timedelta(microseconds=1))
    assert get(stack, pki, GOOD_SERIAL).ocsp().response_status == (
        ocsp.OCSPResponseStatus.SUCCESSFUL
    )
    stack.clock.set(expiry)
    assert_try_later(get(stack, pki, GOOD_SERIAL))


def test_signer_notafter_bounds_next_update_then_try_later(stack: Stack, pki: Pki) -> None:
    """Fresh data, but the signer's notAfter is 30 min away: nextUpdate = notAfter;
    at notAfter, tryLater."""
    not_after = pki.signer.not_valid_after_utc
    stack.clock.set(not_after - timedelta(seconds=1800))
    stack.source.publish(TABLE, stack.clock().replace(microsecond=0))
    assert stack.issuer.data.refresh()
    parsed = get(stack, pki, GOOD_SERIAL).ocsp()
    assert parsed.certificate_status == ocsp.OCSPCertStatus.GOOD
    assert parsed.next_update_utc == not_after
    stack.clock.set(not_after)
    assert_try_later(get(stack, pki, GOOD_SERIAL))
