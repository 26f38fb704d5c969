"""Regressions for the review of the status-integrity machinery (commit 8e0af91).

One test per finding, each with real processes (``ocsp-responder serve``, the
``openssl ca`` CLI, ``openssl ocsp`` against the root as the oracle):

1. a renewed CA certificate (same name, same key) keeps the remembered revocations;
   another CA under the same issuer name moves the old snapshot aside;
2. a failed lock or write of the snapshot does not stop new data (a revocation) from
   being served, and the write is retried until it succeeds;
3. an index.txt mtime in the future does not renew the data at every re-read (SIGHUP);
4. a snapshot file deleted or overwritten with garbage while serving is written again,
   with the remembered revocations;
5. ``accept-data`` is the way out of a damaged snapshot file (moved aside);
6. a released certificateHold does not make every later index.txt rejected;
7. a snapshot file whose generation overflows an integer does not break answers;
8. stale temporary snapshot files are removed when ``serve`` starts.

The snapshot of issuer NAME is ``STATE/NAME.json`` with STATE the ``state``
directory beside the config (``<ca dir>/responder/state`` for a live issuer). Waits
are bounded polls for asynchronous effects; the one fixed sleep (finding 3) lets a
known interval pass.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography.x509 import ocsp
from openssl_ocsp import CertStatus, Trust, query
from openssl_pki import (
    certificate_serial,
    crl_serials,
    index_with_row_reason,
    index_with_row_released,
    index_without_row,
    ocsp_hashes,
    renew_ca_certificate,
)
from responder_process import (
    Responder,
    accept_data,
    check_config,
    health_report,
    no_dac_prefix,
    toml_config,
    wait_for,
)
from scenario import LiveIssuer, Pki, new_issuing_ca, replace_file

# ---------------------------------------------------------------- helpers


def snapshot_path(live: LiveIssuer) -> Path:
    """``STATE/NAME.json`` of the live issuer (the default state_dir beside its config)."""
    return live.server.config.parent / "state" / f"{live.issuing.name}.json"


def snapshot_entries(path: Path, key: str = "remembered") -> dict[str, str] | None:
    """Serial (upper-case hex, as written) -> state of the snapshot's ``table`` or
    ``remembered`` array; None when the file is missing or not a JSON snapshot."""
    try:
        document = json.loads(path.read_bytes())
        return {str(entry[0]): str(entry[1]) for entry in document[key]}
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None


def lists_revoked(path: Path, serial: int, *keys: str) -> bool:
    """The snapshot file at ``path`` is valid JSON and lists ``serial`` revoked in every
    one of ``keys`` (``table``, ``remembered``)."""
    return all((snapshot_entries(path, key) or {}).get(f"{serial:X}") == "revoked" for key in keys)


def generation(live: LiveIssuer) -> int:
    """The snapshot generation the responder answers from (``GET /-/health``)."""
    return int(health_report(live.server.port)[1]["issuers"][0]["generation"])


def publish_and_settle(live: LiveIssuer) -> None:
    """``publish()``, then wait until the responder took it (generation advanced) or
    logged an ERROR naming the file; no assertion (the test asserts the outcome)."""
    before = generation(live)
    offset = live.server.log_offset()
    live.publish()
    wait_for(
        lambda: (
            generation(live) > before
            or live.server.error_mentioning(str(live.status_file), after=offset)
        ),
        timeout=5,
    )


def status_via(live: LiveIssuer, ca_cert: Path, label: str) -> tuple[CertStatus | None, str]:
    """``openssl ocsp`` for leaf ``label`` with ``ca_cert`` as ``-issuer`` and as the
    untrusted chain (verified against the root): (its status if verified without
    complaint, else None; what openssl printed)."""
    leaf = live.issuing.leaves[label].cert
    run = query(live.server.url, Trust(cafile=live.ca.root, untrusted=ca_cert), ca_cert, [leaf])
    if not run.verified or run.complaints:
        return None, run.output
    return run.statuses.get(str(leaf)), run.output


@contextmanager
def only_new_worker(server: Responder) -> Iterator[None]:
    """SIGKILL one of two workers, wait for its replacement, and keep the survivor
    stopped (SIGSTOP) inside the block, so every connection goes to the new worker."""
    old = server.worker_pids()
    assert len(old) == 2, old
    victim, survivor = sorted(old)
    os.kill(victim, signal.SIGKILL)
    server.wait_for_workers(old, keep=1)
    os.kill(survivor, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(survivor, signal.SIGCONT)


def no_traceback(server: Responder, after: int) -> None:
    logged = server.log_text()[after:]
    assert "Traceback" not in logged, logged


# ---------------------------------------------------------------- 1: CA identity


def test_finding1_renewed_ca_certificate_keeps_remembered_revocations(
    live_issuer: Callable[..., LiveIssuer], pki: Pki
) -> None:
    """CRL source: a revoked (keyCompromise), then a newer CRL without a's entry: a stays
    revoked from memory. ca_certificate pointed at a renewed certificate of the same CA
    (same subject and key, new serial, issued by the root) and the responder restarted:
    a still answers revoked."""
    live = live_issuer(source="crl")
    live.revoke_then_drop_from_crl()

    renewed = renew_ca_certificate(live.ca, pki.root, live.ca.dir / "certs" / "renewed.cert.pem")
    assert certificate_serial(renewed) != certificate_serial(live.ca.cert)
    assert ocsp_hashes(renewed) == ocsp_hashes(live.ca.cert)  # same name, same key
    config = live.server.config
    text = config.read_text()
    assert json.dumps(str(live.ca.cert)) in text
    config.write_text(text.replace(json.dumps(str(live.ca.cert)), json.dumps(str(renewed))))
    live.server.restart()

    for label, expected in (("a", "revoked"), ("b", "revoked"), ("c", "good")):
        found, output = status_via(live, renewed, label)
        assert found is not None and found.status == expected, f"leaf {label}:\n{output}"
        if label == "a":
            assert found.reason == "keycompromise", output
    path = snapshot_path(live)
    assert not list(path.parent.glob(f"{path.name}.*")), sorted(path.parent.iterdir())


def test_finding1_another_ca_moves_the_snapshot_aside(
    live_issuer: Callable[..., LiveIssuer], pki: Pki, tmp_path: Path
) -> None:
    """The issuer's name configured with another CA (another key, its own signer and
    index.txt) and the responder restarted: the old snapshot is moved to
    ``NAME.json.other-ca-*`` (a kept revoked there), not deleted; the other CA's leaf
    with the same serial as a answers good (the old memory does not apply to it)."""
    live = live_issuer()
    name = live.issuing.name
    serial = live.issuing.leaves["a"].serial
    live.ca.revoke(live.issuing.leaves["a"].cert, "-crl_reason", "keyCompromise")
    assert live.wait_status("a", "revoked") == "revoked"
    path = snapshot_path(live)
    assert wait_for(lambda: lists_revoked(path, serial, "remembered"), timeout=5)

    other = new_issuing_ca(tmp_path, pki.root, "other-ca", leaves=("a",))
    assert other.leaves["a"].serial == serial
    live.server.config.write_text(
        toml_config({"reload_interval": 0.2}, [other.issuer_config(name=name)])
    )
    live.server.restart()
    moved = LiveIssuer(issuing=other, server=live.server, status_file=other.ca.index)
    assert moved.status("a") == "good", moved.query("a").output

    aside = sorted(path.parent.glob(f"{name}.json.other-ca-*"))
    assert len(aside) == 1, sorted(p.name for p in path.parent.iterdir())
    assert lists_revoked(aside[0], serial, "table", "remembered"), aside[0].read_text()
    assert snapshot_entries(path, "table"), path.read_bytes()[:300]  # the new CA's data
    assert f"{serial:X}" not in (snapshot_entries(path, "remembered") or {})


# ---------------------------------------------------------------- 2: lock / write failure


def test_finding2_unwritable_state_dir_still_serves_then_persists(
    live_issuer: Callable[..., LiveIssuer],
) -> None:
    """The responder obeys file modes (no_dac_prefix); its lock file removed and the state
    directory made 0500: a revocation published is answered anyway, an ERROR names the
    snapshot and says it cannot write; ``chmod 700``: the snapshot is written with a
    revoked."""
    live = live_issuer(published=True, command_prefix=no_dac_prefix())
    path = snapshot_path(live)
    state = path.parent
    serial = live.issuing.leaves["a"].serial
    assert live.status("a") == "good"
    (state / f"{live.issuing.name}.lock").unlink()
    state.chmod(0o500)
    try:
        offset = live.server.log_offset()
        live.ca.revoke(live.issuing.leaves["a"].cert, "-crl_reason", "keyCompromise")
        live.publish()
        assert live.wait_status("a", "revoked", timeout=5) == "revoked", (
            "the revocation is not served while the snapshot cannot be written:\n"
            + live.server.log_text()[offset:]
        )
        assert live.server.error_mentioning(str(path), "cannot write", after=offset), (
            live.server.log_text()[offset:]
        )
        assert not lists_revoked(path, serial, "table")  # served, not (yet) kept
    finally:
        state.chmod(0o700)
    assert wait_for(lambda: lists_revoked(path, serial, "table", "remembered"), timeout=5), (
        f"{path} does not list {serial:X} revoked:\n" + live.server.log_text()[offset:]
    )
    assert live.status("a") == "revoked"


# ---------------------------------------------------------------- 3: future mtime


def test_finding3_future_mtime_does_not_renew_data_on_reread(
    live_issuer: Callable[..., LiveIssuer],
) -> None:
    """index.txt's mtime set 30 days ahead, ``max_data_age = 4``: the data expires about
    4 s after it was read. A SIGHUP (every worker re-reads everything) 2 s later does not
    move the answer's nextUpdate; tryLater comes, and stays after one more SIGHUP."""
    live = live_issuer(max_data_age=4)
    server = live.server
    offset = server.log_offset()
    future = time.time() + 30 * 86400
    os.utime(live.ca.index, (future, future))
    accepted = wait_for(lambda: "accepted" in server.log_text()[offset:], timeout=5)
    assert accepted, server.log_text()[offset:]
    read_at = time.monotonic()
    first = live.answer("a")
    assert first and first.status == "good" and first.next_update, live.query("a").output

    time.sleep(max(0.0, read_at + 2 - time.monotonic()))  # 2 s of the 4 pass
    old = server.worker_pids()
    server.signal(signal.SIGHUP)
    server.wait_for_workers(old, keep=0)
    run = live.query("a")
    if run.responder_error != "trylater":  # (tryLater: workers slow to restart, no renewal)
        again = run.statuses.get(str(live.issuing.leaves["a"].cert))
        assert run.verified and again and again.status == "good", run.output
        assert again.next_update and again.next_update <= first.next_update, (
            f"the re-read after SIGHUP renewed the data: nextUpdate {first.next_update} -> "
            f"{again.next_update}"
        )

    expired = wait_for(lambda: live.try_later("a"), timeout=10, interval=0.2)
    assert expired, live.query("a").output
    old = server.worker_pids()
    server.signal(signal.SIGHUP)
    server.wait_for_workers(old, keep=0)
    assert live.try_later("a"), live.query("a").output


