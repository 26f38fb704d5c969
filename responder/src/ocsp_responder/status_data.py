"""An issuer's status data as one process serves it, kept current from files and peers.

:class:`StatusData` holds the :class:`~ocsp_responder.snapshot.Snapshot` a process
serves and brings it up to date on each :meth:`StatusData.refresh`:

1. reconcile with the snapshot file in ``state_dir``: adopt it when it is newer
   (another process of the service accepted data, or the operator ran
   ``accept-data``); write this process's own snapshot back, merged with what the
   file remembers, when the file is missing, damaged or older (a lost or damaged
   file heals itself and no process drops what another remembers);
2. the status files changed, or the last read of them failed (a file that could
   not be read is retried at every check, so a ``chmod`` that fixes it is seen):
   read them, validate against the newest snapshot (:func:`~ocsp_responder.snapshot.accept`)
   and, under the store's lock, persist the result, then serve it. When the lock or
   the write fails, the newer data is served all the same (it may carry a
   revocation) and the write is retried at every check.

Before every answer, :meth:`StatusData.sync` adopts a newer snapshot another process
wrote (one ``stat`` when nothing changed; it never waits for a reload in progress),
so once any process has answered from new data, every process answers from it.

A file that cannot be read, does not parse, or is rejected never replaces the data
in service; the error is logged (once per distinct error) with file and line or
serial, and counted in ``ocsp_responder_reload_failures_total{issuer}`` (every
failed read, every rejection; a file that stays unreadable counts once per check
and process). :class:`DataWatcher` runs the checks in a thread of each process.

The data's expiry (:meth:`StatusData.expires_at`) bounds every answer's nextUpdate;
past it, the issuer answers ``tryLater`` (see :mod:`ocsp_responder.responder`).

A source whose files do not exist *yet* (a CRL URL that ``fetch-crls`` has not
fetched so far: :class:`~ocsp_responder.sources.DataPending`) and no snapshot to
start from: the process starts all the same with an empty placeholder snapshot
(generation 0, expired since 1970, never written to ``state_dir``), so the issuer
answers ``tryLater`` until the first good read (:attr:`StatusData.has_data`).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from . import metrics
from .snapshot import (
    DataRejected,
    Snapshot,
    SnapshotError,
    SnapshotStore,
    accept,
    merged,
)
from .sources import (
    CRLInfo,
    DataPending,
    SourceData,
    SourceError,
    Status,
    StatusSource,
)
from .sources.files import FileStamp

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

#: The expiry of the placeholder served before any data exists (see :func:`no_data`).
NO_DATA_TIME = datetime(1970, 1, 1, tzinfo=UTC)

#: The stamp of the snapshot file: (mtime_ns, size, inode), None when absent.
StoreStamp = tuple[int, int, int] | None


def utc_now() -> datetime:
    """The current time, aware UTC (the default clock)."""
    return datetime.now(UTC)


def no_data(issuer: str, ca_identity: str, kind: str, now: datetime) -> Snapshot:
    """The placeholder served while a source has no data yet: generation 0, no serials,
    expired at :data:`NO_DATA_TIME` (so the issuer answers ``tryLater``); never persisted."""
    return Snapshot(
        issuer=issuer,
        ca_identity=ca_identity,
        generation=0,
        kind=kind,
        digest="",
        accepted_at=now,
        confirmed_at=NO_DATA_TIME,
        crls=(CRLInfo(path="", number=None, this_update=NO_DATA_TIME, next_update=NO_DATA_TIME),),
        table={},
        remembered={},
    )


@dataclass(frozen=True)
class DataLifetime:
    """How long an issuer's status data is vouched for (README, "How certificate
    status is decided"; the ``max_data_age`` and ``data_expiry_grace`` keys).

    Attributes:
        max_data_age: how long ``index`` data (or a CRL without nextUpdate) stays
            current after it was confirmed.
        grace: how long past its expiry the data is still served.
    """

    max_data_age: timedelta
    grace: timedelta

    def expires_at(self, snapshot: Snapshot) -> datetime:
        """Up to when ``snapshot`` is vouched for: its own expiry plus the grace."""
        return snapshot.expires_at(self.max_data_age) + self.grace


class StatusData:
    """The status data one process serves for one issuer.

    Args:
        source: where the data comes from.
        store: the issuer's snapshot file (its ``issuer`` name is used in logs).
        lifetime: how long the data is vouched for.
        clock: returns the current time, aware UTC.
        persist: False for read-only use (``check-config``): nothing is written.

    Raises:
        SourceError: on construction, when neither the files nor a snapshot give
            usable data, or the snapshot file is damaged (the message names the file
            and line, or the state file). Not for files that do not exist yet
            (:class:`~ocsp_responder.sources.DataPending`): then the issuer starts
            without data and answers ``tryLater``.
    """

    def __init__(
        self,
        source: StatusSource,
        store: SnapshotStore,
        lifetime: DataLifetime,
        clock: Clock = utc_now,
        *,
        persist: bool = True,
    ) -> None:
        self.name = store.issuer
        self.source, self.store, self.lifetime = source, store, lifetime
        self.clock, self.persist = clock, persist
        self._lock = threading.Lock()
        self._logged_error: str | None = None
        self.last_error: str | None = None
        #: True while the last read failed only because a file does not exist *yet*
        #: (:class:`~ocsp_responder.sources.DataPending`: a CRL URL not fetched so far).
        self.pending = False
        self._failures = metrics.get().issuer(self.name).reload_failures
        self._files_stamps: tuple[FileStamp | None, ...] | None = None
        self._read_digest: str | None = None
        self._retry_read = False
        self._persist_pending = False
        self._peeked: tuple[StoreStamp, Snapshot | None] = (None, None)
        self._store_stamp: StoreStamp = store.stamp()
        try:
            stored = store.load()
        except SnapshotError as exc:
            raise SourceError(
                store.path,
                f"{str(exc).split(': ', 1)[-1]}; if it cannot be restored, check the status "
                "files and run `ocsp-responder accept-data` (it moves the damaged file aside)",
            ) from exc
        self._current: Snapshot
        stamps = source.files.stamps()
        try:
            data = source.read(clock())
            candidate = self._validate(stored, data)
        except SourceError as exc:
            if stored is None and not isinstance(exc, DataPending):
                raise
            self._current = stored or no_data(self.name, store.ca_identity, source.kind, clock())
            self._failed(exc, retry=not isinstance(exc, DataRejected))
        else:
            self._current = candidate
            self._files_stamps = stamps
            self._read_digest = data.digest
            if persist and candidate is not stored:
                self._persist(candidate)
        if persist:
            self._remove_temporaries()

    # ------------------------------------------------------------ serving

    @property
    def snapshot(self) -> Snapshot:
        """The snapshot in service (replaced by reference: readers see all-old or all-new)."""
        return self._current

    @property
    def has_data(self) -> bool:
        """False while only the :func:`no_data` placeholder is in service."""
        return self._current.generation > 0

    def lookup(self, serial: int, snapshot: Snapshot | None = None) -> Status:
        """The status of ``serial`` in ``snapshot`` (default: the one in service).

        Returns:
            The table's status, a remembered revocation, or the source's default.
        """
        return (snapshot or self._current).served.get(serial, self.source.default)

    def sync(self) -> Snapshot:
        """The snapshot to answer from: the one in service, or a newer one a peer wrote.

        One ``stat`` of the snapshot file when nothing changed. A newer snapshot is
        read without waiting for a reload in progress in this process, and adopted
        when the process is not busy reloading. Every process writes accepted data
        before it serves it (or keeps retrying the write while it cannot), so once
        any process has answered from new data (say, a revocation), every other
        process answers from it from its next request on.
        """
        current = self._current
        stamp = self.store.stamp()
        if stamp == self._store_stamp:
            return current
        if stamp == self._peeked[0]:
            peeked = self._peeked[1]  # read already: answer from it until adopted
            return peeked if peeked is not None and peeked.order > current.order else current
        stored = self._load_quietly()
        self._peeked = (stamp, stored)
        if stored is None or stored.order <= current.order:
            return current
        if self._lock.acquire(blocking=False):
            try:
                if stored.order > self._current.order:
                    self._adopt(stored, stamp)
            finally:
                self._lock.release()
        return stored

    def __len__(self) -> int:
        """Number of serial numbers in the data in service."""
        return len(self._current.served)

    def expires_at(self, snapshot: Snapshot | None = None) -> datetime:
        """Up to when ``snapshot`` (default: the one in service) is vouched for: its
        expiry plus the grace."""
        return self.lifetime.expires_at(snapshot or self._current)

    def describe(self) -> str:
        """One line: source, serial count, generation, expiry."""
        snap = self._current
        return (
            f"source {self.source.describe()} ({len(snap.served)} serials, generation "
            f"{snap.generation}{', set by accept-data' if snap.override else ''}); "
            f"data expires {self.expires_at(snap).isoformat()}"
        )

    # ------------------------------------------------------------ refreshing

    def refresh(self) -> bool:
        """One reload check: reconcile with the snapshot file, then re-read changed files.

        Returns:
            True if the data in service changed.
        """
        with self._lock:
            changed = self._reconcile()
            stamps = self.source.files.stamps()
            if stamps == self._files_stamps and not self._retry_read:
                return changed
            try:
                data = self.source.read(self.clock())
            except SourceError as exc:
                self._files_stamps = stamps
                self._failed(exc, retry=True)
                return changed
            self._files_stamps = stamps
            self._read_digest = data.digest
            try:
                return self._accept(data) or changed
            except DataRejected as exc:
                self._failed(exc, retry=False)
                return changed

    def _accept(self, data: SourceData) -> bool:
        candidate = self._validate(self._current, data)
        if candidate is self._current:
            self._succeeded()
            return False
        if self.persist and self.store.stamp() != self._store_stamp:
            # Another process wrote since this one last looked: go from its snapshot
            # if it is newer (a peer that took a later file first is no error).
            stored = self._load_quietly()
            if stored is not None and stored.order > self._current.order:
                self._adopt(stored, self.store.stamp())
                try:
                    candidate = self._validate(stored, data)
                except DataRejected:
                    self._succeeded()
                    return True  # the peer already serves newer data than this read
                if candidate is stored:
                    self._succeeded()
                    return True
        self._current = candidate
        if self.persist:
            self._persist(candidate)
        self._succeeded()
        log.info(
            "issuer %s: accepted %s: %d serials, generation %d",
            self.name,
            self.source.describe(),
            len(candidate.served),
            candidate.generation,
        )
        return True

    def _reconcile(self) -> bool:
        """Adopt a newer snapshot file; write ours back over a missing, damaged or
        older one (or one we could not write before). Returns True when adopted."""
        stamp = self.store.stamp()
        if stamp == self._store_stamp and not self._persist_pending:
            return False
        stored = self._load_quietly()
        if stored is not None and stored.order > self._current.order:
            self._adopt(stored, stamp)
            return True
        self._store_stamp = stamp
        if (
            self.persist
            and self.has_data
            and (self._persist_pending or stored is None or stored.order < self._current.order)
        ):
            self._persist(self._current)
        return False

    def _persist(self, candidate: Snapshot) -> None:
        """Write ``candidate`` under the lock, numbered past (and merged with) the file.

        On success the written snapshot is the one in service. When the lock or the
        write fails, ``candidate`` stays in service and the write is retried at
        every check (logged once). The :func:`no_data` placeholder is never written.
        """
        if candidate.generation == 0:
            return
        try:
            with self.store.lock():
                stored = self._load_quietly()
                if stored is not None and stored.order > candidate.order:
                    # a peer (or accept-data) got ahead while we were not looking
                    self._adopt(stored, self.store.stamp())
                    self._persist_pending = False
                    return
                written = merged(candidate, stored) if stored is not None else candidate
                self.store.save(written)
                self._current = written
                self._store_stamp = self.store.stamp()
        except OSError as exc:
            self._persist_pending = True
            self._log_once(
                f"issuer {self.name}: cannot write {self.store.path}: "
                f"{exc.strerror or exc}; this data is served but not yet kept (retrying)"
            )
            return
        if self._persist_pending:
            log.info("issuer %s: %s written again", self.name, self.store.path)
        self._persist_pending = False

    def _remove_temporaries(self) -> None:
        """Remove what a writer killed mid-write left (best effort, under the lock)."""
        try:
            with self.store.lock():
                self.store.remove_temporaries()
        except OSError:
            pass  # _persist reports an unwritable state_dir

    def _adopt(self, stored: Snapshot, stamp: StoreStamp) -> None:
        """Serve ``stored`` (newer than ours); re-read the files unless it holds them."""
        self._current = stored
        self._store_stamp = stamp
        if stored.digest != self._read_digest:
            self._files_stamps = None  # validate the files against the adopted data
        log.info(
            "issuer %s: adopted snapshot generation %d from %s%s",
            self.name,
            stored.generation,
            self.store.path,
            " (set by accept-data)" if stored.override else "",
        )

    def _load_quietly(self) -> Snapshot | None:
        try:
            return self.store.load()
        except SnapshotError as exc:
            self._log_once(f"issuer {self.name}: {exc}; keeping the data in service")
            return None

    def _validate(self, previous: Snapshot | None, data: SourceData) -> Snapshot:
        return accept(
            previous,
            data,
            issuer=self.name,
            ca_identity=self.store.ca_identity,
            now=self.clock(),
            paths=self.source.files.paths,
        )

    def _failed(self, exc: SourceError, *, retry: bool) -> None:
        self._retry_read = retry
        self.last_error = str(exc)
        self.pending = isinstance(exc, DataPending)
        self._failures.inc()
        if not self.has_data:
            self._log_once(f"issuer {self.name}: no status data yet, answering tryLater: {exc}")
            return
        self._log_once(
            f"issuer {self.name}: keeping the last good data (generation "
            f"{self._current.generation}): {exc}"
        )

    def _succeeded(self) -> None:
        self._retry_read = False
        self.pending = False
        if self.last_error is not None:
            log.info("issuer %s: %s is usable again", self.name, self.source.describe())
        self.last_error = None
        self._logged_error = None

    def _log_once(self, message: str) -> None:
        if message != self._logged_error:
            log.error("%s", message)
            self._logged_error = message


class DataWatcher:
    """A daemon thread that calls :meth:`StatusData.refresh` periodically.

    One per process (threads do not survive ``fork``, so a forking server starts it in
    each worker via :meth:`ensure_running`).

    Args:
        data: the issuers' status data.
        interval: seconds between checks.
    """

    def __init__(self, data: Sequence[StatusData], interval: float) -> None:
        self.data = tuple(data)
        self.interval = interval
        self._pid: int | None = None
        self._start_lock = threading.Lock()
        self._logged: dict[str, str] = {}

    def check_now(self) -> None:
        """Check every issuer once, in this thread.

        An unexpected exception is logged (type and message, once per distinct
        cause, no traceback) and the next check runs as usual.
        """
        for item in self.data:
            try:
                item.refresh()
            except Exception as exc:
                cause = f"reload check of issuer {item.name} failed: {type(exc).__name__}: {exc}"
                if self._logged.get(item.name) != cause:
                    log.error("%s", cause[:500])
                    self._logged[item.name] = cause

    def ensure_running(self) -> None:
        """Start the thread in this process if it is not running here yet.

        The first call in a process checks every issuer synchronously first, so data
        inherited across ``fork`` is brought up to date (from the snapshots other
        processes wrote, then from the files) before anything is served.
        """
        pid = os.getpid()
        if self._pid == pid:
            return
        with self._start_lock:
            if self._pid == pid:
                return
            self.check_now()
            thread = threading.Thread(target=self._run, name="status-watcher", daemon=True)
            thread.start()
            self._pid = pid

    def _run(self) -> None:
        stop = threading.Event()
        while not stop.wait(self.interval):
            self.check_now()
