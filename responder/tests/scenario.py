"""What the fixtures build: the test PKI and the configs the responders serve.

Session-wide (``build_pki``; tests never modify it):

* a root CA and three issuing CAs, each an ``openssl ca`` directory with its
  own delegated OCSP signer:

  - ``pki.rsa``: RSA intermediate, RSA signer, status from index.txt; holds
    good, expired (``E`` row) and revoked certificates, one per way
    ``openssl ca -revoke`` records a revocation (``REVOCATIONS``);
  - ``pki.ec``: EC P-256 intermediate, EC signer, index.txt;
  - ``pki.crl``: EC intermediate, Ed25519 signer, status from two CRLs
    written by ``openssl ca -gencrl`` (one PEM, one DER).

* the session responder serves all three (``main_config``).

Every CA starts its serials at 0x1000, so the same serial exists under several
issuers and the responder must tell them apart by CertID.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from openssl_ocsp import CertStatus, OcspRun, Trust, make_request, query
from openssl_pki import CertificateAuthority, Issued, crl_serials, index_without_row
from responder_process import HttpAnswer, Responder, post_ocsp, toml_config, wait_for

#: ``openssl ca -revoke`` arguments, one certificate each in ``pki.rsa``.
REVOCATIONS: dict[str, tuple[str, ...]] = {
    "no-reason": (),
    "unspecified": ("-crl_reason", "unspecified"),
    "keyCompromise": ("-crl_reason", "keyCompromise"),
    "CACompromise": ("-crl_reason", "CACompromise"),
    "affiliationChanged": ("-crl_reason", "affiliationChanged"),
    "superseded": ("-crl_reason", "superseded"),
    "cessationOfOperation": ("-crl_reason", "cessationOfOperation"),
    "certificateHold": ("-crl_reason", "certificateHold"),
    "removeFromCRL": ("-crl_reason", "removeFromCRL"),
    "hold-instruction": ("-crl_hold", "holdInstructionCallIssuer"),
    "key-compromise-time": ("-crl_compromise", "20240102030405Z"),
    "ca-compromise-time": ("-crl_CA_compromise", "20240102030405Z"),
}

#: ``[server]`` of the session responder: a body limit below the 10 KiB default,
#: and an HTTP cache cap between the two issuers' validities.
MAX_REQUEST_SIZE = 2048
HTTP_CACHE_MAX_AGE = 7200
MAIN_SERVER: dict[str, object] = {
    "http_cache_max_age": HTTP_CACHE_MAX_AGE,
    "max_request_size": MAX_REQUEST_SIZE,
}

#: ``response_validity`` per issuer of the session responder (seconds): rsa's is
#: shorter than http_cache_max_age (so max-age is bounded by nextUpdate), ec's
#: longer (so max-age is bounded by the cap).
VALIDITY = {"rsa": 3600, "ec": 86400}


@dataclass
class IssuingCA:
    """An issuing CA as the tests see it: the CA, its OCSP signer, its leaves by label."""

    name: str
    ca: CertificateAuthority
    signer: Issued
    leaves: dict[str, Issued] = field(default_factory=dict)

    @property
    def trust(self) -> Trust:
        """A relying party's view: trust the root, use the intermediate to build chains."""
        return Trust(cafile=self.ca.root, untrusted=self.ca.cert)

    def issuer_config(self, **overrides: object) -> dict[str, object]:
        """An ``[[issuer]]`` table for this CA (index.txt source unless overridden)."""
        table: dict[str, object] = {
            "name": self.name,
            "ca_certificate": self.ca.cert,
            "signer_certificate": self.signer.cert,
            "signer_key": self.signer.key,
            "source": {"kind": "index", "path": self.ca.index},
        }
        table.update(overrides)
        return table


def new_issuing_ca(
    base: Path,
    root: CertificateAuthority,
    name: str,
    ca_key: str = "ec",
    signer_key: str = "ec",
    leaves: tuple[str, ...] = (),
    signer_dates: dict[str, str] | None = None,
) -> IssuingCA:
    """An intermediate under ``root``, its delegated OCSP signer, and valid leaves.

    ``signer_dates``: ``startdate``/``enddate`` of the signer (``YYYYMMDDHHMMSSZ``).
    """
    ca = CertificateAuthority(base, name, ca_key, parent=root)
    signer = ca.issue_ocsp_signer(signer_key, **(signer_dates or {}))
    issuing = IssuingCA(name=name, ca=ca, signer=signer)
    for label in leaves:
        issuing.leaves[label] = ca.issue(label)
    return issuing


