"""The responder from outside: ``ocsp-responder`` as a child process on a loopback
port, raw HTTP to it, and the config.toml it reads.

The package is never imported; ``cryptography`` is used only to look inside
response bytes.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

from cryptography.x509 import ocsp

# ---------------------------------------------------------------- raw HTTP


@dataclass(frozen=True)
class HttpAnswer:
    """An HTTP response: status, headers (case-insensitive lookup), body."""

    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def ocsp(self) -> ocsp.OCSPResponse:
        """The body parsed as an OCSPResponse (raises if it is not one)."""
        return ocsp.load_der_ocsp_response(self.body)

    def describe(self) -> str:
        """Status, headers and the start of the body, for assertion messages."""
        return f"HTTP {self.status}\n{self.headers}\n{self.body[:200]!r}"


def http_call(
    port: int,
    method: str,
    path: str,
    body: bytes | Iterable[bytes] | None = None,
    headers: dict[str, str] | None = None,
) -> HttpAnswer:
    """One HTTP/1.1 exchange with 127.0.0.1:``port`` (an iterable body goes chunked)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return HttpAnswer(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


def post_ocsp(port: int, der: bytes, path: str = "/") -> HttpAnswer:
    """POST DER bytes as ``application/ocsp-request``."""
    return http_call(port, "POST", path, der, {"Content-Type": "application/ocsp-request"})


def get_path(der: bytes, prefix: str = "/") -> str:
    """The RFC 6960 appendix A.1 GET path: prefix + URL-encoded base64 of the DER."""
    return prefix + quote(base64.b64encode(der).decode(), safe="")


def cache_control(answer: HttpAnswer) -> dict[str, str | None]:
    """``Cache-Control`` directives as a dict (``max-age`` -> "60", ``public`` -> None)."""
    directives: dict[str, str | None] = {}
    for part in (answer.headers.get("Cache-Control") or "").split(","):
        name, eq, value = part.strip().partition("=")
        if name:
            directives[name.lower()] = value if eq else None
    return directives


def assert_ocsp_error(answer: HttpAnswer, status: ocsp.OCSPResponseStatus) -> None:
    """HTTP 200, an OCSP error body with ``status``, and not cacheable."""
    assert answer.status == 200, answer.describe()
    assert answer.headers.get("Content-Type") == "application/ocsp-response", answer.describe()
    assert answer.ocsp().response_status == status, answer.describe()
    directives = cache_control(answer)
    assert "no-cache" in directives, answer.describe()
    assert "max-age" not in directives and "public" not in directives, answer.describe()


# ---------------------------------------------------------------- config.toml


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value))
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def toml_config(
    server: dict[str, object] | None,
    issuers: Sequence[dict[str, object]],
    top: dict[str, object] | None = None,
) -> str:
    """Write a config as TOML text: top-level keys, ``[server]``, ``[[issuer]]`` (+ ``.source``)."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in (top or {}).items()]
    if server is not None:
        lines += ["", "[server]", *(f"{k} = {_toml_value(v)}" for k, v in server.items())]
    for issuer in issuers:
        lines += ["", "[[issuer]]"]
        tables = {k: v for k, v in issuer.items() if isinstance(v, dict)}
        lines += [f"{k} = {_toml_value(v)}" for k, v in issuer.items() if k not in tables]
        for name, table in tables.items():
            lines += [f"[issuer.{name}]", *(f"{k} = {_toml_value(v)}" for k, v in table.items())]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the process


def responder_command() -> str:
    """The ``ocsp-responder`` console script next to this interpreter, else on PATH."""
    candidate = Path(sys.executable).parent / "ocsp-responder"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("ocsp-responder")
    assert found, "ocsp-responder is not installed (pip install -e responder)"
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def check_config(config: Path) -> subprocess.CompletedProcess[str]:
    """Run ``ocsp-responder check-config CONFIG``."""
    return subprocess.run(
        [responder_command(), "check-config", str(config)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


class Responder:
    """``ocsp-responder serve`` as a child process on a free loopback port.

    Args:
        config: the config.toml to serve.
        log: file that receives the process's stdout and stderr.
    """

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL, for ``openssl ocsp -url``."""
        return f"http://127.0.0.1:{self.port}/"

    def log_text(self) -> str:
        """Everything the process wrote so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def start(self, timeout: float = 30.0) -> None:
        """Start serving and wait until the port answers HTTP.

        Raises:
            AssertionError: the process exited or did not answer in ``timeout`` seconds;
                the message holds its log.
        """
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    responder_command(),
                    "serve",
                    "--config",
                    str(self.config),
                    "--bind",
                    f"127.0.0.1:{self.port}",
                    "--workers",
                    "1",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"ocsp-responder exited {self.process.returncode}:\n{self.log_text()}"
                )
            try:
                http_call(self.port, "GET", "/")
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise AssertionError(f"ocsp-responder did not answer in {timeout}s:\n{self.log_text()}")

    def alive(self) -> bool:
        """The serve process is still running."""
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the serve process (the gunicorn master)."""
        assert self.process is not None
        self.process.send_signal(signum)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, wait, then SIGKILL our process group; returns the exit status."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode


T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 15.0, interval: float = 0.1) -> T:
    """Call ``predicate()`` until it returns something truthy or ``timeout`` seconds pass.

    Returns the last value, truthy or not: the caller asserts on it.  This is a
    bounded wait for an asynchronous effect (a file reload), not a timing check.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
