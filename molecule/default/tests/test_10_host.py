"""The responder host as the role leaves it: systemd unit, sockets, files, hardening."""

from __future__ import annotations

import os
import re
from typing import Any

from ocsp_testlib import WORKDIR, CaInstance, unit_pids

UNIT = "ocsp-responder.service"
CONFIG = "/etc/ocsp-responder/config.toml"
BINARY = "/opt/ocsp-responder/bin/ocsp-responder"
SERVICE_GROUP = "ocsp-responder"
MAX_EXPOSURE = 2.0
DATA_DIR = "/var/lib/ocsp-responder"
STATE_DIR = f"{DATA_DIR}/state"


def listening_sockets(host: Any) -> list[tuple[str, int]]:
    """(local address:port, pid) of every listening TCP socket, from `ss -Hltnp`."""
    out = host.check_output("ss -Hltnp")
    result = []
    for line in out.splitlines():
        cols = line.split()
        local = cols[3]
        for pid in re.findall(r"pid=(\d+)", line):
            result.append((local, int(pid)))
    return result


def test_responder_service_is_active_and_enabled(host: Any) -> None:
    service = host.service("ocsp-responder")
    assert service.is_running, host.run(f"systemctl status --no-pager {UNIT}").stdout
    assert service.is_enabled


def test_responder_listens_on_loopback_only(host: Any) -> None:
    pids = unit_pids(host, UNIT)
    mine = [local for local, pid in listening_sockets(host) if pid in pids]
    assert mine, f"{UNIT} has no listening TCP socket (pids {sorted(pids)})"
    assert "127.0.0.1:8080" in mine
    for local in mine:
        address = local.rsplit(":", 1)[0].strip("[]")
        assert address.startswith("127.") or address == "::1", (
            f"{UNIT} listens on {local}"
        )


def test_nginx_is_active_and_listens_on_port_80(host: Any) -> None:
    nginx = host.service("nginx")
    assert nginx.is_running
    assert nginx.is_enabled
    assert (
        host.socket("tcp://0.0.0.0:80").is_listening
        or host.socket("tcp://:::80").is_listening
    )
    assert host.run("nginx -t").rc == 0


def test_config_and_key_files_have_the_intended_owner_and_mode(
    host: Any, ca: CaInstance
) -> None:
    config = host.file(CONFIG)
    assert (config.user, config.group, config.mode) == ("root", SERVICE_GROUP, 0o640)
    for issuer in ca.manifest["issuers"]:
        directory = host.file(f"/etc/ocsp-responder/issuers/{issuer['name']}")
        assert directory.is_directory
        assert (directory.user, directory.group, directory.mode) == (
            "root",
            SERVICE_GROUP,
            0o750,
        )
        key = host.file(f"{directory.path}/signer.key")
        assert (key.user, key.group, key.mode) == ("root", SERVICE_GROUP, 0o640), (
            key.path
        )
        # The service account reads it; nobody else does.
        assert host.run(f"runuser -u {SERVICE_GROUP} -- test -r {key.path}").rc == 0
        assert host.run(f"runuser -u nobody -- test -r {key.path}").rc != 0


def test_check_config_lists_every_issuer(host: Any, ca: CaInstance) -> None:
    out = host.check_output(f"{BINARY} check-config {CONFIG}")
    names = sorted(re.findall(r"^issuer (\S+): source ", out, re.MULTILINE))
    assert names == sorted(i["name"] for i in ca.manifest["issuers"]), out


def test_each_signer_is_a_delegated_ocsp_signer_issued_by_its_ca(
    host: Any, ca: CaInstance
) -> None:
    for issuer in ca.manifest["issuers"]:
        signer = f"/etc/ocsp-responder/issuers/{issuer['name']}/signer.pem"
        text = host.check_output(f"openssl x509 -noout -text -in {signer}")
        assert "OCSP Signing" in text, signer
        assert "OCSP No Check" in text, signer
        assert "OCSP - URI" not in text, (
            f"{signer}: a delegated signer carries no OCSP AIA"
        )
        # Issued by the CA: verified on the CA instance against its own chain.
        copy = f"{WORKDIR}/signer-{issuer['name']}.pem"
        ca.write_file(copy, host.file(signer).content_string)
        ca.run_checked(["openssl", "verify", "-CAfile", issuer["ca_chain"], copy])
        if issuer["kind"] != "keypair":
            # `openssl ca` recorded it in the CA database like any certificate.
            serial = ca.serial(copy)
            entry = ca.database(issuer["name"]).get(serial)
            assert entry is not None and entry.status == "V", (
                f"signer serial {serial} not valid in {issuer['database']}"
            )