@dataclass
class Pki:
    """The session PKI (see the module docstring)."""

    base: Path
    root: CertificateAuthority
    rsa: IssuingCA
    ec: IssuingCA
    crl: IssuingCA
    crl_files: list[Path]


def build_pki(base: Path) -> Pki:
    """Build the session PKI under ``base`` with the openssl CLI."""
    root = CertificateAuthority(base, "root-ca", "ec")

    rsa = new_issuing_ca(base, root, "rsa-intermediate", "rsa", "rsa", ("good-1", "good-2"))
    rsa.leaves["expired"] = rsa.ca.issue(
        "expired", startdate="20200101000000Z", enddate="20200201000000Z"
    )
    rsa.ca.update_db()  # openssl marks the expired row E
    for label, how in REVOCATIONS.items():
        rsa.leaves[label] = rsa.ca.issue(label)
        rsa.ca.revoke(rsa.leaves[label].cert, *how)

    ec = new_issuing_ca(
        base, root, "ec-intermediate", "ec", "ec", ("good", "keyCompromise", "superseded")
    )
    ec.ca.revoke(ec.leaves["keyCompromise"].cert, "-crl_reason", "keyCompromise")
    ec.ca.revoke(ec.leaves["superseded"].cert, "-crl_reason", "superseded")

    crl = new_issuing_ca(
        base,
        root,
        "crl-intermediate",
        "ec",
        "ed25519",
        ("good", "keyCompromise", "cessationOfOperation", "hold-instruction"),
    )
    crl.ca.revoke(crl.leaves["keyCompromise"].cert, "-crl_reason", "keyCompromise")
    first = crl.ca.gencrl(crl.ca.dir / "crl" / "first.crl.pem")
    crl.ca.revoke(crl.leaves["cessationOfOperation"].cert, "-crl_reason", "cessationOfOperation")
    crl.ca.revoke(crl.leaves["hold-instruction"].cert, "-crl_hold", "holdInstructionReject")
    second = crl.ca.gencrl(crl.ca.dir / "crl" / "second.crl.der", der=True)

    return Pki(base=base, root=root, rsa=rsa, ec=ec, crl=crl, crl_files=[first, second])


def main_config(pki: Pki) -> str:
    """The session responder's config.toml text."""
    return toml_config(
        MAIN_SERVER,
        [
            pki.rsa.issuer_config(response_validity=VALIDITY["rsa"], responder_id="by_key"),
            pki.ec.issuer_config(
                response_validity=VALIDITY["ec"], responder_id="by_name", signature_hash="sha384"
            ),
            pki.crl.issuer_config(source={"kind": "crl", "paths": pki.crl_files}),
        ],
    )


def replace_file(path: Path, data: bytes, mode: int | None = None) -> None:
    """Put ``data`` at ``path`` atomically (write a temp file, chmod it to ``mode``, rename),
    the way a careful sync tool publishes a file."""
    temp = path.with_name(path.name + ".tmp")
    temp.write_bytes(data)
    if mode is not None:
        temp.chmod(mode)
    os.replace(temp, path)


