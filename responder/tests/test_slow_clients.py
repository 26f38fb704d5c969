"""Slow and stalled clients (slowloris) cost a worker nothing: ``serve`` (granian, two
workers) keeps answering others within a second while hundreds of connections send
nothing, half a request head, or half a body; it closes each stalled connection after
its 10 s bound (a half-sent POST body gets HTTP 408 first).

And a body still arriving is not lost to a signal: SIGTERM lets it finish (exit 0),
and a SIGHUP replaces both workers under continuous load without one failed request.

Every OCSP answer is verified by ``openssl ocsp -respin``. Each test is bounded in
time: every socket has a timeout, every wait a deadline, and every socket is closed
in a ``finally``.
"""

from __future__ import annotations

import http.client
import select
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.x509 import ocsp
from openssl_ocsp import check_response, make_request
from responder_process import HttpAnswer, Responder, toml_config, wait_for
from scenario import IssuingCA, Pki, new_issuing_ca

OK = ocsp.OCSPResponseStatus.SUCCESSFUL

#: The server's bound on a request head, an idle keep-alive connection and a POST
#: body (seconds); a stalled connection must be closed within CLOSE_DEADLINE of opening.
SERVER_TIMEOUT = 10.0
CLOSE_DEADLINE = 15.0
#: Each probe beside the stalled connections must be answered within this (seconds).
PROBE_LIMIT = 1.0
#: A probe's socket timeout: a probe stuck behind busy workers fails, never hangs.
PROBE_TIMEOUT = 3.0

ADDRESS = "127.0.0.1"
HALF_HEAD = b"POST / HTTP/1.1\r\nHost: x\r\n"
HALF_BODY = (
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/ocsp-request\r\n"
    b"Content-Length: 200\r\n\r\n" + b"\x30" * 20
)
#: (kind, what is sent before stalling, how many connections).
STALLS: list[tuple[str, bytes, int]] = [
    ("idle", b"", 100),
    ("half-head", HALF_HEAD, 50),
    ("half-body", HALF_BODY, 50),
]


@dataclass
class SlowCA:
    """A fresh intermediate with a good and a revoked leaf, and a request for each."""

    issuing: IssuingCA
    workdir: Path
    requests: dict[str, bytes]

    def config(self) -> str:
        """config.toml text: this issuer alone, every [server] setting at its default."""
        return toml_config({}, [self.issuing.issuer_config()])

    def status(self, body: bytes, label: str, workdir: Path) -> str:
        """What ``openssl ocsp`` says of leaf ``label`` in response ``body`` (it must
        verify without complaint)."""
        leaf = self.issuing.leaves[label].cert
        run = check_response(body, workdir, self.issuing.trust, self.issuing.ca.cert, [leaf])
        assert run.verified and not run.complaints, run.output
        return run.status_of(leaf).status


