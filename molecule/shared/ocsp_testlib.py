"""Helpers for the Molecule verifiers: real `openssl ocsp` and curl on the CA instance.

Every query runs inside the CA instance (a testinfra host, podman backend)
against the responder through nginx, the way a relying party would. Nothing
here decides what the answer should be; the expected statuses come from the
CA's own database (index.txt or the revocations file behind its CRL), which
`openssl ca` maintains. `publish_revocation_data` runs the operator's publish
command against the scenario (`run_site` any site.yml run); `unit_pids` lists a
unit's processes.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# `openssl ocsp` prints times like "Nov 21 09:18:36 2026 GMT"
# (two spaces before one-digit days).
_OPENSSL_TIME = "%b %d %H:%M:%S %Y GMT"
MANIFEST = "/root/ca/manifest.json"
WORKDIR = "/root/ocsp-tests"
#: config.toml on the responder instance (the role's ocsp_responder_config_dir).
RESPONDER_CONFIG = "/etc/ocsp-responder/config.toml"


def parse_openssl_time(text: str) -> datetime:
    """Parse an `openssl ocsp` time ("Nov 21 09:18:36 2026 GMT") as aware UTC."""
    return datetime.strptime(" ".join(text.split()), _OPENSSL_TIME).replace(tzinfo=UTC)


def parse_ca_time(text: str) -> datetime:
    """Parse an index.txt time (UTCTime YYMMDDHHMMSSZ or GeneralizedTime) as aware UTC."""
    fmt = "%y%m%d%H%M%SZ" if len(text) == 13 else "%Y%m%d%H%M%SZ"
    return datetime.strptime(text, fmt).replace(tzinfo=UTC)


@dataclass(frozen=True)
class DatabaseEntry:
    """One row of an OpenSSL CA database (index.txt format).

    status: "V", "R" or "E"; serial: upper-case hex as openssl writes it;
    revoked_at and reason are set for "R" rows (reason None when absent).
    """

    status: str
    serial: str
    subject: str
    revoked_at: datetime | None
    reason: str | None


def parse_database(text: str) -> dict[str, DatabaseEntry]:
    """Parse index.txt content into {serial (upper-case hex): DatabaseEntry}."""
    entries: dict[str, DatabaseEntry] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) < 6:
            raise ValueError(f"index.txt row with {len(cols)} columns: {line!r}")
        status, _expires, revocation, serial, _file, subject = cols[:6]
        revoked_at = reason = None
        if status == "R":
            when, _, why = revocation.partition(",")
            revoked_at = parse_ca_time(when)
            reason = why or None
        entries[serial.upper()] = DatabaseEntry(
            status, serial.upper(), subject, revoked_at, reason
        )
    return entries


@dataclass
class OcspAnswer:
    """What `openssl ocsp` reported for one certificate.

    status: "good" | "revoked" | "unknown" (None when no status line);
    verify_ok: "Response verify OK" was printed; output: stdout + stderr;
    nonce_request / nonce_response: hex of the OCSP Nonce extension values
    (only when the request/response text was printed).
    """

    rc: int
    output: str
    status: str | None
    verify_ok: bool
    reason: str | None = None
    revoked_at: datetime | None = None
    this_update: datetime | None = None
    next_update: datetime | None = None
    nonce_request: str | None = None
    nonce_response: str | None = None
    http_status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body_sha256: str | None = None


def _parse_status(answer: OcspAnswer, label: str) -> None:
    lines = answer.output.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(f"{label}: "):
            answer.status = line.split(": ", 1)[1].strip()
            for detail in lines[i + 1 :]:
                if not detail.startswith("\t"):
                    break
                key, _, value = detail.strip().partition(": ")
                if key == "This Update":
                    answer.this_update = parse_openssl_time(value)
                elif key == "Next Update":
                    answer.next_update = parse_openssl_time(value)
                elif key == "Reason":
                    answer.reason = value.strip()
                elif key == "Revocation Time":
                    answer.revoked_at = parse_openssl_time(value)
            return


def _nonce_after(text: str, marker: str) -> str | None:
    """Hex of the OCSP Nonce printed after `marker` in -req_text/-resp_text output."""
    start = text.find(marker)
    if start < 0:
        return None
    m = re.search(r"OCSP Nonce:\s*\n\s*([0-9A-Fa-f]+)", text[start:])
    return m.group(1).upper() if m else None


class CaInstance:
    """The CA instance: its test PKI and the OCSP clients that run there.

    host: a testinfra host (podman://CA-INSTANCE); url: the responder URL as
    relying parties use it (http://ocsp.pki.example.com/).
    """

    def __init__(self, host: Any, url: str) -> None:
        self.host = host
        self.url = url
        self.manifest: dict[str, Any] = json.loads(host.file(MANIFEST).content_string)
        self.run_checked(f"mkdir -p {WORKDIR}")

    # -- plumbing --------------------------------------------------------

    def run(self, argv: list[str] | str) -> Any:
        """Run a command (argv list or shell string) on the CA instance."""
        cmd = argv if isinstance(argv, str) else shlex.join(argv)
        return self.host.run(cmd)

    def run_checked(self, argv: list[str] | str) -> str:
        """Run a command and return stdout; fail with its output when rc != 0."""
        result = self.run(argv)
        if result.rc != 0:
            raise AssertionError(
                f"on the CA instance: {result.command!r} exited {result.rc}\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}"
            )
        return result.stdout

    def write_file(self, path: str, text: str) -> None:
        """Write `text` to `path` on the CA instance."""
        self.run_checked(f"printf '%s' {shlex.quote(text)} > {shlex.quote(path)}")

    # -- the PKI ---------------------------------------------------------

    def issuer(self, name: str) -> dict[str, Any]:
        """The manifest entry of issuer `name` (ca_cert, ca_chain, database, ...)."""
        for issuer in self.manifest["issuers"]:
            if issuer["name"] == name:
                return issuer
        raise KeyError(f"{MANIFEST}: no issuer named {name!r}")

    def leaves(self, issuer: str | None = None) -> list[dict[str, Any]]:
        """Manifest leaves (issuer, name, cert, revoke), optionally of one issuer."""
        return [
            leaf for leaf in self.manifest["leaves"] if issuer in (None, leaf["issuer"])
        ]

    def revoked_leaf(self, issuer: str) -> dict[str, Any]:
        """The first manifest leaf of `issuer` that the CA revoked (fails if none)."""
        leaves = [leaf for leaf in self.leaves(issuer) if leaf.get("revoke")]
        assert leaves, f"the test PKI has no revoked leaf under {issuer}"
        return leaves[0]

    def database(self, issuer: str) -> dict[str, DatabaseEntry]:
        """The CA database of `issuer` as it is now on the CA instance."""
        return parse_database(
            self.host.file(self.issuer(issuer)["database"]).content_string
        )

    def serial(self, cert_path: str) -> str:
        """Serial of a certificate on the CA instance, upper-case hex."""
        out = self.run_checked(
            ["openssl", "x509", "-noout", "-serial", "-in", cert_path]
        )
        return out.strip().split("=", 1)[1].upper()

    def unissued_serial(self, issuer: str) -> str:
        """A random 128-bit serial that `issuer`'s database has never seen, as 0xHEX."""
        known = self.database(issuer)
        while True:
            serial = secrets.token_hex(16).upper()
            if serial not in known:
                return "0x" + serial

    def expected(self, issuer: str, serial: str) -> tuple[str, DatabaseEntry | None]:
        """(expected status, database row) of `serial` (hex, no 0x) under `issuer`."""
        entry = self.database(issuer).get(serial.upper())
        return expected_status(entry, self.issuer(issuer)["kind"]), entry

    def issue(self, issuer: str, name: str) -> str:
        """Issue a new leaf NAME with the issuer's own tooling; return its path.

        An OpenSSL CA directory issues with `openssl ca`; a key pair CA with
        `openssl x509 -req` (see molecule/shared/files/test-ca).
        """
        entry = self.issuer(issuer)
        command = "issue-x509" if entry["kind"] == "keypair" else "issue"
        self.run_checked(["test-ca", command, entry["dir"], name])
        return f"{entry['dir']}/certs/{name}.cert.pem"

    def revoke(self, issuer: str, cert: str, reason: str) -> None:
        """Revoke with `openssl ca -revoke`; a CRL-publishing CA also runs `openssl ca -gencrl`."""
        entry = self.issuer(issuer)
        self.run_checked(
            [
                "openssl",
                "ca",
                "-config",
                entry["config"],
                "-revoke",
                cert,
                "-crl_reason",
                reason,
            ]
        )
        if entry["crl"]:
            self.publish_crl(issuer)

    def publish_crl(self, issuer: str, seconds: int | None = None) -> None:
        """`openssl ca -gencrl` for a key pair CA (test-ca gencrl: the CRL file, renamed
        into place, and its web server's copy for a CA with a crl_url); with `seconds`,
        the CRL's nextUpdate is that long after its thisUpdate."""
        env = f"CRL_SECONDS={int(seconds)} " if seconds is not None else ""
        self.run_checked(
            f"{env}test-ca gencrl {shlex.quote(self.issuer(issuer)['dir'])}"
        )

    # -- OCSP ------------------------------------------------------------

    def _target(
        self, issuer: str, cert: str | None, serial: str | None, digest: str
    ) -> list[str]:
        target = ["-cert", cert] if cert else ["-serial", str(serial)]
        return ["-issuer", self.issuer(issuer)["ca_cert"], f"-{digest}", *target]

    def _post_argv(
        self, issuer: str, cert: str | None, serial: str | None, digest: str
    ) -> list[str]:
        """`openssl ocsp -url URL` (a POST) for a certificate or a serial, checked
        against the issuer's CA chain."""
        return [
            "openssl",
            "ocsp",
            "-url",
            self.url,
            *self._target(issuer, cert, serial, digest),
            "-CAfile",
            self.issuer(issuer)["ca_chain"],
            "-timeout",
            "10",
        ]

    def query_post(
        self,
        issuer: str,
        *,
        cert: str | None = None,
        serial: str | None = None,
        digest: str = "sha1",
        nonce: bool = True,
    ) -> OcspAnswer:
        """`openssl ocsp -url URL` (HTTP POST) for a certificate or a serial.

        With a nonce the client itself checks that the response echoes it.
        """
        argv = self._post_argv(issuer, cert, serial, digest)
        if not nonce:
            argv.append("-no_nonce")
        result = self.run(argv)
        answer = OcspAnswer(
            rc=result.rc,
            output=result.stdout + result.stderr,
            status=None,
            verify_ok="Response verify OK" in result.stderr,
        )
        _parse_status(answer, cert or str(serial))
        return answer

    def query_get(
        self,
        issuer: str,
        *,
        cert: str | None = None,
        serial: str | None = None,
        digest: str = "sha1",
        nonce: bool = False,
        tag: str = "get",
    ) -> OcspAnswer:
        """An HTTP GET (RFC 6960 appendix A.1) with curl, checked with `openssl ocsp -respin`.

        The request is made with `openssl ocsp -reqout`, sent base64-encoded as
        the last path segment, the response verified against the CA chain; its
        nonce, when the request had one, is compared with the request's.
        """
        req = f"{WORKDIR}/{tag}.req"
        resp = f"{WORKDIR}/{tag}.resp"
        hdrs = f"{WORKDIR}/{tag}.headers"
        target = self._target(issuer, cert, serial, digest)
        make = ["openssl", "ocsp", *target, "-reqout", req, "-req_text"]
        if not nonce:
            make.append("-no_nonce")
        req_text = self.run_checked(make)
        fetch = (
            f"curl -sS --max-time 10 -o {resp} -D {hdrs} -w '%{{http_code}}' "
            f'{shlex.quote(self.url.rstrip("/"))}/"$(base64 -w0 {req})"'
        )
        http_status = int(self.run_checked(fetch).strip())
        headers = parse_headers(self.host.file(hdrs).content_string)
        body_sha256 = self.run_checked(["sha256sum", resp]).split()[0]
        check = [
            "openssl",
            "ocsp",
            "-respin",
            resp,
            *target,
            "-CAfile",
            self.issuer(issuer)["ca_chain"],
            "-no_nonce",
            "-resp_text",
        ]
        result = self.run(check)
        answer = OcspAnswer(
            rc=result.rc,
            output=result.stdout + result.stderr,
            status=None,
            verify_ok="Response verify OK" in result.stderr,
            nonce_request=_nonce_after(req_text, "Request Extensions"),
            nonce_response=_nonce_after(result.stdout, "Response Extensions"),
            http_status=http_status,
            headers=headers,
            body_sha256=body_sha256,
        )
        _parse_status(answer, cert or str(serial))
        return answer

    def query_post_many(
        self, issuer: str, *, cert: str, count: int, tag: str = "many"
    ) -> list[OcspAnswer]:
        """`count` concurrent `openssl ocsp -url URL` POSTs with a nonce, one connection each.

        Concurrent requests make nginx open several upstream connections, so that
        more than one responder worker gets to answer.
        """
        argv = self._post_argv(issuer, cert, None, "sha1")
        base = f"{WORKDIR}/{tag}"
        self.run_checked(
            f"rm -f {base}.*; for i in $(seq {count}); do "
            f"( {shlex.join(argv)} >{base}.$i.out 2>{base}.$i.err; echo $? >{base}.$i.rc ) & "
            "done; wait"
        )
        answers = []
        for i in range(1, count + 1):
            stdout = self.host.file(f"{base}.{i}.out").content_string
            stderr = self.host.file(f"{base}.{i}.err").content_string
            answer = OcspAnswer(
                rc=int(self.host.file(f"{base}.{i}.rc").content_string.strip()),
                output=stdout + stderr,
                status=None,
                verify_ok="Response verify OK" in stderr,
            )
            _parse_status(answer, cert)
            answers.append(answer)
        return answers

    def http(self, args: str) -> tuple[int, dict[str, str], str]:
        """curl with extra shell-quoted `args` against the responder URL.

        Returns (HTTP status, headers, sha256 of the body); 0 when no
        HTTP answer came back.
        """
        body = f"{WORKDIR}/http.body"
        hdrs = f"{WORKDIR}/http.headers"
        out = self.run(
            f"rm -f {body} {hdrs}; curl -sS --max-time 10 -o {body} -D {hdrs} -w '%{{http_code}}' {args}"
        )
        status = int(out.stdout.strip() or 0)
        headers = (
            parse_headers(self.host.file(hdrs).content_string)
            if self.host.file(hdrs).exists
            else {}
        )
        digest = self.run_checked(
            f"sha256sum {body} 2>/dev/null || echo none -"
        ).split()[0]
        return status, headers, digest

    def ocsp_response_status(self, body_path: str = f"{WORKDIR}/http.body") -> str:
        """The OCSPResponseStatus of a DER body on the CA instance, e.g. "malformedrequest".

        `openssl ocsp -respin` prints "Responder Error: STATUS (N)" (exit 1) for
        an error response and "OCSP Response Status: STATUS (0x0)" otherwise.
        """
        result = self.run(
            ["openssl", "ocsp", "-respin", body_path, "-resp_text", "-noverify"]
        )
        out = result.stdout + result.stderr
        m = re.search(r"(?:OCSP Response Status|Responder Error):\s*(\w+)", out)
        if not m:
            raise AssertionError(f"{body_path}: not an OCSP response:\n{out}")
        return m.group(1).lower()


def parse_headers(text: str) -> dict[str, str]:
    """Headers of the last HTTP response in a curl -D dump, names lower-cased."""
    blocks = [b for b in re.split(r"\r?\n\r?\n", text.strip()) if b.strip()]
    headers: dict[str, str] = {}
    if not blocks:
        return headers
    for line in blocks[-1].splitlines()[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers


def run_site(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the operator's `ansible-playbook -i INVENTORY playbooks/site.yml ARGS...`
    against the scenario's instances; return the finished process (any exit code).

    Task results are printed as JSON (one line per value, never folded), so
    that tests can search the messages.
    """
    project = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
    inventory = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "inventory"
    argv = [
        _ansible_bin("ansible-playbook"),
        "-i",
        str(inventory),
        str(project / "playbooks" / "site.yml"),
        *args,
    ]
    env = dict(os.environ, ANSIBLE_CALLBACK_RESULT_FORMAT="json")
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=600, check=False, env=env
    )


def inventory_host_vars(host: str) -> dict[str, Any]:
    """The variables of an inventory host of the scenario (`ansible-inventory --host`)."""
    inventory = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "inventory"
    proc = subprocess.run(
        [_ansible_bin("ansible-inventory"), "-i", str(inventory), "--host", host],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(proc.stdout)


def _ansible_bin(name: str) -> str:
    """An Ansible command from the venv running the tests, else from PATH."""
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else name


def publish_revocation_data() -> str:
    """Run site.yml with --tags revocation_data against the scenario's inventory.

    Returns its stdout (the play recap included); fails when it fails.
    """
    proc = run_site("--tags", "revocation_data")
    assert proc.returncode == 0, (
        f"{' '.join(proc.args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    )
    return proc.stdout


def recap_changed(output: str) -> dict[str, int]:
    """{host: changed=N} from an ansible-playbook PLAY RECAP."""
    recap = output.rpartition("PLAY RECAP")[2]
    changed = {
        host: int(n)
        for host, n in re.findall(r"^(\S+)\s*:.*\bchanged=(\d+)", recap, re.MULTILINE)
    }
    assert changed, f"no PLAY RECAP in:\n{output}"
    return changed


def unit_pids(host: Any, unit: str) -> set[int]:
    """PIDs of every process in the unit's cgroup (cgroup v1 named hierarchy or v2)."""
    cgroup = host.check_output(f"systemctl show -p ControlGroup --value {unit}")
    assert cgroup, f"{unit}: no control group (not running?)"
    for base in ("/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
        procs = host.file(f"{base}{cgroup}/cgroup.procs")
        if procs.exists:
            return {int(p) for p in procs.content_string.split()}
    raise AssertionError(f"{unit}: cgroup.procs of {cgroup} not found")


def expected_status(entry: DatabaseEntry | None, kind: str = "root") -> str:
    """RFC 6960 status implied by a CA database row.

    kind is the issuer kind from the manifest. An OpenSSL CA directory
    (index.txt): V/E -> good, R -> revoked, no row -> unknown. A key pair CA
    publishing CRLs (its database holds revocations only): R -> revoked,
    anything else -> good, as for any CRL-based status.
    """
    if entry is not None and entry.status == "R":
        return "revoked"
    if kind == "keypair":
        return "good"
    return "unknown" if entry is None else "good"


def origin_port(host: Any) -> int:
    """The responder's own TCP port on the responder instance (config.toml's bind)."""
    config = tomllib.loads(host.file(RESPONDER_CONFIG).content_string)
    return int(config["server"]["bind"].rsplit(":", 1)[1])


def origin_probe(host: Any, issuer: str, serial: str) -> str:
    """A shell command for the responder instance: `openssl ocsp` for `serial` (hex)
    straight to the responder's port (no nginx, with a nonce: never cached)."""
    return (
        f"openssl ocsp -issuer /etc/ocsp-responder/issuers/{issuer}/ca.pem "
        f"-serial 0x{serial} -url http://127.0.0.1:{origin_port(host)}/ "
        f"-noverify -timeout 5 2>&1"
    )


def time_until_origin_says(
    host: Any, ca: CaInstance, probe: str, status: str, change: Any, timeout: int = 60
) -> float | None:
    """Seconds from `change()` (run on the CA instance, after a probe loop has started
    on the responder instance) until `probe` prints `: STATUS`; None if not within
    `timeout`. Both instances share the host's clock."""
    watch = (
        f"end=$((SECONDS+{timeout})); while ((SECONDS<end)); do "
        f"{probe} | grep -q ': {status}' && {{ date +%s.%N; exit 0; }}; sleep 0.1; done; exit 1"
    )
    host.run(
        f"rm -f /tmp/watch.out; nohup bash -c {shlex.quote(watch)} >/tmp/watch.out 2>&1 &"
    )
    time.sleep(0.5)
    change()
    changed_at = float(ca.run_checked("date +%s.%N"))
    seen = wait_for(
        lambda: host.file("/tmp/watch.out").content_string.strip(), timeout + 10
    )
    return float(seen) - changed_at if seen else None


def wait_for(predicate: Any, timeout: float, interval: float = 0.5) -> Any:
    """Call predicate() until it returns a true value or `timeout` seconds pass; return the last value."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = predicate()
    return value


# -- the CA host's publisher (roles/ocsp_responder/tasks/publisher.yml) ----------

PUBLISHER_SERVICE = "ocsp-responder-publish.service"
PUBLISHER_TRIGGERS = "ocsp-responder-publish.path ocsp-responder-publish.timer"


def stop_publisher(ca: CaInstance) -> None:
    """Stop the CA host's publisher triggers and wait for a publish in progress."""
    ca.run_checked(f"systemctl stop {PUBLISHER_TRIGGERS}")
    wait_for(
        lambda: (
            ca.run(f"systemctl is-active {PUBLISHER_SERVICE}").stdout.strip()
            not in ("activating", "deactivating")
        ),
        120,
    )


def start_publisher(ca: CaInstance, publish_now: bool = True) -> None:
    """Start the CA host's publisher triggers again (path unit and heartbeat timer);
    with `publish_now`, also publish at once (else the timer's first beat, ~10 s)."""
    ca.run_checked(f"systemctl start {PUBLISHER_TRIGGERS}")
    if publish_now:
        ca.run_checked(f"systemctl start {PUBLISHER_SERVICE}")


@contextmanager
def publisher_stopped(ca: CaInstance) -> Iterator[None]:
    """While inside: the publisher sends nothing (for tests that break the responder's
    copy of a status file and must not see it repaired by a heartbeat)."""
    stop_publisher(ca)
    try:
        yield
    finally:
        start_publisher(ca)