def test_state_dir_is_the_one_place_the_sandboxed_service_can_write(
    host: Any,
) -> None:
    state = host.file(STATE_DIR)
    assert state.is_directory, f"{STATE_DIR}: missing"
    assert (state.user, state.group, state.mode) == (
        SERVICE_GROUP,
        SERVICE_GROUP,
        0o700,
    )
    config = host.file(CONFIG).content_string
    assert f'state_dir = "{STATE_DIR}"' in config, config
    # Inside the unit's own mount namespace (the sandbox as the service sees
    # it): the state dir, nested in the read-only data dir, is writable for the
    # service user; the data dir around it is read-only even for root.
    main_pid = host.check_output(f"systemctl show -p MainPID --value {UNIT}")
    assert int(main_pid) > 0, f"{UNIT} has no MainPID"
    in_unit = f"nsenter --target {main_pid} --mount --"
    as_service = (
        f"setpriv --reuid={SERVICE_GROUP} --regid={SERVICE_GROUP} --clear-groups"
    )
    probe = f"{STATE_DIR}/.molecule-probe"
    wrote = host.run(f"{in_unit} {as_service} sh -c 'echo x > {probe} && rm {probe}'")
    assert wrote.rc == 0, f"the service user cannot write {STATE_DIR}: {wrote.stderr}"
    denied = host.run(f"{in_unit} touch {DATA_DIR}/.molecule-probe")
    assert denied.rc != 0 and "Read-only file system" in denied.stderr, (
        f"{DATA_DIR} is writable in the unit's namespace: {denied.stderr}"
    )
    # Outside the sandbox the same probe works for root: it was the sandbox.
    assert (
        host.run(
            f"touch {DATA_DIR}/.molecule-probe && rm {DATA_DIR}/.molecule-probe"
        ).rc
        == 0
    )


def test_unit_exposure_is_at_most_2(host: Any, report: list[str]) -> None:
    out = host.run(f"systemd-analyze security --no-pager {UNIT}")
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+) (\S+)", out.stdout)
    assert m, (
        f"no exposure level in systemd-analyze output:\n{out.stdout}\n{out.stderr}"
    )
    level = float(m.group(1))
    report.append(f"systemd-analyze security {UNIT}: exposure {level} {m.group(2)}")
    assert level <= MAX_EXPOSURE


def test_responder_installed_in_its_venv_with_the_pinned_versions(host: Any) -> None:
    lock = host.file("/var/cache/ocsp-responder/requirements.lock")
    assert lock.exists, "the role stages requirements.lock on the responder host"
    pins = dict(
        line.split(";")[0].strip().split("==", 1)
        for line in lock.content_string.splitlines()
        if "==" in line and not line.lstrip().startswith("#")
    )
    installed = {
        name.lower().replace("_", "-"): version
        for name, version in (
            line.split("==", 1)
            for line in host.check_output(
                "/opt/ocsp-responder/bin/pip freeze --all"
            ).splitlines()
            if "==" in line
        )
    }
    for name, version in pins.items():
        key = name.lower().replace("_", "-")
        assert installed.get(key) == version, (
            f"{name}: installed {installed.get(key)}, pinned {version}"
        )
    if os.environ.get("OCSP_TEST_INSTALL_MODE") == "wheelhouse":
        wheels = host.check_output("ls /var/cache/ocsp-responder/wheelhouse").split()
        for name in pins:
            prefix = name.lower().replace("-", "_")
            assert any(w.lower().startswith(prefix + "-") for w in wheels), (
                f"no {name} wheel in {wheels}"
            )


def test_no_signer_private_key_on_the_ca_host(ca: CaInstance) -> None:
    # The signer key is made on the responder host and never leaves it: the
    # CA host only ever sees CSRs and certificates in the role's work dir.
    work_dir = "/var/lib/ocsp-responder-signing"
    assert ca.host.file(work_dir).is_directory, f"{work_dir}: missing on the CA host"
    found = ca.run(["grep", "-rl", "PRIVATE KEY", work_dir])
    assert found.rc == 1 and not found.stdout, (
        f"private keys on the CA host: {found.stdout}"
    )
