"""Pre-signed responses: signed once per host, reused until their refresh point or a
status change.

A non-nonce response is kept per (signing context, serial, CertID hash algorithm),
where the signing context (:attr:`~ocsp_responder.issuers.Issuer.signing_context`)
is a digest of everything that shapes the response besides the request and the
status: issuer name and certificate, signer certificate, response_validity,
ResponderID form and signature hash. A response is served again as long as

* the time is before its refresh point, thisUpdate + refresh_fraction x validity,
* the status source still gives the same status for that serial (so a reload that
  revokes a certificate makes the next request re-sign it, and nothing else), and
* its nextUpdate is not after what the issuer may vouch for now (data expiry +
  grace, signer notAfter).

The store is an SQLite database (the standard library's :mod:`sqlite3`). Under
``serve`` it is one file per host, shared by every worker process, so every worker
returns the same bytes and the same strong ETag for a serial until its refresh
point, and the host signs each pre-signed answer once instead of once per worker:
when two workers miss at the same time and both sign, the first to store its
response wins and the second serves the stored one (:meth:`ResponseCache.put`).
Without a path (the WSGI app imported by another server, tests) it is an in-memory
database private to the process.

Two bounds, both held after every ``put`` for the whole store:

* ``max_entries`` responses (``[server] cache_size``), and
* ``max_bytes`` octets (``[server] cache_bytes``), where an entry counts the length
  of its DER response plus ENTRY_OVERHEAD octets, an upper estimate of its row
  (key, status, times, ETag), its index entries and page slack.

Least recently used entries are dropped first (each process writes the last uses of
its hits in batches, :data:`TOUCH_BATCH`); 0 for either bound disables caching.

A store that fails (locked past ``BUSY_TIMEOUT``, a damaged file or row, a full
disk) is never an error for a client: a failing ``get`` is a miss and a failing
``put`` serves the response just signed; the first failure after a success is
logged at ERROR, the recovery at WARNING. After a failure the process leaves the
store alone for ``BACKOFF`` seconds (every get a miss, every put skipped), so a
stuck writer elsewhere (a worker stopped inside a transaction) costs each
request at most one short wait, not one per operation. Writes a hit makes (its
last use, dropping a stale entry) never wait for the lock: they are skipped when
another process writes.

Metrics (:mod:`ocsp_responder.metrics`): ``ocsp_responder_cache_evictions_total``
counts entries dropped to hold the bounds (not those dropped as stale or for a
status change, which are cache misses); ``ocsp_responder_cache_entries`` and
``ocsp_responder_cache_bytes`` are the store's totals, set by a process when it opens
the store, after each of its changes, and before each scrape it answers (the
gauges keep the value of the live process that set them last).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from . import metrics
from .signing import SignedResponse
from .sources import Status

log = logging.getLogger(__name__)

#: (signing context, serial number, CertID hash algorithm name)
CacheKey = tuple[str, int, str]

#: Octets charged to each entry on top of its DER response: an SQLite row holds the
#: id and key (a 64-character context, the serial in hex, the algorithm name), the
#: status, three times, the ETag and two HTTP dates, about 300 octets; its last use is
#: a row of its own; the key and LRU indexes repeat the key and the last use, and
#: B-tree pages are rarely full; rounded up.
ENTRY_OVERHEAD = 1024

#: A hit does not write its last use at once: a process keeps its last uses in memory
#: and writes them in its next put (before evicting) or once it holds this many, so a
#: hit is one read instead of a read and a write. The LRU order is exact within a
#: process; another process's eviction does not see uses not yet written, and a batch
#: that finds another process writing is dropped.
TOUCH_BATCH = 256

#: Seconds a put waits for another process's write to end before it counts as a
#: failure (the signed response served without being stored); a write takes well
#: under a millisecond. The threads of a process take turns on its connection, so
#: one of them waiting holds the others that long too.
BUSY_TIMEOUT = 0.1

#: Seconds a process leaves the store alone after a failure (see the module docstring).
BACKOFF = 1.0

#: Bound on the write-ahead log kept after a checkpoint, octets (it lives in the
#: RuntimeDirectory, a tmpfs: memory).
JOURNAL_SIZE_LIMIT = 4 * 1024 * 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS presigned (
    id INTEGER PRIMARY KEY,
    context TEXT NOT NULL,
    serial TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    der BLOB NOT NULL,
    status TEXT NOT NULL,
    this_update INTEGER NOT NULL,
    next_update INTEGER NOT NULL,
    refresh_at REAL NOT NULL,
    etag TEXT NOT NULL,
    last_modified TEXT NOT NULL,
    expires TEXT NOT NULL,
    size INTEGER NOT NULL,
    UNIQUE (context, serial, algorithm)
);
-- the last use apart from the response: a hit rewrites this small row, not the DER
CREATE TABLE IF NOT EXISTS used (
    id INTEGER PRIMARY KEY,
    last_used INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS used_lru ON used (last_used);
CREATE TABLE IF NOT EXISTS totals (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    entries INTEGER NOT NULL,
    bytes INTEGER NOT NULL
);
INSERT OR IGNORE INTO totals VALUES (0, 0, 0);
"""

