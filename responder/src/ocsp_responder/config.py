"""Configuration: one TOML file (read with :mod:`tomllib`) to typed, validated values.

The reference for every key is ``responder/docs/config.md``. This module checks the
shape of the file (types, ranges, unknown keys, that named files exist); what is
*inside* the certificate, key and status files is checked when they are loaded
(:mod:`ocsp_responder.issuers`), with the same error type and key paths.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, overload
from urllib.parse import urlsplit

T = TypeVar("T")

#: Bounds from RFC 5019 practice: responses valid 1 hour .. 10 days.
MIN_VALIDITY = 3600
MAX_VALIDITY = 10 * 86400
#: ``max_data_age``: how long an index.txt stays usable after it was last confirmed
#: current (its mtime): default 7 days, 1 s .. 366 days.
DEFAULT_MAX_DATA_AGE = 7 * 86400
MAX_DATA_AGE = 366 * 86400
#: ``data_expiry_grace``: at most 7 days past the data's expiry.
MAX_DATA_EXPIRY_GRACE = 7 * 86400
#: ``data_expiry_warning`` / ``signer_expiry_warning``: alert windows, 0 .. 366 days.
DEFAULT_DATA_EXPIRY_WARNING = 6 * 3600
DEFAULT_SIGNER_EXPIRY_WARNING = 30 * 86400
MAX_EXPIRY_WARNING = 366 * 86400
#: ``[issuer.source] urls`` of a ``crl`` source (``ocsp-responder fetch-crls``):
#: schemes, and the defaults of seconds between fetches of each URL, the
#: connect/read timeout (seconds) and the size cap on a CRL (octets).
FETCH_SCHEMES = ("http", "https")
DEFAULT_FETCH_INTERVAL = 300
DEFAULT_FETCH_TIMEOUT = 10
DEFAULT_FETCH_MAX_BYTES = 10 * 1024 * 1024
#: ``[server] max_live_signings``: signatures one worker process makes at once for
#: requests that wait for them (a nonce, a cache miss), when a WSGI server runs the app
#: in threads (a ``serve`` worker signs one at a time). 2: ``workers`` is one per core,
#: so 2 per worker is 2 x the cores in all, enough to keep every core signing
#: (cryptography releases the GIL while it signs), while other threads stay free for
#: pre-signed answers.
DEFAULT_MAX_LIVE_SIGNINGS = 2


@dataclass(frozen=True)
class Range:
    """The allowed values of a numeric key: ``low`` .. ``high``, both included.

    Attributes:
        low: the smallest allowed value.
        high: the largest allowed value.
        unit: the unit named in problem messages (``s``, ``octets``), or ``""``.
        note: a reading aid appended to problem messages (``1 h .. 10 days``), or ``""``.
        low_excluded: ``low`` itself is not allowed (``low`` < value <= ``high``).
    """

    low: float
    high: float
    unit: str = ""
    note: str = ""
    low_excluded: bool = False

    def check(self, value: float) -> str | None:
        """None when ``value`` is in range, else the problem (``must be between ...``)."""
        if self.low_excluded:
            if self.low < value <= self.high:
                return None
            return f"must be greater than {_number(self.low)} and at most {_number(self.high)}"
        if self.low <= value <= self.high:
            return None
        unit = f" {self.unit}" if self.unit else ""
        note = f" ({self.note})" if self.note else ""
        return f"must be between {_number(self.low)} and {_number(self.high)}{unit}{note}"


_DATA_AGE = Range(1, MAX_DATA_AGE, "s")
_GRACE = Range(0, MAX_DATA_EXPIRY_GRACE, "s")

#: Every numeric bound of the configuration, by TOML key path (``[[issuer]]`` keys
#: as ``issuer.KEY``). The single source of these bounds: ``serve``'s ``--workers``,
#: the Ansible role's pre-signing checks and ``responder/docs/config.md`` follow
#: it (``responder/tests/test_role_bounds.py`` fails when the role drifts).
RANGES: dict[str, Range] = {
    "server.workers": Range(1, 64),
    "server.threads": Range(1, 256),
    "server.max_live_signings": Range(1, 1024),
    "server.max_request_size": Range(256, 1048576, "octets"),
    "server.http_cache_max_age": Range(0, MAX_VALIDITY, "s"),
    "server.refresh_fraction": Range(0, 1, low_excluded=True),
    "server.cache_size": Range(0, 10_000_000),
    "server.cache_bytes": Range(0, 1 << 40, "octets"),
    "server.reload_interval": Range(0.1, 3600, "s"),
    "server.max_data_age": _DATA_AGE,
    "server.data_expiry_grace": _GRACE,
    "server.data_expiry_warning": Range(0, MAX_EXPIRY_WARNING, "s"),
    "server.signer_expiry_warning": Range(0, MAX_EXPIRY_WARNING, "s"),
    "issuer.response_validity": Range(MIN_VALIDITY, MAX_VALIDITY, "s", "1 h .. 10 days"),
    "issuer.max_data_age": _DATA_AGE,
    "issuer.data_expiry_grace": _GRACE,
    "issuer.source.fetch_interval": Range(10, 86400, "s"),
    "issuer.source.fetch_timeout": Range(1, 300, "s"),
    "issuer.source.fetch_max_bytes": Range(1024, 1 << 30, "octets"),
}

#: Every key whose value is one of a fixed list of strings, by TOML key path.
CHOICES: dict[str, tuple[str, ...]] = {
    "server.log_level": ("debug", "info", "warning", "error"),
    "issuer.responder_id": ("by_key", "by_name"),
    "issuer.signature_hash": ("sha256", "sha384", "sha512"),
    "issuer.source.kind": ("index", "crl"),
}

#: Every key whose value must match a pattern, by TOML key path.
PATTERNS: dict[str, re.Pattern[str]] = {
    # an issuer name is also a file name (snapshots, fetched CRLs) and a metric label
    "issuer.name": re.compile(r"^[A-Za-z0-9._-]{1,64}$"),
}
#: The rule of each of :data:`PATTERNS` in words, for problem messages.
PATTERN_RULES: dict[str, str] = {
    "issuer.name": "must be 1-64 characters of A-Z a-z 0-9 . _ -",
}
NAME_RE = PATTERNS["issuer.name"]
SOURCE_KINDS = CHOICES["issuer.source.kind"]


#: The longest request line nginx accepts in front of the responder with its default
#: ``large_client_header_buffers`` (8k), octets: GET targets are bounded below it.
MAX_REQUEST_LINE = 8190
#: What a request line holds beside its target: ``HEAD `` and `` HTTP/1.1``.
REQUEST_LINE_OVERHEAD = len("HEAD ") + len(" HTTP/1.1")
#: Room for the header fields of a request head beside its request line, octets.
HEADER_FIELDS_ROOM = 16 * 1024


def max_request_target(max_request_size: int) -> int:
    """The longest GET request target answered, characters; a longer one gets HTTP 414.

    4/3 x ``max_request_size`` (base64) + 1024 (a path prefix, percent-escapes), but at
    most :data:`MAX_REQUEST_LINE` minus :data:`REQUEST_LINE_OVERHEAD` (8176). Under
    ``serve`` it is counted on the percent-decoded path.

    Args:
        max_request_size: ``[server] max_request_size``, octets.
    """
    return min(max_request_size * 4 // 3 + 1024, MAX_REQUEST_LINE - REQUEST_LINE_OVERHEAD)


def request_head_limit(max_request_size: int) -> int:
    """The largest request head (request line and header fields) ``serve`` reads,
    octets; a larger one gets HTTP 431 from granian.

    Room for the longest target :func:`max_request_target` allows even fully
    percent-encoded (3 octets per character, so the app, not the server, answers 414),
    plus :data:`REQUEST_LINE_OVERHEAD` and :data:`HEADER_FIELDS_ROOM` (16 KiB).

    Args:
        max_request_size: ``[server] max_request_size``, octets.
    """
    return 3 * max_request_target(max_request_size) + REQUEST_LINE_OVERHEAD + HEADER_FIELDS_ROOM


class ConfigError(Exception):
    """The configuration (or a file it names) has one or more problems.

    Attributes:
        problems: one human-readable line per problem, each of the form
            ``"FILE: key.path: what is wrong"``.
    """

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class Problems:
    """Collects problems with their key paths, so that all of them are reported at once.

    Args:
        file: the config file path, the prefix of every problem line.
    """

    def __init__(self, file: Path) -> None:
        self.file = file
        self.lines: list[str] = []

    def add(self, key: str, message: str) -> None:
        """Record that ``key`` (a dotted key path, e.g. ``issuer[1].source.path``) is wrong."""
        self.lines.append(f"{self.file}: {key}: {message}" if key else f"{self.file}: {message}")

    def raise_if_any(self) -> None:
        """Raise :class:`ConfigError` with every recorded problem, if there are any."""
        if self.lines:
            raise ConfigError(self.lines)


@dataclass(frozen=True)
class ServerConfig:
    """The ``[server]`` table: process-wide settings (units in the field names' docs).

    Attributes:
        bind: listen address, ``HOST:PORT`` or ``unix:PATH``.
        workers: worker processes.
        threads: accepted for older config files; no effect (each ``serve`` worker
            runs the app on its event loop, one request at a time).
        max_live_signings: signatures each worker process makes at once for
            requests that wait for them (with a nonce, or not answered from the
            pre-signed cache); a request that finds all of them taken for 0.25 s is
            answered tryLater (:class:`~ocsp_responder.responder.Responder`). It binds
            for WSGI servers that run the app in several threads; a ``serve`` worker
            signs one at a time.
        max_request_size: largest accepted request body, octets.
        http_cache_max_age: cap on ``Cache-Control: max-age``, seconds.
        refresh_fraction: fraction of a response's validity after which it is re-signed.
        cache_size: pre-signed responses kept per host, in the store the workers
            share (0 disables the cache).
        cache_bytes: bound on the octets of pre-signed responses kept per host
            (0 disables the cache).
        reload_interval: seconds between checks of the status source files.
        state_dir: where the validated last-good status snapshots are kept (must be
            writable by ``serve``); default ``state`` beside the config file.
        max_data_age: default for ``[[issuer]] max_data_age``, seconds.
        data_expiry_grace: default for ``[[issuer]] data_expiry_grace``, seconds.
        metrics_dir: prometheus_client's multiprocess directory for ``serve``; None:
            ``$RUNTIME_DIRECTORY/metrics`` under systemd, else a fresh temporary
            directory (see :mod:`ocsp_responder.metrics`).
        data_expiry_warning: warn (check-config, serve, the
            ``ocsp_responder_data_expiry_warning_seconds`` gauge) when an issuer's data
            expires within this many seconds.
        signer_expiry_warning: the same for the signer certificate's notAfter, seconds.
        log_level: ``debug`` .. ``error``.
        access_log: log one line per HTTP request.
    """

    bind: str = "127.0.0.1:8080"
    workers: int = 2
    threads: int = 4
    max_live_signings: int = DEFAULT_MAX_LIVE_SIGNINGS
    max_request_size: int = 10240
    http_cache_max_age: int = 60
    refresh_fraction: float = 0.5
    cache_size: int = 20_000
    cache_bytes: int = 32 * 1024 * 1024
    reload_interval: float = 0.5
    state_dir: Path = Path("state")
    max_data_age: int = DEFAULT_MAX_DATA_AGE
    data_expiry_grace: int = 0
    metrics_dir: Path | None = None
    data_expiry_warning: int = DEFAULT_DATA_EXPIRY_WARNING
    signer_expiry_warning: int = DEFAULT_SIGNER_EXPIRY_WARNING
    log_level: str = "info"
    access_log: bool = False


@dataclass(frozen=True)
class SourceConfig:
    """The ``[issuer.source]`` table.

    Attributes:
        kind: ``"index"`` (OpenSSL CA database) or ``"crl"`` (CRL files).
        paths: one index.txt for ``index``; CRL files for ``crl`` (may be empty when
            ``urls`` is not).
        urls: ``crl`` only: http(s) URLs of CRLs that ``ocsp-responder fetch-crls``
            keeps under ``[server] state_dir`` (:mod:`ocsp_responder.fetch`); the source
            reads ``paths`` plus those files.
        fetch_interval: seconds between fetches of each URL.
        fetch_timeout: connect and read timeout of a fetch, seconds.
        fetch_max_bytes: largest CRL body accepted, octets.
        proxy: http(s) proxy URL for the fetches, ``""`` for direct connections.
    """

    kind: str
    paths: tuple[Path, ...]
    urls: tuple[str, ...] = ()
    fetch_interval: int = DEFAULT_FETCH_INTERVAL
    fetch_timeout: int = DEFAULT_FETCH_TIMEOUT
    fetch_max_bytes: int = DEFAULT_FETCH_MAX_BYTES
    proxy: str = ""


@dataclass(frozen=True)
class IssuerConfig:
    """One ``[[issuer]]`` table: a CA we answer for and its delegated signer.

    Attributes:
        key: the key path of this table in problem messages, e.g. ``issuer[1]``.
        name: label for logs.
        ca_certificate, signer_certificate, signer_key: PEM or DER files.
        signer_key_passphrase_file: optional file holding the key's passphrase.
        response_validity: seconds from thisUpdate to nextUpdate.
        responder_id: ``by_key`` or ``by_name`` (RFC 6960 section 4.2.1 ResponderID).
        signature_hash: hash name for the response signature.
        source: where certificate status comes from.
        max_data_age: seconds an ``index`` source (or a CRL without nextUpdate) stays
            usable after it was last confirmed current.
        data_expiry_grace: seconds past the data's expiry during which it is still
            served (nextUpdate never goes beyond expiry + grace).
    """

    key: str
    name: str
    ca_certificate: Path
    signer_certificate: Path
    signer_key: Path
    signer_key_passphrase_file: Path | None
    response_validity: int
    responder_id: str
    signature_hash: str
    source: SourceConfig
    max_data_age: int = DEFAULT_MAX_DATA_AGE
    data_expiry_grace: int = 0


@dataclass(frozen=True)
class Config:
    """The whole validated configuration.

    Attributes:
        path: the file it was read from (absolute).
        server: the ``[server]`` settings.
        issuers: the ``[[issuer]]`` entries, in file order (at least one).
    """

    path: Path
    server: ServerConfig
    issuers: tuple[IssuerConfig, ...]


class _Table:
    """Typed access to one TOML table that records problems instead of raising."""

    def __init__(self, data: dict[str, Any], key: str, problems: Problems) -> None:
        self.data = data
        self.key = key
        self.problems = problems
        self.seen: set[str] = set()

    def _path(self, name: str) -> str:
        return f"{self.key}.{name}" if self.key else name

    @overload
    def get(
        self, name: str, kind: type[T], default: T, check: Callable[[T], str | None] | None = None
    ) -> T: ...

    @overload
    def get(
        self,
        name: str,
        kind: type[T],
        default: None = None,
        check: Callable[[T], str | None] | None = None,
    ) -> T | None: ...

    def get(
        self,
        name: str,
        kind: type[T],
        default: T | None = None,
        check: Callable[[T], str | None] | None = None,
    ) -> T | None:
        """Return ``data[name]`` if it has type ``kind`` and passes ``check``.

        A missing key gives ``default`` (a problem if ``default`` is None); a wrong
        type or a failed check records a problem and gives ``default``.
        ``check`` returns an error message or None.
        """
        self.seen.add(name)
        if name not in self.data:
            if default is None:
                self.problems.add(self._path(name), "required key is missing")
            return default
        value = self.data[name]
        ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            self.problems.add(
                self._path(name), f"expected {_type_name(kind)}, got {_type_name(type(value))}"
            )
            return default
        if check is not None:
            message = check(value)
            if message:
                self.problems.add(self._path(name), f"{message} (got {value!r})")
                return default
        return value  # type: ignore[no-any-return]

    def path(self, name: str, base: Path, required: bool = True) -> Path | None:
        """Return the file named by ``data[name]`` resolved against ``base``; it must exist."""
        if not required and name not in self.data:
            self.seen.add(name)
            return None
        raw = self.get(name, str, None if required else "")
        if not raw:
            return None
        return _existing_file(base / raw, self._path(name), self.problems)

    def reject_unknown(self) -> None:
        """Record a problem for every key of the table that was never asked for."""
        for name in sorted(set(self.data) - self.seen):
            self.problems.add(self._path(name), "unknown key")


def _type_name(kind: type) -> str:
    return {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "a boolean",
        list: "an array",
        dict: "a table",
    }.get(kind, kind.__name__)


def _existing_file(path: Path, key: str, problems: Problems) -> Path | None:
    if not path.is_file():
        problems.add(key, f"file not found: {path}")
        return None
    return path


def _bound(key: str) -> Callable[[float], str | None]:
    """The check of the numeric key ``key`` (a :data:`RANGES` key path)."""
    return RANGES[key].check


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _choice(key: str) -> Callable[[str], str | None]:
    """The check of the string key ``key`` (a :data:`CHOICES` key path)."""
    choices = CHOICES[key]

    def check(value: str) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}"

    return check


def _matches(key: str) -> Callable[[str], str | None]:
    """The check of the string key ``key`` (a :data:`PATTERNS` key path)."""
    pattern, rule = PATTERNS[key], PATTERN_RULES[key]
    return lambda value: None if pattern.match(value) else rule


def read_config(path: str | Path) -> tuple[Config, Problems]:
    """Read and validate a configuration file, returning the problems found.

    The returned config holds the server settings (defaults where a key was bad) and
    the issuer entries that are valid, so that a caller can go on checking those and
    report everything at once.

    Raises:
        ConfigError: only when the file cannot be read or is not TOML at all.
    """
    file = Path(path).absolute()
    problems = Problems(file)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([f"{file}: cannot read: {exc.strerror or exc}"]) from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{file}: not valid TOML: {exc}"]) from exc

    top = _Table(data, "", problems)
    server = _load_server(top, file.parent, problems)
    issuers = _load_issuers(top, file.parent, server, problems)
    top.reject_unknown()
    return Config(path=file, server=server, issuers=tuple(issuers)), problems


def _load_server(top: _Table, base: Path, problems: Problems) -> ServerConfig:
    raw = top.get("server", dict, {})
    table = _Table(raw, "server", problems)
    d = ServerConfig()
    server = ServerConfig(
        bind=table.get("bind", str, d.bind, check_bind),
        workers=table.get("workers", int, d.workers, _bound("server.workers")),
        threads=table.get("threads", int, d.threads, _bound("server.threads")),
        max_live_signings=table.get(
            "max_live_signings", int, d.max_live_signings, _bound("server.max_live_signings")
        ),
        max_request_size=table.get(
            "max_request_size", int, d.max_request_size, _bound("server.max_request_size")
        ),
        http_cache_max_age=table.get(
            "http_cache_max_age", int, d.http_cache_max_age, _bound("server.http_cache_max_age")
        ),
        refresh_fraction=table.get(
            "refresh_fraction", float, d.refresh_fraction, _bound("server.refresh_fraction")
        ),
        cache_size=table.get("cache_size", int, d.cache_size, _bound("server.cache_size")),
        cache_bytes=table.get("cache_bytes", int, d.cache_bytes, _bound("server.cache_bytes")),
        reload_interval=table.get(
            "reload_interval", float, d.reload_interval, _bound("server.reload_interval")
        ),
        state_dir=base / table.get("state_dir", str, str(d.state_dir), _check_nonempty),
        max_data_age=_max_data_age(table, d.max_data_age, "server"),
        data_expiry_grace=_data_expiry_grace(table, d.data_expiry_grace, "server"),
        metrics_dir=_optional_dir(table, "metrics_dir", base),
        data_expiry_warning=table.get(
            "data_expiry_warning",
            int,
            d.data_expiry_warning,
            _bound("server.data_expiry_warning"),
        ),
        signer_expiry_warning=table.get(
            "signer_expiry_warning",
            int,
            d.signer_expiry_warning,
            _bound("server.signer_expiry_warning"),
        ),
        log_level=table.get("log_level", str, d.log_level, _choice("server.log_level")),
        access_log=table.get("access_log", bool, d.access_log),
    )
    table.reject_unknown()
    return server


def check_bind(value: str) -> str | None:
    """None for a ``[server] bind`` value ``HOST:PORT`` (port 1..65535; HOST may be
    a bracketed IPv6 address) or ``unix:PATH``, else the problem."""
    if value.startswith("unix:") and len(value) > 5:
        return None
    host, sep, port = value.rpartition(":")
    if sep and host and port.isdigit() and 0 < int(port) < 65536:
        return None
    return "must be HOST:PORT or unix:PATH"


def _max_data_age(table: _Table, default: int, where: str) -> int:
    """``max_data_age`` of ``[server]`` or ``[[issuer]]`` (``where``), seconds."""
    return table.get("max_data_age", int, default, _bound(f"{where}.max_data_age"))


def _data_expiry_grace(table: _Table, default: int, where: str) -> int:
    """``data_expiry_grace`` of ``[server]`` or ``[[issuer]]`` (``where``), seconds."""
    return table.get("data_expiry_grace", int, default, _bound(f"{where}.data_expiry_grace"))


def _optional_dir(table: _Table, name: str, base: Path) -> Path | None:
    """An optional directory key, resolved against ``base``; None when absent or bad."""
    if name not in table.data:
        table.seen.add(name)
        return None
    raw = table.get(name, str, "", _check_nonempty)
    return base / raw if raw else None


def _check_nonempty(value: str) -> str | None:
    return None if value.strip() else "must not be empty"


def _load_issuers(
    top: _Table, base: Path, server: ServerConfig, problems: Problems
) -> list[IssuerConfig]:
    top.seen.add("issuer")
    raw = top.data.get("issuer")
    if not raw:
        problems.add("issuer", "at least one [[issuer]] table is required")
        return []
    if not isinstance(raw, list):
        problems.add("issuer", "expected an array of tables ([[issuer]])")
        return []
    issuers: list[IssuerConfig] = []
    names: dict[str, str] = {}
    for number, entry in enumerate(raw, start=1):
        key = f"issuer[{number}]"
        if not isinstance(entry, dict):
            problems.add(key, "expected a table ([[issuer]])")
            continue
        issuer = _load_issuer(_Table(entry, key, problems), base, server, problems)
        if issuer is None:
            continue
        if issuer.name in names:
            problems.add(
                f"{key}.name", f"duplicate issuer name {issuer.name!r} (also {names[issuer.name]})"
            )
        names[issuer.name] = key
        issuers.append(issuer)
    return issuers


def _load_issuer(
    table: _Table, base: Path, server: ServerConfig, problems: Problems
) -> IssuerConfig | None:
    before = len(problems.lines)
    name = table.get(
        "name",
        str,
        None,
        _matches("issuer.name"),
    )
    ca_certificate = table.path("ca_certificate", base)
    signer_certificate = table.path("signer_certificate", base)
    signer_key = table.path("signer_key", base)
    passphrase_file = table.path("signer_key_passphrase_file", base, required=False)
    validity = table.get(
        "response_validity",
        int,
        86400,
        _bound("issuer.response_validity"),
    )
    responder_id = table.get("responder_id", str, "by_key", _choice("issuer.responder_id"))
    signature_hash = table.get("signature_hash", str, "sha256", _choice("issuer.signature_hash"))
    max_data_age = _max_data_age(table, server.max_data_age, "issuer")
    grace = _data_expiry_grace(table, server.data_expiry_grace, "issuer")
    source = _load_source(table, base, problems)
    table.reject_unknown()
    if len(problems.lines) != before:
        return None
    assert name and ca_certificate and signer_certificate and signer_key and source  # noqa: S101
    return IssuerConfig(
        key=table.key,
        name=name,
        ca_certificate=ca_certificate,
        signer_certificate=signer_certificate,
        signer_key=signer_key,
        signer_key_passphrase_file=passphrase_file,
        response_validity=validity,
        responder_id=responder_id,
        signature_hash=signature_hash,
        source=source,
        max_data_age=max_data_age,
        data_expiry_grace=grace,
    )


def _load_source(issuer: _Table, base: Path, problems: Problems) -> SourceConfig | None:
    raw = issuer.get("source", dict)
    if raw is None:
        return None
    table = _Table(raw, f"{issuer.key}.source", problems)
    before = len(problems.lines)
    kind = table.get("kind", str, None, _choice("issuer.source.kind"))
    paths: list[Path | None] = []
    fetch: dict[str, Any] = {}
    if kind == "index":
        paths.append(table.path("path", base))
    elif kind == "crl":
        urls = _urls(table, "urls", problems)
        # ``paths`` may be left out (or empty) when ``urls`` names at least one CRL
        raw_paths = table.get("paths", list, [] if "urls" in table.data else None)
        if raw_paths is not None and not raw_paths and not urls and before == len(problems.lines):
            what = "paths" if "urls" not in table.data else "urls"
            problems.add(
                f"{table.key}.{what}", "must name at least one CRL (file in paths, or URL in urls)"
            )
        for number, item in enumerate(raw_paths or [], start=1):
            key = f"{table.key}.paths[{number}]"
            if not isinstance(item, str):
                problems.add(key, f"expected a string, got {_type_name(type(item))}")
                continue
            paths.append(_existing_file(base / item, key, problems))
        fetch = {
            "urls": tuple(urls),
            "fetch_interval": table.get(
                "fetch_interval",
                int,
                DEFAULT_FETCH_INTERVAL,
                _bound("issuer.source.fetch_interval"),
            ),
            "fetch_timeout": table.get(
                "fetch_timeout", int, DEFAULT_FETCH_TIMEOUT, _bound("issuer.source.fetch_timeout")
            ),
            "fetch_max_bytes": table.get(
                "fetch_max_bytes",
                int,
                DEFAULT_FETCH_MAX_BYTES,
                _bound("issuer.source.fetch_max_bytes"),
            ),
            "proxy": table.get("proxy", str, "", lambda v: _check_url(v) if v else None),
        }
    if kind is None:
        # don't also call them unknown
        table.seen.update({"path", "paths", "urls", "fetch_interval", "fetch_timeout"})
        table.seen.update({"fetch_max_bytes", "proxy"})
    table.reject_unknown()
    if kind is None or len(problems.lines) != before or None in paths:
        return None
    return SourceConfig(kind=kind, paths=tuple(p for p in paths if p is not None), **fetch)


def _urls(table: _Table, name: str, problems: Problems) -> list[str]:
    """The optional array of http(s) URLs ``name`` of ``table`` (problems recorded)."""
    raw = table.get(name, list, [])
    urls: list[str] = []
    for number, item in enumerate(raw, start=1):
        key = f"{table.key}.{name}[{number}]"
        if not isinstance(item, str):
            problems.add(key, f"expected a string, got {_type_name(type(item))}")
            continue
        message = _check_url(item)
        if message:
            problems.add(key, f"{message} (got {item!r})")
        elif item in urls:
            problems.add(key, f"duplicate URL (also {name}[{urls.index(item) + 1}])")
        urls.append(item)
    return urls


def _check_url(value: str) -> str | None:
    """None for an absolute ``http://`` or ``https://`` URL with a host, else why not."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (raises ValueError for a bad port)
    except ValueError as exc:
        return f"not a valid URL: {exc}"
    if parts.scheme.lower() not in FETCH_SCHEMES:
        return "must be an http:// or https:// URL"
    if not parts.hostname:
        return "must name a host"
    if any(c.isspace() for c in value):
        return "must not contain white space"
    return None
