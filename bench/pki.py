"""Build (and cache) the benchmark PKI with the openssl CLI.

Layout of a built PKI directory (all written by ``openssl req`` / ``openssl ca``)::

    root/          self-signed root CA (``openssl req -x509``), its ``openssl ca`` db
    intermediate/  intermediate CA issued by the root with ``openssl ca``;
                   openssl.cnf, index.txt, serial, newcerts/SERIAL.pem, certs/, private/
    signers/       delegated OCSP signers issued by the intermediate
                   (extendedKeyUsage OCSPSigning + id-pkix-ocsp-nocheck):
                   rsa.{key,pem} (RSA-2048), ec.{key,pem} (EC P-256)
    leaf.key       the one key shared by every leaf certificate (speed)
    manifest.json  what was built: leaf serials and their index.txt status

Every CA config uses ``dir = .``: ``openssl ca`` always runs with the CA directory as
its working directory, so a copied PKI (one per run) stays self-contained.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

#: Bump when the recipe below changes: a cached PKI with another version is rebuilt.
RECIPE_VERSION = 1

#: Revocation reasons given to ``openssl ca -revoke -crl_reason``, used in turn.
REASONS = (
    "keyCompromise",
    "superseded",
    "cessationOfOperation",
    "affiliationChanged",
    "unspecified",
)

#: Signer label -> ``openssl req -newkey`` arguments.
SIGNER_KEYS = {
    "rsa": ["-newkey", "rsa:2048"],
    "ec": ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
}

_CA_CONF = """\
# openssl ca configuration of the benchmark {role} CA (written by bench/pki.py).
[ ca ]
default_ca = CA_default

[ CA_default ]
dir               = .
certs             = $dir/certs
new_certs_dir     = $dir/newcerts
database          = $dir/index.txt
serial            = $dir/serial
private_key       = $dir/private/{role}.key.pem
certificate       = $dir/certs/{role}.cert.pem
default_md        = sha256
default_days      = 375
preserve          = no
email_in_dn       = no
unique_subject    = no
copy_extensions   = none
policy            = policy_loose

[ policy_loose ]
organizationName        = optional
commonName              = supplied

[ req ]
distinguished_name = req_dn
[ req_dn ]

[ v3_root ]
basicConstraints       = critical, CA:true
keyUsage               = critical, keyCertSign, cRLSign
subjectKeyIdentifier   = hash

[ v3_intermediate ]
basicConstraints       = critical, CA:true, pathlen:0
keyUsage               = critical, keyCertSign, cRLSign, digitalSignature
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always

[ server_cert ]
basicConstraints       = CA:FALSE
keyUsage               = critical, digitalSignature
extendedKeyUsage       = serverAuth
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid
authorityInfoAccess    = OCSP;URI:http://ocsp.pki.example.com/

