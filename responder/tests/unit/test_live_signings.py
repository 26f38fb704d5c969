"""Live-signing slots (``[server] max_live_signings``), through the WSGI app on the fake
clock: with every slot held by the test, a request that must be signed now (a nonce,
or a cache miss) is answered tryLater and counted (the stack's Responder waits 0 s
for a slot), while a pre-signed answer
is still served; a free slot signs again; a signature that raises gives its slot back.

The test holds slots by taking them from :attr:`Responder.live_signings` without
waiting, as the Responder does; nothing here waits or sleeps.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509 import ocsp

from ocsp_responder import metrics, responder
from ocsp_responder.config import DEFAULT_MAX_LIVE_SIGNINGS, ServerConfig
from ocsp_responder.http import NO_STORE
from ocsp_responder.responder import Responder
from ocsp_responder.sources import GOOD

from .support import Pki, Reply, Stack, call, ocsp_request

A, B = 0xA, 0xB
TABLE = {A: GOOD, B: GOOD}
NONCE = bytes(range(1, 17))
SLOTS = 2
TRY_LATER = ocsp.OCSPResponseStatus.TRY_LATER
SUCCESSFUL = ocsp.OCSPResponseStatus.SUCCESSFUL


def rejected() -> float:
    """``ocsp_responder_live_signing_rejected_total{issuer="unit"}`` of this process."""
    registry = metrics.get().registry
    assert registry is not None  # the unit layer runs in single-process mode
    value = registry.get_sample_value(
        "ocsp_responder_live_signing_rejected_total", {"issuer": "unit"}
    )
    return value or 0.0


def post(stack: Stack, pki: Pki, serial: int, nonce: bytes | None = None) -> Reply:
    reply = call(stack.app, "POST", "/", ocsp_request(pki.ca, serial, nonce=nonce))
    assert reply.status == "200 OK"
    return reply


@contextmanager
def held(target: Responder, count: int) -> Iterator[None]:
    """Take ``count`` slots of ``target`` (each must be free) until the block ends."""
    for _ in range(count):
        assert target.live_signings.acquire(blocking=False)
    try:
        yield
    finally:
        for _ in range(count):
            target.live_signings.release()


def free_slots(target: Responder) -> int:
    """How many slots are free now (each taken and given back)."""
    taken = 0
    while taken <= target.max_live_signings and target.live_signings.acquire(blocking=False):
        taken += 1
    for _ in range(taken):
        target.live_signings.release()
    return taken


@pytest.fixture
def stack(make_stack: Callable[..., Stack]) -> Stack:
    return make_stack(TABLE, max_live_signings=SLOTS)


def test_every_slot_taken_answers_try_later_but_serves_cached_answers(
    stack: Stack, pki: Pki
) -> None:
    cached = post(stack, pki, A).body  # pre-signed while the slots are free
    before = rejected()
    with held(stack.responder, SLOTS):
        with_nonce = post(stack, pki, A, NONCE)
        assert with_nonce.ocsp().response_status == TRY_LATER
        assert with_nonce.headers["Cache-Control"] == NO_STORE
        assert rejected() == before + 1

        from_cache = post(stack, pki, A)
        assert from_cache.body == cached  # the very bytes: no signature was made
        parsed = from_cache.ocsp()
        assert parsed.response_status == SUCCESSFUL
        assert parsed.certificate_status == ocsp.OCSPCertStatus.GOOD
        assert rejected() == before + 1

        miss = post(stack, pki, B)  # not pre-signed: must be signed now
        assert miss.ocsp().response_status == TRY_LATER
        assert miss.headers["Cache-Control"] == NO_STORE
        assert rejected() == before + 2
    assert free_slots(stack.responder) == SLOTS

    signed = post(stack, pki, A, NONCE).ocsp()
    assert signed.response_status == SUCCESSFUL
    assert signed.certificate_status == ocsp.OCSPCertStatus.GOOD
    assert signed.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == NONCE
    assert post(stack, pki, B).ocsp().response_status == SUCCESSFUL
    assert rejected() == before + 2
    assert free_slots(stack.responder) == SLOTS


def test_a_request_waits_for_a_slot_given_back_during_its_wait(
    stack: Stack, pki: Pki
) -> None:
    """A burst is signed in turn, not refused: a slot freed within
    ``live_signing_wait`` goes to the waiting request."""
    stack.responder.live_signing_wait = 30.0  # far longer than this test takes
    before = rejected()
    replies: list[Reply] = []
    with held(stack.responder, SLOTS):
        waiting = threading.Thread(target=lambda: replies.append(post(stack, pki, A, NONCE)))
        waiting.start()
        waiting.join(0.1)
        assert waiting.is_alive() and not replies, "the request did not wait for a slot"
        stack.responder.live_signings.release()  # one slot comes free while it waits
        waiting.join(30)
        stack.responder.live_signings.acquire(blocking=False)  # held() gives SLOTS back
    (reply,) = replies
    assert reply.ocsp().response_status == SUCCESSFUL
    assert rejected() == before


def test_one_free_slot_signs_and_is_given_back(stack: Stack, pki: Pki) -> None:
    before = rejected()
    with held(stack.responder, SLOTS - 1):
        assert post(stack, pki, A, NONCE).ocsp().response_status == SUCCESSFUL
        assert post(stack, pki, B).ocsp().response_status == SUCCESSFUL  # a cache miss
        assert free_slots(stack.responder) == 1
    assert rejected() == before


@pytest.mark.parametrize("nonce", [NONCE, None], ids=["nonce", "cache-miss"])
def test_a_signature_that_raises_gives_its_slot_back(
    stack: Stack, pki: Pki, monkeypatch: pytest.MonkeyPatch, nonce: bytes | None
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        assert free_slots(stack.responder) == SLOTS - 1  # it runs in a slot
        raise ValueError("the signer key is broken")

    monkeypatch.setattr(responder, "sign_response", broken)
    for _ in range(SLOTS + 1):  # more failures than slots: none of them keeps one
        reply = post(stack, pki, A, nonce)
        assert reply.ocsp().response_status == ocsp.OCSPResponseStatus.INTERNAL_ERROR
    assert free_slots(stack.responder) == SLOTS
    monkeypatch.undo()
    assert post(stack, pki, A, nonce).ocsp().response_status == SUCCESSFUL


def test_the_default_and_the_lower_bound(stack: Stack) -> None:
    assert ServerConfig().max_live_signings == DEFAULT_MAX_LIVE_SIGNINGS == 2
    assert ServerConfig().max_live_signings < ServerConfig().threads  # threads stay free
    assert Responder(stack.responder.issuers, stack.cache).max_live_signings == 2
    with pytest.raises(ValueError, match="max_live_signings must be at least 1, not 0"):
        Responder(stack.responder.issuers, stack.cache, max_live_signings=0)
