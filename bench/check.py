"""Talking to a responder outside wrk: one request, correctness, behaviour probes.

Correctness uses the real ``openssl ocsp`` client as the oracle: a sample response
must print "Response verify OK" (signature, signer chain to the root, signer
authorised by the issuer, nonce echoed) and carry the status index.txt says.
"""

from __future__ import annotations

import http.client
import re
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.x509 import ocsp

import load
import procs
from pki import IndexEntry, Pki

#: openssl's names of revocationReason values, as ``openssl ocsp -resp_text`` prints them.
_TEXT_STATUS = re.compile(r"Cert Status: (\w+)")
_TEXT_REASON = re.compile(r"Revocation Reason: (\w+)")
_TEXT_SERIAL = re.compile(r"Serial Number: ([0-9A-Fa-f]+)")


@dataclass(frozen=True)
class Reply:
    """One HTTP exchange.

    Attributes:
        status: HTTP status code.
        headers: response headers (lower-case names; last value wins).
        body: response body.
        version: HTTP version of the response (10 or 11).
        elapsed_ms: wall time of the exchange, milliseconds.
    """

    status: int
    headers: dict[str, str]
    body: bytes
    version: int
    elapsed_ms: float


class Client:
    """A small keep-alive HTTP/1.1 client for one ``127.0.0.1`` port.

    Reconnects transparently when the server closes the connection (HTTP/1.0 peers).
    """

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        """Prepare a client for ``http://127.0.0.1:PORT`` (no connection yet)."""
        self.port = port
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        """Close the connection, if any."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _exchange(self, method: str, path: str, body: bytes | None) -> Reply:
        """Send one request and read the whole response."""
        headers = {"Host": "127.0.0.1"}
        if body is not None:
            headers["Content-Type"] = "application/ocsp-request"
        start = time.perf_counter()
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(
                    "127.0.0.1", self.port, timeout=self.timeout
                )
            try:
                self._conn.request(method, path, body=body, headers=headers)
                resp = self._conn.getresponse()
                data = resp.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # a kept-alive connection the server had closed: retry once on a new one
                self.close()
                if attempt == 2:
                    raise
                continue
            if resp.will_close:
                self.close()
            return Reply(
                resp.status,
                {k.lower(): v for k, v in resp.getheaders()},
                data,
                resp.version,
                (time.perf_counter() - start) * 1000,
            )
        raise AssertionError("unreachable")

    def post(self, der: bytes, path: str = "/") -> Reply:
        """POST a DER OCSP request (Content-Type application/ocsp-request)."""
        return self._exchange("POST", path, der)

    def get(self, path: str) -> Reply:
        """GET a path (e.g. "/" + escaped base64 of a request)."""
        return self._exchange("GET", path, None)


def cert_status(body: bytes) -> str:
    """OCSP status of a response's first SingleResponse.

    Returns:
        ``good``, ``revoked``, ``unknown``, or the OCSPResponseStatus name in lower
        case for an error response (e.g. ``malformed_request``), or ``unparsable``.
    """
    try:
        resp = ocsp.load_der_ocsp_response(body)
    except ValueError:
        return "unparsable"
    if resp.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        return resp.response_status.name.lower()
    return resp.certificate_status.name.lower()


def verify(
    req_der: bytes,
    reply: Reply,
    *,
    serial: int,
    expected_status: str,
    expected_reason: str,
    root_pem: Path,
    issuer_pem: Path,
) -> dict[str, object]:
    """Check one response with ``openssl ocsp -reqin -respin -CAfile -resp_text``.

    Args:
        req_der: the request sent (its nonce, if any, must be echoed).
        reply: the HTTP reply.
        serial: the certificate serial asked about.
        expected_status: ``good`` or ``revoked`` (from index.txt).
        expected_reason: openssl's reason name from index.txt, "" when none;
            ``unspecified`` also accepts a response without revocationReason.
        root_pem: trust anchor; issuer_pem: the intermediate (untrusted chain part).

    Returns:
        ``{"ok": bool, "problems": [str], "http_status", "cert_status", "reason",
        "verify", "nonce_echoed", "cache_control", "x_cache_status", "body_octets"}``.
    """
    problems: list[str] = []
    result: dict[str, object] = {
        "serial": f"{serial:X}",
        "expected": expected_status,
        "http_status": reply.status,
        "cache_control": reply.headers.get("cache-control"),
        "x_cache_status": reply.headers.get("x-cache-status"),
        "content_type": reply.headers.get("content-type"),
        "body_octets": len(reply.body),
    }
    if reply.status != 200:
        problems.append(f"HTTP {reply.status}")
    with tempfile.TemporaryDirectory(prefix="ocsp-bench-verify-") as tmp:
        req_file, resp_file = Path(tmp, "req.der"), Path(tmp, "resp.der")
        req_file.write_bytes(req_der)
        resp_file.write_bytes(reply.body)
        run = subprocess.run(
            [
                "openssl",
                "ocsp",
                "-reqin",
                str(req_file),
                "-respin",
                str(resp_file),
                "-CAfile",
                str(root_pem),
                "-verify_other",
                str(issuer_pem),
                "-resp_text",
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
    text = run.stdout + run.stderr
    verified = "Response verify OK" in text
    result["verify"] = "Response verify OK" if verified else text.strip()[-400:]
    if not verified:
        problems.append("openssl ocsp: no 'Response verify OK'")
    status = _TEXT_STATUS.search(text)
    reason = _TEXT_REASON.search(text)
    serial_seen = _TEXT_SERIAL.search(text)
    result["cert_status"] = status.group(1) if status else None
    result["reason"] = reason.group(1) if reason else None
    if result["cert_status"] != expected_status:
        problems.append(f"status {result['cert_status']}, index.txt says {expected_status}")
    if expected_status == "revoked":
        want = expected_reason or None
        if result["reason"] != want and not (want == "unspecified" and result["reason"] is None):
            problems.append(f"reason {result['reason']}, index.txt says {want}")
    if serial_seen is None or int(serial_seen.group(1), 16) != serial:
        problems.append(f"serial {serial_seen.group(1) if serial_seen else None} != {serial:X}")
    req = ocsp.load_der_ocsp_request(req_der)
    try:
        sent_nonce: bytes | None = req.extensions.get_extension_for_class(
            x509.OCSPNonce
        ).value.nonce
    except x509.ExtensionNotFound:
        sent_nonce = None
    if sent_nonce is not None:
        try:
            got = (
                ocsp.load_der_ocsp_response(reply.body)
                .extensions.get_extension_for_class(x509.OCSPNonce)
                .value.nonce
            )
        except (ValueError, x509.ExtensionNotFound):
            got = None
        result["nonce_echoed"] = got == sent_nonce
        if got != sent_nonce:
            problems.append("nonce not echoed")
    result["problems"] = problems
    result["ok"] = not problems
    return result


def samples(mix: load.Mix, expected: dict[int, IndexEntry]) -> list[int]:
    """Indexes of the first good and the first revoked request of a mix's set."""
    picked: dict[str, int] = {}
    for i, serial in enumerate(mix.requests.serials):
        status = "revoked" if expected[serial].status == "R" else "good"
        picked.setdefault(status, i)
        if len(picked) == 2:
            break
    return sorted(picked.values())


