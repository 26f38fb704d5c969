"""Monitoring and deploy-time verification, as deployed.

1. nginx passes /-/health and /-/metrics to the responder only from
   `ocsp_responder_monitoring_allow` (loopback by default): 200 on the
   responder host itself, 403 from the CA instance. The metrics scraped
   through nginx hold every metric family of the responder's contract (README,
   "Monitoring"), the per-issuer ones for every issuer.
2. The access log shows a client's address truncated to its /24 (the role's
   default `ocsp_responder_nginx_log_client_address: truncated`).
3. The alert rules file is installed where the scenario asks for it
   (`OCSP_TEST_PROMETHEUS_RULES`), byte for byte the repository's.
4. `site.yml --tags verify` alone passes and changes nothing; with a wrong
   trust anchor for one issuer it fails, naming the host, that issuer and the
   failed checks, and only those.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
from pathlib import Path
from typing import Any

import pytest
from ocsp_testlib import (
    CaInstance,
    inventory_host_vars,
    recap_changed,
    run_site,
    wait_for,
)

ACCESS_LOG = "/var/log/nginx/ocsp-responder.access.log"
RULES = "/etc/prometheus/rules/ocsp-responder.rules.yml"
#: nginx writes its access log in 64 KiB batches, at least every 5 s.
LOG_FLUSH_WAIT = 15

#: Every metric family of the responder (README "Monitoring"; the alert rules
#: rely on them): name -> (type, labelled by issuer).
FAMILIES: dict[str, tuple[str, bool]] = {
    "ocsp_responder_requests_total": ("counter", False),
    "ocsp_responder_answers_total": ("counter", True),
    "ocsp_responder_try_later_total": ("counter", True),
    "ocsp_responder_cache_hits_total": ("counter", False),
    "ocsp_responder_cache_misses_total": ("counter", False),
    "ocsp_responder_cache_evictions_total": ("counter", False),
    "ocsp_responder_cache_bytes": ("gauge", False),
    "ocsp_responder_cache_entries": ("gauge", False),
    "ocsp_responder_signing_duration_seconds": ("histogram", False),
    "ocsp_responder_request_duration_seconds": ("histogram", False),
    "ocsp_responder_reload_failures_total": ("counter", True),
    "ocsp_responder_live_signing_rejected_total": ("counter", True),
    "ocsp_responder_issuer_up": ("gauge", True),
    "ocsp_responder_data_age_seconds": ("gauge", True),
    "ocsp_responder_data_expiry_seconds": ("gauge", True),
    "ocsp_responder_signer_expiry_seconds": ("gauge", True),
    "ocsp_responder_serials": ("gauge", True),
    "ocsp_responder_last_reload_success_timestamp_seconds": ("gauge", True),
    "ocsp_responder_data_expiry_warning_seconds": ("gauge", True),
    "ocsp_responder_signer_expiry_warning_seconds": ("gauge", True),
}


def server_name(ca: CaInstance) -> str:
    """The OCSP host name, as in the scenario's URL (the nginx server_name)."""
    return ca.url.split("//", 1)[1].split("/", 1)[0]


