"""Changes while serving: revocations, broken files, CRL updates, SIGHUP, SIGTERM.

Each test has its own fresh CA and responder (``live_issuer``), which checks
its files every 0.2 s. Waiting for a reload is a bounded poll for an effect,
never an assertion about how long it took.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

from cryptography.x509 import ocsp
from openssl_ocsp import OcspRun, make_request
from openssl_pki import read_index
from responder_process import post_ocsp, wait_for
from scenario import LiveIssuer


def status(run: OcspRun, live: LiveIssuer, label: str) -> str:
    """The verified status of leaf ``label`` in ``run`` ("" if unverified or missing)."""
    if not run.verified or run.complaints:
        return ""
    found = run.statuses.get(str(live.issuing.leaves[label].cert))
    return found.status if found else ""


def wait_status(live: LiveIssuer, label: str, expected: str) -> OcspRun:
    """Query leaf ``label`` until its status is ``expected`` (at most 15 s); return the last run."""
    runs: list[OcspRun] = []

    def arrived() -> bool:
        runs.append(live.query(label))
        return status(runs[-1], live, label) == expected

    wait_for(arrived)
    return runs[-1]


def log_mentions(live: LiveIssuer, text: str, after: int) -> bool:
    """The responder's log, past offset ``after``, mentions ``text``."""
    return text in live.server.log_text()[after:]


def test_revocation_while_serving(live_issuer: Callable[..., LiveIssuer]) -> None:
    """``openssl ca -revoke`` while serving -> the next answers say revoked; no restart."""
    live = live_issuer()
    assert status(live.query("a"), live, "a") == "good"
    master = live.server.process
    live.ca.revoke(live.issuing.leaves["a"].cert, "-crl_reason", "keyCompromise")

    run = wait_status(live, "a", "revoked")
    assert status(run, live, "a") == "revoked", run.output
    row = read_index(live.ca.index)[live.issuing.leaves["a"].serial]
    found = run.status_of(live.issuing.leaves["a"].cert)
    assert (found.reason, found.revocation_time) == ("keycompromise", row.revocation_time)
    assert live.server.process is master and live.server.alive()
    assert status(live.query("b"), live, "b") == "good"


def test_revocation_replaces_only_that_presigned_response(
    live_issuer: Callable[..., LiveIssuer], tmp_path: Path
) -> None:
    """Pre-signed answers are reused until the serial's status changes, then re-signed.

    The CA's signer is ECDSA (randomized signatures), so equal bytes mean reuse.
    """
    live = live_issuer()
    leaves = live.issuing.leaves
    req_a = make_request(tmp_path / "a.der", live.ca.cert, [leaves["a"].cert])
    req_b = make_request(tmp_path / "b.der", live.ca.cert, [leaves["b"].cert])
    a_before, b_before = post_ocsp(live.server.port, req_a), post_ocsp(live.server.port, req_b)
    assert post_ocsp(live.server.port, req_a).body == a_before.body
    assert a_before.ocsp().certificate_status == ocsp.OCSPCertStatus.GOOD

    live.ca.revoke(leaves["a"].cert, "-crl_reason", "superseded")
    answers = [a_before]

    def changed() -> bool:
        answers.append(post_ocsp(live.server.port, req_a))
        return answers[-1].body != a_before.body

    assert wait_for(changed), "the answer for a never changed after its revocation"
    a_after = answers[-1]
    assert a_after.ocsp().certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert a_after.ocsp().revocation_reason is not None
    assert a_after.ocsp().revocation_reason.name == "superseded"
    assert post_ocsp(live.server.port, req_a).body == a_after.body  # re-cached
    assert post_ocsp(live.server.port, req_b).body == b_before.body  # b's status did not change


