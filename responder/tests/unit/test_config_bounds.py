"""config: ``check_bind`` forms, and the problem lines RANGES (and CHOICES, PATTERNS)
produce through read_config on a TOML file: each names the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from ocsp_responder.config import RANGES, Range, check_bind, read_config

BIND_PROBLEM = "must be HOST:PORT or unix:PATH"


@pytest.mark.parametrize(
    "value",
    [
        "127.0.0.1:8080",
        "0.0.0.0:1",
        "localhost:65535",
        "ocsp.example.com:80",
        "[::1]:8080",
        "[2001:db8::1]:443",
        "unix:/run/ocsp-responder/ocsp.sock",
        "unix:relative.sock",
    ],
)
def test_bind_accepted(value: str) -> None:
    assert check_bind(value) is None


@pytest.mark.parametrize(
    "value",
    [
        "",
        "8080",
        ":8080",
        "localhost",
        "localhost:",
        "localhost:0",
        "localhost:65536",
        "localhost:80a",
        "localhost:-1",
        "localhost: 80",
        "unix:",
    ],
)
def test_bind_rejected(value: str) -> None:
    assert check_bind(value) == BIND_PROBLEM


def write_config(
    tmp_path: Path, server: str = "", issuer: str = "", name: str = "unit", source: str = ""
) -> Path:
    """A config with one issuer (its files exist; their contents are not read) plus
    ``server`` lines in ``[server]`` and ``issuer`` lines in ``[[issuer]]``; its source
    is an index.txt, or, with ``source`` lines, a ``crl`` source with one URL."""
    for file in ("ca.pem", "signer.pem", "signer.key", "index.txt"):
        (tmp_path / file).write_text("")
    path = tmp_path / "config.toml"
    path.write_text(
        f"[server]\n{server}\n"
        f'[[issuer]]\nname = "{name}"\nca_certificate = "ca.pem"\n'
        f'signer_certificate = "signer.pem"\nsigner_key = "signer.key"\n{issuer}\n'
        + (
            f'[issuer.source]\nkind = "crl"\nurls = ["http://crl.example.net/ca.crl"]\n{source}\n'
            if source
            else '[issuer.source]\nkind = "index"\npath = "index.txt"\n'
        )
    )
    return path


def problems_of(path: Path) -> list[str]:
    return read_config(path)[1].lines


def test_valid_config_has_no_problems(tmp_path: Path) -> None:
    path = write_config(tmp_path, 'bind = "[::1]:8443"')
    config, problems = read_config(path)
    assert problems.lines == []
    assert config.server.bind == "[::1]:8443"


def test_bad_bind_names_the_key(tmp_path: Path) -> None:
    path = write_config(tmp_path, 'bind = "localhost:99999"')
    config, problems = read_config(path)
    assert problems.lines == [f"{path}: server.bind: {BIND_PROBLEM} (got 'localhost:99999')"]
    assert config.server.bind == "127.0.0.1:8080"  # the default stands in


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("server.workers", "0", "must be between 1 and 64 (got 0)"),
        ("server.workers", "65", "must be between 1 and 64 (got 65)"),
        ("server.threads", "257", "must be between 1 and 256 (got 257)"),
        ("server.max_live_signings", "0", "must be between 1 and 1024 (got 0)"),
        ("server.max_live_signings", "1025", "must be between 1 and 1024 (got 1025)"),
        ("server.max_live_signings", "2.5", "expected an integer, got a number"),
        (
            "server.max_request_size",
            "255",
            "must be between 256 and 1048576 octets (got 255)",
        ),
        ("server.http_cache_max_age", "-1", "must be between 0 and 864000 s (got -1)"),
        ("server.refresh_fraction", "0", "must be greater than 0 and at most 1 (got 0.0)"),
        ("server.refresh_fraction", "1.5", "must be greater than 0 and at most 1 (got 1.5)"),
        ("server.cache_size", "10000001", "must be between 0 and 10000000 (got 10000001)"),
        ("server.reload_interval", "0.05", "must be between 0.1 and 3600 s (got 0.05)"),
        ("server.max_data_age", "0", "must be between 1 and 31622400 s (got 0)"),
        ("server.data_expiry_grace", "604801", "must be between 0 and 604800 s (got 604801)"),
        (
            "issuer[1].response_validity",
            "3599",
            "must be between 3600 and 864000 s (1 h .. 10 days) (got 3599)",
        ),
        (
            "issuer[1].response_validity",
            "864001",
            "must be between 3600 and 864000 s (1 h .. 10 days) (got 864001)",
        ),
        ("issuer[1].max_data_age", "31622401", "must be between 1 and 31622400 s (got 31622401)"),
        ("issuer[1].data_expiry_grace", "-5", "must be between 0 and 604800 s (got -5)"),
        ("issuer[1].source.fetch_interval", "9", "must be between 10 and 86400 s (got 9)"),
        (
            "issuer[1].source.fetch_max_bytes",
            "1023",
            "must be between 1024 and 1073741824 octets (got 1023)",
        ),
        ("server.log_level", '"loud"', "must be one of debug, info, warning, error (got 'loud')"),
        ("issuer[1].signature_hash", '"md5"', "must be one of sha256, sha384, sha512 (got 'md5')"),
    ],
)
def test_out_of_range_value_names_the_key(
    tmp_path: Path, key: str, value: str, message: str
) -> None:
    line = f"{key.rsplit('.', 1)[1]} = {value}"
    if key.startswith("server."):
        path = write_config(tmp_path, server=line)
    elif key.startswith("issuer[1].source."):
        path = write_config(tmp_path, source=line)
    else:
        path = write_config(tmp_path, issuer=line)
    assert problems_of(path) == [f"{path}: {key}: {message}"]


def _bounds(rule: Range) -> list[float]:
    return [rule.high] if rule.low_excluded else [rule.low, rule.high]


@pytest.mark.parametrize("key", sorted(RANGES))
def test_every_range_bound_is_accepted_and_one_past_is_named(tmp_path: Path, key: str) -> None:
    """For every key of RANGES: both bounds are accepted; the value just above the top
    names the key (``issuer.*`` as ``issuer[1].*``) and the bound."""
    rule = RANGES[key]
    table, name = key.split(".", 1)
    if name.startswith("source."):
        table, name = "source", name.removeprefix("source.")
    is_float = isinstance(rule.low, float) or isinstance(rule.high, float) or rule.low_excluded

    def config_with(value: float) -> Path:
        text = f"{name} = {float(value) if is_float else int(value)}"
        directory = tmp_path / f"v{value}"
        directory.mkdir(exist_ok=True)
        if table == "server":
            return write_config(directory, server=text)
        if table == "source":
            return write_config(directory, source=text)
        return write_config(directory, issuer=text)

    for value in _bounds(rule):
        assert problems_of(config_with(value)) == [], value
    above = rule.high + 1
    path = config_with(above)
    (line,) = problems_of(path)
    where = {"server": "server", "issuer": "issuer[1]", "source": "issuer[1].source"}[table]
    assert line.startswith(f"{path}: {where}.{name}: must be ")
    assert f"at most {int(rule.high)}" in line or f"and {int(rule.high)}" in line


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        server='workers = 0\nbind = "x"\nunknown_key = 1',
        name="bad name!",
    )
    assert problems_of(path) == [
        f"{path}: server.bind: {BIND_PROBLEM} (got 'x')",
        f"{path}: server.workers: must be between 1 and 64 (got 0)",
        f"{path}: server.unknown_key: unknown key",
        f"{path}: issuer[1].name: must be 1-64 characters of A-Z a-z 0-9 . _ - (got 'bad name!')",
    ]
