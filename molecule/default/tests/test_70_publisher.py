"""Revocations reach the responder by themselves (issue: the CA host's publisher).

Nothing here runs ansible. On the CA instance the role installed a publisher: a
systemd path unit on the issuers' index.txt / CRL files and a heartbeat timer,
sending the files over SSH to the responder, where the key can only run
`ocsp-responder receive`.

Invariants at stake: (1) a revocation made with `openssl ca -revoke` on the CA is
answered `revoked` without anyone running the play (measured: the propagation
time at the origin, and through nginx within that plus http_cache_max_age);
(2) when the CA host stops confirming its data, an issuer stops vouching after
its max_data_age (tryLater), and vouches again once the heartbeat returns; and
the publisher's key can do nothing on the responder but hand over a listed file.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from ocsp_testlib import (
    PUBLISHER_SERVICE,
    CaInstance,
    inventory_host_vars,
    origin_port,
    origin_probe,
    publisher_stopped,
    start_publisher,
    stop_publisher,
    time_until_origin_says,
    wait_for,
)

KEY = "/etc/ocsp-responder-publisher/id_ed25519"
KNOWN_HOSTS = "/etc/ocsp-responder-publisher/known_hosts"
#: The target of the issue: a push reaches the origin in under 5 s.
PUSH_TARGET = 5.0


def responder_vars(host: Any) -> dict[str, Any]:
    return inventory_host_vars(host.backend.hostname)


def publish_user(host: Any) -> str:
    return str(responder_vars(host).get("ocsp_responder_publish_user", "ocsp-publish"))


def ssh_as_publisher(ca: CaInstance, host: Any, command: str = "") -> Any:
    """ssh from the CA instance with the publisher's key to the responder."""
    target = f"{publish_user(host)}@{host.backend.hostname}"
    return ca.run(
        f"ssh -i {KEY} -o BatchMode=yes -o IdentitiesOnly=yes "
        f"-o UserKnownHostsFile={KNOWN_HOSTS} -o StrictHostKeyChecking=yes "
        f"-o ConnectTimeout=10 {target} {command} </dev/null"
    )


def pushed_issuers(ca: CaInstance) -> list[str]:
    """Issuers whose status files live on the CA instance (pushed, not fetched)."""
    return [
        issuer["name"] for issuer in ca.manifest["issuers"] if not issuer.get("crl_url")
    ]


# -- the key ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        "",
        "id",
        "'/bin/sh -c id'",
        "'cat /etc/ocsp-responder/config.toml'",
        "'x index.txt; id'",
    ],
    ids=["shell", "id", "sh-c", "cat", "smuggled"],
)
def test_publisher_key_runs_nothing_but_receive(
    host: Any, ca: CaInstance, command: str
) -> None:
    result = ssh_as_publisher(ca, host, command)
    output = result.stdout + result.stderr
    assert result.rc != 0, output
    assert "uid=" not in output and "[server]" not in output, output
    assert "only receives status files" in output or "refused" in output, output


def test_publisher_key_cannot_forward_ports(host: Any, ca: CaInstance) -> None:
    """`restrict`: a local forward to the origin is refused (no TCP forwarding)."""
    port = origin_port(host)
    target = f"{publish_user(host)}@{host.backend.hostname}"
    result = ca.run(
        f"timeout 20 ssh -i {KEY} -o BatchMode=yes -o IdentitiesOnly=yes "
        f"-o UserKnownHostsFile={KNOWN_HOSTS} -o ExitOnForwardFailure=yes "
        f"-L 127.0.0.1:18099:127.0.0.1:{port} -N -f {target} "
        f"&& curl -sS -m 5 http://127.0.0.1:18099/-/health; "
        f"pkill -f 18099 || true"
    )
    assert '"issuers"' not in result.stdout, result.stdout


