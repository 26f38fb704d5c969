"""Revoke on the CA, publish with the playbook's revocation_data tag, and the
responder answers "revoked" without a restart of its unit.

This is the operator's procedure from the role README, run for real:
  1. `openssl ca -revoke CERT -crl_reason REASON` on the CA host (and, for a
     CA that publishes CRLs, `openssl ca -gencrl`);
  2. `ansible-playbook -i INVENTORY playbooks/site.yml --tags revocation_data`.
A fresh certificate is issued first by the first issuer of the scenario, so
the test can run again on the same instances.
"""

from __future__ import annotations

import time
from typing import Any

from ocsp_testlib import CaInstance, publish_revocation_data, wait_for

UNIT = "ocsp-responder.service"
REASON = "keyCompromise"
# The responder re-reads its status files every reload_interval (0.5 s by default).
RELOAD_WAIT = 15


def unit_state(host: Any) -> dict[str, str]:
    """MainPID, ActiveEnterTimestamp and NRestarts of the unit."""
    out = host.check_output(
        f"systemctl show -p MainPID -p ActiveEnterTimestamp -p NRestarts {UNIT}"
    )
    return dict(line.split("=", 1) for line in out.splitlines())


def test_revocation_is_published_without_restart(
    host: Any, ca: CaInstance, report: list[str]
) -> None:
    issuer = ca.manifest["issuers"][0]["name"]
    cert = ca.issue(issuer, f"revoke-me-{int(time.time())}.pki.example.com")
    serial = ca.serial(cert)
    before = unit_state(host)

    # Published: the new certificate is known and good.
    start = time.monotonic()
    publish_revocation_data()
    report.append(
        f"publish (site.yml --tags revocation_data) took {time.monotonic() - start:.1f} s"
    )
    answer = wait_for(
        lambda: _status_is(ca, issuer, cert, "good"), RELOAD_WAIT
    ) or ca.query_post(issuer, cert=cert)
    assert answer.status == "good" and answer.verify_ok, answer.output

    # Revoke with the real CLI, publish again.
    ca.revoke(issuer, cert, REASON)
    status, entry = ca.expected(issuer, serial)
    assert status == "revoked" and entry is not None
    publish_revocation_data()
    answer = wait_for(
        lambda: _status_is(ca, issuer, cert, "revoked"), RELOAD_WAIT
    ) or ca.query_post(issuer, cert=cert)
    assert answer.status == "revoked", answer.output
    assert answer.verify_ok
    assert answer.reason == REASON
    assert answer.revoked_at == entry.revoked_at

    after = unit_state(host)
    assert after == before, f"{UNIT} was restarted: before {before}, after {after}"


def _status_is(ca: CaInstance, issuer: str, cert: str, status: str) -> Any:
    """A POST with a nonce (never answered from a cache); the answer when it has `status`."""
    answer = ca.query_post(issuer, cert=cert, nonce=True)
    return answer if answer.status == status else None
