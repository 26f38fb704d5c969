"""One pre-signed store shared by the workers of a host (an SQLite file): two stacks on
the same file stand for two worker processes, each with its own status data.

ECDSA signatures are randomized, so a response signed twice never has the same
bytes twice: identical bytes from two workers mean the second served the first's.

Invariant 1 (never ``good`` for a serial a process has seen revoked): a worker
whose data says revoked never serves a stored ``good``, even one that a worker
with older data stored after it; test_revoked_worker_never_serves_a_good_stored_by_another.
Invariant 2 (no answer outlives its data or signer): an entry of another signing
context (another signer, another response_validity) is never served;
test_other_signing_context_is_not_shared.
Invariant 3 (nothing makes the service fail): a damaged store file makes every
answer signed live, never an error; test_damaged_store_file_signs_live.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509 import ocsp

from ocsp_responder.cache import ENTRY_OVERHEAD, TOUCH_BATCH
from ocsp_responder.request import decode_request
from ocsp_responder.signing import sign_response
from ocsp_responder.sources import GOOD, CertState, Status

from .support import Pki, Reply, Stack, call, ocsp_request

A, B = 0xA, 0xB
TABLE = {A: GOOD, B: GOOD}
REVOKED = Status(
    CertState.REVOKED, datetime(2026, 1, 10, 12, 5, tzinfo=UTC), x509.ReasonFlags.key_compromise
)


def post(stack: Stack, pki: Pki, serial: int, headers: dict[str, str] | None = None) -> Reply:
    return call(stack.app, "POST", "/", ocsp_request(pki.ca, serial), headers=headers)


def state(reply: Reply) -> ocsp.OCSPCertStatus:
    assert reply.status == "200 OK", reply.status
    return reply.ocsp().certificate_status


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "presigned.sqlite3"


def test_two_workers_serve_the_same_bytes_and_etag(
    make_stack: Callable[..., Stack], pki: Pki, store: Path
) -> None:
    """Fails with a store per worker: the second worker signs its own response."""
    one, two = make_stack(TABLE, presigned_store=store), make_stack(TABLE, presigned_store=store)
    first = post(one, pki, A)
    second = post(two, pki, A)
    assert second.body == first.body
    assert second.headers["ETag"] == first.headers["ETag"]
    not_modified = post(two, pki, A, headers={"If-None-Match": first.headers["ETag"]})
    assert not_modified.status == "304 Not Modified"
    # one entry for the host, seen alike by both
    assert one.cache.size_bytes == two.cache.size_bytes == len(first.body) + ENTRY_OVERHEAD


def test_the_first_stored_response_wins_a_race(
    make_stack: Callable[..., Stack], pki: Pki, store: Path
) -> None:
    """Both workers missed and signed; the second to store serves the first's bytes."""
    one, two = make_stack(TABLE, presigned_store=store), make_stack(TABLE, presigned_store=store)
    first = post(one, pki, A).body
    request = ocsp_request(pki.ca, A)
    decoded = decode_request(request)
    now = two.clock()
    until = two.issuer.vouch_until()
    own = sign_response(two.issuer, decoded.cert_id, GOOD, now, until=until)
    assert own.der != first
    cert_id = decoded.cert_id
    key = (two.issuer.signing_context, cert_id.serial_number, cert_id.hash_algorithm.name)
    served = two.cache.put(key, own, now, until)
    assert served.der == first


def test_revoked_worker_never_serves_a_good_stored_by_another(
    make_stack: Callable[..., Stack], pki: Pki, store: Path
) -> None:
    one, two = make_stack(TABLE, presigned_store=store), make_stack(TABLE, presigned_store=store)
    assert state(post(one, pki, A)) == ocsp.OCSPCertStatus.GOOD
    one.clock.advance(600)
    one.source.publish({**TABLE, A: REVOKED}, one.clock().replace(microsecond=0))
    assert one.issuer.data.refresh()
    assert state(post(one, pki, A)) == ocsp.OCSPCertStatus.REVOKED
    # the other worker has not reloaded yet: it still answers good, and stores it
    assert state(post(two, pki, A)) == ocsp.OCSPCertStatus.GOOD
    for _ in range(3):
        assert state(post(one, pki, A)) == ocsp.OCSPCertStatus.REVOKED
    # once both have the revocation they serve one stored revoked answer
    two.source.publish({**TABLE, A: REVOKED}, two.clock().replace(microsecond=0))
    assert two.issuer.data.refresh()
    revoked = post(two, pki, A)
    assert state(revoked) == ocsp.OCSPCertStatus.REVOKED
    assert post(one, pki, A).body == revoked.body


