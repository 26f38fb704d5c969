"""Receive a status file pushed by a CA host's publisher: validate, then install atomically.

This is the forced command of the publisher's SSH key on a responder host (see the
role's ``publisher`` tasks and the README, "How revocations reach the responders")::

    restrict,command="/opt/ocsp-responder/bin/ocsp-responder receive --config
        /etc/ocsp-responder-receive/receive.toml" ssh-ed25519 AAAA... publisher@ca

The publisher runs ``ssh publisher@responder ISSUER NAME < FILE``. sshd hands
``ISSUER NAME`` to this command in ``SSH_ORIGINAL_COMMAND``; anything else the key
asks for (a shell, another command, a file not listed in ``receive.toml``) is
refused, so the key can do nothing on the responder but replace the listed files.

A received file is installed only when it is usable, by the same rules the responder
applies (:mod:`ocsp_responder.sources`, :func:`ocsp_responder.snapshot.accept`):
an index.txt that parses and is not empty, or a complete CRL issued and signed by
the issuer's CA certificate and not past its nextUpdate; and neither older than the
installed file (rows or revocations lost, a lower cRLNumber, an earlier thisUpdate).
It is written to a temporary file in the target's directory, fsync'ed, renamed over
the target and the directory fsync'ed, so the responder reads either the old or the
new file, never a part. Every successful receive of an index.txt renews the file's
mtime even when the contents are unchanged: for an ``index`` source the mtime is the
time the data was last confirmed current, so the publisher's periodic re-send is the
heartbeat that keeps the responder vouching (``max_data_age``). A CRL identical to
the installed one is left as it is (it carries its own nextUpdate).

``receive.toml`` (written by the role; readable by the publisher's user)::

    max_bytes = 268435456          # largest accepted file, octets
    [[file]]
    issuer = "intermediate"        # the ISSUER the publisher names
    name = "index.txt"             # the NAME the publisher names
    kind = "index"                 # "index" or "crl"
    path = "/var/lib/ocsp-responder/intermediate/index.txt"
    ca_certificate = "/etc/ocsp-responder-receive/intermediate.ca.pem"

Exit codes: 0 installed (or an unchanged CRL kept); 1 refused (the file, or the
request: message on stderr, which sshd carries back to the publisher); 2 a problem
with ``receive.toml``.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from cryptography import x509

from . import pemder
from .atomic import write_atomically
from .snapshot import accept
from .sources import SourceData, SourceError, open_source
from .status_data import utc_now

#: Default and bounds of ``max_bytes``: 256 MiB, 1 KiB .. 4 GiB.
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
MAX_MAX_BYTES = 4 * 1024 * 1024 * 1024
_TOKEN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_KINDS = ("index", "crl")


class ReceiveError(Exception):
    """A pushed file (or the request for it) is refused; the message says why."""


class ReceiveConfigError(Exception):
    """``receive.toml`` has a problem; the message names the file and key."""


@dataclass(frozen=True)
class Target:
    """One file the publisher may replace.

    Attributes:
        issuer: the issuer name (as in config.toml).
        name: the file name the publisher asks for (e.g. ``index.txt``).
        kind: ``index`` or ``crl``.
        path: where the file is installed.
        ca_certificate: the issuer's CA certificate (a CRL must verify with it).
    """

    issuer: str
    name: str
    kind: str
    path: Path
    ca_certificate: Path


@dataclass(frozen=True)
class ReceiveConfig:
    """``receive.toml``: the size cap (octets) and the files, by (issuer, name)."""

    max_bytes: int
    targets: Mapping[tuple[str, str], Target]


def read_receive_config(path: Path) -> ReceiveConfig:
    """Read and check ``receive.toml``.

    Raises:
        ReceiveConfigError: unreadable, not TOML, or a key missing or wrong (named).
    """
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ReceiveConfigError(f"{path}: cannot read: {exc}") from exc
    unknown = set(document) - {"max_bytes", "file"}
    if unknown:
        raise ReceiveConfigError(f"{path}: {sorted(unknown)[0]}: unknown key")
    max_bytes = document.get("max_bytes", DEFAULT_MAX_BYTES)
    if type(max_bytes) is not int or not 1024 <= max_bytes <= MAX_MAX_BYTES:
        raise ReceiveConfigError(
            f"{path}: max_bytes: must be an integer from 1024 to {MAX_MAX_BYTES}, not {max_bytes!r}"
        )
    files = document.get("file", [])
    if not isinstance(files, list):
        raise ReceiveConfigError(f"{path}: file: must be an array of tables ([[file]])")
    targets: dict[tuple[str, str], Target] = {}
    for index, entry in enumerate(files):
        key = f"file[{index}]"
        if not isinstance(entry, dict):
            raise ReceiveConfigError(f"{path}: {key}: must be a table")
        unknown = set(entry) - {"issuer", "name", "kind", "path", "ca_certificate"}
        if unknown:
            raise ReceiveConfigError(f"{path}: {key}.{sorted(unknown)[0]}: unknown key")
        values: dict[str, str] = {}
        for field in ("issuer", "name", "kind", "path", "ca_certificate"):
            value = entry.get(field)
            if not isinstance(value, str) or not value:
                raise ReceiveConfigError(f"{path}: {key}.{field}: missing or not a string")
            values[field] = value
        for field in ("issuer", "name"):
            if not _TOKEN.match(values[field]):
                raise ReceiveConfigError(
                    f"{path}: {key}.{field}: {values[field]!r} is not 1-64 of A-Z a-z 0-9 . _ -"
                )
        if values["kind"] not in _KINDS:
            raise ReceiveConfigError(f"{path}: {key}.kind: must be one of {_KINDS}")
        for field in ("path", "ca_certificate"):
            if not Path(values[field]).is_absolute():
                raise ReceiveConfigError(f"{path}: {key}.{field}: must be an absolute path")
        target = Target(
            issuer=values["issuer"],
            name=values["name"],
            kind=values["kind"],
            path=Path(values["path"]),
            ca_certificate=Path(values["ca_certificate"]),
        )
        if (target.issuer, target.name) in targets:
            raise ReceiveConfigError(
                f"{path}: {key}: {target.issuer} {target.name} is listed twice"
            )
        targets[(target.issuer, target.name)] = target
    return ReceiveConfig(max_bytes=max_bytes, targets=targets)


def parse_request(command: str | None, config: ReceiveConfig) -> Target:
    """The target named by the publisher's command line ``ISSUER NAME``.

    Args:
        command: ``SSH_ORIGINAL_COMMAND`` (None when the client asked for a shell).

    Raises:
        ReceiveError: anything but exactly two tokens naming a listed file.
    """
    if command is None:
        raise ReceiveError("this key only receives status files: no shell (send 'ISSUER NAME')")
    words = command.split()
    if len(words) != 2 or not all(_TOKEN.match(word) for word in words):
        raise ReceiveError(
            f"refused command {command[:80]!r}: this key only receives status files "
            "('ISSUER NAME' with the file on stdin)"
        )
    target = config.targets.get((words[0], words[1]))
    if target is None:
        raise ReceiveError(f"issuer {words[0]!r} has no file {words[1]!r} to receive here")
    return target


def read_limited(stream: BinaryIO, max_bytes: int) -> bytes:
    """All of ``stream``, at most ``max_bytes`` octets.

    Raises:
        ReceiveError: the stream holds more than ``max_bytes`` octets.
    """
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = stream.read(min(1 << 20, max_bytes + 1 - size))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > max_bytes:
            raise ReceiveError(f"more than max_bytes={max_bytes} octets: refused")


def _as_target(data: SourceData, target: Target) -> SourceData:
    """``data`` read from a temporary file, its CRL paths renamed to the target's."""
    crls = tuple(dataclasses.replace(info, path=str(target.path)) for info in data.crls)
    return dataclasses.replace(data, crls=crls)