@dataclass
class LiveIssuer:
    """A fresh intermediate served alone by its own responder; the test may change its files.

    ``status_file`` is what the responder reads: the CA's own index.txt, its CRL,
    or (``published``) a copy of index.txt that ``publish()`` refreshes, the way
    the role syncs it from the CA host.
    """

    issuing: IssuingCA
    server: Responder
    status_file: Path

    @property
    def ca(self) -> CertificateAuthority:
        """The ``openssl ca`` directory."""
        return self.issuing.ca

    def publish(self) -> None:
        """Copy the CA's index.txt over ``status_file`` atomically (write, then rename)."""
        temp = self.status_file.with_name(self.status_file.name + ".tmp")
        temp.write_bytes(self.ca.index.read_bytes())
        os.replace(temp, self.status_file)

    def query(self, label: str, digest: str | None = None, nonce: bool = False) -> OcspRun:
        """``openssl ocsp -url`` for leaf ``label`` (POST), verified against the root."""
        return query(
            self.server.url,
            self.issuing.trust,
            self.ca.cert,
            certs=[self.issuing.leaves[label].cert],
            digest=digest,
            nonce=nonce,
        )

    def answer(self, label: str, nonce: bool = False) -> CertStatus | None:
        """What ``openssl ocsp`` says of leaf ``label`` (status, thisUpdate, nextUpdate...),
        or None unless the answer verified without complaint."""
        run = self.query(label, nonce=nonce)
        if not run.verified or run.complaints:
            return None
        return run.statuses.get(str(self.issuing.leaves[label].cert))

    def status(self, label: str, nonce: bool = False) -> str:
        """The verified status of leaf ``label`` ("" if unverified, missing, or an error)."""
        found = self.answer(label, nonce=nonce)
        return found.status if found else ""

    def wait_status(self, label: str, expected: str, timeout: float = 15.0) -> str:
        """Query leaf ``label`` until its verified status is ``expected`` (a bounded wait for
        a reload); return the last status seen."""
        seen: list[str] = []

        def arrived() -> bool:
            seen.append(self.status(label))
            return seen[-1] == expected

        wait_for(arrived, timeout)
        return seen[-1]

    def request(self, label: str) -> bytes:
        """A DER OCSPRequest for leaf ``label`` (SHA-1 CertID, no nonce) made by openssl."""
        out = self.ca.dir / "requests" / f"{label}.der"
        if not out.exists():
            out.parent.mkdir(exist_ok=True)
            make_request(out, self.ca.cert, [self.issuing.leaves[label].cert])
        return out.read_bytes()

    def post(self, label: str) -> HttpAnswer:
        """POST the request for leaf ``label``; the raw HTTP answer (status, headers, body)."""
        return post_ocsp(self.server.port, self.request(label))

    def try_later(self, label: str) -> bool:
        """``openssl ocsp`` reports ``Responder Error: trylater (3)`` for leaf ``label``."""
        return self.query(label).responder_error == "trylater"

    def publish_crl(self, extra: tuple[str, ...] = ()) -> Path:
        """``openssl ca -gencrl EXTRA`` to a temp file, renamed over the served CRL."""
        temp = self.ca.gencrl(self.status_file.with_name("next.crl.pem"), extra=extra)
        os.replace(temp, self.status_file)
        return self.status_file

    def answers(self, label: str, count: int = 15, least: float = 1.0) -> Counter[str]:
        """``count`` queries for leaf ``label``, each on a fresh connection, for at least
        ``least`` seconds: how often each status came ("no verified status" for others)."""
        seen: list[str] = []
        start = time.monotonic()
        while len(seen) < count or time.monotonic() - start < least:
            seen.append(self.status(label) or "no verified status")
        return Counter(seen)

    def wait_streak(self, label: str, expected: str, streak: int = 10) -> None:
        """Query until ``streak`` answers in a row (fresh connections) are ``expected``:
        every worker has the data, not just the first to answer."""
        seen: list[str] = []

        def steady() -> bool:
            seen.append(self.status(label))
            return seen[-streak:] == [expected] * streak

        assert wait_for(steady), f"leaf {label}: last answers {seen[-streak:]}"

    def revoke_then_drop_from_crl(self) -> None:
        """CRL source: revoke leaf a (keyCompromise) and publish; then a newer CRL that no
        longer lists a (its row removed from the CA's database, as a CA drops an expired
        certificate) but revokes b (superseded). Asserts b revoked, a still revoked."""
        leaves = self.issuing.leaves
        self.ca.revoke(leaves["a"].cert, "-crl_reason", "keyCompromise")
        self.publish_crl()
        assert self.wait_status("a", "revoked") == "revoked"

        dropped = index_without_row(self.ca.index.read_text(), leaves["a"].serial)
        replace_file(self.ca.index, dropped.encode())
        self.ca.revoke(leaves["b"].cert, "-crl_reason", "superseded")
        self.publish_crl()
        assert crl_serials(self.status_file) == {leaves["b"].serial}
        assert self.wait_status("b", "revoked") == "revoked"  # the newer CRL is in service
        assert self.status("a") == "revoked"
