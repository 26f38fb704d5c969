"""The real wiring, still in-process: ``load_service`` on a TOML config, PEM files and
an index.txt in tmp_path, with the fake clock (read-only: ``persist=False``; the
status watcher thread is never started)."""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.x509 import ocsp

from ocsp_responder.config import ConfigError, max_request_target
from ocsp_responder.loader import Service, load_service

from .support import T0, FakeClock, Pki, call, ocsp_request

VALIDITY = 7200
CACHE_MAX_AGE = 90
MAX_DATA_AGE = 86400
MAX_REQUEST_SIZE = 2048
#: index.txt's mtime: when the data was last confirmed current.
CONFIRMED = T0.replace(microsecond=0) - timedelta(seconds=100)
REVOKED_AT = datetime(2025, 11, 5, 6, 7, 8, tzinfo=UTC)
INDEX = (
    "V\t270101000000Z\t\t1001\tunknown\t/CN=good\n"
    f"R\t270101000000Z\t{REVOKED_AT:%y%m%d%H%M%S}Z,affiliationChanged\t1002\tunknown\t/CN=rev\n"
    "E\t250101000000Z\t\t1003\tunknown\t/CN=expired\n"
    "R\t270101000000Z\t20251105060708Z,certificateHold\t1004\tunknown\t/CN=held\n"
)


def write_service(directory: Path, pki: Pki, index: str = INDEX) -> Path:
    files = pki.write(directory / "issuer")
    index_path = directory / "index.txt"
    index_path.write_text(index)
    stamp = int(CONFIRMED.timestamp())
    os.utime(index_path, (stamp, stamp))
    config = directory / "config.toml"
    config.write_text(
        "[server]\n"
        f"http_cache_max_age = {CACHE_MAX_AGE}\n"
        f"max_request_size = {MAX_REQUEST_SIZE}\n"
        f"max_data_age = {MAX_DATA_AGE}\n"
        "[[issuer]]\n"
        'name = "loaded"\n'
        + "".join(f'{key} = "{path}"\n' for key, path in files.items())
        + f"response_validity = {VALIDITY}\n"
        '[issuer.source]\nkind = "index"\npath = "index.txt"\n'
    )
    return config


@pytest.fixture
def service(tmp_path: Path, pki: Pki, clock: FakeClock) -> Service:
    loaded = load_service(write_service(tmp_path, pki), persist=False, clock=clock)
    loaded.app.prepare = lambda: None  # the watcher thread stays unstarted
    return loaded


def test_the_app_gets_the_config_limits(service: Service) -> None:
    assert service.app.max_request_size == MAX_REQUEST_SIZE
    assert service.app.max_path == max_request_target(MAX_REQUEST_SIZE)
    assert service.app.http_cache_max_age == CACHE_MAX_AGE
    assert not (service.config.server.state_dir).exists()  # persist=False writes nothing


def test_the_responder_gets_max_live_signings(tmp_path: Path, pki: Pki, clock: FakeClock) -> None:
    config = write_service(tmp_path, pki)
    config.write_text(config.read_text().replace("[server]\n", "[server]\nmax_live_signings = 3\n"))
    loaded = load_service(config, persist=False, clock=clock)
    assert loaded.config.server.max_live_signings == 3
    assert loaded.responder.max_live_signings == 3
    taken = [loaded.responder.live_signings.acquire(blocking=False) for _ in range(4)]
    assert taken == [True, True, True, False]


@pytest.mark.parametrize(
    ("serial", "status", "reason"),
    [
        (0x1001, ocsp.OCSPCertStatus.GOOD, None),
        (0x1002, ocsp.OCSPCertStatus.REVOKED, x509.ReasonFlags.affiliation_changed),
        (0x1003, ocsp.OCSPCertStatus.GOOD, None),
        (0x1004, ocsp.OCSPCertStatus.REVOKED, x509.ReasonFlags.certificate_hold),
        (0x1005, ocsp.OCSPCertStatus.UNKNOWN, None),
    ],
)
def test_index_rows_are_answered(
    service: Service,
    pki: Pki,
    serial: int,
    status: ocsp.OCSPCertStatus,
    reason: x509.ReasonFlags | None,
) -> None:
    path = "/" + quote(base64.b64encode(ocsp_request(pki.ca, serial)).decode(), safe="")
    reply = call(service.app, "GET", path)
    parsed = reply.ocsp()
    assert parsed.certificate_status == status
    this_update = T0.replace(microsecond=0)
    assert parsed.this_update_utc == this_update
    assert parsed.next_update_utc == this_update + timedelta(seconds=VALIDITY)
    assert reply.headers["Cache-Control"] == (
        f"max-age={CACHE_MAX_AGE}, public, no-transform, must-revalidate"
    )
    if status == ocsp.OCSPCertStatus.REVOKED:
        assert parsed.revocation_time_utc == REVOKED_AT
        assert parsed.revocation_reason == reason


def test_index_mtime_plus_max_data_age_is_the_expiry(
    service: Service, pki: Pki, clock: FakeClock
) -> None:
    expiry = CONFIRMED + timedelta(seconds=MAX_DATA_AGE)
    request = ocsp_request(pki.ca, 0x1001)
    clock.set(expiry - timedelta(seconds=10))
    parsed = call(service.app, "POST", "/", request).ocsp()
    assert parsed.certificate_status == ocsp.OCSPCertStatus.GOOD
    assert parsed.next_update_utc == expiry
    clock.set(expiry)
    reply = call(service.app, "POST", "/", request)
    assert reply.ocsp().response_status == ocsp.OCSPResponseStatus.TRY_LATER


def test_an_unparsable_index_is_a_config_problem_naming_the_line(
    tmp_path: Path, pki: Pki, clock: FakeClock
) -> None:
    bad = INDEX + "R\t270101000000Z\t251105060708Z,keyTime\t1006\tunknown\t/CN=x\n"
    config = write_service(tmp_path, pki, bad)
    with pytest.raises(ConfigError) as caught:
        load_service(config, persist=False, clock=clock)
    assert caught.value.problems == [
        f"{config}: issuer[1].source.path: {tmp_path / 'index.txt'}:5: "
        "reason 'keyTime' needs a third field"
    ]
