"""The responder from outside: ``ocsp-responder`` as a child process on a loopback
port, raw HTTP to it, and the config.toml it reads.

The package is never imported; ``cryptography`` is used only to look inside
response bytes.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
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


def raw_status_line(port: int, data: bytes) -> bytes:
    """Send ``data`` as is on a new connection to 127.0.0.1:``port``; return the first
    line of the answer (b"" when the server closes without one)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        received = b""
        while b"\r\n" not in received:
            chunk = sock.recv(4096)
            if not chunk:
                break
            received += chunk
    return received.split(b"\r\n", 1)[0]


def post_ocsp(port: int, der: bytes, path: str = "/") -> HttpAnswer:
    """POST DER bytes as ``application/ocsp-request``."""
    return http_call(port, "POST", path, der, {"Content-Type": "application/ocsp-request"})


def get_path(der: bytes, prefix: str = "/") -> str:
    """The RFC 6960 appendix A.1 GET path: prefix + URL-encoded base64 of the DER."""
    return prefix + quote(base64.b64encode(der).decode(), safe="")


def health(port: int, query: str = "", method: str = "GET") -> HttpAnswer:
    """``GET /-/health`` (``query``, e.g. ``"brief"``, goes after a ``?``)."""
    return http_call(port, method, "/-/health" + (f"?{query}" if query else ""))


def health_report(port: int) -> tuple[int, dict[str, Any]]:
    """``GET /-/health``: its HTTP status and its JSON body."""
    answer = health(port)
    assert answer.headers.get("Content-Type") == "application/json", answer.describe()
    return answer.status, json.loads(answer.body)


#: One scrape of ``/-/metrics``: sample name -> [(labels, value)].
Scrape = dict[str, list[tuple[dict[str, str], float]]]


