"""Bad requests through nginx: malformedRequest or a 4xx, never a 5xx, and the service stays up."""

from __future__ import annotations

from typing import Any

import pytest
from ocsp_testlib import WORKDIR, CaInstance, wait_for

UNIT = "ocsp-responder.service"


def unit_state(host: Any) -> dict[str, str]:
    """MainPID, ActiveEnterTimestamp, NRestarts and ActiveState of the unit."""
    out = host.check_output(
        f"systemctl show -p MainPID -p ActiveEnterTimestamp -p NRestarts -p ActiveState {UNIT}"
    )
    return dict(line.split("=", 1) for line in out.splitlines())


@pytest.fixture(scope="module")
def state_before(host: Any) -> dict[str, str]:
    state = unit_state(host)
    assert state["ActiveState"] == "active" and state["MainPID"] != "0", state
    return state


def assert_malformed_or_4xx(ca: CaInstance, status: int, what: str) -> None:
    """HTTP 200 must carry the OCSP status malformedRequest (garbage is not a
    request: not unauthorized, and never internalError); otherwise a 4xx."""
    assert status != 0, f"{what}: no HTTP answer"
    assert status < 500, f"{what}: HTTP {status}"
    if status == 200:
        answer = ca.ocsp_response_status()
        assert answer == "malformedrequest", f"{what}: {answer}"
    else:
        assert 400 <= status < 500, f"{what}: HTTP {status}"


def test_garbage_post_body(ca: CaInstance, state_before: dict[str, str]) -> None:
    ca.run_checked(f"head -c 300 /dev/urandom > {WORKDIR}/garbage.bin")
    status, _, _ = ca.http(
        f"-X POST -H 'Content-Type: application/ocsp-request' --data-binary @{WORKDIR}/garbage.bin {ca.url}"
    )
    assert_malformed_or_4xx(ca, status, "garbage POST body")


def test_empty_post_body(ca: CaInstance, state_before: dict[str, str]) -> None:
    status, _, _ = ca.http(
        f"-X POST -H 'Content-Type: application/ocsp-request' --data-binary '' {ca.url}"
    )
    assert_malformed_or_4xx(ca, status, "empty POST body")


@pytest.mark.parametrize(
    "path",
    ["not-base64!!", "MEMwQTA%2FMD0wOzAJBgUrDgMCGgUABBQ", "AAAA", "%ZZ", "a/b/c/d"],
)
def test_garbage_get_path(
    ca: CaInstance, state_before: dict[str, str], path: str
) -> None:
    status, _, _ = ca.http(f"'{ca.url}{path}'")
    assert_malformed_or_4xx(ca, status, f"GET {path}")


def test_oversize_post_body(ca: CaInstance, state_before: dict[str, str]) -> None:
    ca.run_checked(f"head -c 1048576 /dev/zero > {WORKDIR}/big.bin")
    status, _, _ = ca.http(
        f"-X POST -H 'Content-Type: application/ocsp-request' --data-binary @{WORKDIR}/big.bin {ca.url}"
    )
    assert status == 413, f"1 MiB POST: HTTP {status}"


def test_oversize_get_path(ca: CaInstance, state_before: dict[str, str]) -> None:
    status, _, _ = ca.http(f"'{ca.url}{'A' * 30000}'")
    assert 400 <= status < 500, f"30000-character GET path: HTTP {status}"


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS"])
def test_wrong_method(
    ca: CaInstance, state_before: dict[str, str], method: str
) -> None:
    status, _, _ = ca.http(f"-X {method} --data-binary x {ca.url}")
    assert 400 <= status < 500, f"{method}: HTTP {status}"


def test_service_survived_the_bad_input(
    host: Any, ca: CaInstance, state_before: dict[str, str]
) -> None:
    after = unit_state(host)
    assert after == state_before, f"unit changed: before {state_before}, after {after}"
    journal = host.run(
        f"journalctl -u {UNIT} --no-pager -o cat -p err --since '-10min'"
    ).stdout
    assert "Traceback" not in journal, journal
    issuer = ca.manifest["issuers"][0]["name"]
    leaf = ca.leaves(issuer)[0]
    answer = wait_for(lambda: ca.query_post(issuer, cert=leaf["cert"]), timeout=5)
    assert answer.verify_ok and answer.status in {"good", "revoked"}, answer.output
