"""Invariant 3 (issue 8, defects 7 and 8): nothing a client sends makes the responder
answer 5xx, log a traceback, or grow without bound.

* odd but decodable requests (duplicate extensions, negative / overlong serials, a v2
  request, a critical singleRequestExtension) get an OCSP answer, HTTP 200;
* a worker flooded with distinct serials stays within ``cache_bytes`` plus slack;
* a few thousand mutated requests (seeded, so every run sends the same bytes) get
  HTTP 200 with an OCSPResponse, or a 4xx.

Requests start from ``openssl ocsp -reqout`` output (or cryptography's
OCSPRequestBuilder) and are rewritten with asn1crypto, never by hand.
"""

from __future__ import annotations

import base64
import http.client
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from asn1crypto import core
from asn1crypto import ocsp as asn1_ocsp
from asn1crypto import parser as asn1_parser
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from openssl_ocsp import NONCE_OID, check_response, make_request
from responder_process import (
    HttpAnswer,
    Responder,
    assert_ocsp_error,
    get_path,
    http_call,
    post_ocsp,
    toml_config,
)
from scenario import IssuingCA, LiveIssuer, Pki, new_issuing_ca

from ocsp_responder import request as request_module

OK = ocsp.OCSPResponseStatus.SUCCESSFUL
MALFORMED = ocsp.OCSPResponseStatus.MALFORMED_REQUEST

#: A private-arc OID no one implements (the "example" arc of RFC 7229's style).
UNKNOWN_OID = "1.3.6.1.4.1.55555.1.1"


# ---------------------------------------------------------------- crafting requests


def rewrite(der: bytes, change: Callable[[asn1_ocsp.OCSPRequest], None]) -> bytes:
    """Load ``der`` with asn1crypto, let ``change`` edit it, and re-encode it."""
    request = asn1_ocsp.OCSPRequest.load(der)
    change(request)
    return bytes(request.dump(force=True))


def with_serial(der: bytes, serial: int) -> bytes:
    """The request with its (single) CertID's serialNumber replaced."""

    def change(request: asn1_ocsp.OCSPRequest) -> None:
        request["tbs_request"]["request_list"][0]["req_cert"]["serial_number"] = serial

    return rewrite(der, change)


def with_version(der: bytes, version: int) -> bytes:
    """The request with TBSRequest.version set (0 = v1, 1 = "v2")."""

    def change(request: asn1_ocsp.OCSPRequest) -> None:
        request["tbs_request"]["version"] = version

    return rewrite(der, change)


def with_issuer_name_hash(der: bytes, value: bytes) -> bytes:
    """The request with its CertID's issuerNameHash replaced (of any length)."""

    def change(request: asn1_ocsp.OCSPRequest) -> None:
        request["tbs_request"]["request_list"][0]["req_cert"]["issuer_name_hash"] = value

    return rewrite(der, change)


def extension(oid: str, critical: bool, value: bytes) -> dict[str, object]:
    """An Extension whose extnValue is an OCTET STRING holding ``value`` (as a nonce's)."""
    return {"extn_id": oid, "critical": critical, "extn_value": core.OctetString(value).dump()}


def with_request_extensions(der: bytes, extensions: list[dict[str, object]]) -> bytes:
    """The request with TBSRequest.requestExtensions replaced."""

    def change(request: asn1_ocsp.OCSPRequest) -> None:
        request["tbs_request"]["request_extensions"] = extensions

    return rewrite(der, change)


def with_single_extensions(der: bytes, extensions: list[dict[str, object]]) -> bytes:
    """The request with its Request's singleRequestExtensions replaced."""

    def change(request: asn1_ocsp.OCSPRequest) -> None:
        request["tbs_request"]["request_list"][0]["single_request_extensions"] = extensions

    return rewrite(der, change)


def serial_of_octets(octets: int, low: int = 0x1234) -> int:
    """A positive serial whose DER INTEGER has exactly ``octets`` content octets."""
    return (0x7F << (8 * (octets - 1))) | low


def traceback_in_log(server: Responder, since: int) -> str | None:
    """The part of the log written after offset ``since`` if it holds a traceback, else None."""
    text = server.log_text()[since:]
    return text if "Traceback" in text else None


