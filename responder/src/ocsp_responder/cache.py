"""Pre-signed responses: signed once, reused until their refresh point or a status change.

A non-nonce response is kept per (issuer, serial, CertID hash algorithm) and served
again as long as

* the time is before its refresh point, thisUpdate + refresh_fraction x validity, and
* the status source still gives the same status for that serial (so a reload that
  revokes a certificate makes the next request re-sign it, and nothing else).

The cache is per process and has two bounds, both held after every ``put``:

* ``max_entries`` responses (``[server] cache_size``), and
* ``max_bytes`` octets (``[server] cache_bytes``), where an entry counts the length
  of its DER response plus ENTRY_OVERHEAD octets, an estimate of the Python objects
  around it (key tuple, LRU node, entry, headers, datetimes).

Least recently used entries are dropped first; 0 for either bound disables caching.

Metrics (:mod:`ocsp_responder.metrics`): ``ocsp_responder_cache_evictions_total``
counts entries dropped to hold the bounds (not those dropped as stale or for a
status change, which are cache misses); ``ocsp_responder_cache_entries`` and
``ocsp_responder_cache_bytes`` follow the number of entries and
:attr:`ResponseCache.size_bytes` after every change.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

from . import metrics
from .signing import SignedResponse
from .sources import Status

#: (issuer name, serial number, CertID hash algorithm name)
CacheKey = tuple[str, int, str]

#: Octets charged to each entry on top of its DER response: measured with
#: tracemalloc at about 900 octets per entry on CPython 3.11 (the key tuple and its
#: serial int, the OrderedDict node, CacheEntry, SignedResponse with its ETag,
#: Last-Modified and Expires strings and datetimes), rounded up.
ENTRY_OVERHEAD = 1024


@dataclass(frozen=True)
class CacheEntry:
    """A pre-signed response, the time after which it is re-signed, and its cost.

    Attributes:
        response: the signed response.
        refresh_at: when it stops being served from the cache (aware UTC).
        size: what it counts against ``max_bytes``: len(response.der) + ENTRY_OVERHEAD,
            octets.
    """

    response: SignedResponse
    refresh_at: datetime
    size: int


class ResponseCache:
    """Bounded LRU map of CacheKey -> CacheEntry, safe to share between threads.

    Args:
        max_entries: bound on the number of entries; 0 disables caching (every get
            misses, put is a no-op).
        max_bytes: bound on the sum of the entries' sizes (len(der) + ENTRY_OVERHEAD),
            octets; 0 disables caching. A response larger than this on its own is not
            kept.
        refresh_fraction: fraction (0 < f <= 1) of a response's validity after which
            it is no longer served from the cache.
    """

    def __init__(self, max_entries: int, max_bytes: int, refresh_fraction: float) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.refresh_fraction = refresh_fraction
        self._entries: OrderedDict[CacheKey, CacheEntry] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        found = metrics.get()
        self._evictions = found.cache_evictions
        self._entries_gauge = found.cache_entries
        self._bytes_gauge = found.cache_bytes

    def get(self, key: CacheKey, status: Status, now: datetime) -> SignedResponse | None:
        """Return the cached response for ``key`` if it still states ``status`` and is fresh.

        Args:
            key: (issuer name, serial number, CertID hash algorithm name).
            status: what the status source says now; a cached response stating
                anything else is dropped.
            now: the current time (aware UTC); an entry at or past its refresh
                point is dropped.

        Returns:
            The cached response (now the most recently used), or None.
        """
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry.response.status != status or now >= entry.refresh_at:
                self._remove(key)
                self._publish()
                return None
            self._entries.move_to_end(key)
            return entry.response

    def put(self, key: CacheKey, response: SignedResponse) -> None:
        """Store ``response`` under ``key``, then drop least recently used entries until
        both bounds hold.

        Args:
            key: (issuer name, serial number, CertID hash algorithm name).
            response: a response without a nonce; it replaces any entry for ``key``.
        """
        if self.max_entries <= 0 or self.max_bytes <= 0:
            return
        size = len(response.der) + ENTRY_OVERHEAD
        lifetime = response.next_update - response.this_update
        entry = CacheEntry(response, response.this_update + lifetime * self.refresh_fraction, size)
        with self._lock:
            if key in self._entries:
                self._remove(key)
            if size <= self.max_bytes:
                self._entries[key] = entry
                self._bytes += size
            evicted = 0
            while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= dropped.size
                evicted += 1
            if evicted:
                self._evictions.inc(evicted)
            self._publish()

    def _remove(self, key: CacheKey) -> None:
        """Drop ``key`` (present); the caller holds the lock."""
        self._bytes -= self._entries.pop(key).size

    def _publish(self) -> None:
        """Set the entries and bytes gauges; the caller holds the lock."""
        self._entries_gauge.set(len(self._entries))
        self._bytes_gauge.set(self._bytes)

    @property
    def size_bytes(self) -> int:
        """The sum of the entries' sizes (len(der) + ENTRY_OVERHEAD each), octets."""
        return self._bytes
