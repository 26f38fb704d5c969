"""The files a status source reads: reading them, their digest, and change detection.

Shared by every kind of :class:`~ocsp_responder.sources.StatusSource`; the reload
machinery (:class:`~ocsp_responder.status_data.StatusData`) compares
:meth:`StatusFiles.stamps` between checks.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from . import SourceError

#: (mtime_ns, ctime_ns, size, inode); ctime catches a chmod that fixes a file.
FileStamp = tuple[int, int, int, int]


def file_stamps(paths: Iterable[Path]) -> tuple[FileStamp | None, ...]:
    """The (mtime, ctime, size, inode) of each file, None for one that cannot be stat'ed."""
    stamps: list[FileStamp | None] = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            stamps.append(None)
        else:
            stamps.append((st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino))
    return tuple(stamps)


def read_file(path: Path) -> tuple[bytes, os.stat_result]:
    """Read a whole status file and the stat of what was read (same open file).

    Raises:
        SourceError: the file cannot be opened or read (message with the OS reason).
    """
    try:
        with path.open("rb") as handle:
            st = os.fstat(handle.fileno())
            return handle.read(), st
    except OSError as exc:
        raise SourceError(path, f"cannot read: {exc.strerror or exc}") from exc


def digest_of(contents: Iterable[bytes]) -> str:
    """SHA-256 (hex) over the length-prefixed contents of the files, in order."""
    hasher = hashlib.sha256()
    for data in contents:
        hasher.update(len(data).to_bytes(8, "big"))
        hasher.update(data)
    return hasher.hexdigest()


class StatusFiles:
    """The files of one source and how to tell that they changed (one stat each).

    The reload machinery (:class:`~ocsp_responder.status_data.StatusData`) compares
    :meth:`stamps` between checks and re-reads the source when they differ.

    Args:
        paths: the files, in configuration order.
    """

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = tuple(paths)

    def stamps(self) -> tuple[FileStamp | None, ...]:
        """The current :data:`FileStamp` of each file (None: cannot be stat'ed)."""
        return file_stamps(self.paths)

    def describe(self, names: Mapping[Path, str] | None = None) -> str:
        """The files, comma-separated; a file in ``names`` is shown as its name there."""
        names = names or {}
        return ",".join(names.get(p, str(p)) for p in self.paths)
