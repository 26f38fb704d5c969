"""Pre-built DER OCSP requests (RFC 6960 4.1) for wrk to replay.

A request set is a directory with:

    bodies.bin   DER OCSPRequests back to back (POST bodies)
    bodies.len   one decimal length per line, same order
    get.paths    one GET path per line: "/" + percent-escaped base64 of the same DER
                 (RFC 6960 Appendix A.1); only for sets without nonce
    meta.json    serial per request (same order), nonce or not, hash algorithm

Requests are built with cryptography's ``OCSPRequestBuilder``: one CertID (SHA-1
issuerNameHash/issuerKeyHash, as ``openssl ocsp`` and browsers send) per request,
serials shuffled with a fixed seed so every run sends the same sequence. Nonce sets
carry a distinct 16-octet random nonce per request (RFC 8954), because wrk replays
a set from the start once it has gone through it.
"""

from __future__ import annotations

import base64
import json
import random
import secrets
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp

#: Bump when the format or the recipe changes: cached sets of another version are rebuilt.
FORMAT_VERSION = 1


@dataclass(frozen=True)
class RequestSet:
    """A directory of pre-built requests (see the module docstring).

    Attributes:
        path: the directory.
        serials: certificate serial of each request, in file order.
        nonce: whether every request carries a nonce extension.
    """

    path: Path
    serials: list[int]
    nonce: bool

    @property
    def bodies(self) -> Path:
        """DER requests back to back."""
        return self.path / "bodies.bin"

    @property
    def lengths(self) -> Path:
        """One decimal length per line."""
        return self.path / "bodies.len"

    @property
    def get_paths(self) -> Path:
        """One GET path per line (only for sets without nonce)."""
        return self.path / "get.paths"

    def __len__(self) -> int:
        """Number of requests in the set."""
        return len(self.serials)

    def der(self, i: int) -> bytes:
        """The DER of request ``i`` (0-based, file order).

        Raises:
            IndexError: no such request.
        """
        if not 0 <= i < len(self.serials):
            raise IndexError(f"{self.path}: no request {i} (set has {len(self.serials)})")
        lengths = [int(n) for n in self.lengths.read_text().split()]
        start = sum(lengths[:i])
        with self.bodies.open("rb") as f:
            f.seek(start)
            return f.read(lengths[i])

    def get_path(self, i: int) -> str:
        """The GET path of request ``i`` (0-based).

        Raises:
            ValueError: the set carries nonces (no GET paths are written for them).
        """
        if self.nonce:
            raise ValueError(f"{self.path}: nonce sets have no GET paths")
        return self.get_paths.read_text().splitlines()[i]


def get_path(der: bytes) -> str:
    """GET path for a DER request: "/" + url-escaped base64 (RFC 6960 Appendix A.1)."""
    return "/" + urllib.parse.quote(base64.b64encode(der).decode("ascii"), safe="")


def build(
    dest: Path,
    issuer: x509.Certificate,
    leaves: dict[int, x509.Certificate],
    *,
    count: int,
    nonce: bool,
    seed: int,
) -> RequestSet:
    """Write a request set.

    Args:
        dest: directory to create (replaced atomically when it exists).
        issuer: the CA certificate that issued every leaf.
        leaves: serial -> leaf certificate; requests cycle through them in a shuffled order.
        count: number of requests (>= len(leaves) makes every serial appear).
        nonce: add a distinct random nonce to every request.
        seed: seed of the shuffle (the nonces come from ``secrets``).

    Returns:
        the written set.
    """
    order = sorted(leaves)
    random.Random(seed).shuffle(order)
    serials = [order[i % len(order)] for i in range(count)]
    seen: set[bytes] = set()
    ders: list[bytes] = []
    for serial in serials:
        builder = ocsp.OCSPRequestBuilder().add_certificate(leaves[serial], issuer, hashes.SHA1())  # noqa: S303 - CertID hash

        if nonce:
            value = secrets.token_bytes(16)
            while value in seen:  # pragma: no cover - 2**-128 odds
                value = secrets.token_bytes(16)
            seen.add(value)
            builder = builder.add_extension(x509.OCSPNonce(value), critical=False)
        ders.append(builder.build().public_bytes(Encoding.DER))
    tmp = dest.with_name(dest.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "bodies.bin").write_bytes(b"".join(ders))
    (tmp / "bodies.len").write_text("".join(f"{len(d)}\n" for d in ders))
    if not nonce:
        (tmp / "get.paths").write_text("".join(get_path(d) + "\n" for d in ders))
    meta = {
        "format_version": FORMAT_VERSION,
        "nonce": nonce,
        "count": count,
        "seed": seed,
        "cert_id_hash": "sha1",
        "serials": serials,
    }
    (tmp / "meta.json").write_text(json.dumps(meta))
    if dest.exists():
        for f in dest.iterdir():
            f.unlink()
        dest.rmdir()
    tmp.rename(dest)
    return RequestSet(dest, serials, nonce)


def load(path: Path) -> RequestSet | None:
    """Load a cached set, or None when missing or of another format version."""
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    if meta.get("format_version") != FORMAT_VERSION:
        return None
    return RequestSet(path, [int(s) for s in meta["serials"]], bool(meta["nonce"]))


def cached(
    cache: Path, issuer_pem: Path, leaf_pems: dict[int, Path], *, count: int, nonce: bool, key: str
) -> RequestSet:
    """Return the cached set ``cache`` or build it.

    Args:
        cache: the set's directory.
        issuer_pem: the issuing CA certificate (PEM).
        leaf_pems: serial -> leaf certificate file (PEM).
        count: wanted number of requests.
        nonce: with nonces or not.
        key: identifies the PKI the set was made for (e.g. its build time); a set made
            for another PKI or with another count is rebuilt.

    Returns:
        the set.
    """
    found = load(cache)
    stamp = cache / "pki.key"
    if (
        found is not None
        and len(found) == count
        and found.nonce == nonce
        and stamp.exists()
        and stamp.read_text() == key
    ):
        return found
    issuer = x509.load_pem_x509_certificate(issuer_pem.read_bytes())
    leaves = {s: x509.load_pem_x509_certificate(p.read_bytes()) for s, p in leaf_pems.items()}
    built = build(cache, issuer, leaves, count=count, nonce=nonce, seed=6960)
    stamp.write_text(key)
    return built
