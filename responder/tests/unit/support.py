"""Helpers of the fast unit layer: everything in-process, nothing started, no sleeps.

* :class:`FakeClock`: a settable, advanceable aware-UTC clock, the ``clock`` seam of
  :class:`~ocsp_responder.responder.Responder`, :class:`~ocsp_responder.http.OCSPApp`
  and :class:`~ocsp_responder.status_data.StatusData`.
* :func:`make_pki`: a CA and its delegated OCSP signer (EKU OCSPSigning), EC P-256,
  made with ``cryptography``'s CertificateBuilder.
* :class:`MemorySource`: a :class:`~ocsp_responder.sources.StatusSource` whose table
  and confirmation time a test sets directly (``publish``), read by the real
  :class:`~ocsp_responder.status_data.StatusData` and snapshot rules.
* :func:`build_stack`: Issuer -> Responder -> OCSPApp around them with the limits a
  test asks for; :func:`call` drives the WSGI app and captures what it started;
  :func:`ocsp_request` builds requests with ``OCSPRequestBuilder``.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote
from wsgiref.util import setup_testing_defaults

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ocsp_responder.cache import ResponseCache
from ocsp_responder.config import ServerConfig
from ocsp_responder.http import OCSPApp
from ocsp_responder.issuers import Issuer, IssuerSet, cert_id_keys
from ocsp_responder.monitoring import Monitoring
from ocsp_responder.responder import Responder
from ocsp_responder.snapshot import SnapshotStore, ca_identity
from ocsp_responder.sources import UNKNOWN, SourceData, Status
from ocsp_responder.sources.files import FileStamp, StatusFiles
from ocsp_responder.status_data import DataLifetime, StatusData

#: The fake clock's start: a fraction of a second past a whole second, so that the
#: whole-second truncation of thisUpdate shows in every computed value.
T0 = datetime(2026, 1, 10, 12, 0, 0, 250_000, tzinfo=UTC)


class FakeClock:
    """A clock a test moves by hand: ``clock()`` returns :attr:`now` (aware UTC)."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        """Move the clock forward by ``seconds``; returns the new time."""
        self.now += timedelta(seconds=seconds)
        return self.now

    def set(self, when: datetime) -> None:
        """Set the clock to ``when`` (aware)."""
        assert when.tzinfo is not None
        self.now = when


# ---------------------------------------------------------------- PKI


@dataclass(frozen=True)
class Pki:
    """A CA, its delegated OCSP signer (with their keys) and a CA nobody serves."""

    ca: x509.Certificate
    ca_key: ec.EllipticCurvePrivateKey
    signer: x509.Certificate
    signer_key: ec.EllipticCurvePrivateKey
    stranger: x509.Certificate

    def leaf(self, serial: int) -> x509.Certificate:
        """A certificate with ``serial`` issued by the CA."""
        key = ec.generate_private_key(ec.SECP256R1())
        return _certificate(
            f"leaf {serial:x}", key, self.ca.subject, self.ca_key, serial=serial, ca=False
        )

    def write(self, directory: Path) -> dict[str, Path]:
        """The CA certificate, signer certificate and signer key as PEM files."""
        directory.mkdir(parents=True, exist_ok=True)
        files = {
            "ca_certificate": directory / "ca.pem",
            "signer_certificate": directory / "signer.pem",
            "signer_key": directory / "signer.key",
        }
        files["ca_certificate"].write_bytes(self.ca.public_bytes(serialization.Encoding.PEM))
        files["signer_certificate"].write_bytes(
            self.signer.public_bytes(serialization.Encoding.PEM)
        )
        files["signer_key"].write_bytes(
            self.signer_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return files


#: The PKI's validity, around the fake clock's start.
NOT_BEFORE = datetime(2025, 1, 1, tzinfo=UTC)
NOT_AFTER = datetime(2028, 1, 1, tzinfo=UTC)


def _certificate(
    common_name: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    serial: int,
    ca: bool,
    ocsp_signing: bool = False,
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if ca and issuer_key is key else issuer)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ocsp_signing:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False
        ).add_extension(x509.OCSPNoCheck(), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _self_signed(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    return _certificate(common_name, key, name, key, serial=1, ca=True), key


def make_pki() -> Pki:
    """The unit layer's PKI (EC P-256 throughout: a few milliseconds)."""
    ca, ca_key = _self_signed("Unit Test CA")
    signer_key = ec.generate_private_key(ec.SECP256R1())
    signer = _certificate(
        "ocsp.unit.test", signer_key, ca.subject, ca_key, serial=2, ca=False, ocsp_signing=True
    )
    stranger, _ = _self_signed("Some Other CA")
    return Pki(ca=ca, ca_key=ca_key, signer=signer, signer_key=signer_key, stranger=stranger)