def test_only_the_ca_host_holds_the_publisher_key(host: Any, ca: CaInstance) -> None:
    key = ca.host.file(KEY)
    assert key.exists and key.mode == 0o600 and key.user == "root"
    # A line of the key's base64 body is unique to it: no file on the responder
    # holds it (the responder's own SSH host keys are private keys too, so a
    # search for any private key would not tell them apart).
    body = [line for line in key.content_string.splitlines() if "-----" not in line]
    marker = body[len(body) // 2]
    found = host.run(
        f"grep -rlF -e {marker!r} /etc /var /opt /root /home /tmp /srv 2>/dev/null"
    )
    assert found.stdout.strip() == "", (
        f"the publisher's private key is on the responder: {found.stdout}"
    )
    keys = host.file(f"/var/lib/{publish_user(host)}/.ssh/authorized_keys")
    assert keys.user == "root" and keys.mode == 0o644
    lines = [
        line for line in keys.content_string.splitlines() if not line.startswith("#")
    ]
    assert lines and all(line.startswith("restrict,command=") for line in lines), lines


# -- propagation -----------------------------------------------------------------


def test_revocation_reaches_the_responder_without_ansible(
    host: Any, ca: CaInstance, report: list[str]
) -> None:
    max_age = int(responder_vars(host).get("ocsp_responder_http_cache_max_age", 60))
    for issuer in pushed_issuers(ca):
        cert = ca.issue(issuer, f"push-{issuer}-{int(time.time())}.example")
        serial = ca.serial(cert)
        probe = origin_probe(host, issuer, serial)
        # The new certificate arrives by itself as good (a push of the issuance).
        assert wait_for(lambda probe=probe: ": good" in host.run(probe).stdout, 60), (
            f"{issuer}: the issuance of {serial} did not reach the responder: "
            f"{host.run(probe).stdout}"
        )
        # Watch the origin (nonce answers, no cache), then revoke on the CA.
        propagation = time_until_origin_says(
            host,
            ca,
            probe,
            "revoked",
            lambda issuer=issuer, cert=cert: ca.revoke(issuer, cert, "keyCompromise"),
        )
        assert propagation is not None, (
            f"{issuer}: revocation of {serial} not at the origin within 60 s"
        )
        report.append(
            f"push {issuer}: revoked at the origin {propagation:.2f} s after openssl ca"
        )
        assert propagation < PUSH_TARGET, f"{issuer}: {propagation:.2f} s"
        # Through nginx (relying parties' path), within propagation + the cache cap.
        through = wait_for(
            lambda issuer=issuer, cert=cert: (
                ca.query_post(issuer, cert=cert, nonce=False).status == "revoked"
            ),
            propagation + max_age + 5,
        )
        assert through, f"{issuer}: nginx still not revoked after {max_age} s"


def test_unreachable_responder_fails_the_publish_naming_it(
    host: Any, ca: CaInstance
) -> None:
    name = host.backend.hostname
    with publisher_stopped(ca):
        host.check_output("systemctl stop ssh.service")
        try:
            run = ca.run(f"systemctl start {PUBLISHER_SERVICE}")
            assert run.rc != 0
            assert (
                ca.run(f"systemctl is-failed {PUBLISHER_SERVICE}").stdout.strip()
                == "failed"
            )
            log = ca.run_checked(f"journalctl -u {PUBLISHER_SERVICE} -n 30 --no-pager")
            assert f"publishing failed to: {name}" in log and "FAILED" in log, log
        finally:
            host.check_output("systemctl start ssh.service")
        ok = ca.run(f"systemctl start {PUBLISHER_SERVICE}")
        assert ok.rc == 0, ca.run(
            f"journalctl -u {PUBLISHER_SERVICE} -n 20 --no-pager"
        ).stdout
        assert (
            ca.run(f"systemctl is-failed {PUBLISHER_SERVICE}").stdout.strip()
            != "failed"
        )


def test_silent_ca_host_makes_short_lived_data_try_later_then_recovers(
    host: Any, ca: CaInstance, report: list[str]
) -> None:
    hostvars = responder_vars(host)
    issuers = hostvars.get("ocsp_responder_issuers", [])
    short = [i["name"] for i in issuers if int(i.get("max_data_age", 604800)) <= 120]
    if not short:
        pytest.skip("no issuer with a max_data_age <= 120 s in this scenario")
    others = [
        i["name"]
        for i in issuers
        if i["name"] not in short and i["status_source"] == "index"
    ]
    name = short[0]
    leaf = next(leaf for leaf in ca.leaves(name) if not leaf.get("revoke"))
    probe = origin_probe(host, name, ca.serial(leaf["cert"]))
    assert ": good" in host.run(probe).stdout
    stop_publisher(ca)
    try:
        stopped = time.monotonic()
        max_data_age = next(
            int(i["max_data_age"]) for i in issuers if i["name"] == name
        )
        later = wait_for(
            lambda: "trylater" in host.run(probe).stdout, max_data_age + 30
        )
        waited = time.monotonic() - stopped
        assert later, (
            f"{name}: still vouching {waited:.0f} s after the publisher stopped"
        )
        report.append(
            f"publisher stopped: {name} answered tryLater after {waited:.0f} s"
        )
        for other in others:  # long max_data_age: still good
            other_leaf = next(
                leaf for leaf in ca.leaves(other) if not leaf.get("revoke")
            )
            answer = ca.query_post(other, cert=other_leaf["cert"])
            assert answer.status == "good" and answer.verify_ok, answer.output
    finally:
        start_publisher(ca, publish_now=False)  # the heartbeat alone brings it back
    started = time.monotonic()
    assert wait_for(lambda: ": good" in host.run(probe).stdout, 60), host.run(
        probe
    ).stdout
    report.append(
        f"publisher started: {name} good again after {time.monotonic() - started:.0f} s"
    )
