"""An issuer's status data as one process serves it, kept current from files and peers.

:class:`StatusData` holds the :class:`~ocsp_responder.snapshot.Snapshot` a process
serves and brings it up to date on each :meth:`StatusData.refresh`:

1. the snapshot file in ``state_dir`` changed and carries a newer generation
   (another process of the service accepted data, or the operator ran
   ``accept-data``): adopt it (:meth:`StatusData.sync` does this step alone before
   every answer);
2. the status files changed, or the last read of them failed (a file that could
   not be read is retried at every check, so a ``chmod`` that fixes it is seen):
   read them, validate against the newest snapshot (:func:`~ocsp_responder.snapshot.accept`)
   and, under the store's lock, persist the result before serving it.

A file that cannot be read, does not parse, or is rejected never replaces the data
in service; the error is logged (once per distinct error) with file and line or
serial, and counted in ``ocsp_responder_reload_failures_total{issuer}`` (every
failed read, every rejection; a file that stays unreadable counts once per check
and process). :class:`DataWatcher` runs the checks in a thread of each process.

The data's expiry (:meth:`StatusData.expires_at`) bounds every answer's nextUpdate;
past it, the issuer answers ``tryLater`` (see :mod:`ocsp_responder.responder`).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from . import metrics
from .snapshot import (
    DataRejected,
    Snapshot,
    SnapshotError,
    SnapshotStore,
    accept,
    with_generation,
)
from .sources import FileStamp, SourceData, SourceError, Status, StatusSource

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The current time, aware UTC (the default clock)."""
    return datetime.now(UTC)


