"""A throw-away PKI made with the ``openssl`` CLI, the way an operator makes one.

Every certificate authority is an ``openssl ca`` directory with the classic
layout (``openssl.cnf``, ``index.txt``, ``serial``, ``crlnumber``, ``certs/``,
``crl/``, ``newcerts/``, ``private/``, ``csr/``), so ``index.txt`` and the CRLs
are exactly what ``openssl ca`` writes.  Nothing here parses certificates
itself: questions about a certificate are asked of ``openssl x509``.  What a
status should be is read from ``index.txt`` (``read_index``).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

CA_CONFIG = """\
[ ca ]
default_ca = CA_default

[ CA_default ]
dir              = {dir}
certs            = $dir/certs
crl_dir          = $dir/crl
new_certs_dir    = $dir/newcerts
database         = $dir/index.txt
serial           = $dir/serial
crlnumber        = $dir/crlnumber
private_key      = $dir/private/ca.key.pem
certificate      = $dir/certs/ca.cert.pem
default_md       = sha256
default_days     = 90
default_crl_days = 7
preserve         = no
unique_subject   = no
policy           = policy_loose

[ policy_loose ]
organizationName = optional
commonName       = supplied

[ req ]
distinguished_name = req_distinguished_name

[ req_distinguished_name ]

[ v3_ca ]
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always
basicConstraints       = critical, CA:true
keyUsage               = critical, digitalSignature, cRLSign, keyCertSign

[ v3_intermediate_ca ]
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always
basicConstraints       = critical, CA:true, pathlen:0
keyUsage               = critical, digitalSignature, cRLSign, keyCertSign

[ server_cert ]
basicConstraints       = CA:FALSE
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid
keyUsage               = critical, digitalSignature
extendedKeyUsage       = serverAuth

[ ocsp_signer ]
basicConstraints       = CA:FALSE
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid
keyUsage               = critical, digitalSignature
extendedKeyUsage       = critical, OCSPSigning
noCheck                = ignored

[ crl_ext ]
authorityKeyIdentifier = keyid:always
"""

KEY_ALGORITHMS = {
    "ec": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    "rsa": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    "ed25519": ["-algorithm", "ED25519"],
}


def openssl(*args: str | Path, stdin: str | None = None) -> str:
    """Run ``openssl ARGS`` and return its stdout.

    Args:
        args: the openssl command line after ``openssl``.
        stdin: text fed to the command, if any.

    Returns:
        stdout as text.

    Raises:
        RuntimeError: the command exited non-zero; the message holds its stderr.
    """
    cmd = ["openssl", *map(str, args)]
    done = subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr}")
    return done.stdout


def generate_key(path: Path, algorithm: str) -> Path:
    """Write a fresh unencrypted PEM private key (``ec`` P-256, ``rsa`` 2048, ``ed25519``)."""
    openssl("genpkey", *KEY_ALGORITHMS[algorithm], "-out", path)
    return path


def certificate_serial(cert: Path) -> int:
    """Return the serial number of the PEM certificate ``cert`` (asked of ``openssl x509``)."""
    return int(openssl("x509", "-in", cert, "-noout", "-serial").strip().split("=", 1)[1], 16)


def certificate_not_after(cert: Path) -> datetime:
    """Return notAfter of the PEM certificate ``cert`` as an aware UTC datetime."""
    text = openssl("x509", "-in", cert, "-noout", "-enddate").strip().split("=", 1)[1]
    return datetime.strptime(text, "%b %d %H:%M:%S %Y GMT").replace(tzinfo=UTC)


def asn1_time(when: datetime) -> str:
    """``when`` as the ``YYYYMMDDHHMMSSZ`` form ``openssl ca -startdate/-enddate`` accept."""
    return when.astimezone(UTC).strftime("%Y%m%d%H%M%SZ")


def crl_next_update(crl: Path) -> datetime:
    """Return nextUpdate of a CRL file, PEM or DER (asked of ``openssl crl``)."""
    form = "DER" if crl.read_bytes()[:1] == b"\x30" else "PEM"
    text = openssl("crl", "-in", crl, "-inform", form, "-noout", "-nextupdate").strip()
    return datetime.strptime(text.split("=", 1)[1], "%b %d %H:%M:%S %Y GMT").replace(tzinfo=UTC)


def crl_serials(crl: Path) -> set[int]:
    """Serial numbers listed in a CRL file, PEM or DER (asked of ``openssl crl``)."""
    form = "DER" if crl.read_bytes()[:1] == b"\x30" else "PEM"
    text = openssl("crl", "-in", crl, "-inform", form, "-noout", "-text")
    return {int(m, 16) for m in re.findall(r"Serial Number: ([0-9A-Fa-f]+)", text)}


def certificate_subject(cert: Path) -> str:
    """The subject of the PEM certificate ``cert`` in openssl's ``/O=.../CN=...`` form (the
    form ``-subj`` takes), asked of ``openssl x509 -nameopt compat``."""
    text = openssl("x509", "-in", cert, "-noout", "-subject", "-nameopt", "compat")
    return text.strip().split("=", 1)[1]


def ocsp_hashes(cert: Path) -> dict[str, str]:
    """``openssl x509 -ocspid``: SHA-1 of the subject name (``Subject``) and of the
    public key (``Public key``), lower-case hex: a CertID's issuer hashes, a byKey ResponderID."""
    text = openssl("x509", "-in", cert, "-noout", "-ocspid")
    found = re.findall(r"(Subject|Public key) OCSP hash: ([0-9A-Fa-f]+)", text)
    return {name: value.lower() for name, value in found}


