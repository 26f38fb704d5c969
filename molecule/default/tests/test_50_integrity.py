"""Status integrity: publishing confirms the data, and a broken status file
never costs a revocation, not even in a worker started while it is broken.

1. Every run of `site.yml --tags revocation_data` marks each published
   index.txt as confirmed current (mtime = now, the start of the responder's
   max_data_age), leaves CRLs alone (they carry their own nextUpdate) and
   reports no change when nothing changed.
2. With a certificate revoked and published, the responder's copy of the
   status file is cut mid-line, one responder worker is SIGKILLed and
   respawned, and every answer through nginx (nonce requests, never from a
   cache) from both the surviving and the new worker is still "revoked".
   The new worker cannot have it from the broken file: it comes from the
   validated snapshots the service keeps in its state directory.
The status file is published again afterwards, so the scenario can rerun.
"""

from __future__ import annotations

import json
import re
import shlex
import time
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from ocsp_testlib import (
    CaInstance,
    publish_revocation_data,
    publisher_stopped,
    recap_changed,
    wait_for,
)

UNIT = "ocsp-responder.service"
CONFIG = "/etc/ocsp-responder/config.toml"
BINARY = "/opt/ocsp-responder/bin/ocsp-responder"
SERVICE_USER = "ocsp-responder"
REASON = "keyCompromise"
# Seconds for the responder to notice a changed file (reload_interval 0.5 s).
RELOAD_WAIT = 15
# nginx closes idle upstream connections after 5 s (keepalive_timeout of its
# upstream block, below the responder's 10 s); it then opens new ones, which any
# worker may accept (all accept on one listening socket).
UPSTREAM_IDLE = 6
BURST = 8


def responder_config(host: Any) -> dict[str, Any]:
    """The responder's config.toml as the role wrote it."""
    return tomllib.loads(host.file(CONFIG).content_string)


def status_files(host: Any) -> dict[str, tuple[str, list[str]]]:
    """{issuer name: (source kind, [status file paths on the responder])}."""
    result = {}
    for issuer in responder_config(host)["issuer"]:
        source = issuer["source"]
        paths = [source["path"]] if source["kind"] == "index" else source["paths"]
        result[issuer["name"]] = (source["kind"], paths)
    return result


def mtime_ns(host: Any, path: str) -> int:
    """Modification time of a file on the responder host, in nanoseconds."""
    seconds, fraction = host.check_output(f"stat -c %.9Y {path}").split(".")
    return int(seconds) * 10**9 + int(fraction)


def sha256(host: Any, path: str) -> str:
    """SHA-256 of a file on a testinfra host."""
    return host.check_output(f"sha256sum {path}").split()[0]


def snapshot(host: Any, issuer: str) -> dict[str, Any] | None:
    """The service's snapshot document of `issuer` (STATE_DIR/NAME.json), if any."""
    state_dir = responder_config(host)["server"]["state_dir"]
    document = host.file(f"{state_dir}/{issuer}.json")
    return json.loads(document.content_string) if document.exists else None


def main_pid(host: Any) -> int:
    pid = int(host.check_output(f"systemctl show -p MainPID --value {UNIT}"))
    assert pid > 0, f"{UNIT} is not running"
    return pid


def workers(host: Any) -> set[int]:
    """PIDs of the responder's workers: the children of the unit's MainPID."""
    out = host.run(f"ps --ppid {main_pid(host)} -o pid=").stdout
    return {int(pid) for pid in out.split()}


def upstream_peers(host: Any, port: int) -> set[int]:
    """PIDs holding an established connection on the responder's port (nginx's)."""
    out = host.check_output(f"ss -Htnp state established '( sport = :{port} )'")
    return {int(pid) for pid in re.findall(r"pid=(\d+)", out)}


