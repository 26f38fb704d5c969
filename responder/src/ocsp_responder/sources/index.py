"""Status from the OpenSSL CA database (``index.txt``), as ``openssl ca`` writes it.

Each line has six tab-separated fields (see ``openssl-ca(1)`` and ``apps/ca.c``)::

    status  expiry  revocation  serial  filename  subject

What each row gives (``V``, ``E``, ``R``, absent) and which revocation reasons are
read is the table "How certificate status is decided" in the project's README.md.
The revocation field is ``TIME[,REASON[,EXTRA]]`` with TIME in UTCTime
(``YYMMDDHHMMSSZ``) or GeneralizedTime (``YYYYMMDDHHMMSSZ``) form and REASON one of
the names ``openssl ca -crl_reason`` writes (case-insensitive), or one of the forms
``-crl_hold`` / ``-crl_compromise`` / ``-crl_CA_compromise`` write (:data:`REASONS`).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509

from . import UNKNOWN, CertState, SourceData, SourceError, Status
from .files import StatusFiles, digest_of, read_file

#: Reason names as ``openssl ca`` writes them, lower-cased.
REASONS: dict[str, x509.ReasonFlags] = {
    "unspecified": x509.ReasonFlags.unspecified,
    "keycompromise": x509.ReasonFlags.key_compromise,
    "cacompromise": x509.ReasonFlags.ca_compromise,
    "affiliationchanged": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessationofoperation": x509.ReasonFlags.cessation_of_operation,
    "certificatehold": x509.ReasonFlags.certificate_hold,
    "removefromcrl": x509.ReasonFlags.remove_from_crl,
    "holdinstruction": x509.ReasonFlags.certificate_hold,
    "keytime": x509.ReasonFlags.key_compromise,
    "cakeytime": x509.ReasonFlags.ca_compromise,
}
#: Reason forms whose third field is required.
_NEEDS_EXTRA = {"holdinstruction", "keytime", "cakeytime"}
_GOOD_ROWS = {"V", "E"}
#: The form of an index.txt time: UTCTime or GeneralizedTime, seconds, "Z".
_TIME_FORM = re.compile(r"(?:\d{2})?\d{12}Z")


def parse_openssl_time(text: str) -> datetime:
    """Parse an index.txt time: UTCTime ``YYMMDDHHMMSSZ`` or GeneralizedTime ``YYYYMMDDHHMMSSZ``.

    UTCTime years 50-99 are 19xx, 00-49 are 20xx (RFC 5280 section 4.1.2.5.1).

    Returns:
        An aware UTC datetime.

    Raises:
        ValueError: any other form.
    """
    if len(text) == 13 and text.endswith("Z"):
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
    if len(text) != 15 or not text.endswith("Z") or not text[:14].isdigit():
        raise ValueError(f"bad time {text!r} (want YYMMDDHHMMSSZ or YYYYMMDDHHMMSSZ)")
    return datetime.strptime(text, "%Y%m%d%H%M%SZ").replace(tzinfo=UTC)


def parse_revocation(field: str) -> tuple[datetime, x509.ReasonFlags | None]:
    """Parse the revocation field of an ``R`` row: ``TIME[,REASON[,EXTRA]]``.

    Returns:
        (revocationTime, revocationReason or None).

    Raises:
        ValueError: a bad time, an unknown reason name, or a missing/extra field.
    """
    parts = field.split(",")
    when = parse_openssl_time(parts[0])
    if len(parts) == 1:
        return when, None
    name = parts[1].lower()
    if name not in REASONS:
        raise ValueError(f"unknown revocation reason {parts[1]!r}")
    if name in _NEEDS_EXTRA:
        if len(parts) != 3 or not parts[2]:
            raise ValueError(f"reason {parts[1]!r} needs a third field")
        if name != "holdinstruction":
            parse_openssl_time(parts[2])
    elif len(parts) > 2:
        raise ValueError(f"unexpected field after reason {parts[1]!r}")
    return when, REASONS[name]


def parse_index(data: bytes, path: Path) -> dict[int, Status]:
    """Parse the contents of an OpenSSL CA database.

    Args:
        data: the file's contents.
        path: the file, for messages.

    Returns:
        serial number -> status, for every row.

    Raises:
        SourceError: naming the file and line of the first row that cannot be parsed
            (including a truncated last line), or the file when it has no rows at all
            (an empty index.txt is a truncated or not yet written one: a CA that
            answers OCSP has issued at least its delegated signer).
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")  # subjects may be in a legacy charset
    if text and not text.endswith("\n"):
        line_no = text.count("\n") + 1
        raise SourceError(path, "last line is incomplete (no newline): partial write?", line_no)
    table: dict[int, Status] = {}
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line:
            continue
        try:
            serial, status = _parse_row(line)
        except ValueError as exc:
            raise SourceError(path, str(exc), line_no) from None
        previous = table.get(serial)
        if previous is None or previous.state is not CertState.REVOKED:
            table[serial] = status  # a serial listed twice: revoked wins
    if not table:
        raise SourceError(path, "has no rows (empty or truncated file?)")
    return table


def _parse_row(line: str) -> tuple[int, Status]:
    fields = line.split("\t")
    if len(fields) != 6:
        raise ValueError(f"expected 6 tab-separated fields, found {len(fields)}")
    row, expiry, revocation, serial_hex = fields[:4]
    if not _TIME_FORM.fullmatch(expiry):  # checked, not parsed: it is not used
        raise ValueError(f"bad time {expiry!r} (want YYMMDDHHMMSSZ or YYYYMMDDHHMMSSZ)")
    try:
        serial = int(serial_hex, 16)
    except ValueError:
        raise ValueError(f"bad serial {serial_hex!r} (want hex)") from None
    if row in _GOOD_ROWS:
        if revocation:
            raise ValueError(f"{row} row has a revocation field {revocation!r}")
        return serial, Status(CertState.GOOD)
    if row == "R":
        if not revocation:
            raise ValueError("R row has no revocation field")
        when, reason = parse_revocation(revocation)
        return serial, Status(CertState.REVOKED, when, reason)
    raise ValueError(f"unknown row status {row!r} (want V, R or E)")


class IndexSource:
    """Status from one ``index.txt``; serials absent from it are unknown.

    The data was last confirmed current at the file's mtime: whoever publishes it
    confirms it by rewriting or touching the file.

    Args:
        path: the index.txt written by ``openssl ca``.
    """

    kind = "index"
    default = UNKNOWN

    def __init__(self, path: Path) -> None:
        self.files = StatusFiles([path])

    def describe(self) -> str:
        """``index`` and the file."""
        return f"{self.kind} {self.files.describe()}"

    def read(self, now: datetime) -> SourceData:
        """Read and parse the index file (see :func:`parse_index`).

        Raises:
            SourceError: unreadable, empty, or a row that cannot be parsed.
        """
        (path,) = self.files.paths
        data, st = read_file(path)
        mtime = datetime.fromtimestamp(st.st_mtime_ns / 1e9, UTC).replace(microsecond=0)
        return SourceData(
            kind=self.kind,
            table=parse_index(data, path),
            digest=digest_of([data]),
            mtime=mtime,
        )