@pytest.fixture(scope="module")
def slow_ca(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> SlowCA:
    base = tmp_path_factory.mktemp("slow-clients")
    issuing = new_issuing_ca(base, pki.root, "slow-intermediate", leaves=("good", "revoked"))
    issuing.ca.revoke(issuing.leaves["revoked"].cert, "-crl_reason", "keyCompromise")
    requests = {
        label: make_request(base / f"{label}.der", issuing.ca.cert, [issuing.leaves[label].cert])
        for label in ("good", "revoked")
    }
    return SlowCA(issuing, base, requests)


def exchange(
    port: int, method: str, path: str, body: bytes | None = None, timeout: float = PROBE_TIMEOUT
) -> tuple[float, HttpAnswer | None, str]:
    """One request on a new connection: (seconds it took, the answer or None, the error)."""
    headers = {"Content-Type": "application/ocsp-request"} if body is not None else {}
    conn = http.client.HTTPConnection(ADDRESS, port, timeout=timeout)
    start = time.monotonic()
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        answer = HttpAnswer(resp.status, resp.headers, resp.read())
    except (OSError, http.client.HTTPException) as exc:
        return time.monotonic() - start, None, f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()
    return time.monotonic() - start, answer, ""


# ---------------------------------------------------------------- stalled connections


@dataclass
class Stalled:
    """One stalled connection: what it sent, what came back, when it was closed."""

    kind: str
    sock: socket.socket
    received: bytearray = field(default_factory=bytearray)
    closed_after: float | None = None  # seconds after the connections were opened


def readable(stalled: list[Stalled]) -> list[Stalled]:
    """The connections with something to read right now (data, end of file, a reset)."""
    ready, _, _ = select.select([s.sock for s in stalled], [], [], 0)
    return [s for s in stalled if s.sock in ready]


def wait_closed(stalled: list[Stalled], opened: float, deadline: float) -> list[Stalled]:
    """Read every connection until the server closes it (end of file or a reset), or
    until ``deadline`` (time.monotonic); return the ones still open then."""
    remaining = {s.sock: s for s in stalled}
    while remaining and time.monotonic() < deadline:
        ready, _, _ = select.select(list(remaining), [], [], 0.2)
        for sock in ready:
            entry = remaining[sock]
            try:
                data = sock.recv(65536)
            except ConnectionResetError:  # ECONNRESET: closed as well
                data = b""
            if data:
                entry.received += data
                continue
            entry.closed_after = time.monotonic() - opened
            del remaining[sock]
    return list(remaining.values())


def tally(stalled: list[Stalled]) -> Counter[str]:
    return Counter(s.kind for s in stalled)


def test_stalled_connections_delay_no_one_and_are_closed(
    slow_ca: SlowCA, serve: Callable[..., Responder], tmp_path: Path
) -> None:
    """200 stalled connections (100 silent, 50 half a head, 50 half a body) held open;
    meanwhile /-/health and OCSP POSTs (good, revoked) are each answered within 1 s
    and verify; then every stalled connection is closed within 15 s, the half-body
    ones after an HTTP 408."""
    server = serve(slow_ca.config(), tmp_path / "responder", workers=2)
    stalled: list[Stalled] = []
    try:
        opened = time.monotonic()
        for kind, data, count in STALLS:
            for _ in range(count):
                sock = socket.create_connection((ADDRESS, server.port), timeout=5)
                stalled.append(Stalled(kind, sock))
                if data:
                    sock.sendall(data)
        time.sleep(0.5)  # the workers have accepted them and wait for more
        assert not readable(stalled), "answered or closed before any timeout"

        probes: list[tuple[str, str, bytes | None]] = [("health", "/-/health", None)] + [
            (label, "/", slow_ca.requests[label]) for label in ("good", "revoked")
        ]
        answers: list[tuple[str, HttpAnswer]] = []
        for round_ in range(10):
            for label, path, body in probes:
                method = "GET" if body is None else "POST"
                took, answer, error = exchange(server.port, method, path, body)
                assert answer is not None and took < PROBE_LIMIT, (
                    f"round {round_}: {method} {path} ({label}) took {took:.2f} s "
                    f"beside {len(stalled)} stalled connections: {error or 'answered late'}"
                )
                assert answer.status == 200, answer.describe()
                answers.append((label, answer))
        probed = time.monotonic() - opened
        early = readable(stalled)
        assert not early, (
            f"closed or answered within {probed:.1f} s, during the probes: {tally(early)}"
        )

        still_open = wait_closed(stalled, opened, opened + CLOSE_DEADLINE)
        assert not still_open, f"still open {CLOSE_DEADLINE} s after opening: {tally(still_open)}"
        soonest = min(entry.closed_after or 0.0 for entry in stalled)
        assert soonest > SERVER_TIMEOUT - 0.5, f"a stalled connection closed after {soonest} s"
        for entry in stalled:
            head = bytes(entry.received[:200])
            if entry.kind == "half-body":
                assert head.startswith(b"HTTP/1.1 408 "), (entry.kind, entry.closed_after, head)
            else:  # nothing, or at most a 408 (RFC 9110 15.5.9)
                assert not head or head.startswith(b"HTTP/1.1 408 "), (entry.kind, head)
    finally:
        for entry in stalled:
            entry.sock.close()

    for label, answer in answers:
        if label == "health":
            assert answer.headers.get("Content-Type") == "application/json", answer.describe()
            continue
        assert answer.ocsp().response_status == OK, answer.describe()
    # openssl verifies one answer of each leaf per distinct body (pre-signed: few)
    for label, body in {(label, a.body) for label, a in answers if label != "health"}:
        assert slow_ca.status(body, label, tmp_path) == label
    assert server.alive(), server.log_text()[-3000:]


# ---------------------------------------------------------------- signals


def test_sigterm_while_a_body_arrives_finishes_it(
    slow_ca: SlowCA, serve: Callable[..., Responder], tmp_path: Path
) -> None:
    """SIGTERM while a POST body is half sent: the rest, sent a second later, is read
    and answered (HTTP 200, openssl verifies good); then serve exits 0 within 15 s."""
    server = serve(slow_ca.config(), tmp_path / "responder", workers=2)
    assert server.process is not None
    der = slow_ca.requests["good"]
    half = len(der) // 2
    head = (
        b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/ocsp-request\r\n"
        b"Content-Length: %d\r\n\r\n" % len(der)
    )
    sock = socket.create_connection((ADDRESS, server.port), timeout=15)
    try:
        sock.sendall(head + der[:half])
        time.sleep(0.3)  # a worker has the head and waits for the body
        server.signal(signal.SIGTERM)
        time.sleep(0.8)
        sock.sendall(der[half:])
        response = http.client.HTTPResponse(sock)
        response.begin()
        answer = HttpAnswer(response.status, response.headers, response.read())
    finally:
        sock.close()
    assert answer.status == 200, answer.describe()
    assert answer.ocsp().response_status == OK, answer.describe()
    assert slow_ca.status(answer.body, "good", tmp_path) == "good"
    try:
        code = server.process.wait(15)
    except subprocess.TimeoutExpired:
        pytest.fail(f"serve still running 15 s after SIGTERM:\n{server.log_text()[-3000:]}")
    assert code == 0, server.log_text()[-3000:]


@dataclass(frozen=True)
class LoadResult:
    """One request of the load thread: when it started, and what came back."""

    started: float
    answer: HttpAnswer | None
    error: str

    def failure(self) -> str | None:
        """Why this request failed, or None (HTTP 200 with a successful OCSP answer)."""
        if self.answer is None:
            return self.error
        if self.answer.status != 200:
            return self.answer.describe()
        try:
            parsed = self.answer.ocsp()
        except ValueError as exc:
            return f"not an OCSPResponse ({exc}): {self.answer.describe()}"
        if parsed.response_status != OK:
            return f"OCSP {parsed.response_status}"
        return None


def test_sighup_under_load_fails_no_request(
    slow_ca: SlowCA, serve: Callable[..., Responder], tmp_path: Path
) -> None:
    """Continuous OCSP POSTs (a new connection each, ~8 s) through a SIGHUP: both
    workers are replaced, and every request is answered HTTP 200 with a successful
    OCSP response."""
    server = serve(slow_ca.config(), tmp_path / "responder", workers=2)
    der = slow_ca.requests["good"]

    def workers() -> set[int]:  # both forked (serve answers once one of them is up)
        pids = server.worker_pids()
        return pids if len(pids) == 2 else set()

    old = wait_for(workers, 15)
    assert old, server.worker_pids()
    results: list[LoadResult] = []
    stop = threading.Event()

    def load() -> None:
        end = time.monotonic() + 8.0
        while time.monotonic() < end and not stop.is_set():
            started = time.monotonic()
            _, answer, error = exchange(server.port, "POST", "/", der, timeout=5.0)
            results.append(LoadResult(started, answer, error))

    thread = threading.Thread(target=load, daemon=True)
    offset = server.log_offset()
    thread.start()
    try:
        time.sleep(1.0)
        hup_at = time.monotonic()
        server.signal(signal.SIGHUP)

        def replaced() -> set[int]:
            pids = server.worker_pids()
            return pids if len(pids) == 2 and not pids & old else set()

        new = wait_for(replaced, 20)
        replaced_at = time.monotonic()
        assert new, f"workers {old} not both replaced; now {server.worker_pids()}"
        thread.join(15)
        assert not thread.is_alive(), "the load thread did not end"
    finally:
        stop.set()
        thread.join(10)

    assert "reloaded config" in server.log_text()[offset:], server.log_text()[offset:]
    failures = [(r.started - hup_at, r.failure()) for r in results if r.failure()]
    assert not failures, f"{len(failures)} of {len(results)} failed: {failures[:5]}"
    during = [r for r in results if hup_at <= r.started <= replaced_at]
    after = [r for r in results if r.started > replaced_at]
    assert len(during) >= 10 and after, (len(results), len(during), len(after))
    for r in results:
        assert r.answer is not None
        assert r.answer.ocsp().certificate_status == ocsp.OCSPCertStatus.GOOD
    for r in (results[0], during[len(during) // 2], after[-1]):
        assert r.answer is not None
        assert slow_ca.status(r.answer.body, "good", tmp_path) == "good"
    assert server.alive(), server.log_text()[-3000:]
