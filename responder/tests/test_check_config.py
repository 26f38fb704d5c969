"""``ocsp-responder check-config``: one line per issuer for a valid config; exit 1 and
``FILE: KEY.PATH: problem`` on stderr for each problem of a bad one."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from openssl_pki import (
    CertificateAuthority,
    certificate_not_after,
    crl_serials,
    openssl,
    read_index,
)
from responder_process import check_config, toml_config
from scenario import Pki, main_config

LINE = re.compile(
    r"issuer (?P<name>\S+): source (?P<kind>index|crl) (?P<paths>\S+) "
    r"\((?P<count>\d+) serials, generation (?P<generation>\d+)\); "
    r"data expires (?P<expires>\S+); signer (?P<subject>.+) notAfter (?P<not_after>\S+)"
)
#: The default ``max_data_age``: index.txt data expires this long after its mtime.
MAX_DATA_AGE = timedelta(days=7)


def expected_expiry(kind: str, paths: list[Path]) -> datetime:
    """index: mtime + 7 days (whole seconds); crl: the earliest nextUpdate (openssl's view)."""
    if kind == "index":
        mtime = datetime.fromtimestamp(int(paths[0].stat().st_mtime), UTC)
        return mtime + MAX_DATA_AGE
    updates = []
    for path in paths:
        form = "DER" if path.suffix == ".der" else "PEM"
        text = openssl("crl", "-in", path, "-inform", form, "-noout", "-nextupdate")
        stamp = text.strip().split("=", 1)[1]
        updates.append(datetime.strptime(stamp, "%b %d %H:%M:%S %Y GMT").replace(tzinfo=UTC))
    return min(updates)


def test_valid_config_prints_one_line_per_issuer(pki: Pki, tmp_path: Path) -> None:
    """Name, source, serial count, data expiry, signer subject and notAfter, per issuer."""
    config = tmp_path / "config.toml"
    config.write_text(main_config(pki))
    done = check_config(config)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 3, done.stdout
    expected = [
        (pki.rsa, "index", [pki.rsa.ca.index], len(read_index(pki.rsa.ca.index))),
        (pki.ec, "index", [pki.ec.ca.index], len(read_index(pki.ec.ca.index))),
        (pki.crl, "crl", pki.crl_files, len(set().union(*map(crl_serials, pki.crl_files)))),
    ]
    for line, (ca, kind, paths, count) in zip(lines, expected, strict=True):
        match = LINE.fullmatch(line)
        assert match, line
        assert match["name"] == ca.name
        assert match["kind"] == kind
        assert match["paths"] == ",".join(map(str, paths))
        assert int(match["count"]) == count, line
        assert datetime.fromisoformat(match["expires"]) == expected_expiry(kind, paths), line
        assert f"CN={ca.name} ocsp-signer" in match["subject"], line
        assert datetime.fromisoformat(match["not_after"]) == certificate_not_after(ca.signer.cert)


def test_relative_paths_are_resolved_against_the_config_directory(
    pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A config in the PKI directory naming files relative to itself, checked from elsewhere."""

    def rel(path: Path) -> str:
        return str(path.relative_to(pki.base))

    config = pki.base / "relative.toml"
    config.write_text(
        toml_config(
            None,
            [
                pki.ec.issuer_config(
                    ca_certificate=rel(pki.ec.ca.cert),
                    signer_certificate=rel(pki.ec.signer.cert),
                    signer_key=rel(pki.ec.signer.key),
                    source={"kind": "index", "path": rel(pki.ec.ca.index)},
                )
            ],
        )
    )
    monkeypatch.chdir(tmp_path)
    done = check_config(config)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"issuer {pki.ec.name}: source index "), done.stdout


def _encrypted_key(pki: Pki, tmp: Path) -> dict[str, object]:
    key = tmp / "signer.enc.key"
    openssl("pkey", "-in", pki.ec.signer.key, "-aes256", "-passout", "pass:s3cret", "-out", key)
    (tmp / "signer.pass").write_text("s3cret\n")
    return {"signer_key": key, "signer_key_passphrase_file": tmp / "signer.pass"}


def _der_files(pki: Pki, tmp: Path) -> dict[str, object]:
    files = {name: tmp / f"{name}.der" for name in ("ca", "signer", "key")}
    openssl("x509", "-in", pki.ec.ca.cert, "-outform", "DER", "-out", files["ca"])
    openssl("x509", "-in", pki.ec.signer.cert, "-outform", "DER", "-out", files["signer"])
    openssl("pkey", "-in", pki.ec.signer.key, "-outform", "DER", "-out", files["key"])
    return {
        "ca_certificate": files["ca"],
        "signer_certificate": files["signer"],
        "signer_key": files["key"],
    }


def _ca_as_signer(pki: Pki, tmp: Path) -> dict[str, object]:
    return {"signer_certificate": pki.ec.ca.cert, "signer_key": pki.ec.ca.key}


ACCEPTED = {
    "passphrase-protected-key": _encrypted_key,
    "der-encoded-files": _der_files,
    "ca-certificate-as-signer": _ca_as_signer,
}


@pytest.mark.parametrize("form", sorted(ACCEPTED))
def test_accepted_key_and_certificate_forms(pki: Pki, tmp_path: Path, form: str) -> None:
    """docs/config.md: encrypted keys with a passphrase file, DER files, the CA as signer."""
    config = tmp_path / "config.toml"
    config.write_text(toml_config(None, [pki.ec.issuer_config(**ACCEPTED[form](pki, tmp_path))]))
    done = check_config(config)
    assert done.returncode == 0, done.stderr
    assert LINE.fullmatch(done.stdout.strip()), done.stdout


def test_wrong_passphrase_is_reported(pki: Pki, tmp_path: Path) -> None:
    """A passphrase that does not decrypt the key -> exit 1 naming the key setting."""
    settings = _encrypted_key(pki, tmp_path)
    (tmp_path / "signer.pass").write_text("not-the-passphrase\n")
    config = tmp_path / "config.toml"
    config.write_text(toml_config(None, [pki.ec.issuer_config(**settings)]))
    done = check_config(config)
    assert done.returncode == 1, done.stdout
    assert_reported(done.stderr, config, r"issuer\[1\]\.signer_key(_passphrase_file)?")


# ---------------------------------------------------------------- bad configs

Change = Callable[[Pki, dict, list, dict, Path], None]  # (pki, server, issuers, top, tmp)


@dataclass(frozen=True)
class Bad:
    """A change that breaks the base config, the key path it must be reported under
    (a regex), and text the same message must hold (e.g. the offending file)."""

    change: Change
    key: str
    mention: str = ""


def _set(where: str, key: str, value: object) -> Change:
    """A change setting ``key`` in ``server``, ``top``, ``issuer1``/``issuer2`` or its source."""

    def change(pki: Pki, server: dict, issuers: list, top: dict, tmp: Path) -> None:
        table = {"server": server, "top": top}.get(where)
        if table is None:
            number, _, sub = where.removeprefix("issuer").partition(".")
            table = issuers[int(number) - 1]
            if sub:
                table = table[sub]
        table[key] = value(pki, tmp) if callable(value) else value

    return change


def _foreign_crl(pki: Pki, tmp: Path) -> list[Path]:
    return [pki.ec.ca.gencrl(tmp / "signed-by-ec-intermediate.crl.pem")]


def _impostor_crl(pki: Pki, tmp: Path) -> list[Path]:
    """A CRL whose issuer name is pki.crl's, signed by another key: only the signature tells."""
    impostor = CertificateAuthority(tmp, pki.crl.name, "ec", parent=pki.root)
    return [pki.crl_files[0], impostor.gencrl(tmp / "same-name-other-key.crl.pem")]


def _no_issuers(pki: Pki, server: dict, issuers: list, top: dict, tmp: Path) -> None:
    issuers.clear()


#: A bad CRL is reported under the element of ``paths`` that names it (counting from 1).
def crl_paths_key(number: int) -> str:
    return rf"issuer\[2\]\.source\.paths\[{number}\]"


# The base config serves pki.rsa (index.txt) as issuer[1] and pki.crl (CRLs) as issuer[2].
BAD = {
    "unknown-top-level-key": Bad(_set("top", "colour", "blue"), r"colour"),
    "unknown-server-key": Bad(_set("server", "colour", "blue"), r"server\.colour"),
    "unknown-issuer-key": Bad(_set("issuer2", "colour", "blue"), r"issuer\[2\]\.colour"),
    "unknown-source-key": Bad(
        _set("issuer1.source", "colour", "blue"), r"issuer\[1\]\.source\.colour"
    ),
    "workers-not-an-integer": Bad(_set("server", "workers", "two"), r"server\.workers"),
    "no-live-signing-slot": Bad(
        _set("server", "max_live_signings", 0), r"server\.max_live_signings", "(got 0)"
    ),
    "cache-max-age-not-an-integer": Bad(
        _set("server", "http_cache_max_age", 1.5), r"server\.http_cache_max_age"
    ),
    "validity-not-an-integer": Bad(
        _set("issuer2", "response_validity", "1d"), r"issuer\[2\]\.response_validity"
    ),
    "validity-under-1h": Bad(
        _set("issuer1", "response_validity", 3599), r"issuer\[1\]\.response_validity"
    ),
    "validity-over-10d": Bad(
        _set("issuer2", "response_validity", 864001), r"issuer\[2\]\.response_validity"
    ),
    "unknown-responder-id": Bad(
        _set("issuer1", "responder_id", "by_hash"), r"issuer\[1\]\.responder_id"
    ),
    "unknown-source-kind": Bad(
        _set("issuer1.source", "kind", "ldap"), r"issuer\[1\]\.source\.kind"
    ),
    "missing-signer-key": Bad(
        _set("issuer2", "signer_key", lambda p, t: t / "missing.key"),
        r"issuer\[2\]\.signer_key",
        "missing.key",
    ),
    "missing-ca-certificate": Bad(
        _set("issuer1", "ca_certificate", lambda p, t: t / "no-ca.pem"),
        r"issuer\[1\]\.ca_certificate",
        "no-ca.pem",
    ),
    "missing-index": Bad(
        _set("issuer1.source", "path", lambda p, t: t / "nowhere" / "index.txt"),
        r"issuer\[1\]\.source\.path",
        "nowhere/index.txt",
    ),
    "key-not-matching-certificate": Bad(
        _set("issuer1", "signer_key", lambda p, t: p.ec.signer.key),
        r"issuer\[1\]\.signer_(key|certificate)",
    ),
    "signer-not-issued-by-the-ca": Bad(
        _set("issuer2", "signer_certificate", lambda p, t: p.ec.signer.cert),
        r"issuer\[2\]\.signer_(key|certificate)",
    ),
    "crl-signed-by-another-ca": Bad(
        _set("issuer2.source", "paths", _foreign_crl),
        crl_paths_key(1),
        "signed-by-ec-intermediate.crl.pem",
    ),
    "crl-same-name-other-key": Bad(
        _set("issuer2.source", "paths", _impostor_crl),
        crl_paths_key(2),
        "same-name-other-key.crl.pem",
    ),
    "duplicate-issuer-name": Bad(
        _set("issuer2", "name", lambda p, t: p.rsa.name), r"issuer\[2\]\.name"
    ),
    "no-issuer": Bad(_no_issuers, r"issuer"),
}


def _base(pki: Pki) -> tuple[dict, list, dict]:
    issuers = [
        pki.rsa.issuer_config(),
        pki.crl.issuer_config(source={"kind": "crl", "paths": pki.crl_files}),
    ]
    return {"workers": 1}, issuers, {}


def assert_reported(stderr: str, config: Path, key: str, mention: str = "") -> None:
    """stderr has a ``FILE: KEY: problem`` line for ``key`` naming ``mention``."""
    pattern = rf"^(?:.*/)?{re.escape(config.name)}: {key}: .*{re.escape(mention)}.*$"
    assert re.search(pattern, stderr, re.M), f"no line matching {pattern!r} in:\n{stderr}"


def test_base_config_is_valid(pki: Pki, tmp_path: Path) -> None:
    """The config the bad cases start from passes, so each failure below is the change's."""
    config = tmp_path / "config.toml"
    config.write_text(toml_config(*_base(pki)))
    done = check_config(config)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_config_names_file_and_key(pki: Pki, tmp_path: Path, case: str) -> None:
    """Exit 1; stderr names the file, the key path and (for files) the offending file."""
    server, issuers, top = _base(pki)
    BAD[case].change(pki, server, issuers, top, tmp_path)
    config = tmp_path / "config.toml"
    config.write_text(toml_config(server, issuers, top))
    done = check_config(config)
    assert done.returncode == 1, done.stdout + done.stderr
    assert_reported(done.stderr, config, BAD[case].key, BAD[case].mention)


def test_all_problems_are_reported_at_once(pki: Pki, tmp_path: Path) -> None:
    """Three independent problems -> three lines, in one run."""
    server, issuers, top = _base(pki)
    for case in ("unknown-server-key", "validity-under-1h", "missing-signer-key"):
        BAD[case].change(pki, server, issuers, top, tmp_path)
    config = tmp_path / "config.toml"
    config.write_text(toml_config(server, issuers, top))
    done = check_config(config)
    assert done.returncode == 1
    for case in ("unknown-server-key", "validity-under-1h", "missing-signer-key"):
        assert_reported(done.stderr, config, BAD[case].key, BAD[case].mention)


def test_toml_syntax_error_names_the_file(tmp_path: Path) -> None:
    """A file that is not TOML -> exit 1 with the file named."""
    config = tmp_path / "config.toml"
    config.write_text("[server\nworkers = 1\n")
    done = check_config(config)
    assert done.returncode == 1
    assert "config.toml" in done.stderr, done.stderr


def test_missing_config_file(tmp_path: Path) -> None:
    """A config path that does not exist -> exit 1 naming it."""
    done = check_config(tmp_path / "absent.toml")
    assert done.returncode == 1
    assert "absent.toml" in done.stderr, done.stderr