def test_other_signing_context_is_not_shared(
    make_stack: Callable[..., Stack], pki: Pki, store: Path
) -> None:
    """A worker of another config (here another response_validity) on the same store
    never serves this config's responses, nor this one its."""
    one = make_stack(TABLE, presigned_store=store)
    other = make_stack(TABLE, presigned_store=store, validity=1800)
    assert one.issuer.signing_context != other.issuer.signing_context
    first = post(one, pki, A)
    answer = post(other, pki, A)
    assert answer.body != first.body
    parsed = answer.ocsp()
    assert (parsed.next_update_utc - parsed.this_update_utc).total_seconds() == 1800
    assert post(one, pki, A).body == first.body


def test_bounds_hold_for_the_whole_host(
    make_stack: Callable[..., Stack], pki: Pki, store: Path
) -> None:
    """cache_size 1 for the host: one worker's entry evicts the other's."""
    one = make_stack(TABLE, presigned_store=store, cache_size=1)
    two = make_stack(TABLE, presigned_store=store, cache_size=1)
    a1 = post(one, pki, A).body
    b1 = post(two, pki, B).body  # evicts A
    assert one.cache.size_bytes == len(b1) + ENTRY_OVERHEAD
    assert post(one, pki, B).body == b1
    assert post(two, pki, A).body != a1


def test_damaged_store_file_signs_live(
    make_stack: Callable[..., Stack], pki: Pki, store: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A store file that is not a database: every answer is signed live and correct,
    one ERROR names the file; the cache counts nothing."""
    store.write_bytes(b"this is not an SQLite database" * 100)
    stack = make_stack({**TABLE, B: REVOKED}, presigned_store=store)
    with caplog.at_level(logging.ERROR, logger="ocsp_responder.cache"):
        answers = [post(stack, pki, A) for _ in range(3)]
        revoked = post(stack, pki, B)
    assert all(state(reply) == ocsp.OCSPCertStatus.GOOD for reply in answers)
    assert len({reply.body for reply in answers}) == 3  # each signed live
    assert state(revoked) == ocsp.OCSPCertStatus.REVOKED
    errors = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert str(store) in errors[0]
    assert stack.cache.size_bytes == 0


def test_hits_are_served_while_another_process_holds_the_write_lock(
    make_stack: Callable[..., Stack], pki: Pki, store: Path
) -> None:
    """A worker stopped inside a transaction (here: another connection holding
    BEGIN IMMEDIATE): hits never turn into misses, even when the last uses of
    TOUCH_BATCH entries are due to be written; a miss is signed live and served."""
    serials = range(1, TOUCH_BATCH + 11)
    stack = make_stack(dict.fromkeys(serials, GOOD), presigned_store=store, cache_size=1000)
    first = {serial: post(stack, pki, serial).body for serial in serials}
    other = sqlite3.connect(store, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        again = {serial: post(stack, pki, serial).body for serial in serials}
        assert again == first
        assert state(post(stack, pki, 0xDEAD)) == ocsp.OCSPCertStatus.UNKNOWN  # a miss
    finally:
        other.rollback()
        other.close()


@pytest.mark.parametrize(
    "damage",
    ["size = 1e999", "refresh_at = 'soon'", "this_update = 1e300"],
    ids=["size-overflow", "refresh-at-text", "this-update-overflow"],
)
def test_a_damaged_row_is_a_miss_and_leaves_the_store_usable(
    make_stack: Callable[..., Stack], pki: Pki, store: Path, damage: str
) -> None:
    """A row whose values do not fit (damaged file): the answer is signed live and
    correct, not internalError, and no transaction is left open: another worker
    stores and serves its answers."""
    one = make_stack({**TABLE, B: REVOKED}, presigned_store=store)
    post(one, pki, A)
    with sqlite3.connect(store, isolation_level=None) as raw:
        raw.execute(f"UPDATE presigned SET {damage}")
    assert state(post(one, pki, A)) == ocsp.OCSPCertStatus.GOOD
    assert not one.cache._conn or not one.cache._conn.in_transaction
    two = make_stack({**TABLE, B: REVOKED}, presigned_store=store)
    revoked = post(two, pki, B)
    assert state(revoked) == ocsp.OCSPCertStatus.REVOKED
    assert post(two, pki, B).body == revoked.body
