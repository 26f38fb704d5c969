"""``ocsp-responder receive``: the publisher's SSH forced command on a responder host.

Invariants at stake: (1) a pushed file must never make a revoked serial good (an
older index.txt, an older CRL, a truncated file are refused and the installed file
stays); (2) the push is the heartbeat: every accepted push renews the index.txt's
mtime, the time the responder last had the data confirmed current; and the key
can do nothing but write the listed files (no shell, no other command, no other
file). Each test runs the real command as a subprocess, with the request in
``SSH_ORIGINAL_COMMAND`` as sshd passes it, against a real responder and the real
``openssl ocsp`` client.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from openssl_pki import index_without_row
from responder_process import responder_command
from scenario import LiveIssuer


def write_receive_config(live: LiveIssuer, kind: str, max_bytes: int | None = None) -> Path:
    """A receive.toml allowing ``live``'s status file (named by its basename)."""
    config = live.status_file.parent.parent / "receive.toml"
    lines = [] if max_bytes is None else [f"max_bytes = {max_bytes}"]
    lines += [
        "[[file]]",
        f'issuer = "{live.issuing.name}"',
        f'name = "{live.status_file.name}"',
        f'kind = "{kind}"',
        f'path = "{live.status_file}"',
        f'ca_certificate = "{live.ca.cert}"',
    ]
    config.write_text("\n".join(lines) + "\n")
    return config


def receive(config: Path, command: str | None, data: bytes) -> subprocess.CompletedProcess[bytes]:
    """Run ``ocsp-responder receive --config CONFIG`` as sshd runs a forced command."""
    env = {k: v for k, v in os.environ.items() if k != "SSH_ORIGINAL_COMMAND"}
    if command is not None:
        env["SSH_ORIGINAL_COMMAND"] = command
    return subprocess.run(
        [responder_command(), "receive", "--config", str(config)],
        input=data,
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )


@pytest.fixture
def pushed_index(live_issuer: Callable[..., LiveIssuer]) -> tuple[LiveIssuer, Path, str]:
    """A responder serving a published copy of index.txt, and the receive.toml for it."""
    live = live_issuer(published=True)
    config = write_receive_config(live, "index")
    return live, config, f"{live.issuing.name} {live.status_file.name}"


def test_pushed_revocation_is_installed_and_answered(
    pushed_index: tuple[LiveIssuer, Path, str],
) -> None:
    live, config, command = pushed_index
    assert live.status("a") == "good"
    live.ca.revoke(live.issuing.leaves["a"].cert, "-crl_reason", "keyCompromise")
    before = live.status_file.stat().st_ino
    done = receive(config, command, live.ca.index.read_bytes())
    assert done.returncode == 0, done.stderr
    assert b"installed" in done.stdout
    assert live.status_file.read_bytes() == live.ca.index.read_bytes()
    assert live.status_file.stat().st_ino != before, "not replaced by rename"
    assert live.status_file.stat().st_mode & 0o777 == 0o640
    assert live.wait_status("a", "revoked") == "revoked"
    assert [p.name for p in live.status_file.parent.iterdir()] == [live.status_file.name]


def test_unchanged_push_renews_the_confirmation_time(
    pushed_index: tuple[LiveIssuer, Path, str],
) -> None:
    live, config, command = pushed_index
    old = time.time() - 3600
    os.utime(live.status_file, (old, old))
    done = receive(config, command, live.status_file.read_bytes())
    assert done.returncode == 0, done.stderr
    assert live.status_file.stat().st_mtime > time.time() - 60


@pytest.mark.parametrize(
    "command",
    [None, "sh", "/bin/sh -c id", "id", "live-0 ../index.txt", "other-issuer index.txt"],
    ids=["shell", "sh", "sh-c", "id", "traversal", "unlisted"],
)
def test_anything_but_a_listed_file_is_refused(
    pushed_index: tuple[LiveIssuer, Path, str], command: str | None
) -> None:
    live, config, _ = pushed_index
    installed = live.status_file.read_bytes()
    done = receive(config, command, b"#!/bin/sh\nid\n")
    assert done.returncode == 1, done
    assert b"uid=" not in done.stdout + done.stderr
    assert b"error:" in done.stderr
    assert live.status_file.read_bytes() == installed


def test_older_index_is_refused_and_revocation_stays(
    pushed_index: tuple[LiveIssuer, Path, str],
) -> None:
    live, config, command = pushed_index
    older = live.ca.index.read_bytes()
    live.ca.revoke(live.issuing.leaves["b"].cert, "-crl_reason", "keyCompromise")
    assert receive(config, command, live.ca.index.read_bytes()).returncode == 0
    assert live.wait_status("b", "revoked") == "revoked"
    installed = live.status_file.read_bytes()
    done = receive(config, command, older)
    assert done.returncode == 1
    assert b"was revoked" in done.stderr and live.issuing.name.encode() in done.stderr
    assert live.status_file.read_bytes() == installed
    without_c = index_without_row(installed.decode(), live.issuing.leaves["c"].serial)
    lost = receive(config, command, without_c.encode())
    assert lost.returncode == 1 and b"missing" in lost.stderr, lost.stderr
    assert live.status("b") == "revoked"


def test_truncated_empty_and_oversized_files_are_refused(
    pushed_index: tuple[LiveIssuer, Path, str],
) -> None:
    live, config, command = pushed_index
    installed = live.status_file.read_bytes()
    for data in [installed[: len(installed) // 2 + 3], b""]:
        done = receive(config, command, data)
        assert done.returncode == 1, (data, done)
        assert live.status_file.read_bytes() == installed
    small = write_receive_config(live, "index", max_bytes=1024)
    done = receive(small, command, installed + b"\n" * 2048)
    assert done.returncode == 1 and b"max_bytes" in done.stderr
    assert live.status_file.read_bytes() == installed
    assert live.status("a") == "good"


def test_pushed_crl_verified_and_never_older(live_issuer: Callable[..., LiveIssuer]) -> None:
    live = live_issuer(source="crl")
    config = write_receive_config(live, "crl")
    command = f"{live.issuing.name} {live.status_file.name}"
    older = live.status_file.read_bytes()
    live.ca.revoke(live.issuing.leaves["a"].cert, "-crl_reason", "superseded")
    newer = live.ca.gencrl(live.ca.dir / "next.crl.pem").read_bytes()
    done = receive(config, command, newer)
    assert done.returncode == 0, done.stderr
    assert live.wait_status("a", "revoked") == "revoked"
    stamp = live.status_file.stat()
    again = receive(config, command, newer)
    assert again.returncode == 0 and b"unchanged" in again.stdout, again
    assert live.status_file.stat().st_ino == stamp.st_ino
    assert live.status_file.stat().st_mtime_ns == stamp.st_mtime_ns
    rollback = receive(config, command, older)
    assert rollback.returncode == 1 and b"cRLNumber" in rollback.stderr, rollback.stderr
    foreign = receive(config, command, live.issuing.signer.cert.read_bytes())
    assert foreign.returncode == 1 and b"not a PEM or DER CRL" in foreign.stderr
    assert live.status_file.read_bytes() == newer
    assert live.status("a") == "revoked"


def test_bad_receive_config_names_the_key(tmp_path: Path) -> None:
    config = tmp_path / "receive.toml"
    config.write_text('[[file]]\nissuer = "x"\nname = "index.txt"\nkind = "ldap"\n')
    done = receive(config, "x index.txt", b"")
    assert done.returncode == 2
    assert f"{config}: file[0].".encode() in done.stderr
