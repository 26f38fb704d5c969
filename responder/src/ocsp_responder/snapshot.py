"""Validated, versioned status snapshots: what a responder may serve, and its memory.

A :class:`Snapshot` is an issuer's status table that passed validation, with what
it remembers of every revocation it has seen, its data's age, and a generation
number. Every process of a service keeps the newest snapshot any of them accepted
in ``[server] state_dir`` (:class:`SnapshotStore`: one JSON file per issuer,
written atomically, updated under an exclusive lock), so that a worker that starts
later, or the service after a reboot, never serves older data than was served
before (invariant 1 of the project: no ``good`` for a serial seen revoked).

Rules for a new read of the files (:func:`accept`), against the last snapshot:

* ``index``: rejected as a whole if it lost a row (an older or truncated copy), or
  turned a revoked row back to valid unless that revocation was a certificateHold
  (or its removeFromCRL record): a CA may release a hold, nothing else.
* ``crl``: rejected as a whole if a file's cRLNumber or thisUpdate went backwards
  (an older CRL). An entry that leaves a newer CRL (RFC 5280 lets a CA drop an
  expired certificate's entry) is accepted, and the serial stays revoked from the
  remembered revocations.
* both: remembered revocations (every permanent revocation ever accepted) overlay
  the table, so no later data makes a remembered serial good or unknown.

The only way back is the operator's explicit ``ocsp-responder accept-data``
(:func:`override`), which is logged. Snapshots are ordered by (epoch, generation):
``accept-data`` starts a new epoch, so its snapshot wins over any a running process
holds, even when the snapshot file had been lost in between.

A snapshot belongs to one CA: its identity is the SHA-256 of the CA certificate's
subject and public key (the inputs of the CertID hashes), so a renewed CA certificate
(same name, same key) keeps its memory, and the snapshot of another CA under the
same issuer name is moved aside (``NAME.json.other-ca-ID``), never used nor lost.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509

from .atomic import locked, state_owner, write_atomically
from .sources import CertState, CRLInfo, SourceData, SourceError, Status

log = logging.getLogger(__name__)

#: Version of the JSON layout written by :class:`SnapshotStore`.
FORMAT = 1


class DataRejected(SourceError):
    """New status data is older than, or loses revocations of, the last accepted data.

    The message names the file and the first offending serial (hex, as index.txt
    writes it) or CRL field.
    """


class SnapshotError(Exception):
    """A snapshot file cannot be read or does not belong to this issuer; names the file."""


@dataclass(frozen=True)
class Snapshot:
    """An issuer's accepted status data.

    Attributes:
        issuer: the issuer name.
        ca_identity: :func:`ca_identity` of the CA: a snapshot of another CA under
            the same name is never used.
        generation: increases by one with each accepted change, across processes.
        kind: ``index`` or ``crl``.
        digest: :attr:`SourceData.digest` of the files it was made from.
        accepted_at: when it was accepted (aware UTC).
        confirmed_at: ``index``: when the data was last confirmed current: the
            file's mtime when it advanced, never later than the time it was read.
        crls: ``crl``: the accepted CRLs' numbers and validity.
        table: serial -> status as the files said.
        remembered: serial -> permanent revocation ever accepted (never released).
        override: True when made by ``accept-data`` (logged, shown by check-config).
        epoch: 0, or the time (ns) of the ``accept-data`` this data descends from.
        mtime: ``index``: the file's mtime as read (a confirmation counts only when
            it advances, so an mtime in the future does not renew the data).
    """

    issuer: str
    ca_identity: str
    generation: int
    kind: str
    digest: str
    accepted_at: datetime
    confirmed_at: datetime | None
    crls: tuple[CRLInfo, ...]
    table: Mapping[int, Status]
    remembered: Mapping[int, Status]
    override: bool = False
    epoch: int = 0
    mtime: datetime | None = None
    served: dict[int, Status] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        served = dict(self.table)
        for serial, status in self.remembered.items():
            now = served.get(serial)
            # A permanent revocation wins over anything later data says, a later
            # certificateHold record included.
            if now is None or now.state is not CertState.REVOKED or now.releasable:
                served[serial] = status
        object.__setattr__(self, "served", served)

    @property
    def order(self) -> tuple[int, int]:
        """(epoch, generation): the newer snapshot has the greater order."""
        return (self.epoch, self.generation)

    def expires_at(self, max_data_age: timedelta) -> datetime:
        """When this data stops being current (aware UTC).

        ``crl``: the earliest nextUpdate of its CRLs (thisUpdate + ``max_data_age``
        for a CRL without one). ``index``: ``confirmed_at`` + ``max_data_age``.
        """
        if self.kind == "crl":
            return min(info.next_update or info.this_update + max_data_age for info in self.crls)
        assert self.confirmed_at is not None  # noqa: S101 (index snapshots always have it)
        return self.confirmed_at + max_data_age


def _remember(remembered: Mapping[int, Status], table: Mapping[int, Status]) -> dict[int, Status]:
    """``remembered`` plus every permanent revocation of ``table`` (the newest record wins)."""
    merged = dict(remembered)
    for serial, status in table.items():
        if status.state is CertState.REVOKED and not status.releasable:
            merged[serial] = status
    return merged


def ca_identity(subject_der: bytes, public_key_der: bytes) -> str:
    """The identity a snapshot belongs to: SHA-256 (hex) of the CA's subject name DER
    and SubjectPublicKeyInfo DER, the inputs of the CertID issuer hashes."""
    hasher = hashlib.sha256()
    for part in (subject_der, public_key_der):
        hasher.update(len(part).to_bytes(4, "big"))
        hasher.update(part)
    return hasher.hexdigest()


def accept(
    previous: Snapshot | None,
    data: SourceData,
    *,
    issuer: str,
    ca_identity: str,
    now: datetime,
    paths: tuple[Path, ...],
) -> Snapshot:
    """Validate a new read of the files against the last snapshot; return the next one.

    Args:
        previous: the newest accepted snapshot of this issuer, or None.
        data: what the source just read.
        issuer, ca_identity: the issuer the data is for.
        now: the time of acceptance (aware UTC).
        paths: the source's files, for messages.

    Returns:
        The new :class:`Snapshot` (generation = previous + 1), or ``previous`` itself
        when the data is the same and confirms nothing newer.

    Raises:
        DataRejected: the data is older than, or loses a revocation of, ``previous``
            (see the module docstring); the message names the file and serial.
    """
    if previous is not None and previous.kind == data.kind:
        # (after a change of source kind in the config there is nothing to compare,
        # but the remembered revocations still hold: same CA, same serials)
        if data.kind == "index":
            _check_index(previous, data, paths[0])
        else:
            _check_crls(previous, data)
        if data.digest == previous.digest and (
            data.mtime is None or (previous.mtime is not None and data.mtime <= previous.mtime)
        ):
            return previous
    remembered = previous.remembered if previous is not None else {}
    return _successor(previous, data, remembered, issuer=issuer, ca_identity=ca_identity, now=now)


def override(
    previous: Snapshot | None,
    data: SourceData,
    *,
    issuer: str,
    ca_identity: str,
    now: datetime,
) -> Snapshot:
    """The operator's deliberate restore: ``data`` replaces the table and the memory.

    Remembered revocations are reset to the permanent revocations in ``data``, and a
    new epoch (the time, in ns) makes the result newer than any snapshot a running
    process holds. Only ``ocsp-responder accept-data`` calls this.
    """
    epoch = max(time.time_ns(), previous.epoch + 1 if previous is not None else 1)
    return replace(
        _successor(previous, data, {}, issuer=issuer, ca_identity=ca_identity, now=now),
        override=True,
        epoch=epoch,
    )


def _successor(
    previous: Snapshot | None,
    data: SourceData,
    remembered: Mapping[int, Status],
    *,
    issuer: str,
    ca_identity: str,
    now: datetime,
) -> Snapshot:
    """The snapshot after ``previous`` made of ``data``, remembering ``remembered`` too."""
    return Snapshot(
        issuer=issuer,
        ca_identity=ca_identity,
        generation=(previous.generation if previous is not None else 0) + 1,
        kind=data.kind,
        digest=data.digest,
        accepted_at=now,
        confirmed_at=min(data.mtime, now) if data.mtime is not None else None,
        crls=data.crls,
        table=data.table,
        remembered=_remember(remembered, data.table),
        epoch=previous.epoch if previous is not None else 0,
        mtime=data.mtime,
    )


def merged(mine: Snapshot, other: Snapshot | None) -> Snapshot:
    """``mine`` renumbered past ``other``, remembering ``other``'s revocations too.

    For writing over a snapshot file that holds something else than ``mine`` (lost,
    damaged, or written by a process that had lost the memory): nothing any process
    remembered is dropped, unless ``other`` is from an older epoch (before an
    ``accept-data`` that ``mine`` descends from).
    """
    if other is None:
        return mine
    remembered = mine.remembered
    if other.epoch == mine.epoch:
        remembered = {**other.remembered, **mine.remembered}
    if other.epoch == mine.epoch and other.generation == mine.generation - 1:
        generation = mine.generation  # the usual case: ``mine`` follows ``other``
    else:
        generation = max(mine.generation, other.generation) + 1
    return replace(
        mine, generation=generation, epoch=max(mine.epoch, other.epoch), remembered=remembered
    )


def _check_index(previous: Snapshot, data: SourceData, path: Path) -> None:
    new = data.table
    lost = [serial for serial in previous.table if serial not in new]
    if lost:
        raise DataRejected(
            path,
            f"row of serial {lost[0]:X} is missing ({len(lost)} of {len(previous.table)} "
            "rows lost): an older or truncated copy?",
        )
    # Against the table, not the remembered overlay: a remembered revocation stays
    # served whatever the files say, so it need not block newer files.
    for serial, old in previous.table.items():
        status = new.get(serial)
        if old.state is not CertState.REVOKED or status is None:
            continue
        if status.state is not CertState.REVOKED and not old.releasable:
            raise DataRejected(
                path,
                f"serial {serial:X} was revoked ({_reason(old)}) and is now "
                f"{status.state.value}: an older copy, or an R row turned back to V?",
            )


def _check_crls(previous: Snapshot, data: SourceData) -> None:
    before = {info.path: info for info in previous.crls}
    for info in data.crls:
        old = before.get(info.path)
        if old is None:
            continue
        if old.number is not None and (info.number is None or info.number < old.number):
            raise DataRejected(
                Path(info.path),
                f"cRLNumber {info.number} is lower than {old.number} of the CRL accepted "
                "before: an older CRL?",
            )
        if info.this_update < old.this_update:
            raise DataRejected(
                Path(info.path),
                f"thisUpdate {info.this_update.isoformat()} is earlier than "
                f"{old.this_update.isoformat()} of the CRL accepted before: an older CRL?",
            )


def _reason(status: Status) -> str:
    return status.reason.value if status.reason is not None else "no reason"


# ---------------------------------------------------------------- persistence


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse_time(value: Any) -> datetime | None:  # noqa: ANN401 (JSON value)
    if value is None:
        return None
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"time without a zone: {value!r}")
    return parsed


def _entries(table: Mapping[int, Status]) -> list[list[str | None]]:
    return [
        [
            f"{serial:X}",
            status.state.value,
            _time(status.revocation_time),
            status.reason.value if status.reason is not None else None,
        ]
        for serial, status in table.items()
    ]


def _table(rows: Any) -> dict[int, Status]:  # noqa: ANN401 (JSON value)
    table: dict[int, Status] = {}
    for serial, state, when, reason in rows:
        table[int(serial, 16)] = Status(
            CertState(state),
            _parse_time(when),
            x509.ReasonFlags(reason) if reason is not None else None,
        )
    return table


def to_json(snapshot: Snapshot) -> dict[str, Any]:
    """The JSON document of a snapshot (see :class:`SnapshotStore`)."""
    return {
        "format": FORMAT,
        "issuer": snapshot.issuer,
        "ca_identity": snapshot.ca_identity,
        "epoch": snapshot.epoch,
        "generation": snapshot.generation,
        "kind": snapshot.kind,
        "digest": snapshot.digest,
        "accepted_at": _time(snapshot.accepted_at),
        "confirmed_at": _time(snapshot.confirmed_at),
        "mtime": _time(snapshot.mtime),
        "override": snapshot.override,
        "crls": [
            {
                "path": info.path,
                "number": info.number,
                "this_update": _time(info.this_update),
                "next_update": _time(info.next_update),
            }
            for info in snapshot.crls
        ],
        "table": _entries(snapshot.table),
        "remembered": _entries(snapshot.remembered),
    }


def from_json(document: Any) -> Snapshot:  # noqa: ANN401 (JSON value)
    """Rebuild a snapshot from :func:`to_json`'s document.

    Raises:
        ValueError, KeyError, TypeError: a document that is not a snapshot.
    """
    if document.get("format") != FORMAT:
        raise ValueError(f"unknown snapshot format {document.get('format')!r}")
    crls = tuple(
        CRLInfo(
            path=item["path"],
            number=item["number"],
            this_update=_parse_time(item["this_update"]),  # type: ignore[arg-type]
            next_update=_parse_time(item["next_update"]),
        )
        for item in document["crls"]
    )
    accepted_at = _parse_time(document["accepted_at"])
    if accepted_at is None:
        raise ValueError("accepted_at is missing")
    kind = document["kind"]
    confirmed_at = _parse_time(document["confirmed_at"])
    if kind == "index" and confirmed_at is None:
        raise ValueError("an index snapshot without confirmed_at")
    if kind == "crl" and not crls:
        raise ValueError("a crl snapshot without CRLs")
    if kind not in ("index", "crl"):
        raise ValueError(f"unknown kind {kind!r}")
    generation, epoch = document["generation"], document["epoch"]
    if not isinstance(generation, int) or not isinstance(epoch, int):
        raise ValueError("generation and epoch must be integers")
    return Snapshot(
        issuer=str(document["issuer"]),
        ca_identity=str(document["ca_identity"]),
        generation=generation,
        kind=kind,
        digest=str(document["digest"]),
        accepted_at=accepted_at,
        confirmed_at=confirmed_at,
        crls=crls,
        table=_table(document["table"]),
        remembered=_table(document["remembered"]),
        override=bool(document.get("override", False)),
        epoch=epoch,
        mtime=_parse_time(document.get("mtime")),
    )


class SnapshotStore:
    """One issuer's snapshot file, ``STATE_DIR/NAME.json``, and its lock file.

    Writes go to a temporary file in the same directory, are fsync'ed, renamed over
    the snapshot and the directory is fsync'ed: a reader sees the old or the new
    snapshot, never a part, also after a crash. :meth:`lock` serialises the
    validate-and-write step between the processes of a service (``flock``).

    Args:
        state_dir: the directory (``[server] state_dir``).
        issuer: the issuer name (``[A-Za-z0-9._-]``, safe as a file name).
        ca_identity: :func:`ca_identity` of the issuer's CA; a snapshot of another CA
            is not used, and is moved aside before this one is written.
    """

    def __init__(self, state_dir: Path, issuer: str, ca_identity: str) -> None:
        self.state_dir = state_dir
        self.path = state_dir / f"{issuer}.json"
        self.lock_path = state_dir / f"{issuer}.lock"
        self.issuer = issuer
        self.ca_identity = ca_identity
        self._other_ca: str | None = None

    def stamp(self) -> tuple[int, int, int] | None:
        """(mtime_ns, size, inode) of the snapshot file, None when there is none."""
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def load(self) -> Snapshot | None:
        """Read the snapshot.

        Returns:
            The snapshot, or None when there is none yet, or when it is another CA's
            (a warning is logged; :meth:`save` moves that file aside first).

        Raises:
            SnapshotError: the file exists but cannot be read or is not a snapshot
                of this issuer.
        """
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SnapshotError(f"{self.path}: cannot read: {exc.strerror or exc}") from exc
        try:
            snapshot = from_json(json.loads(data))
        except Exception as exc:  # JSON or field errors, deep nesting, huge numbers
            raise SnapshotError(
                f"{self.path}: not a valid snapshot: {type(exc).__name__}: {str(exc)[:200]}"
            ) from exc
        if snapshot.issuer != self.issuer:
            raise SnapshotError(f"{self.path}: is the snapshot of issuer {snapshot.issuer!r}")
        if snapshot.ca_identity != self.ca_identity:
            if self._other_ca != snapshot.ca_identity:
                log.warning(
                    "%s: made for another CA (identity %s): not used; it is moved aside "
                    "when this CA's data is first written",
                    self.path,
                    snapshot.ca_identity[:16],
                )
            self._other_ca = snapshot.ca_identity
            return None
        return snapshot

    def move_aside(self, why: str) -> Path | None:
        """Rename the snapshot file to ``NAME.json.WHY`` (kept for the operator).

        Returns:
            The new path, or None when there was no file.

        Raises:
            OSError: the rename failed.
        """
        target = self.path.with_name(f"{self.path.name}.{why}")
        try:
            os.replace(self.path, target)
        except FileNotFoundError:
            return None
        return target

    def remove_temporaries(self) -> None:
        """Remove temporary files a writer killed mid-write left (hold :meth:`lock`)."""
        for temp in self.state_dir.glob(f".{self.path.name}.*"):
            with contextlib.suppress(OSError):
                temp.unlink()

    def save(self, snapshot: Snapshot) -> None:
        """Write ``snapshot`` atomically (temporary file, fsync, rename, fsync dir).

        Raises:
            OSError: the state directory is not writable (nothing is half-written).
        """
        payload = json.dumps(to_json(snapshot), separators=(",", ":")).encode()
        if self._other_ca is not None:
            aside = self.move_aside(f"other-ca-{self._other_ca[:16]}")
            if aside is not None:
                log.warning("%s: another CA's snapshot moved to %s", self.path, aside)
            self._other_ca = None
        write_atomically(self.path, payload, owner=state_owner(self.state_dir))

    def lock(self) -> contextlib.AbstractContextManager[None]:
        """Hold the issuer's exclusive lock (blocking) for the ``with`` block.

        Raises:
            OSError: the lock file cannot be created.
        """
        return locked(self.lock_path, state_owner(self.state_dir))
