"""One pre-signed store per host: the workers of a real ``ocsp-responder serve`` serve
the same bytes and the same strong ETag for a serial (before it, each worker signed
its own copy: an If-None-Match with one worker's ETag got 200 from the other).

Each worker is made to answer by stopping the other (SIGSTOP: every connection is
accepted by the one left running), and the signer is ECDSA, whose signatures are
randomized: a worker that signs for itself never repeats the other's bytes.

Invariant 1: once the CA revokes ``a``, both workers answer ``revoked`` (verified
by ``openssl ocsp``) and never again the stored ``good``.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from responder_process import HttpAnswer, http_call, metric, scrape
from scenario import LiveIssuer


@contextmanager
def only(live: LiveIssuer, worker: int) -> Iterator[None]:
    """Every worker but ``worker`` stopped (SIGSTOP) for the block, continued after it."""
    stopped = [pid for pid in live.server.worker_pids() if pid != worker]
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)


def each_worker(
    live: LiveIssuer, label: str, headers: dict[str, str] | None = None
) -> list[HttpAnswer]:
    """Three POSTs for leaf ``label`` answered by each worker in turn."""
    answers = []
    for worker in sorted(live.server.worker_pids()):
        with only(live, worker):
            for _ in range(3):
                answers.append(
                    http_call(
                        live.server.port,
                        "POST",
                        "/",
                        live.request(label),
                        {"Content-Type": "application/ocsp-request", **(headers or {})},
                    )
                )
    return answers


def test_workers_serve_one_presigned_answer(live_issuer: Callable[..., LiveIssuer]) -> None:
    live = live_issuer(published=True, workers=2)
    assert len(live.server.wait_for_workers(set())) == 2
    assert live.status("a") == "good"  # openssl ocsp verifies it (signed by one worker)
    answers = each_worker(live, "a")
    assert {answer.status for answer in answers} == {200}
    assert len({answer.body for answer in answers}) == 1, "the workers signed their own copies"
    etags = {answer.headers["ETag"] for answer in answers}
    assert len(etags) == 1, etags
    # one worker's ETag is the other's: 304 from both
    again = each_worker(live, "a", {"If-None-Match": etags.pop()})
    assert [answer.status for answer in again] == [304] * len(again)
    # signed once for the host (openssl's request and ours share the SHA-1 CertID)
    assert metric(scrape(live.server.port), "ocsp_responder_cache_misses_total") == 1

    live.ca.revoke(live.issuing.leaves["a"].cert, "-crl_reason", "keyCompromise")
    live.publish()
    live.wait_streak("a", "revoked")  # both workers have it (openssl ocsp verifies)
    revoked = each_worker(live, "a")
    assert len({answer.body for answer in revoked}) == 1
    assert revoked[0].body not in {answer.body for answer in answers}
    assert live.status("a") == "revoked"