# ---------------------------------------------------------------- 4: lost or damaged file


def _delete(path: Path) -> None:
    path.unlink()


def _garbage(path: Path) -> None:
    replace_file(path, b"\x00\xff not a snapshot {[")


LOSSES = {"deleted": _delete, "garbage": _garbage}


@pytest.mark.parametrize("how", LOSSES)
def test_finding4_lost_snapshot_file_is_written_again(
    live_issuer: Callable[..., LiveIssuer], how: str
) -> None:
    """Two workers, CRL source: a revoked, then a newer CRL without a (a revoked from
    memory only). The snapshot file deleted, or overwritten with garbage: answers stay
    revoked, a running process writes it again (valid JSON remembering a) within a bounded
    wait, and a worker started afterwards (SIGKILL) answers a revoked."""
    live = live_issuer(source="crl", workers=2)
    leaves = live.issuing.leaves
    serial = leaves["a"].serial
    live.ca.revoke(leaves["a"].cert, "-crl_reason", "keyCompromise")
    live.publish_crl()
    live.wait_streak("a", "revoked")
    replace_file(live.ca.index, index_without_row(live.ca.index.read_text(), serial).encode())
    live.ca.revoke(leaves["b"].cert, "-crl_reason", "superseded")
    live.publish_crl()
    assert crl_serials(live.status_file) == {leaves["b"].serial}
    live.wait_streak("b", "revoked")
    path = snapshot_path(live)
    assert lists_revoked(path, serial, "remembered")
    assert not lists_revoked(path, serial, "table")

    offset = live.server.log_offset()
    LOSSES[how](path)
    seen = live.answers("a", count=10, least=0.5)
    assert set(seen) == {"revoked"}, seen
    assert wait_for(lambda: lists_revoked(path, serial, "remembered"), timeout=5), (
        f"{path} was not written again ({how}):\n" + live.server.log_text()[offset:]
    )

    with only_new_worker(live.server):
        seen = live.answers("a")
    assert set(seen) == {"revoked"}, seen
    assert live.status("c") == "good"
    no_traceback(live.server, offset)