# ---------------------------------------------------------------- requests


def issuer_hashes(ca: x509.Certificate, algorithm: hashes.HashAlgorithm) -> tuple[bytes, bytes]:
    """(issuerNameHash, issuerKeyHash) of ``ca`` (RFC 6960 4.1.1), computed here with
    hashlib, independently of the responder's own :func:`cert_id_keys`."""
    point = ca.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    name = ca.subject.public_bytes()
    return hashlib.new(algorithm.name, name).digest(), hashlib.new(algorithm.name, point).digest()


def ocsp_request(
    ca: x509.Certificate,
    serial: int,
    *,
    nonce: bytes | None = None,
    algorithm: hashes.HashAlgorithm | None = None,
) -> bytes:
    """The DER OCSPRequest for ``serial`` of ``ca`` (SHA-1 CertID unless ``algorithm``)."""
    algorithm = algorithm or hashes.SHA1()
    name_hash, key_hash = issuer_hashes(ca, algorithm)
    builder = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
        name_hash, key_hash, serial, algorithm
    )
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


# ---------------------------------------------------------------- status source


#: The name the in-memory source's data goes by in messages (never opened).
MEMORY_PATH = Path("memory/index.txt")


class MemoryFiles(StatusFiles):
    """No real file: the stamp is a version number that :meth:`MemorySource.publish`
    bumps, so :meth:`StatusData.refresh` re-reads exactly when something was published.
    :data:`MEMORY_PATH` names the data in messages (it is never stat'ed nor opened)."""

    def __init__(self) -> None:
        super().__init__([MEMORY_PATH])
        self.version = 0

    def stamps(self) -> tuple[FileStamp | None, ...]:
        return ((self.version, 0, 0, 0),)


class MemorySource:
    """An in-memory ``index``-kind :class:`~ocsp_responder.sources.StatusSource`.

    Args:
        table: serial -> status.
        confirmed_at: when the data was last confirmed current (what index.txt's
            mtime is for the real source); whole seconds.
    """

    kind = "index"
    default = UNKNOWN

    def __init__(self, table: Mapping[int, Status], confirmed_at: datetime) -> None:
        self.memory_files = MemoryFiles()
        self.files: StatusFiles = self.memory_files
        self.table = dict(table)
        self.confirmed_at = confirmed_at
        self.reads = 0

    def publish(self, table: Mapping[int, Status], confirmed_at: datetime) -> None:
        """Replace the data (seen at the next :meth:`StatusData.refresh`)."""
        self.table = dict(table)
        self.confirmed_at = confirmed_at
        self.memory_files.version += 1

    def read(self, now: datetime) -> SourceData:
        self.reads += 1
        digest = hashlib.sha256(repr(sorted(self.table.items(), key=str)).encode()).hexdigest()
        return SourceData(
            kind=self.kind, table=dict(self.table), digest=digest, mtime=self.confirmed_at
        )

    def describe(self) -> str:
        return f"memory ({len(self.table)} serials)"


# ---------------------------------------------------------------- the app


@dataclass
class Stack:
    """One issuer served by a Responder behind an OCSPApp, on a fake clock."""

    clock: FakeClock
    source: MemorySource
    issuer: Issuer
    responder: Responder
    app: OCSPApp
    cache: ResponseCache
    server: ServerConfig = field(default_factory=ServerConfig)


@dataclass
class Reply:
    """What the WSGI app started and returned."""

    status: str
    headers: dict[str, str]
    header_list: list[tuple[str, str]]
    body: bytes

    @property
    def code(self) -> int:
        return int(self.status.split()[0])

    def ocsp(self) -> ocsp.OCSPResponse:
        return ocsp.load_der_ocsp_response(self.body)