def local_get(host: Any, ca: CaInstance, path: str) -> tuple[int, dict[str, str], str]:
    """GET http://127.0.0.1PATH on the responder host itself (as a local Prometheus
    would), with the OCSP Host header; (status, headers, body)."""
    out = host.run(
        "curl -sS --max-time 10 -D /tmp/monitoring.headers -o /tmp/monitoring.body "
        f"-w '%{{http_code}}' -H {shlex.quote('Host: ' + server_name(ca))} "
        f"{shlex.quote('http://127.0.0.1' + path)}"
    )
    assert out.rc == 0, f"curl on the responder host: {out.stderr}"
    headers: dict[str, str] = {}
    for line in host.file("/tmp/monitoring.headers").content_string.splitlines()[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return (
        int(out.stdout.strip()),
        headers,
        host.file("/tmp/monitoring.body").content_string,
    )


def issuer_names(ca: CaInstance) -> list[str]:
    return [issuer["name"] for issuer in ca.manifest["issuers"]]


def ca_address(ca: CaInstance) -> str:
    """The CA instance's IPv4 address on the scenario's network."""
    out = ca.run_checked(["ip", "-4", "-o", "addr", "show", "scope", "global"])
    m = re.search(r"\binet (\d+\.\d+\.\d+\.\d+)/", out)
    assert m, f"no global IPv4 address on the CA instance:\n{out}"
    return m.group(1)


def access_log_lines_with(host: Any, marker: str, count: int) -> list[str]:
    """Lines of nginx's OCSP access log containing `marker`, waiting (up to
    LOG_FLUSH_WAIT seconds) until `count` of them are there: the log is buffered,
    and two requests can straddle a flush."""

    def lines_now() -> list[str]:
        text = (
            host.file(ACCESS_LOG).content_string if host.file(ACCESS_LOG).exists else ""
        )
        return [line for line in text.splitlines() if marker in line]

    def enough() -> list[str]:
        found = lines_now()
        return found if len(found) >= count else []

    return wait_for(enough, LOG_FLUSH_WAIT) or lines_now()


# -- 1. the endpoints through nginx --------------------------------------------


def test_health_through_nginx_from_the_responder_host(
    host: Any, ca: CaInstance
) -> None:
    status, headers, body = local_get(host, ca, "/-/health")
    assert status == 200, f"HTTP {status}: {body}"
    assert "no-store" in headers.get("cache-control", ""), headers
    assert "x-cache-status" not in headers, (
        f"went through the OCSP cache location: {headers}"
    )
    report = json.loads(body)
    assert report["status"] == "ok", report
    assert sorted(i["name"] for i in report["issuers"]) == sorted(issuer_names(ca)), (
        report
    )
    assert all(i["available"] for i in report["issuers"]), report
    status, _, body = local_get(host, ca, "/-/health?brief")
    assert (status, body) == (200, "ok\n")


@pytest.mark.parametrize("path", ["/-/health", "/-/health?brief", "/-/metrics"])
def test_monitoring_refused_from_the_ca_instance(ca: CaInstance, path: str) -> None:
    # The CA instance is not in ocsp_responder_monitoring_allow (loopback only).
    status, headers, _ = ca.http(shlex.quote(ca.url.rstrip("/") + path))
    assert status == 403, f"{path} from the CA instance: HTTP {status} {headers}"


def test_metrics_through_nginx_hold_every_family(host: Any, ca: CaInstance) -> None:
    # Some traffic first, so that no counter can be missing for want of use.
    leaf = ca.leaves()[0]
    assert ca.query_post(leaf["issuer"], cert=leaf["cert"]).status is not None
    status, headers, body = local_get(host, ca, "/-/metrics")
    assert status == 200, f"HTTP {status}: {body[:500]}"
    assert headers.get("content-type", "").startswith("text/plain"), headers
    assert "no-store" in headers.get("cache-control", ""), headers
    samples: dict[str, list[str]] = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name = re.split(r"[{ ]", line, maxsplit=1)[0]
            samples.setdefault(name, []).append(line)
    missing = []
    for family, (kind, per_issuer) in FAMILIES.items():
        sample = f"{family}_count" if kind == "histogram" else family
        lines = samples.get(sample, [])
        if not lines:
            missing.append(family)
        elif per_issuer:
            missing += [
                f"{family}{{issuer={name!r}}}"
                for name in issuer_names(ca)
                if not any(f'issuer="{name}"' in line for line in lines)
            ]
    assert missing == [], f"missing from /-/metrics: {missing}"
    up = samples["ocsp_responder_issuer_up"]
    assert all(line.endswith(" 1.0") for line in up), up


def test_warning_windows_come_from_the_role(host: Any, ca: CaInstance) -> None:
    """config.toml's windows (data: ocsp_responder_data_expiry_warning, signer:
    ocsp_responder_signer_renew_days days) are what the alert rules compare with."""
    hostvars = inventory_host_vars(host.backend.hostname)
    data_window = float(hostvars.get("ocsp_responder_data_expiry_warning", 21600))
    signer_window = float(hostvars.get("ocsp_responder_signer_renew_days", 30)) * 86400
    _, _, body = local_get(host, ca, "/-/metrics")
    for name in issuer_names(ca):
        for family, expected in [
            ("ocsp_responder_data_expiry_warning_seconds", data_window),
            ("ocsp_responder_signer_expiry_warning_seconds", signer_window),
        ]:
            m = re.search(
                rf'^{family}{{[^}}]*issuer="{re.escape(name)}"[^}}]*}} (\S+)$',
                body,
                re.MULTILINE,
            )
            assert m, f"{family} of {name} not in /-/metrics"
            assert float(m.group(1)) == expected, (family, name, m.group(1))


# -- 2. client address privacy --------------------------------------------------


def test_access_log_truncates_the_client_address(host: Any, ca: CaInstance) -> None:
    address = ca_address(ca)
    truncated = address.rsplit(".", 1)[0] + ".0"
    marker = "privacy-" + secrets.token_hex(6)
    ca.http(shlex.quote(f"{ca.url.rstrip('/')}/{marker}"))
    ca.http(shlex.quote(f"{ca.url.rstrip('/')}/-/metrics?{marker}"))
    lines = access_log_lines_with(host, marker, 2)
    assert len(lines) == 2, f"{ACCESS_LOG}: lines for {marker}: {lines}"
    for line in lines:
        assert line.startswith(truncated + " - "), f"{address} logged as: {line}"
        assert address not in line or address == truncated, line
    assert any("/-/metrics" in line and '" 403 ' in line for line in lines), lines


# -- 3. the alert rules ------------------------------------------------------------


def test_prometheus_rules_installed_as_asked(host: Any) -> None:
    rules = host.file(RULES)
    if os.environ.get("OCSP_TEST_PROMETHEUS_RULES") != "installed":
        assert not rules.exists, f"{RULES}: installed although not asked for"
        return
    source = (
        Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
        / "monitoring"
        / "ocsp-responder.rules.yml"
    )
    assert rules.exists, f"{RULES}: missing"
    assert (rules.user, rules.group, rules.mode) == ("root", "root", 0o644)
    assert rules.content_string == source.read_text(), f"{RULES} differs from {source}"


# -- 4. deploy-time verification ------------------------------------------------------


def test_verify_tag_alone_passes_and_changes_nothing(host: Any) -> None:
    proc = run_site("--tags", "verify")
    assert proc.returncode == 0, (
        f"{' '.join(proc.args)}:\n{proc.stdout[-6000:]}\n{proc.stderr}"
    )
    assert set(recap_changed(proc.stdout).values()) == {0}, proc.stdout[-3000:]
    hostname = host.backend.hostname
    # Every check ran, for every issuer (items print "ISSUER: CHECK").
    ran = re.findall(
        rf"^ok: \[{re.escape(hostname)}\] => \(item=([^:]+): ",
        proc.stdout,
        re.MULTILINE,
    )
    assert ran, proc.stdout[-3000:]


def test_verify_fails_naming_host_issuer_and_check(host: Any, ca: CaInstance) -> None:
    """A trust anchor that did not issue the signer: the responses must not verify."""
    hostname = host.backend.hostname
    wrong = "/root/wrong-ca.pem"
    host.run_test(
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
        f"-keyout /root/wrong-ca.key -out {wrong} -days 2 -subj '/CN=Not The Issuing CA'"
    )
    assert host.file(wrong).exists
    issuers = inventory_host_vars(hostname)["ocsp_responder_issuers"]
    victim = issuers[0]["name"]
    tampered = [
        dict(i, verify_cafile=wrong) if i["name"] == victim else i for i in issuers
    ]
    proc = run_site(
        "--tags", "verify", "-e", json.dumps({"ocsp_responder_issuers": tampered})
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, (
        f"verify passed with {wrong} as trust anchor:\n{output[-6000:]}"
    )
    # The assert's message, printed as JSON: check \"NAME\" failed
    failures = re.findall(
        rf'{re.escape(hostname)}: issuer (\S+): check \\"(.+?)\\" failed', output
    )
    assert failures, f"no failure naming host, issuer and check:\n{output[-6000:]}"
    assert {issuer for issuer, _ in failures} == {victim}, failures
    checks = {check for _, check in failures}
    assert f"POST response verifies against {wrong}" in checks, checks
    assert f"GET answer is good and verifies against {wrong}" in checks, checks
    assert set(recap_changed(proc.stdout).values()) == {0}, proc.stdout[-3000:]