def verify_mix(
    port: int,
    mix: load.Mix,
    *,
    target: str,
    signer: str,
    expected: dict[int, IndexEntry],
    pki: Pki,
    record: list[dict[str, object]],
) -> None:
    """Check a good and a revoked sample of ``mix`` on ``port``; append each result to ``record``.

    Raises:
        RuntimeError: a response does not verify or has the wrong status.
    """
    client = Client(port)
    try:
        for i in samples(mix, expected):
            der = mix.requests.der(i)
            serial = mix.requests.serials[i]
            entry = expected[serial]
            reply = (
                client.get(mix.requests.get_path(i)) if mix.method == "get" else client.post(der)
            )
            res = verify(
                der,
                reply,
                serial=serial,
                expected_status="revoked" if entry.status == "R" else "good",
                expected_reason=entry.reason,
                root_pem=pki.root_cert,
                issuer_pem=pki.issuer_cert,
            )
            res.update({"target": target, "signer": signer, "mix": mix.name})
            record.append(res)
            if not res["ok"]:
                raise RuntimeError(
                    f"wrong answer from {target} ({signer}, {mix.name}, "
                    f"serial {serial:X}): {res['problems']}"
                )
    finally:
        client.close()


# ---------------------------------------------------------------------------
# behaviour probes (recorded in the results, never fatal)
# ---------------------------------------------------------------------------


def probe_keepalive(port: int, der: bytes) -> dict[str, object]:
    """POST one request as HTTP/1.1 with ``Connection: keep-alive`` on a raw socket.

    Returns:
        ``{"status_line": str, "connection": "kept open" | "closed by server"}``.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n"
            b"Content-Type: application/ocsp-request\r\n"
            b"Content-Length: %d\r\n\r\n" % len(der) + der
        )
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))  # type: ignore[union-attr]
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        sock.settimeout(0.5)
        try:
            state = "closed by server" if sock.recv(1) == b"" else "sent extra bytes"
        except TimeoutError:
            state = "kept open"
    return {"status_line": head.split(b"\r\n", 1)[0].decode("latin-1"), "connection": state}


def probe_connect_close(port: int, group: procs.Server, der: bytes) -> dict[str, object]:
    """Open and close a connection without a request (what wrk's resolve probe does).

    Measures the server's per-process CPU use over one second before and after, then
    checks that a valid request is still answered.

    Returns:
        ``{"cpu_before": {pid: cores}, "cpu_after": {...}, "max_cpu_after": cores,
        "still_answers": bool, "answer_ms": float | None}``.
    """
    before = procs.cpu_rates(group.group_pids(), 1.0)
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
    time.sleep(0.2)
    after = procs.cpu_rates(group.group_pids(), 1.0)
    client = Client(port, timeout=3.0)
    try:
        reply = client.post(der)
        answers, ms = reply.status == 200, round(reply.elapsed_ms, 1)
    except OSError:
        answers, ms = False, None
    finally:
        client.close()
    return {
        "cpu_before": before,
        "cpu_after": after,
        "max_cpu_after": max(after.values(), default=0.0),
        "still_answers": answers,
        "answer_ms": ms,
    }


def probe_malformed(port: int, der: bytes) -> dict[str, object]:
    """POST a body that is not an OCSP request, then a valid request.

    Returns:
        ``{"http_status": int | None, "ocsp_status": str | None, "next_valid": str}``
        where next_valid is ``answered`` or the error of the following valid request.
    """
    client = Client(port, timeout=3.0)
    out: dict[str, object] = {"http_status": None, "ocsp_status": None}
    try:
        reply = client.post(b"this is not DER")
        out["http_status"] = reply.status
        out["ocsp_status"] = cert_status(reply.body) if reply.status == 200 else None
    except OSError as exc:
        out["http_status"] = f"error: {exc}"
    client.close()
    time.sleep(0.2)
    try:
        reply = client.post(der)
        out["next_valid"] = "answered" if reply.status == 200 else f"HTTP {reply.status}"
    except OSError as exc:
        out["next_valid"] = f"error: {exc}"
    finally:
        client.close()
    return out
