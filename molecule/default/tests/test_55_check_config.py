"""The play runs the responder's own check of config and data on every run.

1. A status file the responder rejects fails `site.yml --tags revocation_data`
   (tasks/check_config.yml runs `ocsp-responder check-config` under every tag)
   with a message naming the file, instead of leaving the service silently at
   its last good data; the service keeps answering from that data meanwhile.
   The CA's own status file is cut for the test (the CA host's publisher
   paused, so it does not send the cut file by itself) and restored after.
2. Where config.toml does not exist yet (a first run limited to tags that do
   not write it), the check is skipped with a message saying so; the play
   passes. Shown with ocsp_responder_config_dir pointed at a directory that
   does not exist and a tag that selects only what always runs.
"""

from __future__ import annotations

import json
import shlex
import tomllib
from typing import Any

from ocsp_testlib import (
    CaInstance,
    publish_revocation_data,
    publisher_stopped,
    run_site,
)

CONFIG = "/etc/ocsp-responder/config.toml"
BINARY = "/opt/ocsp-responder/bin/ocsp-responder"


def _issuer_source(host: Any, name: str) -> tuple[str, str]:
    """(source kind, the responder's first status file) of issuer `name`."""
    for issuer in tomllib.loads(host.file(CONFIG).content_string)["issuer"]:
        if issuer["name"] == name:
            source = issuer["source"]
            path = source["path"] if source["kind"] == "index" else source["paths"][0]
            return source["kind"], path
    raise AssertionError(f"{CONFIG}: no issuer {name}")


def test_a_rejected_status_file_fails_the_revocation_data_play(
    host: Any, ca: CaInstance, report: list[str]
) -> None:
    issuer = ca.manifest["issuers"][0]["name"]
    kind, responder_file = _issuer_source(host, issuer)
    entry = ca.issuer(issuer)
    ca_file = entry["database"] if kind == "index" else entry["crl"]
    backup = f"{ca_file}.test-55"
    leaf = ca.revoked_leaf(issuer)
    assert ca.query_post(issuer, cert=leaf["cert"]).status == "revoked"

    with publisher_stopped(ca):
        ca.run_checked(f"cp -p {shlex.quote(ca_file)} {shlex.quote(backup)}")
        try:
            # Cut the CA's file: 5 octets into its last line (index.txt), or in
            # half (a CRL); both are rejected by the responder's parser.
            content = ca.host.file(ca_file).content_string
            if kind == "index":
                last_line = content.rstrip("\n").rpartition("\n")[0]
                cut = len(last_line.encode()) + 1 + 5
            else:
                cut = len(content.encode()) // 2
            ca.run_checked(f"truncate -s {cut} {shlex.quote(ca_file)}")

            proc = run_site("--tags", "revocation_data")
            output = proc.stdout + proc.stderr
            assert proc.returncode != 0, (
                f"the play accepted a cut {ca_file}:\n{proc.stdout}"
            )
            assert "check-config" in output and responder_file in output, (
                f"the failure does not name check-config and {responder_file}:\n{output}"
            )
            # The service itself keeps its last good data: still revoked.
            answer = ca.query_post(issuer, cert=leaf["cert"])
            assert answer.status == "revoked" and answer.verify_ok, answer.output
            report.append(
                f"--tags revocation_data with a cut {kind} file: play failed"
                f" (rc {proc.returncode}) naming {responder_file}; service still revoked"
            )
        finally:
            ca.run_checked(f"mv -f {shlex.quote(backup)} {shlex.quote(ca_file)}")
            publish_revocation_data()

    assert host.run(f"{BINARY} check-config {CONFIG}").rc == 0


def test_check_config_is_skipped_where_config_toml_does_not_exist(host: Any) -> None:
    absent = "/etc/ocsp-responder-test-55-absent"
    assert not host.file(absent).exists
    proc = run_site(
        "--tags", "no_such_tag", "-e", json.dumps({"ocsp_responder_config_dir": absent})
    )
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    assert f"{absent}/config.toml does not exist yet" in proc.stdout, proc.stdout
    assert not host.file(absent).exists, f"{absent} was created"
