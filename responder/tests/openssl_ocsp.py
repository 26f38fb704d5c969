"""The real ``openssl ocsp`` client as the oracle: build requests, send them, and
read what openssl says about the answers.

``openssl ocsp`` verifies the response signature, the delegated signer's chain
and EKU, the thisUpdate/nextUpdate window and the nonce; its summary says each
certificate's status.  Requests it cannot make (odd nonces, unknown extensions)
are written with ``openssl asn1parse -genconf``.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from openssl_pki import ocsp_hashes, openssl


@dataclass(frozen=True)
class CertStatus:
    """One certificate's lines in ``openssl ocsp``'s summary."""

    status: str  # good | revoked | unknown | "ERROR: ..." when openssl found no status
    this_update: datetime | None = None
    next_update: datetime | None = None
    reason: str | None = None  # lower-cased: openssl spells CACompromise "cACompromise"
    revocation_time: datetime | None = None


@dataclass
class OcspRun:
    """What one ``openssl ocsp`` run printed (stdout and stderr together)."""

    command: str
    returncode: int
    printed: str
    statuses: dict[str, CertStatus] = field(default_factory=dict)

    @property
    def output(self) -> str:
        """The command line and what it printed, for assertion messages."""
        return f"$ {self.command}\n{self.printed}"

    @property
    def verified(self) -> bool:
        """openssl verified the response signature and the signer's chain."""
        return "Response verify OK" in self.printed

    @property
    def complaints(self) -> list[str]:
        """Lines where openssl warns or reports an error (times, nonce, verification)."""
        return [
            line
            for line in self.printed.splitlines()
            if re.search(r"warning|error|fail|invalid", line, re.I)
        ]

    @property
    def responder_error(self) -> str | None:
        """The OCSP error status, lower-cased as openssl prints it (``malformedrequest``)."""
        match = re.search(r"^Responder Error: (\w+) \(\d+\)$", self.printed, re.M)
        return match.group(1).lower() if match else None

    def status_of(self, label: str | Path | int) -> CertStatus:
        """The summary for a ``-cert`` path or ``-serial`` number."""
        key = f"0x{label:X}" if isinstance(label, int) else str(label)
        assert key in self.statuses, f"openssl printed no status for {key}:\n{self.output}"
        return self.statuses[key]


def _openssl_time(text: str) -> datetime:
    return datetime.strptime(text.strip(), "%b %d %H:%M:%S %Y GMT").replace(tzinfo=UTC)


def parse_summary(output: str) -> dict[str, CertStatus]:
    """Parse the per-certificate block ``openssl ocsp`` prints after verifying."""
    statuses: dict[str, dict[str, object]] = {}
    current: dict[str, object] | None = None
    fields = {
        "This Update": "this_update",
        "Next Update": "next_update",
        "Revocation Time": "revocation_time",
    }
    for line in output.splitlines():
        head = re.match(r"^(\S.*?): (good|revoked|unknown|ERROR: .*)$", line)
        if head and not line.startswith("Responder Error"):
            current = statuses.setdefault(head.group(1), {"status": head.group(2)})
            continue
        item = re.match(r"^\t(This Update|Next Update|Revocation Time|Reason): (.*)$", line)
        if item and current is not None:
            name, value = item.groups()
            if name == "Reason":
                current["reason"] = value.strip().lower()
            else:
                current[fields[name]] = _openssl_time(value)
    return {label: CertStatus(**values) for label, values in statuses.items()}  # type: ignore[arg-type]


@dataclass(frozen=True)
class Trust:
    """What a relying party trusts (``-CAfile``) and may use to build chains."""

    cafile: Path
    untrusted: Path


def run_ocsp(args: Sequence[str | Path]) -> OcspRun:
    """Run ``openssl ocsp ARGS`` and parse what it printed (never raises on exit status)."""
    cmd = ["openssl", "ocsp", *map(str, args)]
    done = subprocess.run(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False, timeout=60
    )
    return OcspRun(
        command=" ".join(cmd),
        returncode=done.returncode,
        printed=done.stdout,
        statuses=parse_summary(done.stdout),
    )


def request_args(
    issuer: Path,
    certs: Iterable[Path] = (),
    serials: Iterable[int] = (),
    digest: str | None = None,
    nonce: bool = False,
) -> list[str | Path]:
    """``openssl ocsp`` arguments building a request (the digest goes first: it applies to
    the ``-cert``/``-serial`` after it)."""
    args: list[str | Path] = ["-issuer", issuer]
    if digest:
        args.append(f"-{digest}")
    for cert in certs:
        args += ["-cert", cert]
    for serial in serials:
        args += ["-serial", f"0x{serial:X}"]
    args.append("-nonce" if nonce else "-no_nonce")
    return args