def test_garbage_index_keeps_last_good_data(live_issuer: Callable[..., LiveIssuer]) -> None:
    """index.txt replaced by garbage -> logged, last good data still answered, then recovers."""
    live = live_issuer(published=True)
    live.ca.revoke(live.issuing.leaves["b"].cert, "-crl_reason", "keyCompromise")
    live.publish()
    assert status(wait_status(live, "b", "revoked"), live, "b") == "revoked"

    offset = len(live.server.log_text())
    live.status_file.write_bytes(b"this is not an OpenSSL CA database\n\x00\xff\xfe garbage\tR\n")
    assert wait_for(lambda: log_mentions(live, str(live.status_file), offset)), (
        "the broken index.txt was not logged:\n" + live.server.log_text()[offset:]
    )
    assert status(live.query("a"), live, "a") == "good"
    assert status(live.query("b"), live, "b") == "revoked"
    assert live.server.alive()

    live.ca.revoke(live.issuing.leaves["c"].cert, "-crl_reason", "superseded")
    live.publish()
    assert status(wait_status(live, "c", "revoked"), live, "c") == "revoked"
    assert status(live.query("b"), live, "b") == "revoked"


def test_truncated_index_is_not_half_read(live_issuer: Callable[..., LiveIssuer]) -> None:
    """A half-written index.txt (last line cut) is not served; the complete file then is.

    The new content revokes b; its last row (c) is cut mid-line. Until the write
    completes, b must stay good and c must stay known.
    """
    live = live_issuer(published=True)
    assert status(live.query("b"), live, "b") == "good"
    live.ca.revoke(live.issuing.leaves["b"].cert, "-crl_reason", "cessationOfOperation")
    complete = live.ca.index.read_text()
    last_row = complete.splitlines()[-1]
    assert last_row.split("\t")[3] == f"{live.issuing.leaves['c'].serial:X}"
    partial = complete[: len(complete) - len(last_row) - 1] + last_row[:16]

    offset = len(live.server.log_text())
    live.status_file.write_text(partial)
    assert wait_for(lambda: log_mentions(live, str(live.status_file), offset)), (
        "the truncated index.txt was not logged:\n" + live.server.log_text()[offset:]
    )
    assert status(live.query("b"), live, "b") == "good"
    assert status(live.query("c"), live, "c") == "good"

    live.status_file.write_text(complete)
    assert status(wait_status(live, "b", "revoked"), live, "b") == "revoked"
    assert status(live.query("c"), live, "c") == "good"


def test_new_crl_is_picked_up(live_issuer: Callable[..., LiveIssuer]) -> None:
    """CRL source: ``openssl ca -revoke`` + ``-gencrl`` over the served file -> revoked."""
    live = live_issuer(source="crl")
    assert status(live.query("a"), live, "a") == "good"
    live.ca.revoke(live.issuing.leaves["a"].cert, "-crl_reason", "affiliationChanged")
    live.ca.gencrl(live.status_file)
    run = wait_status(live, "a", "revoked")
    assert status(run, live, "a") == "revoked", run.output
    assert run.status_of(live.issuing.leaves["a"].cert).reason == "affiliationchanged"


def test_sighup_reloads_config_and_refuses_a_bad_one(
    live_issuer: Callable[..., LiveIssuer],
) -> None:
    """SIGHUP: a broken config is refused (old one kept), a good one is applied."""
    live = live_issuer()
    config = live.server.config
    good_text = config.read_text()

    offset = len(live.server.log_text())
    config.write_text(good_text.replace("[server]", '[server]\ncolour = "blue"'))
    live.server.signal(signal.SIGHUP)
    assert wait_for(lambda: log_mentions(live, "server.colour", offset)), (
        "the bad config was not reported:\n" + live.server.log_text()[offset:]
    )
    assert status(live.query("a"), live, "a") == "good"

    # response_validity is not set in live configs (default 1 day); make it 1 hour.
    config.write_text(good_text.replace('name = "', 'response_validity = 3600\nname = "', 1))
    live.server.signal(signal.SIGHUP)

    def validity() -> float:
        run = live.query("a", nonce=True)
        found = run.statuses.get(str(live.issuing.leaves["a"].cert))
        if not found or not found.next_update or not found.this_update:
            return 0
        return (found.next_update - found.this_update).total_seconds()

    assert wait_for(lambda: validity() == 3600), live.server.log_text()[offset:]
    assert live.server.alive()


def test_sigterm_stops_cleanly(live_issuer: Callable[..., LiveIssuer]) -> None:
    """SIGTERM: the server drains and exits with status 0."""
    live = live_issuer()
    assert status(live.query("a"), live, "a") == "good"
    assert live.server.stop() == 0, live.server.log_text()
