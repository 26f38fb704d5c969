"""Status sources: read status files into one consistent, unvalidated view.

One interface, the :class:`StatusSource` protocol, with one class per kind of data
(:func:`open_source` chooses it by ``kind``):
:class:`~ocsp_responder.sources.index.IndexSource` (the OpenSSL CA database) and
:class:`~ocsp_responder.sources.crl.CRLSource` (CRL files). A source knows nothing
of HTTP, signing, or what was read before: :meth:`StatusSource.read` turns the files
into a :class:`SourceData` (serial -> :class:`Status` plus what the data says about
its own age), or raises :class:`SourceError` naming the file and line.

Whether that data may replace what is being served (never older, never losing a
revocation, not expired) is decided by :mod:`ocsp_responder.snapshot`; keeping it
fresh in every process is :mod:`ocsp_responder.status_data`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from cryptography import x509

if TYPE_CHECKING:
    from .files import StatusFiles


class CertState(Enum):
    """The three certificate states of RFC 6960 section 2.2."""

    GOOD = "good"
    REVOKED = "revoked"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Status:
    """What a source says about one serial number.

    Attributes:
        state: good, revoked or unknown.
        revocation_time: for revoked: when (UTC, aware).
        reason: for revoked: the revocationReason, or None when none was recorded.
    """

    state: CertState
    revocation_time: datetime | None = None
    reason: x509.ReasonFlags | None = None

    @property
    def releasable(self) -> bool:
        """True for a revocation a CA may take back: certificateHold (RFC 5280 5.3.1).

        ``removeFromCRL`` is the record of such a release, so it is releasable too.
        Every other revocation is permanent.
        """
        return self.reason in (x509.ReasonFlags.certificate_hold, x509.ReasonFlags.remove_from_crl)


GOOD = Status(CertState.GOOD)
UNKNOWN = Status(CertState.UNKNOWN)


class SourceError(Exception):
    """A status file cannot be used. The message names the file (and line, if known).

    Args:
        path: the file at fault (kept as the ``path`` attribute).
        message: what is wrong with it.
        line: the line at fault, counting from 1, when there is one.
    """

    def __init__(self, path: Path, message: str, line: int | None = None) -> None:
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {message}")
        self.path = path
        self.reason = message


class DataPending(SourceError):
    """A status file that does not exist *yet*: a CRL URL not fetched so far.

    Unlike any other :class:`SourceError` it does not stop ``serve`` from starting:
    with no earlier snapshot the issuer answers ``tryLater`` until the file arrives
    (see :class:`~ocsp_responder.status_data.StatusData`).
    """


@dataclass(frozen=True)
class CRLInfo:
    """The identity and validity of one accepted CRL file (RFC 5280 section 5.1.2).

    Attributes:
        path: the file it was read from.
        number: its cRLNumber extension, or None when it has none.
        this_update: its thisUpdate (aware UTC).
        next_update: its nextUpdate, or None when it has none.
    """

    path: str
    number: int | None
    this_update: datetime
    next_update: datetime | None


@dataclass(frozen=True)
class SourceData:
    """One consistent read of a source's files, not yet validated.

    Attributes:
        kind: the source kind (``index`` or ``crl``).
        table: serial number -> status for every serial the files mention.
        digest: SHA-256 (hex) over the files' contents, in order.
        mtime: for ``index``: the file's mtime, whole seconds (whoever publishes the
            file confirms it current by rewriting or touching it); None for ``crl``.
        crls: for ``crl``: one :class:`CRLInfo` per file, in configuration order.
    """

    kind: str
    table: dict[int, Status]
    digest: str
    mtime: datetime | None = None
    crls: tuple[CRLInfo, ...] = ()


@runtime_checkable
class StatusSource(Protocol):
    """What every kind of status source provides (RFC 6960 section 2.2 statuses).

    Implemented by :class:`~ocsp_responder.sources.index.IndexSource` and
    :class:`~ocsp_responder.sources.crl.CRLSource`; :func:`open_source` picks one by
    kind. A source is cheap to build: nothing is read until :meth:`read`.

    Attributes:
        kind: ``index`` or ``crl`` (the ``[issuer.source] kind``).
        default: the status of a serial that is absent from the table.
        files: the files it reads and their change detection.
    """

    kind: str
    default: Status
    files: StatusFiles

    def read(self, now: datetime) -> SourceData:
        """Read every file of this source.

        Args:
            now: the time of reading (aware UTC).

        Returns:
            The :class:`SourceData`.

        Raises:
            SourceError: naming the file (and line) that cannot be used.
        """
        ...

    def describe(self) -> str:
        """One line for logs and ``check-config``: kind and files."""
        ...


def open_source(
    kind: str,
    paths: Sequence[Path],
    ca: x509.Certificate,
    fetched: Mapping[Path, str] | None = None,
) -> StatusSource:
    """The source of ``kind`` over ``paths`` (the one place a kind picks its class).

    Args:
        kind: ``index`` (``paths`` is the one index.txt) or ``crl``.
        paths: the status files, in configuration order (for ``crl``, the fetched
            files included).
        ca: the issuer's CA certificate (CRLs must verify against it).
        fetched: ``crl`` only: fetched file -> the URL ``fetch-crls`` fetches it from.

    Raises:
        ValueError: an unknown kind (config validation rules it out earlier).
    """
    from .crl import CRLSource
    from .index import IndexSource

    if kind == "index":
        (path,) = paths
        return IndexSource(path)
    if kind == "crl":
        return CRLSource(list(paths), ca, fetched)
    raise ValueError(f"unknown status source kind {kind!r}")
