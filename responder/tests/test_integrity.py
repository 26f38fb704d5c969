"""Issue 8: status data integrity and freshness.

The responder must never answer from data worse than data it already accepted,
in any process, and must never sign answers from stale data or with a signer
outside its validity:

1. a restarted worker (SIGKILL, SIGHUP) must not fall back to the start-up table;
2. revocations must not go backwards (an older CRL, an R row back to V), except
   a released certificateHold; a CRL that drops an entry keeps it revoked;
   ``ocsp-responder accept-data`` is the operator's override for a restore;
3. an empty or row-truncated index.txt is rejected;
4. nextUpdate never outruns the data (CRL nextUpdate, index.txt mtime +
   max_data_age); past it: tryLater;
5. the same for the signer certificate's notAfter;
6. a status file that failed to load is retried every reload check, not only
   when its mtime/size/inode change.

Each test has its own fresh CA and responder (``live_issuer``, reload_interval
0.2 s); answers are checked with ``openssl ocsp`` against the root. Waits are
bounded polls for asynchronous effects (a reload, a worker restart, a clock
passing a date), never assertions about time.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from openssl_pki import (
    asn1_time,
    certificate_not_after,
    crl_next_update,
    crl_serials,
    index_with_row_released,
)
from responder_process import (
    Responder,
    accept_data,
    assert_try_later,
    check_config,
    no_dac_prefix,
    wait_for,
)
from scenario import LiveIssuer, replace_file

DAY = timedelta(days=1)

# ---------------------------------------------------------------- helpers


def wait_rejected(live: LiveIssuer, after: int, label: str, expected: str, *needles: str) -> None:
    """Bad data was just written: wait until an ERROR record past log offset ``after``
    names all ``needles``, or leaf ``label`` stops answering ``expected`` (the data was
    taken); then assert that it was rejected and logged."""
    seen: list[str] = []

    def settled() -> bool:
        if live.server.error_mentioning(*needles, after=after):
            return True
        seen.append(live.status(label))
        return seen[-1] != expected

    wait_for(settled)
    now = live.status(label)
    assert now == expected, (
        f"the bad data was taken: leaf {label} answers {now or 'no verified status'!r}, "
        f"not {expected!r}"
    )
    assert live.server.error_mentioning(*needles, after=after), (
        f"no ERROR record naming {needles}:\n" + live.server.log_text()[after:]
    )


def assert_always(live: LiveIssuer, label: str, expected: str, count: int = 30) -> None:
    """``count`` queries, each on a fresh connection (so every worker answers some) and
    for at least 1.5 s (so a worker still booting gets its share): all ``expected``."""
    found = live.answers(label, count, least=1.5)
    assert set(found) == {expected}, f"leaf {label} answered {dict(found)}"


def assert_try_later_now(live: LiveIssuer, label: str) -> None:
    """openssl sees tryLater, and the raw answer is a non-cacheable OCSP tryLater."""
    run = live.query(label)
    assert run.responder_error == "trylater", run.output
    assert_try_later(live.post(label))


def check_config_refuses(live: LiveIssuer) -> str:
    """``check-config`` exits 1 naming the issuer; returns what it printed."""
    done = check_config(live.server.config)
    printed = done.stdout + done.stderr
    assert done.returncode == 1, printed
    assert live.issuing.name in printed, printed
    return printed


# ---------------------------------------------------------------- 1: worker restarts


def _truncate_mid_line(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 20])


def _delete(path: Path) -> None:
    path.unlink()


BREAKS = {"truncated-mid-line": _truncate_mid_line, "deleted": _delete}


def _revoked_then_broken(live_issuer: Callable[..., LiveIssuer], how: str) -> LiveIssuer:
    """Two workers answer a revoked; then the published index.txt is broken (``how``)."""
    live = live_issuer(published=True, workers=2)
    live.ca.revoke(live.issuing.leaves["a"].cert, "-crl_reason", "keyCompromise")
    live.publish()
    live.wait_streak("a", "revoked")  # both workers have it

    offset = live.server.log_offset()
    BREAKS[how](live.status_file)
    assert wait_for(lambda: live.server.error_mentioning(str(live.status_file), after=offset)), (
        "the broken index.txt was not logged:\n" + live.server.log_text()[offset:]
    )
    return live


@pytest.mark.parametrize("how", BREAKS)
def test_defect1_killed_worker_restarts_from_last_good(
    live_issuer: Callable[..., LiveIssuer], how: str
) -> None:
    """SIGKILL one of two workers after index.txt broke: the respawned worker answers from
    the last good data (revoked), not from the master's start-up table (good).

    While the new worker is queried the surviving one is stopped (SIGSTOP), so every
    connection is accepted by the new worker.
    """
    live = _revoked_then_broken(live_issuer, how)
    old = live.server.worker_pids()
    assert len(old) == 2, old
    victim, survivor = sorted(old)
    os.kill(victim, signal.SIGKILL)
    live.server.wait_for_workers(old, keep=1)
    os.kill(survivor, signal.SIGSTOP)
    try:
        assert_always(live, "a", "revoked", count=15)
    finally:
        os.kill(survivor, signal.SIGCONT)
    assert_always(live, "a", "revoked", count=10)
    assert live.status("b") == "good"


@pytest.mark.parametrize("how", BREAKS)
def test_defect1_sighup_restarts_workers_from_last_good(
    live_issuer: Callable[..., LiveIssuer], how: str
) -> None:
    """SIGHUP after index.txt broke (every worker replaced): still revoked."""
    live = _revoked_then_broken(live_issuer, how)
    old = live.server.worker_pids()
    live.server.signal(signal.SIGHUP)
    live.server.wait_for_workers(old, keep=0)
    assert_always(live, "a", "revoked")
    assert live.status("b") == "good"
    assert live.server.alive()


# ---------------------------------------------------------------- 2: rollback


def test_defect2_older_crl_number_is_rejected(live_issuer: Callable[..., LiveIssuer]) -> None:
    """The first CRL copied back over a newer one (lower CRL number): still revoked, and an
    ERROR names the file."""
    live = live_issuer(source="crl")
    first = live.status_file.read_bytes()
    live.ca.revoke(live.issuing.leaves["a"].cert, "-crl_reason", "keyCompromise")
    live.publish_crl()
    assert live.wait_status("a", "revoked") == "revoked"

    offset = live.server.log_offset()
    replace_file(live.status_file, first)
    wait_rejected(live, offset, "a", "revoked", str(live.status_file))


def test_defect2_crl_with_earlier_this_update_is_rejected(
    live_issuer: Callable[..., LiveIssuer],
) -> None:
    """A CRL with a higher CRL number but a thisUpdate before the accepted one's (``openssl
    ca -crl_lastupdate``) is rejected: what it adds (b revoked) does not apply."""
    live = live_issuer(source="crl")
    live.ca.revoke(live.issuing.leaves["a"].cert, "-crl_reason", "keyCompromise")
    live.publish_crl()
    assert live.wait_status("a", "revoked") == "revoked"

    live.ca.revoke(live.issuing.leaves["b"].cert, "-crl_reason", "superseded")
    offset = live.server.log_offset()
    live.publish_crl(("-crl_lastupdate", asn1_time(datetime.now(UTC) - timedelta(hours=1))))
    wait_rejected(live, offset, "b", "good", str(live.status_file))
    assert live.status("a") == "revoked"


def test_defect2_index_row_back_to_valid_is_rejected(
    live_issuer: Callable[..., LiveIssuer],
) -> None:
    """index.txt written back to its content before ``openssl ca -revoke`` (an R row turned
    back to V): still revoked; the ERROR names the file and the serial as index.txt
    writes it (upper-case hex)."""
    live = live_issuer()
    (live.ca.dir / "serial").write_text("ABCD01\n")  # a serial with hex letters
    live.issuing.leaves["d"] = live.ca.issue("d")
    assert live.wait_status("d", "good") == "good"
    before = live.ca.index.read_bytes()
    live.ca.revoke(live.issuing.leaves["d"].cert, "-crl_reason", "keyCompromise")
    assert live.wait_status("d", "revoked") == "revoked"

    offset = live.server.log_offset()
    replace_file(live.ca.index, before)
    wait_rejected(live, offset, "d", "revoked", str(live.ca.index), "ABCD01")
    assert live.status("a") == "good"


def test_defect2_released_certificate_hold_answers_good(
    live_issuer: Callable[..., LiveIssuer],
) -> None:
    """Guard for the exception: R rows whose reason is certificateHold (``-crl_reason
    certificateHold``, ``-crl_hold``) edited back to V are accepted: good again."""
    live = live_issuer()
    leaves = live.issuing.leaves
    live.ca.revoke(leaves["b"].cert, "-crl_reason", "certificateHold")
    live.ca.revoke(leaves["c"].cert, "-crl_hold", "holdInstructionReject")
    assert live.wait_status("c", "revoked") == "revoked"
    answer = live.answer("b")
    assert answer and (answer.status, answer.reason) == ("revoked", "certificatehold")

    text = live.ca.index.read_text()
    for label in ("b", "c"):
        text = index_with_row_released(text, leaves[label].serial)
    replace_file(live.ca.index, text.encode())
    assert live.wait_status("b", "good") == "good"
    assert live.status("c") == "good"


def test_defect2_hold_dropped_from_crl_answers_good(
    live_issuer: Callable[..., LiveIssuer],
) -> None:
    """Guard: certificateHold entries are not remembered; a newer CRL without the hold
    entry makes the serial good again."""
    live = live_issuer(source="crl")
    hold = live.issuing.leaves["b"]
    live.ca.revoke(hold.cert, "-crl_reason", "certificateHold")
    live.publish_crl()
    assert live.wait_status("b", "revoked") == "revoked"

    released = index_with_row_released(live.ca.index.read_text(), hold.serial)
    replace_file(live.ca.index, released.encode())
    live.publish_crl()
    assert hold.serial not in crl_serials(live.status_file)
    assert live.wait_status("b", "good") == "good"


def test_defect2_crl_dropping_an_entry_keeps_it_revoked(
    live_issuer: Callable[..., LiveIssuer],
) -> None:
    """A CRL with a higher number that no longer lists a (its row removed from the CA's
    database) but adds b: accepted (b revoked), and a stays revoked, also after a
    restart (remembered with the snapshot)."""
    live = live_issuer(source="crl")
    live.revoke_then_drop_from_crl()

    live.server.restart()
    assert live.status("a") == "revoked"
    assert live.status("b") == "revoked"
    assert live.status("c") == "good"


def test_defect2_accept_data_restores_an_older_index(
    live_issuer: Callable[..., LiveIssuer],
) -> None:
    """An older index.txt is rejected until the operator runs ``ocsp-responder
    accept-data``; then the running responder answers from it (a good again), also after
    a restart."""
    live = live_issuer()
    name = live.issuing.name
    older = live.ca.index.read_bytes()
    live.ca.revoke(live.issuing.leaves["a"].cert, "-crl_reason", "keyCompromise")
    assert live.wait_status("a", "revoked") == "revoked"
    offset = live.server.log_offset()
    replace_file(live.ca.index, older)
    wait_rejected(live, offset, "a", "revoked", str(live.ca.index))

    done = accept_data(live.server.config, name)
    printed = done.stdout + done.stderr
    assert done.returncode == 0, printed
    assert name in printed, printed
    assert live.wait_status("a", "good") == "good"
    assert live.status("b") == "good"

    live.server.restart()
    assert live.status("a") == "good"


def test_defect2_accept_data_refuses_unknown_issuer_and_bad_data(
    live_issuer: Callable[..., LiveIssuer],
) -> None:
    """``accept-data`` exits 1 naming the issuer for an unknown name and for data that does
    not parse; the responder keeps its data."""
    live = live_issuer()
    done = accept_data(live.server.config, "no-such-issuer")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "no-such-issuer" in done.stdout + done.stderr

    replace_file(live.ca.index, b"this is not an OpenSSL CA database\n")
    done = accept_data(live.server.config, live.issuing.name)
    assert done.returncode == 1, done.stdout + done.stderr
    assert live.issuing.name in done.stdout + done.stderr
    assert live.status("a") == "good"


# ---------------------------------------------------------------- 3: empty / cut index


def test_defect3_empty_index_is_rejected(live_issuer: Callable[..., LiveIssuer]) -> None:
    """index.txt cut to 0 bytes: rejected; a good leaf stays good (not unknown), a revoked
    one revoked."""
    live = live_issuer(published=True)
    live.ca.revoke(live.issuing.leaves["b"].cert, "-crl_reason", "keyCompromise")
    live.publish()
    assert live.wait_status("b", "revoked") == "revoked"

    offset = live.server.log_offset()
    live.status_file.write_bytes(b"")
    wait_rejected(live, offset, "a", "good", str(live.status_file))
    assert live.status("b") == "revoked"
    assert live.status("c") == "good"


def test_defect3_index_cut_at_a_line_end_is_rejected(
    live_issuer: Callable[..., LiveIssuer],
) -> None:
    """index.txt cut exactly after a line (its last row, c's, lost): rejected; c stays good."""
    live = live_issuer(published=True)
    text = live.status_file.read_text()
    last_row = text.splitlines()[-1]
    assert int(last_row.split("\t")[3], 16) == live.issuing.leaves["c"].serial
    assert live.status("c") == "good"

    offset = live.server.log_offset()
    live.status_file.write_text(text[: len(text) - len(last_row) - 1])
    wait_rejected(live, offset, "c", "good", str(live.status_file))
    assert live.status("a") == "good"


# ---------------------------------------------------------------- 4: stale data


def test_defect4_expired_crl_answers_try_later(
    live_issuer: Callable[..., LiveIssuer], serve: Callable[..., Responder]
) -> None:
    """A CRL past its nextUpdate: tryLater from the running responder (on reload) and from
    one started on it, check-config exits 1; a fresh CRL brings good answers back."""
    live = live_issuer(source="crl")
    assert live.status("a") == "good"
    short = live.ca.gencrl(live.ca.dir / "crl" / "short.crl.pem", extra=("-crlsec", "1"))
    expiry = crl_next_update(short)
    wait_for(lambda: datetime.now(UTC) > expiry, timeout=10)  # the clock passes it

    offset = live.server.log_offset()
    os.replace(short, live.status_file)
    assert wait_for(lambda: live.try_later("a"), timeout=10), live.query("a").output
    assert_try_later_now(live, "a")
    logged = live.server.log_text()[offset:]
    assert live.server.error_mentioning(live.issuing.name, after=offset), logged

    second = LiveIssuer(
        issuing=live.issuing,
        server=serve(live.server.config.read_text(), live.ca.dir / "second-responder"),
        status_file=live.status_file,
    )
    assert_try_later_now(second, "a")
    check_config_refuses(live)

    live.publish_crl()
    assert live.wait_status("a", "good") == "good"
    assert second.wait_status("a", "good") == "good"
    assert check_config(live.server.config).returncode == 0


def test_defect4_next_update_within_crl_next_update(
    live_issuer: Callable[..., LiveIssuer],
) -> None:
    """A CRL valid for 1 more hour: nextUpdate <= the CRL's nextUpdate, though
    response_validity is 1 day."""
    live = live_issuer(source="crl")
    live.ca.revoke(live.issuing.leaves["c"].cert, "-crl_reason", "superseded")
    expiry = crl_next_update(live.publish_crl(("-crlhours", "1")))
    assert live.wait_status("c", "revoked") == "revoked"  # the 1-hour CRL is in service
    for nonce in (False, True):
        answer = live.answer("a", nonce=nonce)
        assert answer and answer.status == "good", live.query("a", nonce=nonce).output
        assert answer.next_update and answer.this_update
        assert answer.next_update <= expiry, (answer, expiry)
        assert answer.next_update - answer.this_update < DAY


def test_defect4_index_touched_8_days_ago_answers_try_later(
    live_issuer: Callable[..., LiveIssuer], serve: Callable[..., Responder]
) -> None:
    """index.txt last confirmed current (its mtime) 8 days ago, max_data_age 7 days:
    check-config exits 1; a responder started on it starts and answers tryLater; ``touch``
    brings good answers back by itself."""
    live = live_issuer()
    old = time.time() - 8 * 86400
    os.utime(live.ca.index, (old, old))

    directory = live.ca.dir / "second-responder"  # its own, empty, state directory
    directory.mkdir()
    config = directory / "config.toml"
    config.write_text(live.server.config.read_text())
    refused = check_config(config)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert live.issuing.name in refused.stdout + refused.stderr

    started = LiveIssuer(
        issuing=live.issuing,
        server=serve(config.read_text(), directory),
        status_file=live.status_file,
    )
    assert_try_later_now(started, "a")
    assert started.server.error_mentioning(live.issuing.name), started.server.log_text()

    os.utime(live.ca.index)  # touch
    assert started.wait_status("a", "good") == "good"
    done = check_config(config)
    assert done.returncode == 0, done.stdout + done.stderr


def test_defect4_index_not_confirmed_within_max_data_age_answers_try_later(
    live_issuer: Callable[..., LiveIssuer],
) -> None:
    """``max_data_age = 3``: once 3 s pass without index.txt being confirmed current (its
    mtime), the running responder answers tryLater and logs an ERROR naming the issuer;
    ``touch`` brings good answers back."""
    live = live_issuer(max_data_age=3)
    stale = wait_for(lambda: live.try_later("a"), timeout=15, interval=0.2)
    assert stale, live.query("a").output
    assert_try_later_now(live, "a")
    assert live.server.error_mentioning(live.issuing.name), live.server.log_text()

    os.utime(live.ca.index)  # touch
    assert live.wait_status("a", "good") == "good"


def test_defect4_next_update_within_index_max_data_age(
    live_issuer: Callable[..., LiveIssuer],
) -> None:
    """``max_data_age = 3600``: nextUpdate <= index.txt's mtime + 3600 s."""
    live = live_issuer(max_data_age=3600)
    expiry = datetime.fromtimestamp(live.ca.index.stat().st_mtime, UTC) + timedelta(hours=1)
    for nonce in (False, True):
        answer = live.answer("a", nonce=nonce)
        assert answer and answer.status == "good", live.query("a", nonce=nonce).output
        assert answer.next_update and answer.next_update <= expiry, (answer, expiry)


# ---------------------------------------------------------------- 5: signer expiry


def test_defect5_expired_signer_answers_try_later(
    live_issuer: Callable[..., LiveIssuer],
) -> None:
    """A signer that expires ~15 s from now: until then answers verify with nextUpdate <=
    its notAfter; after it, tryLater, an ERROR naming the issuer, check-config exits 1."""
    not_after = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=15)
    live = live_issuer(signer_dates={"enddate": asn1_time(not_after)})
    assert certificate_not_after(live.issuing.signer.cert) == not_after
    for nonce in (False, True):
        answer = live.answer("a", nonce=nonce)
        assert answer and answer.status == "good", live.query("a", nonce=nonce).output
        assert answer.next_update and answer.next_update <= not_after, (answer, not_after)

    left = (not_after - datetime.now(UTC)).total_seconds()
    expired = wait_for(lambda: live.try_later("a"), timeout=left + 10, interval=0.5)
    assert expired, live.query("a").output
    assert_try_later_now(live, "a")
    assert live.server.error_mentioning(live.issuing.name), live.server.log_text()
    check_config_refuses(live)


