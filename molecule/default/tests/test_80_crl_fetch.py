"""CRLs the responder fetches from the CA's web server (issuers' `crl_urls`).

Nothing here runs ansible. The crl scenario's CA instance serves the CRL of its
issuer `partner-web` with nginx (made by prepare; `test-ca gencrl` writes the
served copy); on the responder, ocsp-responder-fetch-crls.service fetches it
every `crl_fetch_interval` and `serve` answers from what it installed.
Scenarios without such an issuer skip these tests.

Invariants at stake: (1) a CRL published on the web server revokes at the
origin within one fetch interval (measured), without anyone running the play;
(2) a CRL whose nextUpdate passes while its URL is unreachable is not vouched
for past it (tryLater), and good answers return by themselves once a current
CRL can be fetched again.
"""

from __future__ import annotations

import json
import re
import time
import tomllib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from ocsp_testlib import (
    RESPONDER_CONFIG,
    CaInstance,
    origin_port,
    origin_probe,
    time_until_origin_says,
    wait_for,
)

FETCH_UNIT = "ocsp-responder-fetch-crls.service"
#: seconds: the reload check of `serve` plus the time to answer, on top of one interval
SLACK = 5


@pytest.fixture(scope="module")
def fetched(ca: CaInstance) -> list[dict[str, Any]]:
    """Manifest issuers whose CRL the responder fetches from a URL."""
    found = [issuer for issuer in ca.manifest["issuers"] if issuer.get("crl_url")]
    if not found:
        pytest.skip("no issuer with a crl_url in this scenario")
    return found


def fetch_interval(host: Any, issuer: str) -> int:
    """The issuer's `[issuer.source] fetch_interval` in config.toml on the responder."""
    config = tomllib.loads(host.file(RESPONDER_CONFIG).content_string)
    table = next(entry for entry in config["issuer"] if entry["name"] == issuer)
    return int(table["source"]["fetch_interval"])


def health(host: Any, issuer: str) -> dict[str, Any]:
    """The issuer's entry of the responder's /-/health report, asked at the origin."""
    body = host.check_output(f"curl -s http://127.0.0.1:{origin_port(host)}/-/health")
    return next(
        entry for entry in json.loads(body)["issuers"] if entry["name"] == issuer
    )


def test_fetcher_runs_as_the_service_user(
    host: Any, fetched: list[dict[str, Any]]
) -> None:
    service = host.service(FETCH_UNIT)
    assert service.is_running and service.is_enabled
    props = host.check_output(f"systemctl show -p User -p StateDirectory {FETCH_UNIT}")
    assert "User=ocsp-responder" in props, props
    for issuer in fetched:
        assert issuer["crl_url"] in host.file(RESPONDER_CONFIG).content_string


def test_fetcher_unit_exposure_is_at_most_2(
    host: Any, fetched: list[dict[str, Any]], report: list[str]
) -> None:
    out = host.run(f"systemd-analyze security --no-pager {FETCH_UNIT}")
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+) (\S+)", out.stdout)
    assert m, (
        f"no exposure level in systemd-analyze output:\n{out.stdout}\n{out.stderr}"
    )
    report.append(
        f"systemd-analyze security {FETCH_UNIT}: exposure {m.group(1)} {m.group(2)}"
    )
    assert float(m.group(1)) <= 2.0


def test_a_crl_on_the_web_server_revokes_within_one_fetch_interval(
    host: Any, ca: CaInstance, fetched: list[dict[str, Any]], report: list[str]
) -> None:
    for entry in fetched:
        issuer = entry["name"]
        interval = fetch_interval(host, issuer)
        cert = ca.issue(issuer, f"pull-{issuer}-{int(time.time())}.example")
        probe = origin_probe(host, issuer, ca.serial(cert))
        assert ": good" in host.run(probe).stdout, host.run(probe).stdout
        propagation = time_until_origin_says(
            host,
            ca,
            probe,
            "revoked",
            lambda issuer=issuer, cert=cert: ca.revoke(issuer, cert, "keyCompromise"),
            timeout=interval + 30,
        )
        assert propagation is not None, (
            f"{issuer}: not revoked within {interval + 30} s"
        )
        report.append(
            f"pull {issuer}: revoked at the origin {propagation:.2f} s after the CRL was "
            f"published (fetch_interval {interval} s)"
        )
        assert propagation < interval + SLACK, f"{issuer}: {propagation:.2f} s"
        # Through nginx, as relying parties ask (a nonce: no cached answer).
        answer = ca.query_post(issuer, cert=cert)
        assert answer.status == "revoked" and answer.verify_ok, answer.output
        assert answer.reason == "keyCompromise", answer.output


def test_unreachable_url_and_expired_crl_answer_try_later_then_recover(
    host: Any, ca: CaInstance, fetched: list[dict[str, Any]], report: list[str]
) -> None:
    entry = fetched[0]
    issuer = entry["name"]
    leaf = next(leaf for leaf in ca.leaves(issuer) if not leaf.get("revoke"))
    probe = origin_probe(host, issuer, ca.serial(leaf["cert"]))
    lifetime = 40
    # A CRL valid for 40 s, fetched while the web server still answers ...
    ca.publish_crl(issuer, seconds=lifetime)
    deadline = datetime.now(UTC) + timedelta(seconds=lifetime + 5)

    def short_crl_in_service() -> bool:
        expires = health(host, issuer)["data_expires"]
        return expires is not None and datetime.fromisoformat(expires) <= deadline

    assert wait_for(short_crl_in_service, fetch_interval(host, issuer) + SLACK), health(
        host, issuer
    )
    assert ": good" in host.run(probe).stdout
    # ... then the web server goes away: nothing newer can arrive.
    ca.run_checked("systemctl stop nginx.service")
    try:
        stopped = time.monotonic()
        later = wait_for(lambda: "trylater" in host.run(probe).stdout, lifetime + 20)
        assert later, (
            f"{issuer}: still vouching after its CRL's nextUpdate: {health(host, issuer)}"
        )
        report.append(
            f"pull {issuer}: URL unreachable, CRL expired: tryLater after "
            f"{time.monotonic() - stopped:.0f} s (CRL lifetime {lifetime} s)"
        )
        assert health(host, issuer)["available"] is False
        log = host.check_output(f"journalctl -u {FETCH_UNIT} -n 50 --no-pager")
        assert f"issuer {issuer}: {entry['crl_url']}: error: " in log, log
    finally:
        ca.publish_crl(issuer)  # a current CRL (7 days) ...
        ca.run_checked("systemctl start nginx.service")  # ... reachable again
    started = time.monotonic()
    assert wait_for(lambda: ": good" in host.run(probe).stdout, 60), host.run(
        probe
    ).stdout
    report.append(
        f"pull {issuer}: URL back: good again after {time.monotonic() - started:.0f} s"
    )
