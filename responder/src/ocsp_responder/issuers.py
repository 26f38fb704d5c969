"""The configured issuers: CA certificate, delegated signer, status source, CertID hashes.

For every issuer the issuerNameHash and issuerKeyHash (RFC 6960 section 4.1.1) are
precomputed for SHA-1, SHA-256, SHA-384 and SHA-512, so that finding the issuer of a
request is one dictionary lookup. The hashed octets (the subject name's DER and the
subjectPublicKey value) come from the library's own encoders.

The signer must be the CA itself or a delegated OCSP signer (RFC 6960 section 4.2.2.2):
issued directly by the CA, with extendedKeyUsage id-kp-OCSPSigning, currently valid,
and with a private key that matches its certificate.

An issuer vouches for a status only while both its data and its signer are valid
(:meth:`Issuer.unavailable`, :meth:`Issuer.vouch_until`): nextUpdate never lies
beyond either, and past either the issuer answers ``tryLater``.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from . import pemder
from .config import (
    DEFAULT_DATA_EXPIRY_WARNING,
    DEFAULT_SIGNER_EXPIRY_WARNING,
    Config,
    ConfigError,
    IssuerConfig,
    Problems,
    ServerConfig,
)
from .fetch import fetched_crl_path
from .snapshot import Snapshot, SnapshotStore, ca_identity
from .sources import SourceError, StatusSource, open_source
from .status_data import Clock, DataLifetime, StatusData, utc_now

log = logging.getLogger(__name__)

#: CertID hash algorithms we match (RFC 6960 / RFC 5019 clients use SHA-1 or SHA-256).
CERT_ID_HASHES: tuple[hashes.HashAlgorithm, ...] = (
    hashes.SHA1(),  # noqa: S303 (CertID hashing, not a signature)
    hashes.SHA256(),
    hashes.SHA384(),
    hashes.SHA512(),
)
_SIGNATURE_HASHES = {
    "sha256": hashes.SHA256(),
    "sha384": hashes.SHA384(),
    "sha512": hashes.SHA512(),
}
_RESPONDER_IDS = {
    "by_key": ocsp.OCSPResponderEncoding.HASH,
    "by_name": ocsp.OCSPResponderEncoding.NAME,
}

#: The private key types a signer may have (the one list of them).
SigningKey = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)

#: (hash algorithm name, issuerNameHash, issuerKeyHash)
IssuerKey = tuple[str, bytes, bytes]


@dataclass(eq=False)
class Issuer:
    """One CA we answer for.

    Attributes:
        name: label from the config.
        certificate: the CA certificate.
        signer_certificate: the certificate whose key signs responses (sent in ``certs``).
        signer_key: its private key.
        response_validity: thisUpdate to nextUpdate.
        responder_encoding: ResponderID form (byKey or byName).
        signature_hash: hash for the signature, None for Ed25519/Ed448 keys.
        data: the status data in service (source, snapshot, expiry).
        cert_id_keys: the (algorithm, issuerNameHash, issuerKeyHash) triples matching it.
        data_expiry_warning: :meth:`warnings` names data expiring within this.
        signer_expiry_warning: :meth:`warnings` names a signer expiring within this.
    """

    name: str
    certificate: x509.Certificate
    signer_certificate: x509.Certificate
    signer_key: SigningKey
    response_validity: timedelta
    responder_encoding: ocsp.OCSPResponderEncoding
    signature_hash: hashes.HashAlgorithm | None
    data: StatusData
    cert_id_keys: tuple[IssuerKey, ...] = field(default=())
    data_expiry_warning: timedelta = timedelta(seconds=DEFAULT_DATA_EXPIRY_WARNING)
    signer_expiry_warning: timedelta = timedelta(seconds=DEFAULT_SIGNER_EXPIRY_WARNING)

    @functools.cached_property
    def signing_context(self) -> str:
        """SHA-256 (hex) of everything that shapes this issuer's responses besides the
        request and the status: its name, CA certificate, signer certificate,
        response_validity (seconds), ResponderID form and signature hash. Part of the
        pre-signed store's key (:mod:`ocsp_responder.cache`), so that a response
        signed under another signer or other settings (workers of an earlier config
        still draining after SIGHUP) is never served for this issuer."""
        digest = hashlib.sha256()
        for part in (
            self.name.encode(),
            self.certificate.public_bytes(serialization.Encoding.DER),
            self.signer_certificate.public_bytes(serialization.Encoding.DER),
            str(self.response_validity.total_seconds()).encode(),
            self.responder_encoding.name.encode(),
            (self.signature_hash.name if self.signature_hash else "").encode(),
        ):
            digest.update(len(part).to_bytes(8, "big") + part)
        return digest.hexdigest()

    def describe(self) -> str:
        """One line: name, data (source, serials, expiry), signer subject and notAfter."""
        signer = self.signer_certificate
        return (
            f"issuer {self.name}: {self.data.describe()}; "
            f"signer {signer.subject.rfc4514_string()} "
            f"notAfter {signer.not_valid_after_utc.isoformat()}"
        )

    def vouch_until(self, snapshot: Snapshot | None = None) -> datetime:
        """The latest nextUpdate it may state: min(data expiry + grace, signer notAfter).

        Args:
            snapshot: the data answered from (default: the data in service).
        """
        return min(self.data.expires_at(snapshot), self.signer_certificate.not_valid_after_utc)

    def unavailable(self, now: datetime, snapshot: Snapshot | None = None) -> str | None:
        """Why this issuer cannot vouch for any status at ``now``, or None when it can.

        Args:
            now: aware UTC.
            snapshot: the data answered from (default: the data in service).

        Returns:
            None, or one line naming the expired data or signer (the answer is then
            ``tryLater``, RFC 6960 section 2.3).
        """
        signer_problem = self.signer_unavailable(now)
        if signer_problem is not None:
            return signer_problem
        if (snapshot or self.data.snapshot).generation == 0:  # status_data.no_data
            return (
                f"issuer {self.name}: no status data yet "
                f"({self.data.last_error or self.data.source.describe()})"
            )
        expires = self.data.expires_at(snapshot)
        if now >= expires:
            return (
                f"issuer {self.name}: status data expired at {expires.isoformat()} "
                f"({self.data.source.describe()}; publish current data)"
            )
        return None

    def signer_unavailable(self, now: datetime) -> str | None:
        """Why the signer certificate cannot sign at ``now`` (outside its validity),
        or None when it can.

        Args:
            now: aware UTC.

        Returns:
            None, or one line naming the issuer and the signer's notBefore/notAfter.
        """
        signer = self.signer_certificate
        if now < signer.not_valid_before_utc:
            return (
                f"issuer {self.name}: signer certificate is not valid before "
                f"{signer.not_valid_before_utc.isoformat()}"
            )
        if now >= signer.not_valid_after_utc:
            return (
                f"issuer {self.name}: signer certificate expired at "
                f"{signer.not_valid_after_utc.isoformat()}"
            )
        return None

    def warnings(self, now: datetime) -> list[str]:
        """Operator warnings at ``now`` (aware UTC): signer without id-pkix-ocsp-nocheck;
        signer certificate or status data expiring within ``signer_expiry_warning`` /
        ``data_expiry_warning`` (not yet expired: that is :meth:`unavailable`)."""
        found: list[str] = []
        signer = self.signer_certificate
        if signer != self.certificate:
            try:
                signer.extensions.get_extension_for_class(x509.OCSPNoCheck)
            except x509.ExtensionNotFound:
                found.append(
                    f"issuer {self.name}: signer has no id-pkix-ocsp-nocheck extension; "
                    "clients may try to check its revocation status (RFC 6960 4.2.2.2.1)"
                )
        left = signer.not_valid_after_utc - now
        if timedelta(0) < left < self.signer_expiry_warning:
            found.append(
                f"issuer {self.name}: signer certificate expires in {_span(left)} "
                f"(at {signer.not_valid_after_utc.isoformat()}; renew it)"
            )
        left = self.data.expires_at() - now
        if timedelta(0) < left < self.data_expiry_warning:
            found.append(
                f"issuer {self.name}: status data expires in {_span(left)} "
                f"(at {self.data.expires_at().isoformat()}; publish current data)"
            )
        return found


def _span(delta: timedelta) -> str:
    """``delta`` in whole days, or hours, or minutes, whichever is the first non-zero."""
    seconds = int(delta.total_seconds())
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} seconds"


def subject_public_key_bits(ca: x509.Certificate) -> bytes:
    """The value of the CA certificate's subjectPublicKey BIT STRING, as the library encodes it.

    RSA: the DER RSAPublicKey (PKCS#1); EC: the uncompressed X9.62 point; Ed25519 and
    Ed448: the raw key (RFC 8410). These are the octets issuerKeyHash is computed over
    (RFC 6960 section 4.1.1).

    Raises:
        ValueError: a key type that no OCSP CertID here uses (e.g. DSA).
    """
    key = ca.public_key()
    encoding = serialization.Encoding
    if isinstance(key, rsa.RSAPublicKey):
        return key.public_bytes(encoding.DER, serialization.PublicFormat.PKCS1)
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key.public_bytes(encoding.X962, serialization.PublicFormat.UncompressedPoint)
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return key.public_bytes(encoding.Raw, serialization.PublicFormat.Raw)
    raise ValueError(f"unsupported CA key type {type(key).__name__}")


def _digest(algorithm: hashes.HashAlgorithm, data: bytes) -> bytes:
    hasher = hashes.Hash(algorithm)
    hasher.update(data)
    return hasher.finalize()


def cert_id_keys(ca: x509.Certificate) -> tuple[IssuerKey, ...]:
    """Compute the CertID issuer hashes of ``ca`` for every algorithm in CERT_ID_HASHES.

    issuerNameHash is the hash of the DER of the CA's *subject* (the issuer name of the
    certificates it issues); issuerKeyHash the hash of its subjectPublicKey value.

    Returns:
        (algorithm name, issuerNameHash, issuerKeyHash) for each algorithm.

    Raises:
        ValueError: an unsupported CA key type.
    """
    name = ca.subject.public_bytes()
    key = subject_public_key_bits(ca)
    return tuple(
        (algorithm.name, _digest(algorithm, name), _digest(algorithm, key))
        for algorithm in CERT_ID_HASHES
    )


def _read(path: Path, key: str, problems: Problems) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError as exc:
        problems.add(key, f"cannot read {path}: {exc.strerror or exc}")
        return None


def _load_certificate(path: Path, key: str, problems: Problems) -> x509.Certificate | None:
    data = _read(path, key, problems)
    if data is None:
        return None
    try:
        return pemder.certificate(data)
    except ValueError as exc:
        problems.add(key, f"{path}: not a PEM or DER certificate: {exc}")
        return None


def _load_key(cfg: IssuerConfig, problems: Problems) -> SigningKey | None:
    key = f"{cfg.key}.signer_key"
    data = _read(cfg.signer_key, key, problems)
    if data is None:
        return None
    password: bytes | None = None
    if cfg.signer_key_passphrase_file is not None:
        raw = _read(
            cfg.signer_key_passphrase_file, f"{cfg.key}.signer_key_passphrase_file", problems
        )
        if raw is None:
            return None
        password = raw.rstrip(b"\r\n")
    try:
        private = pemder.private_key(data, password)
    except TypeError as exc:  # encrypted without a password, or a password for a plain key
        problems.add(key, f"{cfg.signer_key}: {exc} (see signer_key_passphrase_file)")
        return None
    except ValueError as exc:
        problems.add(key, f"{cfg.signer_key}: cannot load private key: {exc}")
        return None
    if not isinstance(private, SigningKey):
        problems.add(key, f"{cfg.signer_key}: unsupported key type {type(private).__name__}")
        return None
    return private


def _public_der(key: object) -> bytes:
    return key.public_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _check_signer(
    cfg: IssuerConfig,
    ca: x509.Certificate,
    signer: x509.Certificate,
    private: SigningKey,
    problems: Problems,
    *,
    now: datetime | None,
) -> None:
    key = f"{cfg.key}.signer_certificate"
    where = f"{cfg.signer_certificate}"
    if _public_der(private.public_key()) != _public_der(signer.public_key()):
        problems.add(
            f"{cfg.key}.signer_key", f"{cfg.signer_key} does not match the public key of {where}"
        )
    if now is not None and signer.not_valid_after_utc < now:
        problems.add(key, f"{where} expired at {signer.not_valid_after_utc.isoformat()}")
    if now is not None and signer.not_valid_before_utc > now:
        problems.add(key, f"{where} is not valid before {signer.not_valid_before_utc.isoformat()}")
    if signer == ca:
        return  # the CA signs its own responses (RFC 6960 4.2.2.2, first case)
    try:
        signer.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as exc:
        problems.add(
            key, f"{where} is not issued by {cfg.ca_certificate}: {exc or 'bad signature'}"
        )
    try:
        usages = signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usages = None
    if usages is None or ExtendedKeyUsageOID.OCSP_SIGNING not in usages:
        problems.add(key, f"{where} lacks extendedKeyUsage OCSPSigning (RFC 6960 4.2.2.2)")


def status_parts(
    cfg: IssuerConfig, ca: x509.Certificate, state_dir: Path
) -> tuple[StatusSource, SnapshotStore]:
    """The status source and the snapshot store of one issuer (nothing is read yet).

    Args:
        cfg: the ``[[issuer]]`` entry.
        ca: its CA certificate (CRLs must verify against it; its subject and key
            identify the snapshot).
        state_dir: ``[server] state_dir`` (also where the CRLs of ``urls`` are fetched
            to, :func:`~ocsp_responder.fetch.fetched_crl_path`).
    """
    fetched = {fetched_crl_path(state_dir, cfg.name, url): url for url in cfg.source.urls}
    source = open_source(cfg.source.kind, [*cfg.source.paths, *fetched], ca, fetched)
    identity = ca_identity(ca.subject.public_bytes(), _public_der(ca.public_key()))
    return source, SnapshotStore(state_dir, cfg.name, identity)


def load_ca_certificate(cfg: IssuerConfig, problems: Problems) -> x509.Certificate | None:
    """Load an issuer's CA certificate; a problem is recorded (key ``ca_certificate``)
    and None returned when it cannot be read or parsed."""
    return _load_certificate(cfg.ca_certificate, f"{cfg.key}.ca_certificate", problems)


def load_issuer(
    cfg: IssuerConfig,
    problems: Problems,
    server: ServerConfig,
    *,
    persist: bool,
    clock: Clock = utc_now,
    check_validity: bool = True,
) -> Issuer | None:
    """Load one issuer's certificates, key and status data, checking each.

    Args:
        cfg: the validated ``[[issuer]]`` entry.
        problems: where problems are recorded (with ``cfg.key`` key paths).
        server: the ``[server]`` settings: ``state_dir`` (where the issuer's snapshot
            is kept), ``data_expiry_warning`` and ``signer_expiry_warning`` (see
            :class:`Issuer`).
        persist: write accepted data to the snapshot (False: read-only, for checks).
        clock: returns the current time, aware UTC.
        check_validity: record an expired or not yet valid signer as a problem
            (``serve`` starts anyway and answers tryLater; ``check-config`` reports it).

    Returns:
        The :class:`Issuer`, or None when a problem was recorded.
    """
    now = clock()
    before = len(problems.lines)
    ca = load_ca_certificate(cfg, problems)
    signer = _load_certificate(cfg.signer_certificate, f"{cfg.key}.signer_certificate", problems)
    private = _load_key(cfg, problems)
    if ca is None or signer is None or private is None:
        return None
    _check_signer(cfg, ca, signer, private, problems, now=now if check_validity else None)
    try:
        keys = cert_id_keys(ca)
    except ValueError as exc:
        problems.add(f"{cfg.key}.ca_certificate", f"{cfg.ca_certificate}: {exc}")
        return None
    source, store = status_parts(cfg, ca, server.state_dir)
    data: StatusData | None = None
    try:
        lifetime = DataLifetime(
            timedelta(seconds=cfg.max_data_age), timedelta(seconds=cfg.data_expiry_grace)
        )
        data = StatusData(source, store, lifetime, clock, persist=persist)
    except SourceError as exc:
        problems.add(_source_key(cfg, server.state_dir, exc.path), str(exc))
    if data is None or len(problems.lines) != before:
        return None
    is_edwards = isinstance(private, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey)
    return Issuer(
        name=cfg.name,
        certificate=ca,
        signer_certificate=signer,
        signer_key=private,
        response_validity=timedelta(seconds=cfg.response_validity),
        responder_encoding=_RESPONDER_IDS[cfg.responder_id],
        signature_hash=None if is_edwards else _SIGNATURE_HASHES[cfg.signature_hash],
        data=data,
        cert_id_keys=keys,
        data_expiry_warning=timedelta(seconds=server.data_expiry_warning),
        signer_expiry_warning=timedelta(seconds=server.signer_expiry_warning),
    )


def _source_key(cfg: IssuerConfig, state_dir: Path, path: Path) -> str:
    """The config key path that names ``path``, a file of ``cfg``'s status data: the
    ``source.path``, ``source.paths[N]`` or ``source.urls[N]`` entry it comes from, or
    the issuer itself for its snapshot in ``state_dir``."""
    urls = {fetched_crl_path(state_dir, cfg.name, url): url for url in cfg.source.urls}
    if path in urls:
        return f"{cfg.key}.source.urls[{cfg.source.urls.index(urls[path]) + 1}]"
    if path in cfg.source.paths:
        if cfg.source.kind == "index":
            return f"{cfg.key}.source.path"
        return f"{cfg.key}.source.paths[{cfg.source.paths.index(path) + 1}]"
    return cfg.key


def _prepare_state_dir(state_dir: Path, problems: Problems) -> None:
    """Create ``state_dir`` (mode 0700) if needed and check that it is writable."""
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        problems.add("server.state_dir", f"cannot create {state_dir}: {exc.strerror or exc}")
        return
    if not os.access(state_dir, os.W_OK | os.X_OK):
        problems.add("server.state_dir", f"{state_dir} is not writable by this user")


class IssuerSet:
    """The issuers we answer for, indexed by CertID issuer hashes.

    Args:
        issuers: the loaded issuers.

    Raises:
        ValueError: two issuers with the same name and key hashes (the same CA twice).
    """

    def __init__(self, issuers: Iterable[Issuer]) -> None:
        self.issuers = tuple(issuers)
        self._by_key: dict[IssuerKey, Issuer] = {}
        for issuer in self.issuers:
            for key in issuer.cert_id_keys:
                if key in self._by_key:
                    raise ValueError(
                        f"issuers {self._by_key[key].name!r} and {issuer.name!r} are the same CA"
                    )
                self._by_key[key] = issuer

    def find(
        self, algorithm: str, issuer_name_hash: bytes, issuer_key_hash: bytes
    ) -> Issuer | None:
        """Return the issuer matching a CertID's hashes, or None (answer: unauthorized)."""
        return self._by_key.get((algorithm, issuer_name_hash, issuer_key_hash))


def load_issuers(
    config: Config,
    problems: Problems | None = None,
    *,
    persist: bool = True,
    clock: Clock = utc_now,
    check_validity: bool = True,
) -> IssuerSet:
    """Load every issuer of ``config``.

    Args:
        config: the (possibly partly valid) configuration.
        problems: problems found so far, reported together with the issuers' own.
        persist: keep accepted data in ``[server] state_dir`` (False: read-only).
        clock: returns the current time, aware UTC.
        check_validity: see :func:`load_issuer`.

    Returns:
        The :class:`IssuerSet`.

    Raises:
        ConfigError: listing every problem (earlier ones and every issuer's), with key paths.
    """
    problems = problems or Problems(config.path)
    if persist:
        _prepare_state_dir(config.server.state_dir, problems)
        problems.raise_if_any()
    loaded = [
        load_issuer(
            cfg,
            problems,
            config.server,
            persist=persist,
            clock=clock,
            check_validity=check_validity,
        )
        for cfg in config.issuers
    ]
    problems.raise_if_any()
    try:
        return IssuerSet(i for i in loaded if i is not None)
    except ValueError as exc:
        raise ConfigError([*problems.lines, f"{config.path}: issuer: {exc}"]) from exc
