"""Atomic file replacement: a reader sees the old file or the new one, never a part.

The one writer behind every file the service replaces (snapshots in ``state_dir``,
fetched CRLs and their sidecars, pushed status files): a temporary file in the same
directory (``.NAME.XXXXXXXX``, so that leftovers of a killed writer can be found),
written and fsync'ed, renamed over the target, and the directory fsync'ed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


def state_owner(directory: Path) -> tuple[int, int] | None:
    """(uid, gid) to give the files root creates in ``directory``: its owner, when this
    process runs as root and the directory is not root's (the service user then reads
    and replaces them); None otherwise."""
    if os.geteuid() != 0:
        return None
    st = os.stat(directory)
    return None if (st.st_uid, st.st_gid) == (0, 0) else (st.st_uid, st.st_gid)


def write_atomically(
    path: Path,
    data: bytes,
    *,
    owner: tuple[int, int] | None = None,
    mode: int | None = None,
    check: Callable[[Path], None] | None = None,
) -> None:
    """Replace ``path`` with ``data``.

    Args:
        path: the file to replace (its directory must exist).
        data: the new contents.
        owner: (uid, gid) to give the new file, or None to keep the creator's.
        mode: permission bits of the new file, or None for mkstemp's 0600.
        check: called with the written temporary file before the rename; whatever it
            raises aborts the replacement.

    Raises:
        OSError: the file cannot be written or renamed (nothing is left behind but the
            old file), or whatever ``check`` raises.
    """
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            if owner is not None:
                os.fchown(handle.fileno(), *owner)
            if mode is not None:
                os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if check is not None:
            check(Path(temp))
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@contextlib.contextmanager
def locked(path: Path, owner: tuple[int, int] | None = None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the lock file ``path`` (created 0600, given to
    ``owner`` when not None) for the ``with`` block; blocks until it is free.

    Raises:
        OSError: the lock file cannot be created or locked.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if owner is not None:
            os.fchown(fd, *owner)
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
