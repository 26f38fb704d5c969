"""``serve`` under systemd socket activation, as the role deploys a ``unix:PATH``
bind (ocsp-responder.socket): ``systemd-socket-activate`` (from systemd) listens on
a unix socket and starts ``ocsp-responder serve`` with it (LISTEN_FDS) on the first
connection; answers are checked by ``openssl ocsp -respin`` (the client cannot
speak over a unix socket itself).

A SIGHUP with another ``bind`` in the file keeps the socket systemd handed over,
with a warning, and the fresh granian workers serve on it: the new address is never
bound (under the hardened unit an address the service may not create; with gunicorn,
before granian, that made the service exit).
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from openssl_ocsp import check_response, make_request
from responder_process import free_port, responder_command, toml_config, wait_for
from scenario import Pki, new_issuing_ca


class UnixConnection(http.client.HTTPConnection):
    """HTTP/1.1 over the unix socket at ``path``."""

    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=30)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(str(self.path))


def unix_post(path: Path, der: bytes) -> tuple[int, bytes]:
    conn = UnixConnection(path)
    try:
        conn.request("POST", "/", der, {"Content-Type": "application/ocsp-request"})
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


@pytest.fixture
def activated(pki: Pki, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path, Path]]:
    """(process, socket path, config path): serve started by systemd-socket-activate."""
    issuing = new_issuing_ca(tmp_path, pki.root, "activated", leaves=("a", "b"))
    issuing.ca.revoke(issuing.leaves["b"].cert, "-crl_reason", "keyCompromise")
    sock = tmp_path / "ocsp.sock"
    config = tmp_path / "config.toml"
    config.write_text(
        toml_config(
            {"bind": f"unix:{tmp_path / 'unused.sock'}", "workers": 1, "reload_interval": 0.2},
            [issuing.issuer_config()],
        )
    )
    log = (tmp_path / "serve.log").open("wb")
    # systemd-socket-activate passes on only the variables it is told to (-E)
    keep = [f"-E{name}" for name in ("PYTHONPATH", "PATH") if name in os.environ]
    serve = [responder_command(), "serve", "--config", str(config)]
    proc = subprocess.Popen(
        ["systemd-socket-activate", *keep, "-l", str(sock), *serve],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        assert wait_for(sock.exists, 10), "systemd-socket-activate made no socket"
        proc.issuing = issuing  # type: ignore[attr-defined]
        yield proc, sock, config
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_answers_on_the_activated_socket_and_keeps_it_across_a_bind_change(
    activated: tuple[subprocess.Popen[bytes], Path, Path], tmp_path: Path
) -> None:
    proc, sock, config = activated
    issuing = proc.issuing  # type: ignore[attr-defined]
    requests = {
        label: make_request(
            tmp_path / f"{label}.der", issuing.ca.cert, [issuing.leaves[label].cert]
        )
        for label in ("a", "b")
    }

    def verified(label: str) -> str:
        status, body = unix_post(sock, requests[label])
        assert status == 200
        run = check_response(
            body, tmp_path, issuing.trust, issuing.ca.cert, [issuing.leaves[label].cert]
        )
        assert run.verified and not run.complaints, run.printed
        return run.statuses[str(issuing.leaves[label].cert)].status

    # the first connection starts serve, which takes the socket
    assert verified("a") == "good"
    assert verified("b") == "revoked"
    assert not (tmp_path / "unused.sock").exists()  # the config's bind is not used

    port = free_port()
    config.write_text(
        config.read_text().replace(
            f'bind = "unix:{tmp_path / "unused.sock"}"', f'bind = "127.0.0.1:{port}"'
        )
    )
    assert f"127.0.0.1:{port}" in config.read_text()
    log = tmp_path / "serve.log"
    proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "the socket systemd handed over stays in use" in log.read_text(), 15), (
        log.read_text()
    )
    assert wait_for(
        lambda: "Spawning worker" in log.read_text().rpartition("reloaded config")[2], 15
    ), log.read_text()
    assert proc.poll() is None, log.read_text()
    assert verified("b") == "revoked"
    assert verified("a") == "good"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