[ ocsp_signer ]
basicConstraints       = CA:FALSE
keyUsage               = critical, digitalSignature
extendedKeyUsage       = critical, OCSPSigning
noCheck                = ignored
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid
"""


@dataclass(frozen=True)
class IndexEntry:
    """One row of an ``openssl ca`` index.txt.

    Attributes:
        status: ``V`` (valid), ``R`` (revoked) or ``E`` (expired).
        serial: certificate serial number.
        revoked_at: revocation time as written by openssl (``YYMMDDHHMMSSZ``), or "".
        reason: revocationReason name as written by openssl, or "" when none.
        subject: the certificate subject in openssl's one-line form.
    """

    status: str
    serial: int
    revoked_at: str
    reason: str
    subject: str


def read_index(path: Path) -> dict[int, IndexEntry]:
    """Read an ``openssl ca`` database.

    Args:
        path: the index.txt file (tab-separated: status, expiry, revocation
            ``time[,reason]``, serial hex, file name, subject).

    Returns:
        serial -> entry.

    Raises:
        ValueError: a row without the six fields, naming the file and line.
    """
    entries: dict[int, IndexEntry] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line:
            continue
        fields = line.split("\t")
        if len(fields) != 6:
            raise ValueError(f"{path}:{lineno}: expected 6 tab-separated fields, got {len(fields)}")
        revoked_at, _, reason = fields[2].partition(",")
        serial = int(fields[3], 16)
        entries[serial] = IndexEntry(fields[0], serial, revoked_at, reason, fields[5])
    return entries


@dataclass(frozen=True)
class Pki:
    """A built PKI (see the module docstring for the layout).

    Attributes:
        root: the PKI directory; the leaf serials are in its manifest.json, their
            current status in the intermediate's index.txt (:meth:`expected`).
    """

    root: Path

    @property
    def ca_dir(self) -> Path:
        """The intermediate CA's ``openssl ca`` directory."""
        return self.root / "intermediate"

    @property
    def index(self) -> Path:
        """The intermediate CA's index.txt."""
        return self.ca_dir / "index.txt"

    @property
    def issuer_cert(self) -> Path:
        """The intermediate CA certificate (PEM): the issuer of every leaf and signer."""
        return self.ca_dir / "certs" / "intermediate.cert.pem"

    @property
    def root_cert(self) -> Path:
        """The root CA certificate (PEM): the trust anchor for ``openssl ocsp -CAfile``."""
        return self.root / "root" / "certs" / "root.cert.pem"

    def signer_cert(self, label: str) -> Path:
        """The delegated signer certificate for ``label`` (``rsa`` or ``ec``)."""
        return self.root / "signers" / f"{label}.pem"

    def signer_key(self, label: str) -> Path:
        """The delegated signer private key (PKCS#8 PEM) for ``label``."""
        return self.root / "signers" / f"{label}.key"

    def leaf_cert(self, serial: int) -> Path:
        """The leaf certificate ``openssl ca`` wrote for ``serial`` in newcerts/."""
        return self.ca_dir / "newcerts" / f"{serial:04X}.pem"

    def manifest(self) -> dict[str, object]:
        """The build manifest (see :func:`build`)."""
        data: dict[str, object] = json.loads((self.root / "manifest.json").read_text())
        return data

    def leaf_serials(self) -> list[int]:
        """Every leaf serial, ascending."""
        return [int(s) for s in self.manifest()["leaves"]]  # type: ignore[attr-defined]

    def expected(self) -> dict[int, IndexEntry]:
        """Current index.txt rows of the leaves (status as the CA database says now)."""
        leaves = set(self.leaf_serials())
        return {s: e for s, e in read_index(self.index).items() if s in leaves}

    def revoke(self, serial: int, reason: str = "keyCompromise") -> None:
        """Revoke a certificate with ``openssl ca -revoke`` (rewrites index.txt).

        Raises:
            subprocess.CalledProcessError: openssl failed (stderr is in the exception).
        """
        _run(
            [
                "openssl",
                "ca",
                "-batch",
                "-config",
                "openssl.cnf",
                "-revoke",
                str(self.leaf_cert(serial).relative_to(self.ca_dir)),
                "-crl_reason",
                reason,
            ],
            cwd=self.ca_dir,
        )


def _run(argv: list[str], cwd: Path) -> None:
    """Run one command quietly; raise with its stderr on failure."""
    subprocess.run(argv, cwd=cwd, check=True, capture_output=True, text=True)


def _sh(script: str, cwd: Path) -> None:
    """Run a POSIX shell script (one process for a whole loop) with ``set -e``."""
    subprocess.run(["sh", "-ec", script], cwd=cwd, check=True, capture_output=True, text=True)


def _init_ca(ca: Path, role: str, first_serial: str) -> None:
    """Create an empty ``openssl ca`` directory with its config."""
    for sub in ("certs", "newcerts", "private", "csr"):
        (ca / sub).mkdir(parents=True, exist_ok=True)
    (ca / "openssl.cnf").write_text(_CA_CONF.format(role=role))
    (ca / "index.txt").write_text("")
    (ca / "serial").write_text(first_serial + "\n")