class StatusData:
    """The status data one process serves for one issuer.

    Args:
        name: the issuer name (for logs).
        source: where the data comes from.
        store: the issuer's snapshot file.
        max_data_age: how long ``index`` data (or a CRL without nextUpdate) stays
            current after it was confirmed.
        grace: how long past its expiry the data is still served.
        clock: returns the current time, aware UTC.
        persist: False for read-only use (``check-config``): nothing is written.

    Raises:
        SourceError: on construction, when neither the files nor a snapshot give
            usable data (the message names the file and line, or the state file).
    """

    def __init__(
        self,
        name: str,
        source: StatusSource,
        store: SnapshotStore,
        *,
        max_data_age: timedelta,
        grace: timedelta,
        clock: Clock = utc_now,
        persist: bool = True,
    ) -> None:
        self.name = name
        self.source = source
        self.store = store
        self.max_data_age = max_data_age
        self.grace = grace
        self.clock = clock
        self.persist = persist
        self._lock = threading.Lock()
        self._logged_error: str | None = None
        self.last_error: str | None = None
        self._failures = metrics.get().issuer(name).reload_failures
        self._files_stamps: tuple[FileStamp | None, ...] | None = None
        self._retry_read = False
        self._store_stamp = store.stamp()
        stored = self._load_store()
        self._current: Snapshot
        stamps = source.stamps()
        try:
            data = source.read(clock())
            candidate = self._validate(stored, data)
        except SourceError as exc:
            if stored is None:
                raise
            self._current = stored
            self._failed(exc, retry=not isinstance(exc, DataRejected))
        else:
            self._current = candidate
            self._files_stamps = stamps
            if candidate is not stored:
                self._commit(candidate)
        self._store_stamp = store.stamp()

    # ------------------------------------------------------------ serving

    @property
    def snapshot(self) -> Snapshot:
        """The snapshot in service (replaced by reference: readers see all-old or all-new)."""
        return self._current

    def lookup(self, serial: int) -> Status:
        """The status of ``serial``: the table, remembered revocations, or the default."""
        return self._current.served.get(serial, self.source.default)

    def sync(self) -> None:
        """Adopt a newer snapshot another process has accepted, before answering.

        One ``stat`` of the snapshot file per call. A process persists accepted data
        before it serves it, so once any process has answered from new data (say, a
        revocation), every other process answers from it too, from its next request
        on, not only from its next reload check.
        """
        if self.store.stamp() != self._store_stamp:
            with self._lock:
                self._adopt_store()

    def __len__(self) -> int:
        """Number of serial numbers in the data in service."""
        return len(self._current.served)

    def expires_at(self) -> datetime:
        """The time up to which this data is vouched for: its expiry plus the grace."""
        return self._current.expires_at(self.max_data_age) + self.grace

    def describe(self) -> str:
        """One line: source, serial count, generation, expiry."""
        snap = self._current
        return (
            f"source {self.source.describe()} ({len(snap.served)} serials, generation "
            f"{snap.generation}{', set by accept-data' if snap.override else ''}); "
            f"data expires {self.expires_at().isoformat()}"
        )

    # ------------------------------------------------------------ refreshing

    def refresh(self) -> bool:
        """One reload check: adopt a newer peer snapshot, then re-read changed files.

        Returns:
            True if the data in service changed.
        """
        with self._lock:
            changed = self._adopt_store()
            stamps = self.source.stamps()
            if stamps == self._files_stamps and not self._retry_read:
                return changed
            try:
                data = self.source.read(self.clock())
            except SourceError as exc:
                self._files_stamps = stamps
                self._failed(exc, retry=True)
                return changed
            self._files_stamps = stamps
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
        if self.persist:
            with self.store.lock():
                stored = self._load_store_quietly()
                if stored is not None and stored.generation >= candidate.generation:
                    # another process got ahead: validate against what it accepted
                    if stored.generation > self._current.generation:
                        self._current = stored
                    candidate = self._validate(stored, data)
                    if candidate is stored:
                        self._store_stamp = self.store.stamp()
                        self._succeeded()
                        return True
                    candidate = with_generation(candidate, stored.generation + 1)
                self._save(candidate)
        self._current = candidate
        self._succeeded()
        log.info(
            "issuer %s: accepted %s: %d serials, generation %d",
            self.name,
            self.source.describe(),
            len(candidate.served),
            candidate.generation,
        )
        return True

    def _commit(self, candidate: Snapshot) -> None:
        """Persist the start-up snapshot (under the lock, renumbered past any peer's)."""
        if not self.persist:
            return
        with self.store.lock():
            stored = self._load_store_quietly()
            if stored is not None and stored.generation >= candidate.generation:
                candidate = with_generation(candidate, stored.generation + 1)
            self._save(candidate)
        self._current = candidate

    def _save(self, candidate: Snapshot) -> None:
        try:
            self.store.save(candidate)
        except OSError as exc:
            # Serve the newer data anyway (it may carry a revocation), but say loudly
            # that a restarted process would not see it.
            log.error(
                "issuer %s: cannot write %s: %s; this data is served but not kept",
                self.name,
                self.store.path,
                exc.strerror or exc,
            )
        self._store_stamp = self.store.stamp()

    def _adopt_store(self) -> bool:
        stamp = self.store.stamp()
        if stamp == self._store_stamp:
            return False
        stored = self._load_store_quietly()
        self._store_stamp = stamp
        if stored is None or stored.generation <= self._current.generation:
            return False
        self._current = stored
        log.info(
            "issuer %s: adopted snapshot generation %d from %s%s",
            self.name,
            stored.generation,
            self.store.path,
            " (set by accept-data)" if stored.override else "",
        )
        return True

    def _load_store(self) -> Snapshot | None:
        try:
            return self.store.load()
        except SnapshotError as exc:
            raise SourceError(self.store.path, str(exc).split(": ", 1)[-1]) from exc

    def _load_store_quietly(self) -> Snapshot | None:
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
            ca_fingerprint=self.store.ca_fingerprint,
            now=self.clock(),
            paths=self.source.paths,
        )

    def _failed(self, exc: SourceError, *, retry: bool) -> None:
        self._retry_read = retry
        self.last_error = str(exc)
        self._failures.inc()
        self._log_once(
            f"issuer {self.name}: keeping the last good data (generation "
            f"{self._current.generation}): {exc}"
        )

    def _succeeded(self) -> None:
        self._retry_read = False
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

    def check_now(self) -> None:
        """Check every issuer once, in this thread."""
        for item in self.data:
            try:
                item.refresh()
            except Exception:
                log.exception("reload check of issuer %s failed", item.name)

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
