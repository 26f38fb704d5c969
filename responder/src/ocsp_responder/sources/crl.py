"""Status from CRL files (RFC 5280 section 5), PEM or DER.

A CRL lists revoked serials only, so it cannot tell an issued certificate from a
serial the CA never issued: every serial absent from the CRLs is answered **good**.
Use the ``index`` source where the CA keeps an OpenSSL database and "unknown" for
non-issued serials matters (CA/B Forum Baseline Requirements).

Each CRL must be a complete CRL (not a delta CRL), name the issuer as its issuer and
verify against the issuer certificate's public key; one that does not is rejected
(at start-up: a configuration error; on reload: the last good data stays in
service). Entries of several files are merged. revocationReason comes from each
entry's CRLReason extension (none when absent).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509

from . import GOOD, CertState, SourceError, Status, StatusSource


def load_crl(path: Path, issuer: x509.Certificate) -> x509.CertificateRevocationList:
    """Read one CRL and check it belongs to ``issuer``.

    Args:
        path: a PEM or DER CRL file.
        issuer: the CA certificate the CRL must be issued and signed by.

    Returns:
        The parsed CRL.

    Raises:
        SourceError: unreadable, not a CRL, a delta CRL, another issuer's CRL, or a
            signature that does not verify; the message names the file.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SourceError(path, f"cannot read: {exc.strerror or exc}") from exc
    try:
        if b"-----BEGIN" in data:
            crl = x509.load_pem_x509_crl(data)
        else:
            crl = x509.load_der_x509_crl(data)
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


class CRLSource(StatusSource):
    """Status from one or more CRLs of one issuer; serials absent from them are good.

    Args:
        paths: CRL files (PEM or DER).
        issuer: the CA certificate the CRLs must verify against.

    Raises:
        SourceError: any file cannot be used (see :func:`load_crl`).
    """

    kind = "crl"
    default = GOOD

    def __init__(self, paths: list[Path], issuer: x509.Certificate) -> None:
        self.issuer = issuer
        self.next_update: datetime | None = None
        super().__init__(paths)

    def parse(self) -> dict[int, Status]:
        """Load every CRL, verify it, and merge their entries."""
        table: dict[int, Status] = {}
        next_updates: list[datetime] = []
        for path in self.paths:
            crl = load_crl(path, self.issuer)
            if crl.next_update_utc is not None:
                next_updates.append(crl.next_update_utc)
            for entry in crl:
                reason: x509.ReasonFlags | None = None
                try:
                    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
                except x509.ExtensionNotFound:
                    pass
                except ValueError as exc:
                    raise SourceError(path, f"entry {entry.serial_number:X}: {exc}") from exc
                table[entry.serial_number] = Status(
                    CertState.REVOKED, entry.revocation_date_utc, reason
                )
        self.next_update = min(next_updates) if next_updates else None
        return table

    def warnings(self) -> list[str]:
        """Warn when the CRLs are past their nextUpdate (the CA stopped publishing?)."""
        if self.next_update is not None and self.next_update < datetime.now(UTC):
            return [
                f"{self.describe()}: CRL nextUpdate {self.next_update.isoformat()} has passed; "
                "status may be stale"
            ]
        return []