def query(
    url: str,
    trust: Trust,
    issuer: Path,
    certs: Iterable[Path] = (),
    serials: Iterable[int] = (),
    digest: str | None = None,
    nonce: bool = False,
    extra: Sequence[str | Path] = (),
) -> OcspRun:
    """POST a request with ``openssl ocsp -url`` and let openssl verify the answer."""
    return run_ocsp(
        [
            *request_args(issuer, certs, serials, digest, nonce),
            "-CAfile",
            trust.cafile,
            "-verify_other",
            trust.untrusted,
            "-url",
            url,
            "-timeout",
            "20",
            *extra,
        ]
    )


def make_request(
    out: Path,
    issuer: Path,
    certs: Iterable[Path] = (),
    serials: Iterable[int] = (),
    digest: str | None = None,
    nonce: bool = False,
    extra: Sequence[str | Path] = (),
) -> bytes:
    """Build a DER OCSPRequest with ``openssl ocsp -reqout`` and return its bytes."""
    run = run_ocsp([*request_args(issuer, certs, serials, digest, nonce), *extra, "-reqout", out])
    assert run.returncode == 0, run.output
    return out.read_bytes()


#: ``openssl asn1parse -genconf`` template of an OCSPRequest with one SHA-1 CertID.
REQUEST_GENCONF = """\
asn1 = SEQUENCE:ocsp_request
[ocsp_request]
tbs = SEQUENCE:tbs_request
[tbs_request]
list = SEQUENCE:request_list
{exts_line}
[request_list]
r1 = SEQUENCE:request
[request]
certid = SEQUENCE:certid
[certid]
alg = SEQUENCE:sha1_alg
name_hash = FORMAT:HEX,OCTETSTRING:{name_hash}
key_hash = FORMAT:HEX,OCTETSTRING:{key_hash}
serial = INTEGER:0x{serial:X}
[sha1_alg]
oid = OID:sha1
null = NULL
[extensions]
{ext_list}
{ext_sections}
"""

#: RFC 6960 4.4.1 id-pkix-ocsp-nonce.
NONCE_OID = "1.3.6.1.5.5.7.48.1.2"


@dataclass(frozen=True)
class RequestExtension:
    """An extension for ``genconf_request``: OID, critical flag, the OCTET STRING in extnValue."""

    oid: str
    critical: bool
    content: bytes


def genconf_request(
    out: Path, issuer: Path, serial: int, extensions: Sequence[RequestExtension] = ()
) -> bytes:
    """Build a DER OCSPRequest that ``openssl ocsp`` cannot make (odd nonces, unknown
    extensions) with ``openssl asn1parse -genconf``; returns its bytes.

    The CertID is SHA-1, its issuerNameHash/issuerKeyHash from ``openssl x509 -ocspid``;
    each extension's extnValue holds an OCTET STRING of ``content`` (as a nonce's does).
    """
    hashes = ocsp_hashes(issuer)
    sections = []
    for n, ext in enumerate(extensions):
        value = f"FORMAT:HEX,OCTETSTRING:{ext.content.hex()}" if ext.content else "OCTETSTRING:"
        sections.append(
            f"[ext{n}]\noid = OID:{ext.oid}\n"
            + ("critical = BOOLEAN:TRUE\n" if ext.critical else "")
            + f"value = OCTWRAP,{value}"
        )
    conf = out.with_suffix(".genconf")
    conf.write_text(
        REQUEST_GENCONF.format(
            exts_line="exts = EXPLICIT:2,SEQUENCE:extensions" if extensions else "",
            name_hash=hashes["Subject"],
            key_hash=hashes["Public key"],
            serial=serial,
            ext_list="\n".join(f"e{n} = SEQUENCE:ext{n}" for n in range(len(extensions))),
            ext_sections="\n".join(sections),
        )
    )
    openssl("asn1parse", "-genconf", conf, "-out", out, "-noout")
    return out.read_bytes()


def check_response(
    response: bytes,
    workdir: Path,
    trust: Trust,
    issuer: Path,
    certs: Iterable[Path] = (),
    serials: Iterable[int] = (),
    digest: str | None = None,
    request: bytes | None = None,
) -> OcspRun:
    """Let openssl verify DER ``response`` bytes (from GET or raw POST) for these CertIDs.

    When ``request`` is given, a second openssl run checks the response's nonce
    against that request's nonce; its output is appended.
    """
    resp_file = workdir / "response.der"
    resp_file.write_bytes(response)
    run = run_ocsp(
        [
            *request_args(issuer, certs, serials, digest, nonce=False),
            "-CAfile",
            trust.cafile,
            "-verify_other",
            trust.untrusted,
            "-respin",
            resp_file,
        ]
    )
    if request is not None:
        req_file = workdir / "request.der"
        req_file.write_bytes(request)
        nonce_run = run_ocsp(
            [
                "-reqin",
                req_file,
                "-respin",
                resp_file,
                "-CAfile",
                trust.cafile,
                "-verify_other",
                trust.untrusted,
            ]
        )
        run.printed += "\n" + nonce_run.printed
    return run
