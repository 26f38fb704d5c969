"""Status sources: where the status of a serial number comes from.

One interface, :class:`StatusSource`, with one class per kind of data:
:class:`~ocsp_responder.sources.index.IndexSource` (the OpenSSL CA database) and
:class:`~ocsp_responder.sources.crl.CRLSource` (CRL files). A source knows nothing of
HTTP or signing; it maps a serial number to a :class:`Status` and keeps its data fresh.

Hot reload: :meth:`StatusSource.reload_if_changed` compares each file's (mtime, size,
inode) with what was loaded; a changed set of files is parsed completely into a new
table, which then replaces the old one in a single reference assignment, so a lookup
sees either all-old or all-new data, never half-read data. A file that fails to parse
leaves the last good table in service, is logged once with file and line, and is
retried each time it changes again.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from pathlib import Path

from cryptography import x509

log = logging.getLogger(__name__)


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


FileStamp = tuple[int, int, int]  # (mtime_ns, size, inode)


def _stamps(paths: Iterable[Path]) -> tuple[FileStamp | None, ...]:
    stamps: list[FileStamp | None] = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            stamps.append(None)
        else:
            stamps.append((st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(stamps)


class StatusSource:
    """Base class: a table of revocation data read from files, with hot reload.

    Subclasses implement :meth:`parse`, which reads all of ``paths`` and returns the
    table of serial number -> :class:`Status`, and :attr:`default` (the answer for a
    serial that is not in the table).

    Args:
        paths: the files this source reads.

    Raises:
        SourceError: on construction, when the files cannot be read or parsed.
    """

    kind = "abstract"
    #: The status of a serial that is absent from the table.
    default: Status = UNKNOWN

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = tuple(paths)
        self._lock = threading.Lock()
        stamps = _stamps(self.paths)
        self._table: dict[int, Status] = self.parse()
        self._loaded_stamps = stamps
        self._failed_stamps: tuple[FileStamp | None, ...] | None = None

    def parse(self) -> dict[int, Status]:
        """Read every file of this source.

        Returns:
            serial number -> status for every serial the files mention.

        Raises:
            SourceError: naming the file (and line) that cannot be used.
        """
        raise NotImplementedError

    def lookup(self, serial: int) -> Status:
        """Return the status of ``serial`` (no I/O: a dictionary lookup)."""
        return self._table.get(serial, self.default)

    def __len__(self) -> int:
        """Number of serial numbers in the current table."""
        return len(self._table)

    def describe(self) -> str:
        """One line for logs and ``check-config``: kind and paths."""
        return f"{self.kind} {','.join(str(p) for p in self.paths)}"

    def warnings(self) -> list[str]:
        """Things an operator should know that are not errors (e.g. an expired CRL)."""
        return []

    def reload_if_changed(self) -> bool:
        """Re-read the files if any of them changed since the last load or failure.

        Returns:
            True if a new table was swapped in.
        """
        with self._lock:
            stamps = _stamps(self.paths)
            if stamps in (self._loaded_stamps, self._failed_stamps):
                return False
            try:
                table = self.parse()
            except SourceError as exc:
                self._failed_stamps = stamps
                log.error("keeping the last good data of %s: %s", self.describe(), exc)
                return False
            self._table = table
            self._loaded_stamps = stamps
            self._failed_stamps = None
            log.info("reloaded %s: %d serials", self.describe(), len(table))
            return True


class SourceWatcher:
    """A daemon thread that calls :meth:`StatusSource.reload_if_changed` periodically.

    One per process (threads do not survive ``fork``, so a forking server starts it in
    each worker via :meth:`ensure_running`).

    Args:
        sources: the sources to watch.
        interval: seconds between checks.
    """

    def __init__(self, sources: Sequence[StatusSource], interval: float) -> None:
        self.sources = tuple(sources)
        self.interval = interval
        self._pid: int | None = None
        self._stop = threading.Event()
        self._start_lock = threading.Lock()

    def check_now(self) -> None:
        """Check every source once, in this thread."""
        for source in self.sources:
            try:
                source.reload_if_changed()
            except Exception:
                log.exception("reload check of %s failed", source.describe())

    def ensure_running(self) -> None:
        """Start the thread in this process if it is not running here yet.

        The first call in a process checks every source synchronously first, so data
        inherited across ``fork`` is brought up to date before anything is served.
        """
        pid = os.getpid()
        if self._pid == pid:
            return
        with self._start_lock:
            if self._pid == pid:
                return
            self._stop = threading.Event()
            self.check_now()
            thread = threading.Thread(target=self._run, name="source-watcher", daemon=True)
            thread.start()
            self._pid = pid

    def stop(self) -> None:
        """Ask the thread to end after its current check."""
        self._stop.set()

    def _run(self) -> None:
        stop = self._stop
        while not stop.wait(self.interval):
            self.check_now()