def validate(target: Target, candidate: Path, ca: x509.Certificate, now: datetime) -> None:
    """Check a received file before it replaces ``target.path``.

    The rules are the responder's own: the source reader (format, CA signature) and
    :func:`ocsp_responder.snapshot.accept` against the installed file, when that one
    is readable (a broken installed file is simply replaced).

    Raises:
        ReceiveError: the file is unusable, past its nextUpdate, or older than the
            installed one; the message names the issuer and file.
    """
    where = f"issuer {target.issuer}: {target.name}"
    try:
        new = _as_target(open_source(target.kind, [candidate], ca).read(now), target)
    except SourceError as exc:
        message = str(exc).replace(str(candidate), "the received file")
        raise ReceiveError(f"{where}: {message}") from exc
    for info in new.crls:
        if info.next_update is not None and info.next_update <= now:
            raise ReceiveError(
                f"{where}: the CRL's nextUpdate {info.next_update.isoformat()} has passed"
            )
    try:
        old = open_source(target.kind, [target.path], ca).read(now)
    except SourceError:
        return
    identity = "receive"
    try:
        previous = accept(
            None, old, issuer=target.issuer, ca_identity=identity, now=now, paths=(target.path,)
        )
        accept(
            previous, new, issuer=target.issuer, ca_identity=identity, now=now, paths=(target.path,)
        )
    except SourceError as exc:
        raise ReceiveError(f"{where}: refused: {exc}") from exc


def install(target: Target, data: bytes, now: datetime | None = None) -> bool:
    """Validate ``data`` and atomically make it ``target.path`` (mode 0640).

    A CRL identical to the installed one is left alone (a CRL carries its own
    thisUpdate and nextUpdate; rewriting it would only make every process re-read
    it). An index.txt is always replaced: its new mtime is the confirmation.

    Returns:
        True when the file was replaced, False for an unchanged CRL.

    Raises:
        ReceiveError: the CA certificate cannot be read, the data is refused, or the
            file cannot be written (nothing is left half-written).
    """
    now = now or utc_now()
    if target.kind == "crl":
        try:
            if target.path.read_bytes() == data:
                return False
        except OSError:
            pass
    try:
        ca = pemder.certificate(target.ca_certificate.read_bytes())
    except (OSError, ValueError) as exc:
        raise ReceiveError(
            f"issuer {target.issuer}: CA certificate {target.ca_certificate}: {exc}"
        ) from exc
    try:
        write_atomically(
            target.path,
            data,
            mode=0o640,
            check=lambda candidate: validate(target, candidate, ca, now),
        )
    except OSError as exc:
        raise ReceiveError(f"issuer {target.issuer}: cannot install {target.path}: {exc}") from exc
    return True


def main(config_path: Path, command: str | None, stdin: BinaryIO) -> int:
    """The ``receive`` subcommand: one file from ``stdin`` for the target ``command`` names.

    Returns:
        0 installed, 1 refused, 2 a ``receive.toml`` problem (messages on stderr).
    """
    try:
        config = read_receive_config(config_path)
    except ReceiveConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        target = parse_request(command, config)
        replaced = install(target, read_limited(stdin, config.max_bytes))
    except ReceiveError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    outcome = "installed" if replaced else "unchanged"
    print(f"{outcome} {target.path} for issuer {target.issuer}")
    return 0