def test_publishing_confirms_index_txt_and_leaves_crls_alone(
    host: Any, ca: CaInstance
) -> None:
    files = status_files(host)
    paths = [path for _, file_paths in files.values() for path in file_paths]
    before = {path: (mtime_ns(host, path), sha256(host, path)) for path in paths}
    time.sleep(1.1)  # so that "now" is measurably later than any mtime above
    start = datetime.now(UTC)

    output = publish_revocation_data()

    changed = recap_changed(output)
    assert host.backend.name in changed, changed
    assert set(changed.values()) == {0}, (
        f"a publish with nothing new reported changes {changed}:\n{output}"
    )
    for name, (kind, file_paths) in files.items():
        for path in file_paths:
            old_mtime, old_digest = before[path]
            assert sha256(host, path) == old_digest, f"{path}: content changed"
            if kind == "crl":
                assert mtime_ns(host, path) == old_mtime, (
                    f"{path}: a CRL's mtime was changed by publishing"
                )
                continue
            confirmed = datetime.fromtimestamp(mtime_ns(host, path) / 1e9, UTC)
            assert confirmed >= start - timedelta(seconds=1), (
                f"{path}: mtime {confirmed} not renewed by the publish at {start}"
            )

            # The responder took it as the data's new confirmation time, the
            # start of max_data_age.
            def renewed(name: str = name) -> bool:
                document = snapshot(host, name)
                return bool(
                    document
                    and document["confirmed_at"]
                    and datetime.fromisoformat(document["confirmed_at"])
                    >= start - timedelta(seconds=1)
                )

            assert wait_for(renewed, RELOAD_WAIT), (
                f"snapshot of {name} not re-confirmed: {snapshot(host, name)}"
            )


@pytest.fixture
def quiet_publisher(ca: CaInstance) -> Iterator[None]:
    """The CA host's publisher paused: its heartbeat would repair a file the test breaks."""
    with publisher_stopped(ca):
        yield