# ---------------------------------------------------------------- one responder, this module


@dataclass
class Target:
    """A fresh intermediate (leaf ``a``) served alone with the default request size limit."""

    issuing: IssuingCA
    server: Responder
    workdir: Path
    request: bytes  # openssl ocsp -reqout, SHA-1 CertID for leaf a, no nonce


@pytest.fixture(scope="module")
def target(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """``ocsp-responder serve`` for a new intermediate, [server] defaults (10 KiB bodies)."""
    base = tmp_path_factory.mktemp("robustness")
    issuing = new_issuing_ca(base, pki.root, "robust-intermediate", leaves=("a",))
    directory = base / "responder"
    directory.mkdir()
    config = directory / "config.toml"
    config.write_text(toml_config({}, [issuing.issuer_config()]))
    server = Responder(config, directory / "responder.log")
    server.start()
    try:
        request = make_request(base / "a.der", issuing.ca.cert, [issuing.leaves["a"].cert])
        yield Target(issuing, server, base, request)
    finally:
        server.stop()


def _malformed_cases() -> dict[str, Callable[[bytes], bytes]]:
    """Requests that must be answered malformedRequest, built from a valid one."""
    return {
        "two-nonces": lambda der: with_request_extensions(
            der,
            [extension(NONCE_OID, False, b"first-nonce"), extension(NONCE_OID, False, b"second")],
        ),
        "two-unknown-extensions": lambda der: with_request_extensions(
            der, [extension(UNKNOWN_OID, False, b"x"), extension(UNKNOWN_OID, False, b"y")]
        ),
        "negative-serial": lambda der: with_serial(der, -0x1234),
        "serial-9000-octets": lambda der: with_serial(der, serial_of_octets(9000)),
        "serial-23-octets": lambda der: with_serial(der, serial_of_octets(23)),
        "serial-23-octets-high-bit": lambda der: with_serial(der, 1 << (8 * 22 - 1)),
        "version-v2": lambda der: with_version(der, 1),
        "version-255": lambda der: with_version(der, 255),
        "issuer-name-hash-of-1000-octets": lambda der: with_issuer_name_hash(der, b"\x5a" * 1000),
        "critical-single-request-extension": lambda der: with_single_extensions(
            der, [extension(UNKNOWN_OID, True, b"must understand")]
        ),
    }


MALFORMED_CASES = _malformed_cases()


@pytest.mark.parametrize("case", sorted(MALFORMED_CASES))
def test_odd_request_is_malformed_request(target: Target, case: str) -> None:
    """Each odd request gets HTTP 200 + malformedRequest (POST and GET), never a traceback."""
    der = MALFORMED_CASES[case](target.request)
    try:  # the library itself accepts the DER: the responder must look deeper
        ocsp.load_der_ocsp_request(der)
    except ValueError:  # cryptography >= 50 refuses a version other than v1 itself
        assert case.startswith("version-"), case
    since = len(target.server.log_text())
    answers = [post_ocsp(target.server.port, der)]
    if len(der) < 2048:
        answers.append(http_call(target.server.port, "GET", get_path(der)))
    for answer in answers:
        assert_ocsp_error(answer, MALFORMED)
    assert traceback_in_log(target.server, since) is None, target.server.log_text()[since:]


def test_serial_of_22_octets_is_answered(target: Target) -> None:
    """20 octets (RFC 5280 4.1.2.2) + 2 octets slack is answered normally; openssl agrees."""
    serial = serial_of_octets(22)
    der = with_serial(target.request, serial)
    assert ocsp.load_der_ocsp_request(der).serial_number == serial
    since = len(target.server.log_text())
    answer = post_ocsp(target.server.port, der)
    assert answer.status == 200, answer.describe()
    assert answer.ocsp().response_status == OK, answer.describe()
    run = check_response(
        answer.body,
        target.workdir,
        target.issuing.trust,
        target.issuing.ca.cert,
        serials=[serial],
    )
    assert run.verified, run.output
    assert run.status_of(serial).status == "unknown", run.output
    assert traceback_in_log(target.server, since) is None


def test_non_critical_single_request_extension_is_ignored(target: Target) -> None:
    """An unknown non-critical singleRequestExtension is ignored (RFC 6960 section 4.4)."""
    der = with_single_extensions(target.request, [extension(UNKNOWN_OID, False, b"ignore me")])
    answer = post_ocsp(target.server.port, der)
    assert answer.status == 200, answer.describe()
    assert answer.ocsp().response_status == OK, answer.describe()
    assert answer.ocsp().serial_number == target.issuing.leaves["a"].serial


def _half_closed_exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` on a new connection, end the sending side (the client has no more
    to say), and return everything the server answered until it closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def test_body_shorter_than_its_content_length_is_400(target: Target) -> None:
    """A POST whose body ends before its Content-Length (the client stopped sending)
    gets HTTP 400 "unreadable request body", not an OCSP answer for a cut body, nor
    500, nor a traceback."""
    since = len(target.server.log_text())
    head = (
        b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/ocsp-request\r\n"
        b"Content-Length: %d\r\n\r\n" % len(target.request)
    )
    reply = _half_closed_exchange(target.server.port, head + target.request[:-10])
    assert reply.startswith(b"HTTP/1.1 400 "), reply[:300]
    assert b"unreadable request body" in reply, reply[:300]
    assert traceback_in_log(target.server, since) is None


CHUNKED_HEAD = (
    b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/ocsp-request\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


#: Chunked bodies whose framing breaks (or that the client stops sending) after, or
#: before, a whole OCSPRequest: before the 411, granian handed the cut body to the app
#: as if it were whole, and the first three were answered with a signed "good".
BROKEN_CHUNKED: dict[str, Callable[[bytes], bytes]] = {
    "garbage-after-the-request": lambda der: _chunk(der) + b"zz-not-hex\r\n",
    "no-crlf-after-the-chunk": lambda der: b"%x\r\n" % len(der) + der + b"garbage\r\n",
    "client-stops-before-the-last-chunk": lambda der: _chunk(der),
    "garbage-before-the-request": lambda der: b"zz-not-hex\r\n" + _chunk(der) + b"0\r\n\r\n",
    "half-the-request-then-garbage": lambda der: _chunk(der[: len(der) // 2]) + b"zz\r\n",
}


@pytest.mark.parametrize("case", sorted(BROKEN_CHUNKED))
def test_broken_chunked_body_is_never_answered_for_the_request(target: Target, case: str) -> None:
    """A POST whose chunked body is cut or badly framed gets no OCSP answer at all:
    HTTP 411 (chunked bodies are refused, see ocsp_responder.rsgi), never a status
    for the certificate, never 5xx, never a traceback."""
    since = len(target.server.log_text())
    reply = _half_closed_exchange(
        target.server.port, CHUNKED_HEAD + BROKEN_CHUNKED[case](target.request)
    )
    assert reply.startswith(b"HTTP/1.1 411 "), reply[:300]
    assert traceback_in_log(target.server, since) is None


# ---------------------------------------------------------------- the error log, in process


def test_error_log_reports_each_cause_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """ErrorLog: one ERROR line per distinct type + message per interval, no traceback,
    the repeats counted on the next line; the causes remembered are bounded."""
    from ocsp_responder.http import ErrorLog

    logger = logging.getLogger("test_robustness.error_log")
    errors = ErrorLog(logger, interval=3600, max_causes=8)

    def fail(exc: Exception) -> bool:
        try:
            raise exc
        except Exception as caught:
            return errors.report(caught)

    with caplog.at_level(logging.ERROR, logger=logger.name):
        assert [fail(ValueError("boom")) for _ in range(5)] == [True, False, False, False, False]
        assert fail(ValueError("other")) is True  # another message
        assert fail(KeyError("boom")) is True  # another type
        assert len(caplog.records) == 3
        assert "Traceback" not in caplog.text
        assert "ValueError: boom (raised at test_robustness.py:" in caplog.text
        errors.interval = 0
        assert fail(ValueError("boom")) is True
        assert "4 more since it was last logged" in caplog.records[-1].getMessage()
        for n in range(100):
            fail(RuntimeError(f"cause {n}"))
        assert len(errors._causes) <= 8


def test_clip_escapes_and_cuts_client_text() -> None:
    """Client text in log lines: control characters escaped, at most LOG_CLIP characters."""
    from ocsp_responder.http import LOG_CLIP, clip

    assert clip("plain text") == "plain text"
    assert clip("two\nlines\x00") == "two\\nlines\\x00"
    long = clip("A" * 10_000)
    assert long.startswith("A" * LOG_CLIP) and long.endswith("...(10000 chars)")
    assert len(long) < LOG_CLIP + 20
    assert len(clip("\x01" * 10_000)) < LOG_CLIP + 20


# ---------------------------------------------------------------- memory stays bounded

#: The byte bound given to the flooded responder, and what else its RSS may grow by
#: (allocator fragmentation, per-connection buffers, the interpreter's own caches).
FLOOD_CACHE_BYTES = 4 * 1024 * 1024
RSS_SLACK = 16 * 1024 * 1024


def worker_pid(server: Responder) -> int:
    """The process id of the (single) worker of ``server``."""
    assert server.process is not None
    master = server.process.pid
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    assert len(children) == 1, f"expected one worker under {master}: {children}"
    return int(children[0])


def worker_rss(server: Responder) -> int:
    """VmRSS of the (single) worker of ``server``, octets."""
    pid = worker_pid(server)
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for worker {pid}")


def worker_cpu(server: Responder) -> float:
    """CPU time (user + system) the worker of ``server`` has used, seconds."""
    fields = Path(f"/proc/{worker_pid(server)}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def send_all(port: int, bodies: dict[int, bytes], answers: dict[int, tuple[int, bytes]]) -> None:
    """POST each body over one keep-alive connection; answers[index] = (HTTP status, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/ocsp-request"}
    try:
        for index, body in bodies.items():
            for attempt in range(2):
                try:
                    conn.request("POST", "/", body=body, headers=headers)
                    response = conn.getresponse()
                    answers[index] = (response.status, response.read())
                    break
                except (http.client.RemoteDisconnected, ConnectionError):
                    conn.close()  # the server closed an idle keep-alive connection
                    if attempt:
                        raise
    finally:
        conn.close()


def flood(port: int, bodies: list[bytes], threads: int = 2) -> list[tuple[int, bytes]]:
    """POST ``bodies`` over ``threads`` keep-alive connections, each taking every
    ``threads``-th pair of consecutive bodies; the (status, body) answers, in order."""
    answers: dict[int, tuple[int, bytes]] = {}
    errors: list[BaseException] = []

    def run(thread: int) -> None:
        mine = {i: body for i, body in enumerate(bodies) if (i // 2) % threads == thread}
        try:
            send_all(port, mine, answers)
        except BaseException as exc:  # re-raised in the test thread below
            errors.append(exc)

    workers = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if errors:
        raise errors[0]
    assert len(answers) == len(bodies)
    return [answers[i] for i in range(len(bodies))]


def requests_for(template: bytes, serials: list[int]) -> list[bytes]:
    """Requests for ``serials`` with ``template``'s SHA-1 CertID issuer hashes."""
    parsed = ocsp.load_der_ocsp_request(template)
    return [
        ocsp.OCSPRequestBuilder()
        .add_certificate_by_hash(
            parsed.issuer_name_hash, parsed.issuer_key_hash, serial, hashes.SHA1()
        )
        .build()
        .public_bytes(serialization.Encoding.DER)
        for serial in serials
    ]


def test_rss_stays_bounded_under_distinct_serials(
    live_issuer: Callable[..., LiveIssuer], tmp_path: Path
) -> None:
    """40,000 distinct requests, 20-octet serials (cached) alternating with 9,000-octet
    serials (rejected): the worker grows by less than cache_bytes + RSS_SLACK."""
    live = live_issuer(cache_bytes=FLOOD_CACHE_BYTES)
    port = live.server.port
    template = make_request(tmp_path / "template.der", live.ca.cert, serials=[1])
    small = 0x40 << (8 * 19)  # 20 content octets
    huge = 0x40 << (8 * 8999)  # 9,000 content octets

    def mixed(start: int, count: int) -> list[bytes]:
        smalls = requests_for(template, [small + start + n for n in range(count // 2)])
        huges = requests_for(template, [huge + start + n for n in range(count // 2)])
        return [body for pair in zip(smalls, huges, strict=True) for body in pair]

    warmup = flood(port, mixed(0, 1000))
    before, cpu_before = worker_rss(live.server), worker_cpu(live.server)
    started = time.monotonic()
    answers = flood(port, mixed(1_000_000, 40_000))
    elapsed = time.monotonic() - started
    after, cpu = worker_rss(live.server), worker_cpu(live.server) - cpu_before

    growth = after - before
    summary = (
        f"worker RSS grew {growth / 2**20:.1f} MiB ({before / 2**20:.1f} -> "
        f"{after / 2**20:.1f} MiB) over {len(answers)} requests in {elapsed:.1f} s "
        f"(worker CPU {cpu:.1f} s); "
        f"bound {(FLOOD_CACHE_BYTES + RSS_SLACK) / 2**20:.0f} MiB"
    )
    print(summary)  # shown with -s, and in the report when an assertion fails
    assert growth < FLOOD_CACHE_BYTES + RSS_SLACK, summary
    assert len(answers) == 40_000
    bad = [status for status, _ in warmup + answers if status != 200]
    assert not bad, f"{len(bad)} answers were not HTTP 200: {sorted(set(bad))}"
    statuses = [ocsp.load_der_ocsp_response(body).response_status for _, body in answers]
    assert set(statuses[0::2]) == {OK}, "20-octet serials are answered"
    assert set(statuses[1::2]) == {MALFORMED}, "9,000-octet serials are malformedRequest"
    assert "Traceback" not in live.server.log_text()


# ---------------------------------------------------------------- seeded fuzzing

FUZZ_SEED = 20_260_808
FUZZ_COUNT = 5_000


def tlv_headers(der: bytes) -> list[tuple[int, int]]:
    """(offset, header length) of every TLV in ``der`` that asn1crypto's parser can walk,
    descending into constructed values; a mutation target for length changes."""
    found: list[tuple[int, int]] = []

    def walk(start: int, end: int, depth: int) -> None:
        pointer = start
        while pointer < end and depth < 12:
            try:
                _, method, _, header, contents, trailer = asn1_parser.parse(der[pointer:end])
            except ValueError:
                return
            found.append((pointer, len(header)))
            if method == 1:
                walk(pointer + len(header), pointer + len(header) + len(contents), depth + 1)
            pointer += len(header) + len(contents) + len(trailer)

    walk(0, len(der), 0)
    return found


class Mutator:
    """Seeded structural and byte-level mutations of valid OCSP requests."""

    def __init__(self, seeds: list[bytes], seed: int) -> None:
        self.seeds = seeds
        self.rng = random.Random(seed)

    def random_extension(self) -> dict[str, object]:
        """A nonce of a random length, or an unknown extension, critical or not."""
        rng = self.rng
        oid = rng.choice([NONCE_OID, NONCE_OID, UNKNOWN_OID, "2.5.29.19", "1.3.6.1.5.5.7.48.1.4"])
        value = rng.randbytes(rng.choice([0, 1, 16, 32, 128, 129, 300]))
        if rng.random() < 0.2:
            return {"extn_id": oid, "critical": rng.random() < 0.5, "extn_value": value}
        return extension(oid, rng.random() < 0.3, value)

    def structural(self, der: bytes) -> bytes:
        """One change made through asn1crypto: extensions, serial, version, hashes."""
        rng = self.rng
        request = asn1_ocsp.OCSPRequest.load(der)
        tbs = request["tbs_request"]
        single = tbs["request_list"][0]
        choice = rng.randrange(9)
        if choice == 0:  # duplicate the extensions, or add some
            current = list(tbs["request_extensions"] or [])
            extra = [self.random_extension() for _ in range(rng.randint(1, 3))]
            tbs["request_extensions"] = [*current, *current, *extra]
        elif choice == 1:  # reorder the extensions, adding one first
            current = list(tbs["request_extensions"] or [])
            rng.shuffle(current)
            tbs["request_extensions"] = [self.random_extension(), *current]
        elif choice == 2:
            single["single_request_extensions"] = [
                self.random_extension() for _ in range(rng.randint(1, 3))
            ]
        elif choice == 3:
            octets = rng.choice([0, 1, 19, 20, 21, 22, 23, 24, 64, 2000])
            sign = -1 if rng.random() < 0.2 else 1
            single["req_cert"]["serial_number"] = sign * rng.getrandbits(max(1, 8 * octets))
        elif choice == 4:
            tbs["version"] = rng.choice([1, 2, 255, 1 << 70])
        elif choice == 5:  # issuer hashes of another length
            cert_id = single["req_cert"]
            field = rng.choice(["issuer_name_hash", "issuer_key_hash"])
            cert_id[field] = rng.randbytes(rng.choice([0, 1, 19, 21, 32, 64, 1000]))
        elif choice == 6:  # another hash algorithm, known or not
            cert_id = single["req_cert"]
            algorithm = rng.choice(["md5", "sha224", "sha3_256", "1.2.3.4.5", "sha256"])
            cert_id["hash_algorithm"] = {"algorithm": algorithm}
        elif choice == 7:  # a second Request (RFC 5019: one only)
            tbs["request_list"] = [single, single]
        else:  # requestorName
            tbs["requestor_name"] = {"dns_name": "a" * rng.randint(0, 300)}
        return bytes(request.dump(force=True))

    def bytewise(self, der: bytes) -> bytes:
        """One byte-level change: flip, overwrite, truncate, insert, delete, length tweak."""
        rng = self.rng
        data = bytearray(der)
        choice = rng.randrange(7)
        if not data:
            return bytes(rng.randbytes(rng.randint(1, 8)))
        position = rng.randrange(len(data))
        if choice == 0:
            data[position] ^= 1 << rng.randrange(8)
        elif choice == 1:
            data[position] = rng.randrange(256)
        elif choice == 2:
            del data[position:]
        elif choice == 3:
            data[position:position] = rng.randbytes(rng.randint(1, 16))
        elif choice == 4:
            del data[position : position + rng.randint(1, 16)]
        elif choice == 5:
            end = min(len(data), position + rng.randint(1, 32))
            data[position:position] = data[position:end]
        else:  # change the length octet(s) of some TLV
            headers = tlv_headers(der)
            offset, size = rng.choice(headers) if headers else (0, 2)
            index = min(offset + size - 1, len(data) - 1)
            data[index] = (data[index] + rng.choice([-2, -1, 1, 2, 0x80])) % 256
        return bytes(data)

    def next(self) -> bytes:
        """A mutated request: 1-3 changes, structural (while it still parses) or bytewise."""
        der = self.rng.choice(self.seeds)
        for _ in range(self.rng.randint(1, 3)):
            if self.rng.random() < 0.5:
                try:
                    der = self.structural(der)
                    continue
                except Exception:  # no longer loadable: mutate the bytes
                    pass
            der = self.bytewise(der)
        return der


def fuzz_seeds(target: Target) -> list[bytes]:
    """Valid requests to mutate: SHA-1 and SHA-256 CertIDs, a nonce, a signed one,
    extensions at both levels."""
    issuing, work = target.issuing, target.workdir
    ca, leaf = issuing.ca.cert, issuing.leaves["a"].cert
    nonce = make_request(work / "fz-nonce.der", ca, [leaf], digest="sha256", nonce=True)
    signed = make_request(
        work / "fz-signed.der",
        ca,
        [leaf],
        nonce=True,
        extra=["-signer", issuing.signer.cert, "-signkey", issuing.signer.key],
    )
    return [
        target.request,
        nonce,
        signed,
        with_request_extensions(
            target.request,
            [extension(NONCE_OID, False, b"0123456789abcdef"), extension(UNKNOWN_OID, False, b"")],
        ),
        with_single_extensions(target.request, [extension(UNKNOWN_OID, False, b"x")]),
    ]


def _acceptable(answer: HttpAnswer) -> str | None:
    """None when ``answer`` is an OCSPResponse with HTTP 200, or a 4xx; else why not."""
    if 400 <= answer.status < 500:
        return None
    if answer.status != 200:
        return f"HTTP {answer.status}"
    try:
        answer.ocsp()
    except Exception as exc:
        return f"HTTP 200 whose body is no OCSPResponse: {exc}"
    return None


def test_mutated_requests_never_get_5xx(target: Target) -> None:
    """FUZZ_COUNT seeded mutations of valid requests, POST (4 in 5) or GET: every answer is
    HTTP 200 with an OCSPResponse, or a 4xx; the log holds no traceback."""
    mutator = Mutator(fuzz_seeds(target), FUZZ_SEED)
    port = target.server.port
    since = len(target.server.log_text())
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    failures: list[str] = []
    statuses: dict[int, int] = {}
    started = time.monotonic()
    try:
        for number in range(FUZZ_COUNT):
            der = mutator.next()
            as_get = mutator.rng.random() < 0.2
            method, path = ("GET", get_path(der, "/ocsp/")) if as_get else ("POST", "/")
            for attempt in range(2):
                try:
                    conn.request(method, path, body=None if as_get else der)
                    response = conn.getresponse()
                    answer = HttpAnswer(response.status, response.headers, response.read())
                    break
                except (http.client.RemoteDisconnected, ConnectionError):
                    conn.close()
                    if attempt:
                        raise
            statuses[answer.status] = statuses.get(answer.status, 0) + 1
            problem = _acceptable(answer)
            if problem and len(failures) < 10:
                request = base64.b64encode(der).decode()[:600]
                failures.append(f"#{number} {method} {problem}: request (base64) {request}")
            if answer.headers.get("Connection", "").lower() == "close":
                conn.close()
    finally:
        conn.close()
    elapsed = time.monotonic() - started
    assert not failures, "\n".join(failures)
    assert sum(statuses.values()) == FUZZ_COUNT
    log = traceback_in_log(target.server, since)
    assert log is None, log[-4000:] if log else ""
    longest = max(target.server.log_text()[since:].splitlines(), key=len, default="")
    assert len(longest) < 600, f"a log line of {len(longest)} characters: {longest[:300]}"
    assert elapsed < 60, f"{FUZZ_COUNT} requests took {elapsed:.0f} s"


def _outcome(der: bytes) -> object:
    """What :func:`decode_request` makes of ``der``: the Request's fields (hash algorithm
    name, issuer hashes, serial, nonce), or the MalformedRequest message."""
    try:
        decoded = request_module.decode_request(der)
    except request_module.MalformedRequest as exc:
        return f"malformedRequest: {exc}"
    cert_id = decoded.cert_id
    return (
        cert_id.hash_algorithm.name,
        cert_id.issuer_name_hash,
        cert_id.issuer_key_hash,
        cert_id.serial_number,
        decoded.nonce,
    )


def test_fast_path_agrees_with_the_full_check(
    target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The request decoder's fast path (the request is exactly what cryptography's
    OCSPRequestBuilder encodes: v1, no singleRequestExtensions) decides every request
    the same way as the asn1crypto check alone: the same Request or the same
    malformedRequest message, over the openssl-made seeds and FUZZ_COUNT mutations
    of them. openssl's own requests (with and without nonce, SHA-1 and SHA-256
    CertIDs) take the fast path."""
    seeds = fuzz_seeds(target)
    nonce_sha1 = make_request(
        target.workdir / "fp-nonce.der",
        target.issuing.ca.cert,
        [target.issuing.leaves["a"].cert],
        nonce=True,
    )
    for der in (target.request, seeds[1], nonce_sha1):
        assert request_module._is_canonical_v1(der, ocsp.load_der_ocsp_request(der)), der.hex()
    mutator = Mutator(seeds, FUZZ_SEED)
    corpus = [*seeds, nonce_sha1, *(mutator.next() for _ in range(FUZZ_COUNT))]
    fast = [_outcome(der) for der in corpus]
    took_fast = 0
    for der in corpus:
        try:
            took_fast += request_module._is_canonical_v1(der, ocsp.load_der_ocsp_request(der))
        except Exception:
            continue
    monkeypatch.setattr(request_module, "_is_canonical_v1", lambda der, parsed: False)
    full = [_outcome(der) for der in corpus]
    differ = [(der.hex(), a, b) for der, a, b in zip(corpus, fast, full, strict=True) if a != b]
    assert not differ, differ[:5]
    refused = sum(isinstance(outcome, str) for outcome in full)
    # both paths were exercised, and both outcomes occur
    assert 0 < took_fast < len(corpus), took_fast
    assert 0 < refused < len(corpus), refused