def call(
    app: Callable[[dict[str, Any], Any], Iterable[bytes]],
    method: str = "GET",
    path: str = "/",
    body: bytes | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    raw_uri: bool = True,
    content_length: bool = True,
) -> Reply:
    """Call the WSGI ``app`` once, as a WSGI server would, and collect its answer.

    Args:
        app: the WSGI callable.
        method: the request method.
        path: the request target as sent (``RAW_URI``, as gunicorn sets it; the
            percent-decoded ``PATH_INFO`` and ``QUERY_STRING`` are derived from it).
        body: the request body (``wsgi.input``).
        headers: request headers (``HTTP_*``).
        raw_uri: False to leave ``RAW_URI`` out (a server that sets only ``PATH_INFO``).
        content_length: False to send the body without ``CONTENT_LENGTH`` (chunked).
    """

    target, _, query = path.partition("?")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": unquote(target),
        "QUERY_STRING": query,
        "wsgi.input": io.BytesIO(body or b""),
    }
    if raw_uri:
        environ["RAW_URI"] = path
    if body is not None and content_length:
        environ["CONTENT_LENGTH"] = str(len(body))
        environ["CONTENT_TYPE"] = "application/ocsp-request"
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    setup_testing_defaults(environ)
    started: list[tuple[str, list[tuple[str, str]]]] = []

    def start_response(
        status: str, header_list: list[tuple[str, str]], exc_info: Any = None
    ) -> None:
        started.append((status, list(header_list)))

    chunks = app(environ, start_response)
    data = b"".join(chunks)
    assert len(started) == 1, started
    status, header_list = started[0]
    return Reply(status, dict(header_list), header_list, data)


#: Defaults of :func:`build_stack`.
VALIDITY = 3600
CACHE_MAX_AGE = 600
MAX_REQUEST_SIZE = 1024
MAX_DATA_AGE = 2 * 86400


def build_stack(
    pki: Pki,
    clock: FakeClock,
    state_dir: Path,
    table: Mapping[int, Status],
    *,
    confirmed_at: datetime | None = None,
    validity: int = VALIDITY,
    http_cache_max_age: int = CACHE_MAX_AGE,
    max_request_size: int = MAX_REQUEST_SIZE,
    cache_size: int = 100,
    cache_bytes: int = 1 << 20,
    refresh_fraction: float = 0.5,
    max_data_age: int = MAX_DATA_AGE,
    grace: int = 0,
    max_live_signings: int = ServerConfig.max_live_signings,
    presigned_store: Path | None = None,
) -> Stack:
    """Issuer -> Responder -> OCSPApp for ``pki``'s CA on ``clock``.

    ``table`` (serial -> Status) is published as confirmed at ``confirmed_at``
    (default: the clock's time, whole seconds). The other settings are in seconds
    or octets, as in ``[server]`` and ``[[issuer]]``; ``state_dir`` is only stat'ed
    (nothing is persisted). ``presigned_store``: the SQLite file of the pre-signed
    store (two stacks on one file are two workers of a host); None: in memory.
    """
    confirmed = confirmed_at or clock().replace(microsecond=0)
    source = MemorySource(table, confirmed)
    identity = ca_identity(
        pki.ca.subject.public_bytes(),
        pki.ca.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )
    # persist=False: the (never created) state directory is only stat'ed
    store = SnapshotStore(state_dir, "unit", identity)
    lifetime = DataLifetime(timedelta(seconds=max_data_age), timedelta(seconds=grace))
    data = StatusData(source, store, lifetime, clock, persist=False)
    issuer = Issuer(
        name="unit",
        certificate=pki.ca,
        signer_certificate=pki.signer,
        signer_key=pki.signer_key,
        response_validity=timedelta(seconds=validity),
        responder_encoding=ocsp.OCSPResponderEncoding.HASH,
        signature_hash=hashes.SHA256(),
        data=data,
        cert_id_keys=cert_id_keys(pki.ca),
    )
    issuers = IssuerSet([issuer])
    cache = ResponseCache(cache_size, cache_bytes, refresh_fraction, path=presigned_store)
    # live_signing_wait 0: a unit test that holds every slot never waits.
    responder = Responder(
        issuers, cache, clock, max_live_signings=max_live_signings, live_signing_wait=0
    )
    server = ServerConfig(
        max_live_signings=max_live_signings,
        max_request_size=max_request_size,
        http_cache_max_age=http_cache_max_age,
        cache_size=cache_size,
        cache_bytes=cache_bytes,
        refresh_fraction=refresh_fraction,
        max_data_age=max_data_age,
        data_expiry_grace=grace,
    )
    app = OCSPApp(
        responder,
        Monitoring(issuers, server, clock),
        max_request_size=max_request_size,
        http_cache_max_age=http_cache_max_age,
        clock=clock,
    )
    return Stack(clock, source, issuer, responder, app, cache, server)