def scrape(port: int) -> Scrape:
    """``GET /-/metrics``, parsed with prometheus_client's own text parser."""
    from prometheus_client.parser import text_string_to_metric_families

    answer = http_call(port, "GET", "/-/metrics")
    assert answer.status == 200, answer.describe()
    samples: Scrape = {}
    for family in text_string_to_metric_families(answer.body.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def metric(samples: Scrape, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(
        value
        for found, value in samples.get(name, [])
        if all(found.get(key) == wanted for key, wanted in labels.items())
    )


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


def assert_try_later(answer: HttpAnswer) -> None:
    """HTTP 200, an OCSP ``tryLater`` body, ``Cache-Control: no-cache, no-store``."""
    assert_ocsp_error(answer, ocsp.OCSPResponseStatus.TRY_LATER)
    assert "no-store" in cache_control(answer), answer.describe()


def is_try_later(answer: HttpAnswer) -> bool:
    """The answer is HTTP 200 with an OCSP ``tryLater`` body (no other check)."""
    try:
        status = answer.ocsp().response_status
    except ValueError:
        return False
    return answer.status == 200 and status == ocsp.OCSPResponseStatus.TRY_LATER


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


def check_config(config: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """Run ``ocsp-responder check-config [OPTIONS] CONFIG``."""
    return subprocess.run(
        [responder_command(), "check-config", *options, str(config)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def accept_data(config: Path, issuer: str) -> subprocess.CompletedProcess[str]:
    """Run ``ocsp-responder accept-data --config CONFIG ISSUER`` (the operator's override
    for a deliberate restore of older status data)."""
    return subprocess.run(
        [responder_command(), "accept-data", "--config", str(config), issuer],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def no_dac_prefix() -> tuple[str, ...]:
    """A command prefix under which the responder obeys file permission bits.

    Tests run as root in CI, and root ignores mode 000 (CAP_DAC_OVERRIDE,
    CAP_DAC_READ_SEARCH); ``setpriv`` (util-linux) drops both from the bounding set, so
    uid 0 without them is refused a mode 000 file like anyone else. Not root: nothing
    to drop.
    """
    if os.geteuid() != 0:
        return ()
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is needed to run the responder without DAC override"
    return (setpriv, "--bounding-set=-dac_override,-dac_read_search", "--")


#: A log record's level as our logging format writes it (granian's lines too): ``[ERROR]``.
_LEVEL = re.compile(r"\[(DEBUG|INFO|WARNING|ERROR|CRITICAL)\]")


def log_records(text: str, level: str = "ERROR") -> list[str]:
    """The records of ``level`` in a responder log, each with its continuation lines
    (a record starts at a line carrying a ``[LEVEL]`` marker)."""
    records: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        match = _LEVEL.search(line)
        if match:
            records.append((match.group(1), [line]))
        elif records:
            records[-1][1].append(line)
    return ["\n".join(lines) for found, lines in records if found == level]


class Responder:
    """``ocsp-responder serve`` as a child process on a free loopback port.

    Args:
        config: the config.toml to serve.
        log: file that receives the process's stdout and stderr.
        workers: ``serve --workers`` (granian worker processes).
        command_prefix: run ``serve`` under this command (e.g. :func:`no_dac_prefix`);
            it must exec the responder, so the serve process keeps its pid.
    """

    def __init__(
        self,
        config: Path,
        log: Path,
        workers: int = 1,
        command_prefix: Sequence[str] = (),
    ) -> None:
        self.config = config
        self.log = log
        self.workers = workers
        self.command_prefix = tuple(command_prefix)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL, for ``openssl ocsp -url``."""
        return f"http://127.0.0.1:{self.port}/"

    def log_text(self) -> str:
        """Everything the process wrote so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def log_offset(self) -> int:
        """Where the log ends now: pass it as ``after`` to look only at what comes next."""
        return len(self.log_text())

    def errors(self, after: int = 0) -> list[str]:
        """ERROR records the process logged past offset ``after`` (see :func:`log_records`)."""
        return log_records(self.log_text()[after:], "ERROR")

    def error_mentioning(self, *needles: str, after: int = 0) -> str | None:
        """The first ERROR record past ``after`` that contains every one of ``needles``."""
        for record in self.errors(after):
            if all(needle in record for needle in needles):
                return record
        return None

    def start(self, timeout: float = 30.0) -> None:
        """Start serving and wait until the port answers HTTP.

        Raises:
            AssertionError: the process exited or did not answer in ``timeout`` seconds;
                the message holds its log.
        """
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    *self.command_prefix,
                    responder_command(),
                    "serve",
                    "--config",
                    str(self.config),
                    "--bind",
                    f"127.0.0.1:{self.port}",
                    "--workers",
                    str(self.workers),
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
        """Send ``signum`` to the serve process (granian's main process)."""
        assert self.process is not None
        self.process.send_signal(signum)

    def worker_pids(self) -> set[int]:
        """PIDs of the serve process's children: the granian workers (during a SIGHUP
        replacement, briefly a fresh worker beside the old one it replaces)."""
        assert self.process is not None
        pids: set[int] = set()
        for children in Path(f"/proc/{self.process.pid}/task").glob("*/children"):
            with contextlib.suppress(OSError):  # the thread ended meanwhile
                pids.update(int(pid) for pid in children.read_text().split())
        return pids

    def booted_workers(self, after: int = 0) -> set[int]:
        """PIDs from granian's ``Spawning worker-K with PID: N`` lines past offset ``after``."""
        text = self.log_text()[after:]
        return {int(pid) for pid in re.findall(r"Spawning worker-\d+ with PID: (\d+)", text)}

    def wait_for_workers(self, old: set[int], keep: int = 0, timeout: float = 30.0) -> set[int]:
        """Wait until the main process runs ``self.workers`` workers, exactly ``keep`` of them
        from ``old`` and the others new ones that granian logged as spawned; return their
        pids.

        granian replaces workers one at a time (on SIGHUP: spawn the new one, then stop
        the old one), so the count is checked too: a moment with both is not the end.

        Raises:
            AssertionError: that did not happen within ``timeout`` seconds.
        """
        seen: list[set[int]] = []

        def ready() -> bool:
            pids = self.worker_pids()
            seen.append(pids)
            new = pids - old
            return (
                len(pids) == self.workers
                and len(pids & old) == keep
                and new <= self.booted_workers()
            )

        assert wait_for(ready, timeout), (
            f"workers {old} were not replaced as expected; last seen {seen[-1:]}"
        )
        return seen[-1]

    def restart(self, timeout: float = 30.0) -> None:
        """Stop (SIGTERM) and start again on the same port, config and log."""
        self.stop()
        self.start(timeout)

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