# ---------------------------------------------------------------- 5: accept-data


def test_finding5_accept_data_moves_a_damaged_snapshot_aside(
    live_issuer: Callable[..., LiveIssuer],
) -> None:
    """Responder stopped, its snapshot overwritten with garbage: check-config exits 1
    naming the file and accept-data; accept-data exits 0, leaves ``NAME.json.damaged-*``
    and a valid snapshot; serve starts and answers from the files."""
    live = live_issuer()
    name = live.issuing.name
    live.ca.revoke(live.issuing.leaves["a"].cert, "-crl_reason", "keyCompromise")
    assert live.wait_status("a", "revoked") == "revoked"
    path = snapshot_path(live)
    live.server.stop()
    garbage = b"\x00\xff not a snapshot {["
    path.write_bytes(garbage)

    refused = check_config(live.server.config)
    printed = refused.stdout + refused.stderr
    assert refused.returncode == 1, printed
    assert str(path) in printed and "accept-data" in printed, printed

    done = accept_data(live.server.config, name)
    printed = done.stdout + done.stderr
    assert done.returncode == 0, printed
    damaged = sorted(path.parent.glob(f"{name}.json.damaged-*"))
    assert len(damaged) == 1, sorted(p.name for p in path.parent.iterdir())
    assert damaged[0].read_bytes() == garbage
    assert lists_revoked(path, live.issuing.leaves["a"].serial, "table", "remembered")

    live.server.start()
    assert live.status("a") == "revoked"
    assert live.status("b") == "good"