def build(dest: Path, leaves: int = 1000, revoke_every: int = 10) -> Pki:
    """Build the PKI into ``dest`` (which must not exist) with the openssl CLI.

    Args:
        dest: new directory for the PKI.
        leaves: number of leaf certificates issued by the intermediate (>= 1).
        revoke_every: every Nth leaf is revoked (10 -> 10 %), reasons from :data:`REASONS`.

    Returns:
        the built :class:`Pki`; ``manifest.json`` lists the leaf serials.

    Raises:
        subprocess.CalledProcessError: an openssl step failed.
    """
    work = dest.with_name(dest.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    root, inter, signers = work / "root", work / "intermediate", work / "signers"
    _init_ca(root, "root", "01")
    _init_ca(inter, "intermediate", "1000")
    signers.mkdir(parents=True)
    subj = "/O=OCSP Bench PKI"
    _sh(
        f"""
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out private/root.key.pem
openssl req -x509 -new -config openssl.cnf -key private/root.key.pem -sha256 -days 3650 \
  -subj "{subj}/CN=OCSP Bench Root CA" -extensions v3_root -out certs/root.cert.pem
""",
        cwd=root,
    )
    _sh(
        f"""
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out private/intermediate.key.pem
openssl req -new -key private/intermediate.key.pem -subj "{subj}/CN=OCSP Bench Intermediate CA" \
  -config openssl.cnf -out csr/intermediate.csr
""",
        cwd=inter,
    )
    _run(
        [
            "openssl",
            "ca",
            "-batch",
            "-config",
            "openssl.cnf",
            "-extensions",
            "v3_intermediate",
            "-days",
            "1825",
            "-notext",
            "-in",
            "../intermediate/csr/intermediate.csr",
            "-out",
            "../intermediate/certs/intermediate.cert.pem",
        ],
        cwd=root,
    )
    for label, newkey in SIGNER_KEYS.items():
        _run(
            [
                "openssl",
                "req",
                "-new",
                *newkey,
                "-noenc",
                "-config",
                "openssl.cnf",
                "-keyout",
                f"../signers/{label}.key",
                "-subj",
                f"{subj}/CN=OCSP Bench Signer {label.upper()}",
                "-out",
                f"csr/signer-{label}.csr",
            ],
            cwd=inter,
        )
        _run(
            [
                "openssl",
                "ca",
                "-batch",
                "-config",
                "openssl.cnf",
                "-extensions",
                "ocsp_signer",
                "-days",
                "365",
                "-notext",
                "-in",
                f"csr/signer-{label}.csr",
                "-out",
                f"../signers/{label}.pem",
            ],
            cwd=inter,
        )
    # One shared leaf key, one CSR per leaf (one shell loop), then ONE `openssl ca`
    # signing every CSR (-infiles): index.txt is written by openssl ca itself.
    _sh(
        f"""
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ../leaf.key
i=0
while [ $i -lt {leaves} ]; do
  openssl req -new -config openssl.cnf -key ../leaf.key \
    -subj "{subj}/CN=leaf-$(printf %05d $i).bench.example" -out csr/leaf-$(printf %05d $i).csr
  i=$((i+1))
done
openssl ca -batch -config openssl.cnf -extensions server_cert -notext -out /dev/null \
  -infiles csr/leaf-*.csr
""",
        cwd=inter,
    )
    index = read_index(inter / "index.txt")
    leaf_serials = sorted(s for s, e in index.items() if "/CN=leaf-" in e.subject)
    if len(leaf_serials) != leaves:
        raise RuntimeError(
            f"{inter / 'index.txt'}: expected {leaves} leaves, found {len(leaf_serials)}"
        )
    revoke = leaf_serials[revoke_every - 1 :: revoke_every]
    lines = [
        f"openssl ca -batch -config openssl.cnf -revoke newcerts/{s:04X}.pem "
        f"-crl_reason {REASONS[n % len(REASONS)]}"
        for n, s in enumerate(revoke)
    ]
    _sh("\n".join(lines), cwd=inter)
    manifest = {
        "recipe_version": RECIPE_VERSION,
        "built_at": time.time(),
        "leaves": leaf_serials,
        "revoked": len(revoke),
        "openssl": subprocess.run(
            ["openssl", "version"], capture_output=True, text=True, check=True
        ).stdout.strip(),
    }
    (work / "manifest.json").write_text(json.dumps(manifest, indent=1))
    shutil.rmtree(dest, ignore_errors=True)
    work.rename(dest)
    return Pki(dest)


def cached(cache: Path, leaves: int = 1000, max_age_days: float = 180.0) -> tuple[Pki, bool]:
    """Return the cached PKI, building it first when missing, stale or of another recipe.

    Args:
        cache: directory holding the pristine PKI (never modified by a run).
        leaves: wanted number of leaf certificates.
        max_age_days: rebuild when older (leaves are valid 375 days, signers 365).

    Returns:
        (the PKI, whether it was built now).
    """
    manifest = cache / "manifest.json"
    if manifest.exists():
        data = json.loads(manifest.read_text())
        fresh = time.time() - float(data.get("built_at", 0)) < max_age_days * 86400
        if (
            fresh
            and data.get("recipe_version") == RECIPE_VERSION
            and len(data.get("leaves", [])) == leaves
        ):
            return Pki(cache), False
    return build(cache, leaves=leaves), True


def working_copy(pki: Pki, dest: Path) -> Pki:
    """Copy a PKI for one run (revocations during the run must not touch the cache)."""
    shutil.copytree(pki.root, dest, symlinks=True)
    copy = Pki(dest)
    copy.index.touch()  # data as fresh as the role's revocation_data run leaves it
    return copy
