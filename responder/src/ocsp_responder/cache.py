"""Pre-signed responses: signed once, reused until their refresh point or a status change.

A non-nonce response is kept per (issuer, serial, CertID hash algorithm) and served
again as long as

* the time is before its refresh point, thisUpdate + refresh_fraction x validity, and
* the status source still gives the same status for that serial (so a reload that
  revokes a certificate makes the next request re-sign it, and nothing else).

The cache is bounded (least recently used entries go first) and per process.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

from .signing import SignedResponse
from .sources import Status

#: (issuer name, serial number, CertID hash algorithm name)
CacheKey = tuple[str, int, str]


@dataclass(frozen=True)
class CacheEntry:
    """A pre-signed response and the time after which it is re-signed."""

    response: SignedResponse
    refresh_at: datetime


class ResponseCache:
    """Bounded LRU map of CacheKey -> CacheEntry, safe to share between threads.

    Args:
        max_entries: the bound; 0 disables caching (every get misses, put is a no-op).
        refresh_fraction: fraction (0 < f <= 1) of a response's validity after which
            it is no longer served from the cache.
    """

    def __init__(self, max_entries: int, refresh_fraction: float) -> None:
        self.max_entries = max_entries
        self.refresh_fraction = refresh_fraction
        self._entries: OrderedDict[CacheKey, CacheEntry] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: CacheKey, status: Status, now: datetime) -> SignedResponse | None:
        """Return the cached response for ``key`` if it still states ``status`` and is fresh."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry.response.status != status or now >= entry.refresh_at:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return entry.response

    def put(self, key: CacheKey, response: SignedResponse) -> None:
        """Store ``response``, dropping the least recently used entry beyond the bound."""
        if self.max_entries <= 0:
            return
        lifetime = response.next_update - response.this_update
        entry = CacheEntry(response, response.this_update + lifetime * self.refresh_fraction)
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        """Number of cached responses."""
        return len(self._entries)
