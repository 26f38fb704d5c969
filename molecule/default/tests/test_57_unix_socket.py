"""A unix:PATH bind: only nginx's group may connect, and nginx answers through it.

The play is run with `ocsp_responder_bind=unix:/run/ocsp-responder.sock` (the
config, service, nginx and verify tags; the role's own verify queries through
nginx with `openssl ocsp`), then checked from outside:

* the socket is systemd's (ocsp-responder.socket): owner root, group www-data,
  mode 0660, held by the service's main process (before the socket unit, the
  service made a 0777 socket inside the 0750 RuntimeDirectory, which nginx
  could not enter);
* nginx's user reaches the origin through it, `nobody` is refused;
* `openssl ocsp` through nginx answers `revoked` for a revoked leaf (verified),
  also after `systemctl restart ocsp-responder` (the socket stays; the service
  gets it again) and after the socket moves to another path (the old one is
  stopped and removed first);

then the play runs again without the override, and the loopback port is back
with the socket unit gone. Only in the default scenario (the crl scenario runs
the same role code with another PKI).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from ocsp_testlib import CaInstance, run_site, unit_pids

SOCKET = "/run/ocsp-responder.sock"
OTHER_SOCKET = "/run/ocsp-responder-b.sock"
SOCKET_UNIT = "/etc/systemd/system/ocsp-responder.socket"
UNIT = "ocsp-responder.service"
TAGS = "ocsp_responder_config,ocsp_responder_service,ocsp_responder_nginx,verify"
HEALTH = f"curl -sS -m 5 --unix-socket {SOCKET} http://localhost/-/health"

pytestmark = pytest.mark.skipif(
    os.environ.get("MOLECULE_SCENARIO_NAME", "default") != "default",
    reason="run in the default scenario only",
)


def _play(*extra: str) -> str:
    proc = run_site("--tags", TAGS, *extra)
    assert proc.returncode == 0, f"{' '.join(proc.args)}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def unix_bind(host: Any) -> Iterator[None]:
    """The deployment with a unix:PATH bind; the default back after the module
    (test_the_default_bind_comes_back restores it first, and checks)."""
    _play("-e", json.dumps({"ocsp_responder_bind": f"unix:{SOCKET}"}))
    try:
        yield
    finally:
        if host.file(SOCKET_UNIT).exists:
            _play()


def test_the_socket_is_systemds_with_nginx_group_only(host: Any, unix_bind: None) -> None:
    sock = host.file(SOCKET)
    assert sock.is_socket, f"{SOCKET} is not a socket"
    assert (sock.user, sock.group, sock.mode) == ("root", "www-data", 0o660), (
        sock.user,
        sock.group,
        oct(sock.mode),
    )
    assert host.service("ocsp-responder.socket").is_running
    listeners = [line for line in host.check_output("ss -Hxlp").splitlines() if SOCKET in line]
    pids = unit_pids(host, UNIT)
    assert any(f"pid={pid}," in line for line in listeners for pid in pids), (listeners, pids)
    tcp = host.check_output("ss -Htlnp")
    assert not any(f"pid={pid}," in tcp for pid in pids), f"{UNIT} still on TCP:\n{tcp}"


def test_nginx_user_connects_and_others_are_refused(host: Any, unix_bind: None) -> None:
    allowed = host.run(f"runuser -u www-data -- {HEALTH}")
    assert allowed.rc == 0 and '"issuers"' in allowed.stdout, allowed.stdout + allowed.stderr
    refused = host.run(f"runuser -u nobody -- {HEALTH}")
    assert refused.rc != 0, refused.stdout
    assert "Permission denied" in refused.stderr or refused.rc == 7, refused.stderr


def test_openssl_ocsp_through_nginx_and_a_restart(
    host: Any, ca: CaInstance, unix_bind: None, report: list[str]
) -> None:
    issuer = ca.manifest["issuers"][0]["name"]
    leaf = ca.revoked_leaf(issuer)
    answer = ca.query_post(issuer, cert=leaf["cert"])
    assert answer.status == "revoked" and answer.verify_ok, answer.output
    host.check_output(f"systemctl restart {UNIT}")
    assert host.file(SOCKET).is_socket
    again = ca.query_post(issuer, cert=leaf["cert"])
    assert again.status == "revoked" and again.verify_ok, again.output
    report.append(
        f"unix:{SOCKET}: root:www-data 0660 (systemd socket unit); nginx answers revoked"
        " before and after a service restart; nobody is refused"
    )


def test_a_new_socket_path_replaces_the_old(
    host: Any, ca: CaInstance, unix_bind: None, report: list[str]
) -> None:
    """unix:A -> unix:B: the old socket is stopped before the new one starts (its
    file removed), the service takes the new one, nginx answers through it."""
    _play("-e", json.dumps({"ocsp_responder_bind": f"unix:{OTHER_SOCKET}"}))
    assert host.file(OTHER_SOCKET).is_socket
    assert not host.file(SOCKET).exists, f"{SOCKET} left behind"
    listeners = [line for line in host.check_output("ss -Hxlp").splitlines()]
    pids = unit_pids(host, UNIT)
    assert any(
        OTHER_SOCKET in line and f"pid={pid}," in line for line in listeners for pid in pids
    ), listeners
    issuer = ca.manifest["issuers"][0]["name"]
    leaf = ca.revoked_leaf(issuer)
    answer = ca.query_post(issuer, cert=leaf["cert"])
    assert answer.status == "revoked" and answer.verify_ok, answer.output
    report.append(f"unix:{SOCKET} -> unix:{OTHER_SOCKET}: old socket removed, revoked via nginx")


def test_the_default_bind_comes_back(host: Any, unix_bind: None) -> None:
    """Last in the module: the play without the override removes the socket unit
    and serves on the loopback port again (the rest of the suite relies on it)."""
    _play()
    assert not host.file(SOCKET_UNIT).exists
    assert not host.file(SOCKET).exists
    assert not host.file(OTHER_SOCKET).exists
    out = host.check_output("curl -sS -m 5 http://127.0.0.1:8080/-/health")
    assert '"issuers"' in out, out


@pytest.mark.parametrize(
    "bind",
    [
        "unix:/run/ocsp-responder/ocsp.sock",
        "unix:/run//ocsp-responder/ocsp.sock",
        "unix:/run/./ocsp-responder/ocsp.sock",
        "unix:relative.sock",
        "unix:/run/ocsp.sock/",
        "unix:/run/ocsp-%i.sock",
    ],
    ids=["in-runtime-directory", "double-slash", "dot", "relative", "trailing-slash", "specifier"],
)
def test_a_bad_unix_bind_fails_validation_naming_it(host: Any, bind: str) -> None:
    """Refused before anything changes (validate.yml runs under every tag); the
    failure goes to standard error."""
    proc = run_site("--tags", "no_such_tag", "-e", json.dumps({"ocsp_responder_bind": bind}))
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert "ocsp_responder_bind: must be HOST:PORT or unix:/ABSOLUTE/PATH" in output, output
    assert f"(got {bind})" in output, output
    assert not host.file(SOCKET_UNIT).exists