@dataclass(frozen=True)
class Issued:
    """A certificate issued by one of our CAs: PEM cert, PEM key, serial number."""

    cert: Path
    key: Path
    serial: int


class CertificateAuthority:
    """One ``openssl ca`` directory (root or intermediate).

    Args:
        base: directory that will hold this CA's directory.
        name: CA directory name; also used in its subject CN.
        key_algorithm: ``ec``, ``rsa`` or ``ed25519`` for the CA key.
        parent: the CA that signs this one; None makes a self-signed root.
    """

    def __init__(
        self, base: Path, name: str, key_algorithm: str, parent: CertificateAuthority | None = None
    ) -> None:
        self.name = name
        self.dir = base / name
        for sub in ("certs", "crl", "newcerts", "private", "csr"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self.config = self.dir / "openssl.cnf"
        self.config.write_text(CA_CONFIG.format(dir=self.dir))
        self.index = self.dir / "index.txt"
        self.index.touch()
        # Every CA starts at the same serial, so one serial number exists under
        # several issuers: the responder must tell them apart by CertID.
        (self.dir / "serial").write_text("1000\n")
        (self.dir / "crlnumber").write_text("1000\n")
        self.key = generate_key(self.dir / "private" / "ca.key.pem", key_algorithm)
        self.cert = self.dir / "certs" / "ca.cert.pem"
        subject = f"/O=OCSP responder tests/CN={name}"
        if parent is None:
            openssl(
                "req",
                "-config",
                self.config,
                "-new",
                "-x509",
                "-key",
                self.key,
                "-subj",
                subject,
                "-days",
                "3650",
                "-extensions",
                "v3_ca",
                "-out",
                self.cert,
            )
            self.chain: list[Path] = []
        else:
            parent.sign(self.key, subject, self.cert, extensions="v3_intermediate_ca", days=1825)
            self.chain = [parent.cert, *parent.chain]
        self._counter = 0

    def sign(
        self,
        key: Path,
        subject: str,
        out: Path,
        extensions: str,
        days: int = 90,
        startdate: str | None = None,
        enddate: str | None = None,
    ) -> Path:
        """Issue a certificate for ``key`` with ``openssl ca`` (this updates index.txt).

        Args:
            key: the subject's private key (a CSR is made from it).
            subject: subject DN in openssl's ``/O=.../CN=...`` form.
            out: where the PEM certificate is written.
            extensions: section of openssl.cnf to use (``server_cert``, ``ocsp_signer``...).
            days: validity in days, unless ``startdate``/``enddate`` are given.
            startdate, enddate: ``YYYYMMDDHHMMSSZ`` validity bounds (either alone is
                fine: openssl then starts now, or ends ``default_days`` later).

        Returns:
            ``out``.
        """
        csr = self.dir / "csr" / (out.stem + ".csr.pem")
        openssl("req", "-config", self.config, "-new", "-key", key, "-subj", subject, "-out", csr)
        dates = ["-days", str(days)]
        if startdate or enddate:
            dates = ["-startdate", startdate] if startdate else []
            dates += ["-enddate", enddate] if enddate else []
        openssl(
            "ca",
            "-batch",
            "-config",
            self.config,
            "-extensions",
            extensions,
            "-notext",
            *dates,
            "-in",
            csr,
            "-out",
            out,
        )
        return out

    def issue(
        self, label: str, extensions: str = "server_cert", key_algorithm: str = "ec", **dates: str
    ) -> Issued:
        """Make a key and issue a certificate for it; ``label`` names the files and the CN."""
        self._counter += 1
        stem = f"{self._counter:02d}-{label}"
        key = generate_key(self.dir / "private" / f"{stem}.key.pem", key_algorithm)
        cert = self.sign(
            key,
            f"/O=OCSP responder tests/CN={self.name} {label}",
            self.dir / "certs" / f"{stem}.cert.pem",
            extensions,
            **dates,
        )
        return Issued(cert=cert, key=key, serial=certificate_serial(cert))

    def issue_ocsp_signer(self, key_algorithm: str = "ec", **dates: str) -> Issued:
        """Issue a delegated OCSP signer (EKU OCSPSigning, KU digitalSignature, ocsp-nocheck).

        ``dates``: ``startdate``/``enddate`` (``YYYYMMDDHHMMSSZ``, see :meth:`sign`), e.g.
        a signer that expires seconds from now.
        """
        return self.issue(
            "ocsp-signer", extensions="ocsp_signer", key_algorithm=key_algorithm, **dates
        )

    def revoke(self, cert: Path, *how: str) -> None:
        """``openssl ca -revoke CERT HOW...``, e.g. ``("-crl_reason", "keyCompromise")``."""
        openssl("ca", "-batch", "-config", self.config, "-revoke", cert, *how)

    def update_db(self) -> None:
        """``openssl ca -updatedb``: mark expired rows of index.txt ``E``."""
        openssl("ca", "-batch", "-config", self.config, "-updatedb")

    def gencrl(self, out: Path | None = None, der: bool = False, extra: Sequence[str] = ()) -> Path:
        """``openssl ca -gencrl``; returns the CRL file (PEM, or DER if ``der``).

        ``extra``: more ``openssl ca`` arguments, e.g. ``("-crlsec", "1")`` or
        ``("-crlhours", "1")`` for a CRL whose nextUpdate comes soon.
        """
        out = out or self.dir / "crl" / "ca.crl.pem"
        openssl(
            "ca",
            "-batch",
            "-config",
            self.config,
            "-gencrl",
            "-crlexts",
            "crl_ext",
            *extra,
            "-out",
            out,
        )
        if der:
            openssl("crl", "-in", out, "-outform", "DER", "-out", out)
        return out

    def chain_file(self) -> Path:
        """A PEM file with this CA and its parents up to (not including) the root."""
        path = self.dir / "certs" / "chain.pem"
        parents = [p for p in self.chain if p != self.chain[-1]] if self.chain else []
        path.write_text("".join(p.read_text() for p in [self.cert, *parents]))
        return path

    @property
    def root(self) -> Path:
        """The self-signed root certificate this CA chains to."""
        return self.chain[-1] if self.chain else self.cert


def renew_ca_certificate(
    ca: CertificateAuthority, parent: CertificateAuthority, out: Path, days: int = 1825
) -> Path:
    """Renew ``ca``'s certificate: ``parent`` issues a new one (``openssl ca``, a new serial
    and validity) for the same subject and the same key, as a CA renewal does; ``ca``'s
    own files are not changed. Returns ``out``."""
    return parent.sign(
        ca.key, certificate_subject(ca.cert), out, extensions="v3_intermediate_ca", days=days
    )


# ---------------------------------------------------------------- index.txt

#: How ``openssl ca`` spells a reason in index.txt -> the RFC 5280 CRLReason an
#: OCSP answer carries (openssl's own ``-gencrl`` and ``ocsp -index`` map it so).
INDEX_REASON_TO_OCSP = {
    "holdInstruction": "certificateHold",
    "keyTime": "keyCompromise",
    "CAkeyTime": "CACompromise",
}


@dataclass(frozen=True)
class IndexRow:
    """One row of an OpenSSL CA database.

    ``status`` is ``V``/``R``/``E``; for ``R`` rows ``revocation_time`` is the
    revocation time and ``reason`` the reason word openssl wrote (or None).
    """

    status: str
    serial: int
    revocation_time: datetime | None
    reason: str | None


def read_index(path: Path) -> dict[int, IndexRow]:
    """Parse ``index.txt`` (tab separated: status, expiry, revocation, serial, file, subject)."""
    rows = {}
    for line in path.read_text().splitlines():
        status, _expiry, revocation, serial, *_ = line.split("\t")
        time_text, _, rest = revocation.partition(",")
        rows[int(serial, 16)] = IndexRow(
            status=status,
            serial=int(serial, 16),
            revocation_time=(
                datetime.strptime(time_text, "%y%m%d%H%M%SZ").replace(tzinfo=UTC)
                if time_text
                else None
            ),
            reason=rest.partition(",")[0] or None,
        )
    return rows


def _edit_row(text: str, serial: int, edit: str) -> str:
    lines = text.splitlines(keepends=True)
    found = [n for n, line in enumerate(lines) if int(line.split("\t")[3], 16) == serial]
    assert len(found) == 1, f"serial {serial:X} is in {len(found)} rows of:\n{text}"
    fields = lines[found[0]].split("\t")
    if edit == "drop":
        del lines[found[0]]
    else:  # release: an R row back to V, revocation field emptied
        assert fields[0] == "R", lines[found[0]]
        fields[0], fields[2] = "V", ""
        lines[found[0]] = "\t".join(fields)
    return "".join(lines)


def index_without_row(text: str, serial: int) -> str:
    """index.txt ``text`` with the row of ``serial`` removed."""
    return _edit_row(text, serial, "drop")


def index_with_row_released(text: str, serial: int) -> str:
    """index.txt ``text`` with the R row of ``serial`` made V again (the revocation field
    emptied), the hand edit an operator makes to release a certificateHold."""
    return _edit_row(text, serial, "release")


def index_with_row_reason(text: str, serial: int, reason: str) -> str:
    """index.txt ``text`` with the R row of ``serial`` given revocation reason ``reason``
    (its revocation time kept: ``TIME,REASON``), e.g. a revocation rewritten by hand to
    ``certificateHold``."""
    lines = text.splitlines(keepends=True)
    found = [n for n, line in enumerate(lines) if int(line.split("\t")[3], 16) == serial]
    assert len(found) == 1, f"serial {serial:X} is in {len(found)} rows of:\n{text}"
    fields = lines[found[0]].split("\t")
    assert fields[0] == "R", lines[found[0]]
    fields[2] = f"{fields[2].partition(',')[0]},{reason}"
    lines[found[0]] = "\t".join(fields)
    return "".join(lines)


def expected_ocsp_reason(index_reason: str | None) -> str | None:
    """The CRLReason an OCSP answer should carry for an index.txt reason word, lower-cased
    like ``CertStatus.reason``."""
    if index_reason is None:
        return None
    return INDEX_REASON_TO_OCSP.get(index_reason, index_reason).lower()
