"""Status from CRL files (RFC 5280 section 5), PEM or DER.

A CRL lists revoked serials only, so it cannot tell an issued certificate from a
serial the CA never issued: every serial absent from the CRLs is answered **good**.
Use the ``index`` source where the CA keeps an OpenSSL database and "unknown" for
non-issued serials matters (CA/B Forum Baseline Requirements).

Each CRL must be a complete CRL (not a delta CRL), name the issuer as its issuer and
verify against the issuer certificate's public key; one that does not is rejected
(at start-up: a configuration error; on reload: the last good data stays in
service). Entries of several files are merged. revocationReason comes from each
entry's CRLReason extension (none when absent). Each CRL's cRLNumber, thisUpdate
and nextUpdate are kept (:class:`~ocsp_responder.sources.CRLInfo`): they decide
whether a new CRL is newer than the last accepted one and when the data expires.

CRLs named by URL (``urls``) are read from the files ``ocsp-responder fetch-crls``
keeps (:mod:`ocsp_responder.fetch`); until such a file exists, :meth:`CRLSource.read`
raises :class:`~ocsp_responder.sources.DataPending` naming the URL.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from cryptography import x509

from .. import pemder
from . import GOOD, CertState, CRLInfo, DataPending, SourceData, SourceError, Status
from .files import StatusFiles, digest_of, read_file

_Ext = TypeVar("_Ext", bound=x509.ExtensionType)


def load_crl(data: bytes, path: Path, issuer: x509.Certificate) -> x509.CertificateRevocationList:
    """Parse one CRL and check it belongs to ``issuer``.

    Args:
        data: the contents of a PEM or DER CRL file.
        path: the file, for messages.
        issuer: the CA certificate the CRL must be issued and signed by.

    Returns:
        The parsed CRL.

    Raises:
        SourceError: not a CRL, a delta CRL, another issuer's CRL, or a signature
            that does not verify; the message names the file.
    """
    try:
        crl = pemder.crl(data)
    except ValueError as exc:
        raise SourceError(path, f"not a PEM or DER CRL: {exc}") from exc
    try:
        crl.extensions.get_extension_for_class(x509.DeltaCRLIndicator)
    except x509.ExtensionNotFound:
        pass
    else:
        raise SourceError(path, "is a delta CRL; only complete CRLs are supported")
    if crl.issuer != issuer.subject:
        raise SourceError(
            path,
            f"issued by {crl.issuer.rfc4514_string()!r}, "
            f"not by the CA {issuer.subject.rfc4514_string()!r}",
        )
    if not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
        raise SourceError(path, "signature does not verify with the CA certificate's key")
    return crl


def _extension(extensions: x509.Extensions, kind: type[_Ext], path: Path, what: str) -> _Ext | None:
    """The value of the ``kind`` extension in ``extensions``, or None when absent.

    Raises:
        SourceError: the extension is present but cannot be decoded (``what: error``).
    """
    try:
        return extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None
    except ValueError as exc:
        raise SourceError(path, f"{what}: {exc}") from exc


def crl_info(crl: x509.CertificateRevocationList, path: Path) -> CRLInfo:
    """The cRLNumber, thisUpdate and nextUpdate of ``crl`` (read from ``path``).

    Raises:
        SourceError: a cRLNumber extension that cannot be decoded.
    """
    found = _extension(crl.extensions, x509.CRLNumber, path, "bad cRLNumber extension")
    number = None if found is None else found.crl_number
    return CRLInfo(
        path=str(path),
        number=number,
        this_update=crl.last_update_utc,
        next_update=crl.next_update_utc,
    )


class CRLSource:
    """Status from one or more CRLs of one issuer; serials absent from them are good.

    Args:
        paths: CRL files (PEM or DER), the fetched ones included.
        issuer: the CA certificate the CRLs must verify against.
        fetched: fetched file -> the URL it is fetched from, for each of ``paths``
            that ``fetch-crls`` writes (may not exist yet).
    """

    kind = "crl"
    default = GOOD

    def __init__(
        self,
        paths: list[Path],
        issuer: x509.Certificate,
        fetched: Mapping[Path, str] | None = None,
    ) -> None:
        self.issuer = issuer
        self.fetched = dict(fetched or {})
        self.files = StatusFiles(paths)

    def describe(self) -> str:
        """``crl`` and the files; a fetched one as ``URL (fetched to FILE)``."""
        names = {path: f"{url} (fetched to {path})" for path, url in self.fetched.items()}
        return f"{self.kind} {self.files.describe(names)}"

    def read(self, now: datetime) -> SourceData:
        """Load every CRL, verify it, and merge their entries.

        Raises:
            SourceError: any file cannot be used (see :func:`load_crl`);
                :class:`~ocsp_responder.sources.DataPending` for a fetched file that
                does not exist yet (its message names the URL).
        """
        table: dict[int, Status] = {}
        contents: list[bytes] = []
        infos: list[CRLInfo] = []
        for path in self.files.paths:
            try:
                data, _ = read_file(path)
            except SourceError as exc:
                if path in self.fetched and not path.exists():
                    raise DataPending(
                        path,
                        f"not fetched yet from {self.fetched[path]} "
                        "(see `ocsp-responder fetch-crls`)",
                    ) from exc
                raise
            contents.append(data)
            crl = load_crl(data, path, self.issuer)
            infos.append(crl_info(crl, path))
            for entry in crl:
                found = _extension(
                    entry.extensions, x509.CRLReason, path, f"entry {entry.serial_number:X}"
                )
                reason = None if found is None else found.reason
                table[entry.serial_number] = Status(
                    CertState.REVOKED, entry.revocation_date_utc, reason
                )
        return SourceData(
            kind=self.kind, table=table, digest=digest_of(contents), crls=tuple(infos)
        )