def test_a_worker_restarted_while_the_status_file_is_broken_keeps_the_revocation(
    host: Any, ca: CaInstance, report: list[str], quiet_publisher: None
) -> None:
    issuer = ca.manifest["issuers"][0]["name"]
    kind, paths = status_files(host)[issuer]
    status_file = paths[0]
    port = int(responder_config(host)["server"]["bind"].rsplit(":", 1)[1])

    # A certificate issued and revoked with the CA's own tooling, published.
    cert = ca.issue(issuer, f"integrity-{int(time.time())}.pki.example.com")
    serial = ca.serial(cert)
    ca.revoke(issuer, cert, REASON)
    status, entry = ca.expected(issuer, serial)
    assert status == "revoked" and entry is not None
    publish_revocation_data()
    answer = wait_for(
        lambda: _answer_if(ca.query_post(issuer, cert=cert), "revoked"), RELOAD_WAIT
    ) or ca.query_post(issuer, cert=cert)
    assert answer.status == "revoked" and answer.verify_ok, answer.output

    unit_before = host.check_output(f"systemctl show -p MainPID -p NRestarts {UNIT}")
    try:
        # Break the responder's copy: cut it in the middle of the revoked
        # certificate's line (index.txt) or of the CRL.
        content = host.file(status_file).content_string
        if kind == "index":
            row = re.search(rf"^R\t[^\n]*\t{serial}\t", content, re.MULTILINE)
            assert row, f"{status_file}: no revoked row for {serial}"
            cut = len(content[: row.start()].encode()) + 5
        else:
            cut = len(content.encode()) // 2
        host.check_output(f"truncate -s {cut} {shlex.quote(status_file)}")
        assert sha256(host, status_file) != sha256(ca.host, _ca_file(ca, issuer, kind))
        # The responder's own parser rejects it.
        check = host.run(f"{BINARY} check-config {CONFIG}")
        assert check.rc != 0 and status_file in check.stdout + check.stderr, (
            f"check-config accepts the cut {status_file}:\n{check.stdout}{check.stderr}"
        )
        time.sleep(2)  # let the running processes see (and reject) it

        # SIGKILL one worker; the main process starts a new one (after 1 s).
        before = workers(host)
        assert len(before) >= 2, f"{UNIT}: workers {before}"
        victim = min(before)
        host.check_output(f"kill -9 {victim}")
        respawned = wait_for(lambda: _replaced(workers(host), before, victim), 30)
        assert respawned, f"worker {victim} was not replaced: {workers(host)}"
        (new_worker,) = respawned - before
        survivors = before - {victim}
        report.append(
            f"killed worker {victim} with {status_file} cut"
            f" {'mid-line' if kind == 'index' else 'in half'}; new worker {new_worker}"
        )

        # Ask through nginx with nonces until both the new worker and a
        # surviving one have answered (seen holding nginx's upstream
        # connections); every answer must be revoked and verify.
        answered: set[int] = set()
        answers = 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            time.sleep(UPSTREAM_IDLE)  # idle upstream connections are gone
            for answer in ca.query_post_many(issuer, cert=cert, count=BURST):
                answers += 1
                assert answer.rc == 0, answer.output
                assert "WARNING: no nonce in response" not in answer.output
                assert answer.verify_ok, answer.output
                assert answer.status == "revoked", (
                    f"answer {answers} after the worker restart: {answer.status}\n"
                    f"{answer.output}"
                )
                assert answer.reason == REASON, answer.output
                assert answer.revoked_at == entry.revoked_at, answer.output
            answered |= upstream_peers(host, port)
            if new_worker in answered and answered & survivors:
                break
        assert new_worker in answered, (
            f"the new worker {new_worker} never answered (seen: {answered})"
        )
        assert answered & survivors, f"no surviving worker answered (seen: {answered})"
        report.append(
            f"{answers} nonce answers through nginx after the restart, all revoked;"
            f" workers seen answering: {sorted(answered & (survivors | {new_worker}))}"
        )
        after = host.check_output(f"systemctl show -p MainPID -p NRestarts {UNIT}")
        assert after == unit_before, (
            f"{UNIT} itself restarted: {unit_before} -> {after}"
        )

        # The snapshots the service wrote: one per issuer, the service
        # user's, and the revocation is in this issuer's.
        state_dir = responder_config(host)["server"]["state_dir"]
        for name in status_files(host):
            for suffix in (".json", ".lock"):
                written = host.file(f"{state_dir}/{name}{suffix}")
                assert written.is_file, f"{written.path}: missing"
                assert (written.user, written.group) == (SERVICE_USER, SERVICE_USER), (
                    f"{written.path}: {written.user}:{written.group}"
                )
                assert written.mode & 0o077 == 0, f"{written.path}: {written.mode:o}"
        document = snapshot(host, issuer)
        assert document is not None
        rows = {row[0]: row for row in document["table"] + document["remembered"]}
        assert (
            serial.lstrip("0") in rows and rows[serial.lstrip("0")][1] == "revoked"
        ), f"{serial} not revoked in the snapshot of {issuer}"
    finally:
        # Put the CA's file back: the role copies it since the content differs.
        publish_revocation_data()

    assert sha256(host, status_file) == sha256(ca.host, _ca_file(ca, issuer, kind))
    assert host.run(f"{BINARY} check-config {CONFIG}").rc == 0
    answer = ca.query_post(issuer, cert=cert)
    assert answer.status == "revoked" and answer.verify_ok, answer.output


def _replaced(now: set[int], before: set[int], victim: int) -> set[int] | None:
    """The worker set `now` once `victim` is gone and the count is back."""
    return now if victim not in now and len(now) == len(before) else None


def _ca_file(ca: CaInstance, issuer: str, kind: str) -> str:
    """The CA host's original of the issuer's status file."""
    entry = ca.issuer(issuer)
    return entry["database"] if kind == "index" else entry["crl"]


def _answer_if(answer: Any, status: str) -> Any:
    return answer if answer.status == status else None
