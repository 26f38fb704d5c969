"""index.txt parsing (sources.index): the revocation field's TIME[,REASON[,EXTRA]]
forms, every reason name, rows, and errors naming the file and line."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509

from ocsp_responder.sources import CertState, SourceError, Status
from ocsp_responder.sources.index import (
    IndexSource,
    parse_index,
    parse_openssl_time,
    parse_revocation,
)

WHEN = datetime(2026, 1, 10, 12, 34, 56, tzinfo=UTC)
UTC_TIME = "260110123456Z"
GENERALIZED = "20260110123456Z"
R = x509.ReasonFlags


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (UTC_TIME, WHEN),
        (GENERALIZED, WHEN),
        ("500101000000Z", datetime(1950, 1, 1, tzinfo=UTC)),
        ("491231235959Z", datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC)),
        ("99991231235959Z", datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)),
    ],
)
def test_openssl_time_forms(text: str, expected: datetime) -> None:
    assert parse_openssl_time(text) == expected


@pytest.mark.parametrize(
    "text", ["2601101234Z", "260110123456", "2026011012345Z", "26011012345aZ", "", "Z"]
)
def test_bad_times_are_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="bad time"):
        parse_openssl_time(text)


def test_revocation_date_alone_has_no_reason() -> None:
    assert parse_revocation(UTC_TIME) == (WHEN, None)
    assert parse_revocation(GENERALIZED) == (WHEN, None)


@pytest.mark.parametrize(
    ("field", "reason"),
    [
        ("unspecified", R.unspecified),
        ("keyCompromise", R.key_compromise),
        ("CACompromise", R.ca_compromise),
        ("affiliationChanged", R.affiliation_changed),
        ("superseded", R.superseded),
        ("cessationOfOperation", R.cessation_of_operation),
        ("certificateHold", R.certificate_hold),
        ("removeFromCRL", R.remove_from_crl),
        ("KEYCOMPROMISE", R.key_compromise),
        ("superSEDED", R.superseded),
        # the forms -crl_hold, -crl_compromise and -crl_CA_compromise write
        ("holdInstruction,holdInstructionReject", R.certificate_hold),
        (f"keyTime,{GENERALIZED}", R.key_compromise),
        (f"CAkeyTime,{GENERALIZED}", R.ca_compromise),
    ],
)
def test_revocation_reasons(field: str, reason: x509.ReasonFlags) -> None:
    assert parse_revocation(f"{UTC_TIME},{field}") == (WHEN, reason)


@pytest.mark.parametrize(
    ("field", "message"),
    [
        (f"{UTC_TIME},notAReason", "unknown revocation reason 'notAReason'"),
        (f"{UTC_TIME},", "unknown revocation reason ''"),
        (f"{UTC_TIME},holdInstruction", "reason 'holdInstruction' needs a third field"),
        (f"{UTC_TIME},holdInstruction,", "reason 'holdInstruction' needs a third field"),
        (f"{UTC_TIME},keyTime", "reason 'keyTime' needs a third field"),
        (f"{UTC_TIME},keyTime,yesterday", "bad time 'yesterday'"),
        (f"{UTC_TIME},CAkeyTime,2601Z", "bad time '2601Z'"),
        (f"{UTC_TIME},superseded,extra", "unexpected field after reason 'superseded'"),
        (f"{UTC_TIME},keyTime,{GENERALIZED},more", "reason 'keyTime' needs a third field"),
        ("2026-01-10,keyCompromise", "bad time '2026-01-10'"),
    ],
)
def test_invalid_revocation_fields(field: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_revocation(field)
    assert str(caught.value).startswith(message)


def row(status: str, revocation: str, serial: str, expiry: str = "270101000000Z") -> str:
    return f"{status}\t{expiry}\t{revocation}\t{serial}\tunknown\t/CN=leaf {serial}\n"


def test_rows_give_their_status() -> None:
    text = (
        row("V", "", "1001")
        + row("E", "", "1002", expiry="250101000000Z")
        + row("R", f"{UTC_TIME},keyCompromise", "1003")
        + row("R", GENERALIZED, "0A0B0C")
    )
    table = parse_index(text.encode(), Path("index.txt"))
    assert table == {
        0x1001: Status(CertState.GOOD),
        0x1002: Status(CertState.GOOD),
        0x1003: Status(CertState.REVOKED, WHEN, R.key_compromise),
        0x0A0B0C: Status(CertState.REVOKED, WHEN, None),
    }


def test_a_serial_listed_twice_stays_revoked() -> None:
    text = row("R", f"{UTC_TIME},superseded", "10") + row("V", "", "10")
    assert parse_index(text.encode(), Path("i")) == {
        0x10: Status(CertState.REVOKED, WHEN, R.superseded)
    }


GOOD_ROW = row("V", "", "01")


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (row("R", f"{UTC_TIME},unheardOf", "02"), "unknown revocation reason 'unheardOf'"),
        (row("R", f"{UTC_TIME},keyTime", "02"), "reason 'keyTime' needs a third field"),
        (row("R", "", "02"), "R row has no revocation field"),
        (row("V", UTC_TIME, "02"), f"V row has a revocation field '{UTC_TIME}'"),
        (row("X", "", "02"), "unknown row status 'X' (want V, R or E)"),
        (row("V", "", "zz"), "bad serial 'zz' (want hex)"),
        (row("V", "", "02", expiry="soon"), "bad time 'soon'"),
        ("V\t270101000000Z\t\t02\tunknown\n", "expected 6 tab-separated fields, found 5"),
    ],
)
def test_a_bad_row_is_named_by_file_and_line(bad: str, message: str) -> None:
    """The error names the file and the line (3: after two good rows), then the problem."""
    path = Path("/data/index.txt")
    with pytest.raises(SourceError) as caught:
        parse_index((GOOD_ROW + row("V", "", "03") + bad).encode(), path)
    assert str(caught.value).startswith(f"{path}:3: {message}")
    assert caught.value.path == path


def test_incomplete_last_line_is_named() -> None:
    path = Path("index.txt")
    with pytest.raises(SourceError) as caught:
        parse_index((GOOD_ROW + GOOD_ROW.rstrip("\n")).encode(), path)
    assert str(caught.value) == (f"{path}:2: last line is incomplete (no newline): partial write?")


@pytest.mark.parametrize("data", [b"", b"\n\n"])
def test_file_without_rows_is_rejected(data: bytes) -> None:
    path = Path("index.txt")
    with pytest.raises(SourceError) as caught:
        parse_index(data, path)
    assert str(caught.value) == f"{path}: has no rows (empty or truncated file?)"


def test_index_source_reads_table_and_mtime(tmp_path: Path) -> None:
    """IndexSource.read: the table, and the file's mtime in whole seconds (the
    confirmation time of the data)."""
    path = tmp_path / "index.txt"
    path.write_text(GOOD_ROW + row("R", f"{UTC_TIME},cessationOfOperation", "02"))
    mtime_ns = int(WHEN.timestamp()) * 10**9 + 750_000_000
    os.utime(path, ns=(mtime_ns, mtime_ns))
    data = IndexSource(path).read(WHEN)
    assert data.kind == "index"
    assert data.mtime == WHEN
    assert data.table == {
        0x01: Status(CertState.GOOD),
        0x02: Status(CertState.REVOKED, WHEN, R.cessation_of_operation),
    }


def test_index_source_names_an_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.txt"
    with pytest.raises(SourceError) as caught:
        IndexSource(path).read(WHEN)
    assert str(caught.value) == f"{path}: cannot read: No such file or directory"