# ---------------------------------------------------------------- 6: released holds


def test_finding6_released_hold_does_not_block_later_index_files(
    live_issuer: Callable[..., LiveIssuer],
) -> None:
    """Published index.txt: a revoked (keyCompromise); its row rewritten to
    certificateHold, then released to V, each published: then b revoked and published
    is answered revoked, and a still answers revoked with keyCompromise."""
    live = live_issuer(published=True)
    leaves = live.issuing.leaves
    serial = leaves["a"].serial
    live.ca.revoke(leaves["a"].cert, "-crl_reason", "keyCompromise")
    live.publish()
    assert live.wait_status("a", "revoked") == "revoked"

    held = index_with_row_reason(live.ca.index.read_text(), serial, "certificateHold")
    replace_file(live.ca.index, held.encode())
    publish_and_settle(live)
    released = index_with_row_released(live.ca.index.read_text(), serial)
    replace_file(live.ca.index, released.encode())
    publish_and_settle(live)

    offset = live.server.log_offset()
    live.ca.revoke(leaves["b"].cert, "-crl_reason", "keyCompromise")
    live.publish()
    seen = live.wait_status("b", "revoked", timeout=5)
    assert seen == "revoked", live.server.log_text()[offset:]
    answer = live.answer("a")
    found = (answer.status, answer.reason) if answer else None
    assert found == ("revoked", "keycompromise"), live.query("a").output
    assert live.status("c") == "good"


# ---------------------------------------------------------------- 7: overflowing number


def test_finding7_generation_overflowing_int_does_not_break_answers(
    live_issuer: Callable[..., LiveIssuer],
) -> None:
    """The snapshot rewritten while serving with ``"generation": 1e400`` (valid JSON, not
    an integer): answers stay normal (a revoked, b good), no Traceback in the log."""
    live = live_issuer()
    live.ca.revoke(live.issuing.leaves["a"].cert, "-crl_reason", "keyCompromise")
    assert live.wait_status("a", "revoked") == "revoked"
    path = snapshot_path(live)
    text, count = re.subn(r'"generation":\s*\d+', '"generation":1e400', path.read_text())
    assert count == 1, text
    json.loads(text)  # valid JSON

    offset = live.server.log_offset()
    replace_file(path, text.encode())
    seen = live.answers("a", count=10)
    assert set(seen) == {"revoked"}, seen
    raw = live.post("b")
    assert raw.ocsp().response_status == ocsp.OCSPResponseStatus.SUCCESSFUL, raw.describe()
    assert live.status("b") == "good"
    no_traceback(live.server, offset)


# ---------------------------------------------------------------- 8: stale temporaries


def test_finding8_stale_temporary_files_removed_at_start(
    live_issuer: Callable[..., LiveIssuer],
) -> None:
    """Temporary files a writer killed mid-write left (``.NAME.json.XXXX``) are removed
    when serve starts; another issuer's are left alone."""
    live = live_issuer()
    state = snapshot_path(live).parent
    name = live.issuing.name
    live.server.stop()
    stale = [state / f".{name}.json.k3j4h5_x", state / f".{name}.json.0a1b2c3d"]
    for temp in stale:
        temp.write_bytes(b'{"format":1,"issuer":')
    others = state / ".another-issuer.json.k3j4h5_x"
    others.write_bytes(b"{")

    live.server.start()
    assert wait_for(lambda: not any(temp.exists() for temp in stale), timeout=5), sorted(
        p.name for p in state.iterdir()
    )
    assert others.exists()
    assert live.status("a") == "good"