#: One entry: its id, then :data:`Row`.
_SELECT = (
    "SELECT id, der, status, this_update, next_update, refresh_at, etag, last_modified, expires"
    " FROM presigned WHERE context = ? AND serial = ? AND algorithm = ?"
)

_T = TypeVar("_T")


def status_text(status: Status) -> str:
    """``status`` as one string, ``state|revocation time (ISO 8601)|revocationReason``
    with empty parts for None: two texts are equal only when the Status are (the
    same instant written with two UTC offsets differs: a miss, never a wrong
    answer)."""
    when = status.revocation_time.isoformat() if status.revocation_time else ""
    reason = status.reason.value if status.reason else ""
    return f"{status.state.value}|{when}|{reason}"


class ResponseCache:
    """Bounded LRU store of CacheKey -> pre-signed response, safe to share between the
    threads of a process and, with a ``path``, between the processes of a host.

    Args:
        max_entries: bound on the number of entries; 0 disables caching (every get
            misses, put stores nothing).
        max_bytes: bound on the sum of the entries' sizes (len(der) + ENTRY_OVERHEAD),
            octets; 0 disables caching. A response larger than this on its own is not
            kept.
        refresh_fraction: fraction (0 < f <= 1) of a response's validity after which
            it is no longer served from the cache.
        path: the SQLite file shared by the processes of a host (created with its
            tables on first use, in every process that uses it); None for an
            in-memory store private to this process.

    Each process opens its own connection on first use (never one inherited across
    ``fork``) and its threads take turns on it.
    """

    def __init__(
        self,
        max_entries: int,
        max_bytes: int,
        refresh_fraction: float,
        *,
        path: Path | None = None,
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.refresh_fraction = refresh_fraction
        self.path = path
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._failing = False
        self._backoff_until = 0.0
        #: entry id -> time of its last use (ns) not yet written (see TOUCH_BATCH)
        self._touched: dict[int, int] = {}
        found = metrics.get()
        self._evictions = found.cache_evictions
        self._entries_gauge = found.cache_entries
        self._bytes_gauge = found.cache_bytes

    def open(self) -> None:
        """Open this process's connection now (once per process; cheap afterwards),
        creating the tables if needed, and set the gauges to the store's totals, so a
        worker exposes them before its first OCSP request. A failure is logged, as
        for any operation; the next operation tries again."""
        if self._conn is not None and self._pid == os.getpid():
            return
        if time.monotonic() >= self._backoff_until:
            self._run(lambda conn: None, None)

    def publish(self) -> None:
        """Set the entries and bytes gauges to the store's totals now (before a scrape:
        the gauges keep the value of the process that set them last, and this process
        answers the scrape)."""
        if self.enabled:
            self._run(self._publish, None)

    @property
    def enabled(self) -> bool:
        """False when either bound is 0."""
        return self.max_entries > 0 and self.max_bytes > 0

    def get(
        self, key: CacheKey, status: Status, now: datetime, until: datetime
    ) -> SignedResponse | None:
        """Return the stored response for ``key`` if it may be served now.

        Args:
            key: (signing context, serial number, CertID hash algorithm name).
            status: what the status source says now; a stored response stating
                anything else is dropped.
            now: the current time (aware UTC); an entry at or past its refresh
                point is dropped.
            until: the latest nextUpdate the issuer may state now; an entry whose
                nextUpdate is later is dropped.

        Returns:
            The stored response (now the most recently used), or None (also when the
            store fails).
        """
        if not self.enabled:
            return None
        return self._run(lambda conn: self._get(conn, key, status, now, until), None)

    def put(
        self, key: CacheKey, response: SignedResponse, now: datetime, until: datetime
    ) -> SignedResponse:
        """Store ``response`` under ``key`` unless another process stored one for
        ``key`` that may be served now, then drop least recently used entries until
        both bounds hold.

        Args:
            key: (signing context, serial number, CertID hash algorithm name).
            response: a response without a nonce, just signed.
            now, until: as for :meth:`get`; they decide whether a stored response
                still stands.

        Returns:
            The response to serve: the one already stored for ``key`` (by another
            process or thread) when it stands, so every worker serves the same
            bytes; else ``response``.
        """
        if not self.enabled:
            return response
        return self._run(lambda conn: self._put(conn, key, response, now, until), response)

    @property
    def size_bytes(self) -> int:
        """The sum of the entries' sizes (len(der) + ENTRY_OVERHEAD each), octets (0
        when the store fails)."""
        if not self.enabled:
            return 0
        return self._run(lambda conn: self._totals(conn)[1], 0)

    # ------------------------------------------------------------------ internals

    def _run(self, operation: Callable[[sqlite3.Connection], _T], fallback: _T) -> _T:
        """Run ``operation`` on this process's connection under the lock. On any
        error (SQLite's, or a damaged row's value) roll back, log the first failure,
        leave the store alone for :data:`BACKOFF` seconds, and return ``fallback``;
        within a back-off return ``fallback`` at once."""
        with self._lock:
            if time.monotonic() < self._backoff_until:
                return fallback
            try:
                conn = self._connection()
                result = operation(conn)
            except Exception as exc:  # never an error for a client
                if self._conn is not None and self._conn.in_transaction:
                    try:
                        self._conn.rollback()
                    except sqlite3.Error:
                        self._conn = None  # reopened on the next operation
                self._backoff_until = time.monotonic() + BACKOFF
                if not self._failing:
                    log.error(
                        "pre-signed store %s failed, signing without it: %s: %s",
                        self.path or ":memory:",
                        type(exc).__name__,
                        exc,
                    )
                self._failing = True
                return fallback
            if self._failing:
                log.warning("pre-signed store %s works again", self.path or ":memory:")
                self._failing = False
            return result

    def _connection(self) -> sqlite3.Connection:
        """This process's connection, opened (with the tables) on first use."""
        if self._conn is None or self._pid != os.getpid():
            target = str(self.path) if self.path is not None else ":memory:"
            conn = sqlite3.connect(
                target, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
            )
            try:
                if self.path is not None:
                    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                    if mode != "wal":
                        raise sqlite3.OperationalError(f"journal_mode is {mode}, not wal")
                    conn.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
                # a cache: recreated at every start of serve, nothing to keep at a crash
                conn.execute("PRAGMA synchronous=OFF")
                conn.executescript(_SCHEMA)
            except sqlite3.Error:
                conn.close()
                raise
            self._conn, self._pid = conn, os.getpid()
            self._touched.clear()  # another process's (inherited across fork)
            self._publish(conn)
        return self._conn

    def _get(
        self,
        conn: sqlite3.Connection,
        key: CacheKey,
        status: Status,
        now: datetime,
        until: datetime,
    ) -> SignedResponse | None:
        context, serial, algorithm = key
        row = conn.execute(
            _SELECT,
            (context, f"{serial:x}", algorithm),
        ).fetchone()
        if row is None:
            return None
        if not _stands(row[1:], status, now, until):

            def drop() -> None:
                self._delete(conn, key)
                self._publish(conn)

            self._write_if_free(conn, drop)
            return None
        self._touched[row[0]] = time.time_ns()
        if len(self._touched) >= TOUCH_BATCH:
            self._write_if_free(conn, lambda: self._flush_touches(conn))
        return _response(row[1:], status)

    def _put(
        self,
        conn: sqlite3.Connection,
        key: CacheKey,
        response: SignedResponse,
        now: datetime,
        until: datetime,
    ) -> SignedResponse:
        context, serial, algorithm = key
        size = len(response.der) + ENTRY_OVERHEAD
        lifetime = response.next_update - response.this_update
        refresh_at = response.this_update + lifetime * self.refresh_fraction
        conn.execute("BEGIN IMMEDIATE")
        try:
            self._flush_touches(conn)
            row = conn.execute(
                _SELECT,
                (context, f"{serial:x}", algorithm),
            ).fetchone()
            if row is not None and _stands(row[1:], response.status, now, until):
                conn.execute("COMMIT")
                return _response(row[1:], response.status)
            if row is not None:
                self._delete(conn, key)
            evicted = 0
            if size <= self.max_bytes:
                inserted = conn.execute(
                    "INSERT INTO presigned (context, serial, algorithm, der, status,"
                    " this_update, next_update, refresh_at, etag, last_modified, expires, size)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        context,
                        f"{serial:x}",
                        algorithm,
                        response.der,
                        status_text(response.status),
                        int(response.this_update.timestamp()),
                        int(response.next_update.timestamp()),
                        refresh_at.timestamp(),
                        response.etag,
                        response.last_modified,
                        response.expires,
                        size,
                    ),
                )
                conn.execute(
                    "INSERT INTO used VALUES (?, ?)", (inserted.lastrowid, time.time_ns())
                )
                conn.execute(
                    "UPDATE totals SET entries = entries + 1, bytes = bytes + ? WHERE id = 0",
                    (size,),
                )
                evicted = self._evict(conn)
            self._publish(conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.rollback()
            raise
        if evicted:
            self._evictions.inc(evicted)
        return response

    def _write_if_free(self, conn: sqlite3.Connection, write: Callable[[], object]) -> None:
        """Run ``write`` in a transaction if no other process is writing; else skip it
        (the pending last uses are dropped: they only order evictions)."""
        conn.execute("PRAGMA busy_timeout=0")
        try:
            conn.execute("BEGIN IMMEDIATE")
            write()
            conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            if conn.in_transaction:
                conn.rollback()
            if exc.sqlite_errorcode not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise
            self._touched.clear()
        finally:
            conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT * 1000)}")

    def _flush_touches(self, conn: sqlite3.Connection) -> None:
        """Write this process's pending last uses (inside a transaction)."""
        if self._touched:
            touched = [(used, entry) for entry, used in self._touched.items()]
            self._touched.clear()
            conn.executemany("UPDATE used SET last_used = ? WHERE id = ?", touched)

    def _evict(self, conn: sqlite3.Connection) -> int:
        """Drop least recently used entries until both bounds hold; how many."""
        evicted = 0
        entries, octets = self._totals(conn)
        while entries > self.max_entries or octets > self.max_bytes:
            # a batch at a time: the bounds are over by one entry after a put, by more
            # only after a reload lowered them
            batch = conn.execute(
                "SELECT used.id, presigned.size FROM used JOIN presigned USING (id)"
                " ORDER BY used.last_used LIMIT ?",
                (max(1, entries - self.max_entries),),
            ).fetchall()
            if not batch:
                break
            for entry, size in batch:
                if entries <= self.max_entries and octets <= self.max_bytes:
                    break
                conn.execute("DELETE FROM presigned WHERE id = ?", (entry,))
                conn.execute("DELETE FROM used WHERE id = ?", (entry,))
                entries, octets = entries - 1, octets - size
                evicted += 1
        conn.execute("UPDATE totals SET entries = ?, bytes = ? WHERE id = 0", (entries, octets))
        return evicted

    def _delete(self, conn: sqlite3.Connection, key: CacheKey) -> None:
        """Drop ``key`` and its size from the totals (inside a transaction)."""
        context, serial, algorithm = key
        row = conn.execute(
            "DELETE FROM presigned WHERE context = ? AND serial = ? AND algorithm = ?"
            " RETURNING id, size",
            (context, f"{serial:x}", algorithm),
        ).fetchone()
        if row is not None:
            conn.execute("DELETE FROM used WHERE id = ?", (row[0],))
            conn.execute(
                "UPDATE totals SET entries = entries - 1, bytes = bytes - ? WHERE id = 0",
                (row[1],),
            )

    @staticmethod
    def _totals(conn: sqlite3.Connection) -> tuple[int, int]:
        entries, octets = conn.execute("SELECT entries, bytes FROM totals WHERE id = 0").fetchone()
        return int(entries), int(octets)

    def _publish(self, conn: sqlite3.Connection) -> None:
        """Set the entries and bytes gauges to the store's totals."""
        entries, octets = self._totals(conn)
        self._entries_gauge.set(entries)
        self._bytes_gauge.set(octets)


#: der, status, this_update, next_update, refresh_at, etag, last_modified, expires
Row = tuple[bytes, str, int, int, float, str, str, str]


def _stands(row: Row, status: Status, now: datetime, until: datetime) -> bool:
    """Whether a stored response may be served: same status, before its refresh point,
    nextUpdate not after ``until``."""
    _, stored_status, _, next_update, refresh_at, *_ = row
    return (
        stored_status == status_text(status)
        and now.timestamp() < refresh_at
        and next_update <= until.timestamp()
    )


def _response(row: Row, status: Status) -> SignedResponse:
    """The SignedResponse a stored row holds (``status``: the one it states, as
    :func:`_stands` found)."""
    der, _, this_update, next_update, _, etag, last_modified, expires = row
    return SignedResponse(
        der=der,
        status=status,
        this_update=datetime.fromtimestamp(this_update, UTC),
        next_update=datetime.fromtimestamp(next_update, UTC),
        etag=etag,
        last_modified=last_modified,
        expires=expires,
    )