# ---------------------------------------------------------------- 6: failed loads retried


def test_defect6_unreadable_file_fixed_by_chmod_is_noticed(
    live_issuer: Callable[..., LiveIssuer],
) -> None:
    """A new index.txt (b revoked) published with mode 000 cannot be read; ``chmod 644``
    (no mtime, size or inode change) is noticed within 10 reload intervals."""
    live = live_issuer(published=True, command_prefix=no_dac_prefix())
    assert live.status("b") == "good"
    live.ca.revoke(live.issuing.leaves["b"].cert, "-crl_reason", "keyCompromise")

    offset = live.server.log_offset()
    replace_file(live.status_file, live.ca.index.read_bytes(), mode=0o000)
    assert wait_for(lambda: live.server.error_mentioning(str(live.status_file), after=offset)), (
        "no read error logged (can the responder bypass file permissions?):\n"
        + live.server.log_text()[offset:]
    )
    assert live.status("b") == "good"

    before = live.status_file.stat()
    live.status_file.chmod(0o644)
    after = live.status_file.stat()
    assert (before.st_mtime_ns, before.st_size, before.st_ino) == (
        after.st_mtime_ns,
        after.st_size,
        after.st_ino,
    )
    assert wait_for(lambda: live.status("b") == "revoked", timeout=2.0), (
        "chmod 644 was not noticed:\n" + live.server.log_text()[offset:]
    )
