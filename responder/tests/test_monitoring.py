"""Issue 10: the monitoring endpoints ``/-/health`` and ``/-/metrics``.

Real ``ocsp-responder serve`` processes (one or two worker processes), real files,
raw HTTP and ``openssl ocsp``; the metrics text is parsed with prometheus_client's
own parser. Counts are compared with what the test sent, summed over the workers
(prometheus_client multiprocess mode: each worker writes its own file in
``[server] metrics_dir``). Waits are bounded polls for asynchronous effects (a
reload, a clock passing a CRL's nextUpdate, a worker restart), never timing checks.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.x509 import ocsp
from openssl_ocsp import make_request
from openssl_pki import crl_next_update
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector
from responder_process import (
    HttpAnswer,
    Responder,
    cache_control,
    check_config,
    get_path,
    health,
    health_report,
    http_call,
    metric,
    post_ocsp,
    scrape,
    toml_config,
    wait_for,
)
from scenario import IssuingCA, LiveIssuer, Pki, new_issuing_ca, replace_file

#: Every metric family of the contract (issue 10), as sample names.
COUNTERS = (
    "ocsp_responder_requests_total",
    "ocsp_responder_answers_total",
    "ocsp_responder_try_later_total",
    "ocsp_responder_cache_hits_total",
    "ocsp_responder_cache_misses_total",
    "ocsp_responder_cache_evictions_total",
    "ocsp_responder_reload_failures_total",
    "ocsp_responder_live_signing_rejected_total",
)
HISTOGRAMS = ("ocsp_responder_signing_duration_seconds", "ocsp_responder_request_duration_seconds")
GAUGES = ("ocsp_responder_cache_bytes", "ocsp_responder_cache_entries")
ISSUER_GAUGES = (
    "ocsp_responder_issuer_up",
    "ocsp_responder_data_age_seconds",
    "ocsp_responder_data_expiry_seconds",
    "ocsp_responder_signer_expiry_seconds",
    "ocsp_responder_serials",
    "ocsp_responder_last_reload_success_timestamp_seconds",
    "ocsp_responder_data_expiry_warning_seconds",
    "ocsp_responder_signer_expiry_warning_seconds",
)
REPORT_FIELDS = {
    "name",
    "source",
    "paths",
    "serials",
    "generation",
    "last_success",
    "confirmed_at",
    "data_expires",
    "signer_not_after",
    "available",
    "problem",
    "last_error",
}


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def only_issuer(report: dict[str, object]) -> dict[str, object]:
    issuers = report["issuers"]
    assert isinstance(issuers, list) and len(issuers) == 1, report
    entry = issuers[0]
    assert set(entry) == REPORT_FIELDS, entry
    return entry


def publish_crl(live: LiveIssuer, extra: tuple[str, ...] = ()) -> None:
    """``openssl ca -gencrl EXTRA`` to a temp file, renamed over the served CRL."""
    temp = live.ca.gencrl(live.status_file.with_name("next.crl.pem"), extra=extra)
    os.replace(temp, live.status_file)


# ---------------------------------------------------------------- health


def test_health_turns_unavailable_when_data_expires_and_back_when_renewed(
    live_issuer: Callable[..., LiveIssuer],
) -> None:
    """A CRL issuer: 200 and ``available`` while its CRL is current; a CRL valid for 3 s
    is taken, then expires: 503, ``available`` false with a problem naming the expiry
    (and OCSP answers tryLater); a fresh CRL: 200 again."""
    live = live_issuer(source="crl")
    port = live.server.port
    status, report = health_report(port)
    assert status == 200, report
    assert report["status"] == "ok", report
    entry = only_issuer(report)
    assert entry["name"] == live.issuing.name
    assert entry["source"] == "crl"
    assert entry["paths"] == [str(live.status_file)]
    assert entry["available"] is True and entry["problem"] is None, entry
    assert entry["last_error"] is None, entry
    assert entry["confirmed_at"] is None, entry  # a CRL's age is its thisUpdate
    assert entry["serials"] == 0, entry  # nothing revoked yet
    assert _time(entry["data_expires"]) == crl_next_update(live.status_file), entry
    assert _time(entry["signer_not_after"]) > datetime.now(UTC), entry
    assert _time(entry["last_success"]) <= datetime.now(UTC), entry
    first_generation = entry["generation"]

    offset = live.server.log_offset()
    publish_crl(live, ("-crlsec", "3"))
    expiry = crl_next_update(live.status_file)
    answer = wait_for(lambda: (found := health(port)).status == 503 and found, timeout=20)
    assert answer, health(port).describe()
    assert "no-store" in cache_control(answer), answer.describe()
    status, report = health_report(port)
    assert status == 503 and report["status"] == "unavailable", report
    entry = only_issuer(report)
    assert entry["available"] is False, entry
    problem = entry["problem"]
    assert isinstance(problem, str), entry
    assert live.issuing.name in problem and "status data expired at" in problem, problem
    assert expiry.isoformat() in problem, (problem, expiry)
    assert _time(entry["data_expires"]) == expiry, entry
    assert entry["generation"] > first_generation, entry  # the short CRL was taken
    brief = health(port, "brief")
    assert (brief.status, brief.body) == (503, b"unavailable\n"), brief.describe()
    assert live.try_later("a")
    assert live.server.error_mentioning(live.issuing.name, "tryLater", after=offset)
    samples = scrape(port)
    name = live.issuing.name
    assert metric(samples, "ocsp_responder_issuer_up", issuer=name) == 0
    assert metric(samples, "ocsp_responder_data_expiry_seconds", issuer=name) < 0
    assert metric(samples, "ocsp_responder_try_later_total", issuer=name) >= 1

    publish_crl(live)
    assert wait_for(lambda: health(port).status == 200, timeout=15), health(port).describe()
    status, report = health_report(port)
    entry = only_issuer(report)
    assert status == 200 and report["status"] == "ok", report
    assert entry["available"] is True and entry["problem"] is None, entry
    assert _time(entry["data_expires"]) > datetime.now(UTC) + timedelta(days=6), entry
    brief = health(port, "brief")
    assert (brief.status, brief.body) == (200, b"ok\n"), brief.describe()
    assert metric(scrape(port), "ocsp_responder_issuer_up", issuer=name) == 1
    assert live.status("a") == "good"


def test_health_of_an_index_past_max_data_age_and_touched(
    live_issuer: Callable[..., LiveIssuer],
) -> None:
    """An index.txt with max_data_age = 3 s goes unavailable 3 s after its mtime; a
    ``touch`` (the publisher re-confirming it) makes it available again."""
    live = live_issuer(published=True, max_data_age=3)
    port = live.server.port
    assert wait_for(lambda: health(port).status == 503, timeout=15), health(port).describe()
    status, report = health_report(port)
    entry = only_issuer(report)
    assert status == 503 and entry["available"] is False, report
    assert entry["source"] == "index" and entry["confirmed_at"] is not None, entry
    assert "status data expired" in str(entry["problem"]), entry
    assert health(port, "brief").body == b"unavailable\n"

    live.status_file.touch()
    assert wait_for(lambda: health(port).status == 200, timeout=15), health(port).describe()
    entry = only_issuer(health_report(port)[1])
    assert entry["available"] is True, entry
    confirmed = _time(entry["confirmed_at"])
    assert abs(confirmed.timestamp() - live.status_file.stat().st_mtime) < 1, entry


def test_health_reports_a_broken_index_and_keeps_the_last_good_data(
    live_issuer: Callable[..., LiveIssuer],
) -> None:
    """A broken index.txt: still 200 (the last good data is served), ``last_error`` names
    the file, reload failures are counted; a good copy clears ``last_error``."""
    live = live_issuer(published=True)
    port = live.server.port
    name = live.issuing.name
    before = metric(scrape(port), "ocsp_responder_reload_failures_total", issuer=name)
    replace_file(live.status_file, b"this is not an index.txt\n")

    def reported() -> dict[str, object] | None:
        entry = only_issuer(health_report(port)[1])
        return entry if entry["last_error"] else None

    entry = wait_for(reported)
    assert entry, health(port).describe()
    assert str(live.status_file) in str(entry["last_error"]), entry
    assert entry["available"] is True, entry
    assert health(port).status == 200
    failures = metric(scrape(port), "ocsp_responder_reload_failures_total", issuer=name)
    assert failures > before, failures
    assert live.status("a") == "good", live.query("a").output

    live.publish()
    assert wait_for(lambda: only_issuer(health_report(port)[1])["last_error"] is None)


def test_monitoring_paths(responder: Responder, pki: Pki) -> None:
    """Every issuer of the session responder in the report; ``?brief``; HEAD; 404 for any
    other ``/-/`` path (even one ending in a base64 OCSP request); 405 for POST; always
    ``no-store``; none of it counted as an OCSP request; OCSP GET still works."""
    port = responder.port
    before = scrape(port)
    status, report = health_report(port)
    assert status == 200, report
    names = [entry["name"] for entry in report["issuers"]]
    assert names == [pki.rsa.name, pki.ec.name, pki.crl.name], names
    assert all(entry["available"] for entry in report["issuers"]), report

    brief = health(port, "brief")
    assert (brief.status, brief.body) == (200, b"ok\n"), brief.describe()
    assert brief.headers.get("Content-Type") == "text/plain; charset=utf-8"
    head = health(port, method="HEAD")
    assert head.status == 200 and head.body == b"", head.describe()
    assert int(head.headers["Content-Length"]) == len(health(port).body)
    metrics = http_call(port, "GET", "/-/metrics")
    assert metrics.status == 200, metrics.describe()
    assert metrics.headers.get("Content-Type", "").startswith("text/plain; version=0.0.4")
    assert "no-store" in cache_control(metrics)

    request = make_request(
        pki.base / "monitoring-good.der", pki.ec.ca.cert, [pki.ec.leaves["good"].cert]
    )
    for path in ("/-/", "/-/healthz", "/-/health/", "/-/metrics/x", get_path(request, "/-/")):
        answer = http_call(port, "GET", path)
        assert answer.status == 404, (path, answer.describe())
        assert "no-store" in cache_control(answer), answer.describe()
    refused = http_call(port, "POST", "/-/health", request)
    assert refused.status == 405 and refused.headers["Allow"] == "GET, HEAD", refused.describe()
    for answer in (health(port), brief, head, metrics):
        assert cache_control(answer) == {"no-store": None}, answer.describe()

    after = scrape(port)
    for name in ("ocsp_responder_requests_total", "ocsp_responder_request_duration_seconds_count"):
        assert metric(after, name) == metric(before, name), name

    answer = http_call(port, "GET", get_path(request, "/ocsp/"))
    assert answer.ocsp().certificate_status == ocsp.OCSPCertStatus.GOOD, answer.describe()
    assert metric(scrape(port), "ocsp_responder_requests_total", method="GET") == (
        metric(after, "ocsp_responder_requests_total", method="GET") + 1
    )


# ---------------------------------------------------------------- metrics


def _plant_stale_file(directory: Path) -> Path:
    """A counter file as a crashed earlier run would leave it: 1000 answers of an issuer
    ``stale-issuer`` and 1000 GET requests."""
    directory.mkdir(mode=0o700)
    path = directory / "counter_999999.db"
    stale = MmapedDict(str(path))
    for args in (
        ("ocsp_responder_answers", ["issuer", "cert_status"], ["stale-issuer", "good"]),
        ("ocsp_responder_requests", ["method", "response"], ["GET", "successful"]),
    ):
        name, labelnames, labelvalues = args
        key = mmap_key(name, name + "_total", labelnames, labelvalues, "stale")
        stale.write_value(key, 1000.0, 0.0)
    stale.close()
    return path


def _requests_in(path: Path) -> float:
    """The requests a process counted in its own counter file (0 before it has one)."""
    if not path.exists():
        return 0.0
    total = 0.0
    for family in MultiProcessCollector.merge([str(path)]):
        for sample in family.samples:
            if sample.name == "ocsp_responder_requests_total":
                total += sample.value
    return total


def _cache_entries_of(directory: Path, pid: int) -> float:
    """The cache_entries gauge a process wrote to its own file."""
    path = directory / f"gauge_livemostrecent_{pid}.db"
    if not path.exists():
        return 0.0
    return sum(
        sample.value
        for family in MultiProcessCollector.merge([str(path)])
        for sample in family.samples
        if sample.name == "ocsp_responder_cache_entries"
    )


class Traffic:
    """Sends OCSP requests on fresh connections and tallies what should be counted."""

    def __init__(self, port: int) -> None:
        self.port = port
        #: (method, response) -> requests the responder should have counted.
        self.requests: Counter[tuple[str, str]] = Counter()
        #: (issuer, cert_status) -> successful answers.
        self.answers: Counter[tuple[str, str]] = Counter()
        self.try_later: Counter[str] = Counter()
        self.nonces = 0
        self.cacheable = 0

    def ocsp(
        self,
        method: str,
        der: bytes,
        expected: str,
        issuer: str = "",
        headers: dict[str, str] | None = None,
    ) -> HttpAnswer:
        """Send one OCSP request; check and tally its answer.

        ``expected``: ``good``/``revoked``/``unknown`` (a successful answer of
        ``issuer``), ``nonce-good``, or an OCSP error name.
        """
        if method == "POST":
            answer = post_ocsp(self.port, der)
        else:
            answer = http_call(self.port, method, get_path(der), headers=headers)
        if answer.status == 304:
            response = "not_modified"
        else:
            assert answer.status == 200, answer.describe()
            response = expected if expected in ERRORS else "successful"
            if method != "HEAD":
                parsed = answer.ocsp()
                assert parsed.response_status == ERRORS.get(expected, SUCCESSFUL), (
                    expected,
                    answer.describe(),
                )
                if response == "successful":
                    state = parsed.certificate_status.name.lower()
                    assert state == expected.removeprefix("nonce-"), (expected, state)
        self.requests[method, response] += 1
        if response in ("successful", "not_modified"):
            self.answers[issuer, expected.removeprefix("nonce-")] += 1
            if expected.startswith("nonce-"):
                self.nonces += 1
            else:
                self.cacheable += 1
        if response == "tryLater":
            self.try_later[issuer] += 1
        return answer

    def http_error(self, method: str, path: str, body: bytes | None = None) -> None:
        """A request answered with an HTTP error (405, 413)."""
        answer = http_call(self.port, method, path, body)
        assert 400 <= answer.status < 500, answer.describe()
        self.requests[method if method in ("GET", "POST", "HEAD") else "other", "http_error"] += 1


SUCCESSFUL = ocsp.OCSPResponseStatus.SUCCESSFUL
ERRORS = {
    "malformedRequest": ocsp.OCSPResponseStatus.MALFORMED_REQUEST,
    "unauthorized": ocsp.OCSPResponseStatus.UNAUTHORIZED,
    "tryLater": ocsp.OCSPResponseStatus.TRY_LATER,
}


def _two_issuers(pki: Pki, base: Path, metrics_dir: Path) -> tuple[IssuingCA, IssuingCA, str]:
    """A fresh issuer (leaf ``b`` revoked) and a stale one (index.txt confirmed 2 days
    ago, max_data_age 1 day: tryLater); the config text serving both on 2 workers."""
    fresh = new_issuing_ca(base, pki.root, "fresh", leaves=("a", "b"))
    fresh.ca.revoke(fresh.leaves["b"].cert, "-crl_reason", "keyCompromise")
    stale = new_issuing_ca(base, pki.root, "stale", leaves=("a",))
    old = time.time() - 2 * 86400
    os.utime(stale.ca.index, (old, old))
    text = toml_config(
        {"reload_interval": 0.2, "metrics_dir": metrics_dir},
        [fresh.issuer_config(), stale.issuer_config(max_data_age=86400)],
    )
    return fresh, stale, text


def test_metrics_add_up_over_two_workers(
    pki: Pki, tmp_path: Path, serve: Callable[..., Responder]
) -> None:
    """Every kind of request, on fresh connections, until both workers have answered some:
    the scraped counters (summed over the workers) equal what was sent; every family of
    the contract is there; a stale file in metrics_dir is removed at start; a killed
    worker's counts stay, and the cache gauges (the host's one pre-signed store, which
    outlives any worker) keep their value."""
    metrics_dir = tmp_path / "metrics"
    stale_file = _plant_stale_file(metrics_dir)
    fresh, stale, text = _two_issuers(pki, tmp_path, metrics_dir)
    server = serve(text, tmp_path / "responder", workers=2)
    port = server.port
    assert not stale_file.exists(), sorted(metrics_dir.iterdir())

    baseline = scrape(port)
    for name in (*COUNTERS, *GAUGES, *ISSUER_GAUGES):
        assert name in baseline, f"{name} missing from /-/metrics"
    for name in HISTOGRAMS:
        for suffix in ("_bucket", "_sum", "_count"):
            assert name + suffix in baseline, f"{name}{suffix} missing from /-/metrics"
    assert metric(baseline, "ocsp_responder_answers_total", issuer="stale-issuer") == 0
    assert metric(baseline, "ocsp_responder_requests_total") < 1000  # only the start probe
    assert metric(baseline, "ocsp_responder_issuer_up", issuer="fresh") == 1
    assert metric(baseline, "ocsp_responder_issuer_up", issuer="stale") == 0
    assert health(port).status == 503  # one issuer cannot vouch

    out = tmp_path / "request.der"
    good = make_request(out, fresh.ca.cert, [fresh.leaves["a"].cert])
    revoked = make_request(out, fresh.ca.cert, [fresh.leaves["b"].cert])
    unknown = make_request(out, fresh.ca.cert, serials=[0xDEAD])
    nonce = make_request(out, fresh.ca.cert, [fresh.leaves["a"].cert], nonce=True)
    foreign = make_request(out, pki.rsa.ca.cert, [pki.rsa.leaves["good-1"].cert])
    try_later = make_request(out, stale.ca.cert, [stale.leaves["a"].cert])

    traffic = Traffic(port)
    workers = server.wait_for_workers(set())  # both booted

    def both_answered() -> bool:
        counted = [_requests_in(metrics_dir / f"counter_{pid}.db") for pid in workers]
        return all(count >= 5 for count in counted)

    for rounds in range(1, 41):
        traffic.ocsp("POST", good, "good", "fresh")
        etag = traffic.ocsp("GET", good, "good", "fresh").headers["ETag"]
        traffic.ocsp("GET", good, "good", "fresh", {"If-None-Match": etag})  # maybe 304
        traffic.ocsp("HEAD", good, "good", "fresh")
        traffic.ocsp("POST", revoked, "revoked", "fresh")
        traffic.ocsp("POST", unknown, "unknown", "fresh")
        traffic.ocsp("POST", nonce, "nonce-good", "fresh")
        traffic.ocsp("POST", b"\x30\x03\x02\x01\x00", "malformedRequest")
        traffic.ocsp("GET", b"\x30\x03\x02\x01\x00", "malformedRequest")
        traffic.ocsp("POST", foreign, "unauthorized")
        traffic.ocsp("POST", try_later, "tryLater", "stale")
        traffic.http_error("PUT", "/")
        traffic.http_error("POST", "/", b"\x30" * 20000)
        if rounds >= 3 and traffic.requests["GET", "not_modified"] and both_answered():
            break
    assert both_answered(), "one worker answered (almost) nothing"
    assert traffic.requests["GET", "not_modified"] > 0, traffic.requests

    after = scrape(port)

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(baseline, name, **labels)

    for (method, response), count in traffic.requests.items():
        counted = delta("ocsp_responder_requests_total", method=method, response=response)
        assert counted == count, (method, response, counted, count)
    sent = sum(traffic.requests.values())
    assert delta("ocsp_responder_requests_total") == sent
    assert delta("ocsp_responder_request_duration_seconds_count") == sent
    assert delta("ocsp_responder_request_duration_seconds_sum") > 0
    for (issuer, state), count in traffic.answers.items():
        counted = delta("ocsp_responder_answers_total", issuer=issuer, cert_status=state)
        assert counted == count, (issuer, state, counted, count)
    assert delta("ocsp_responder_answers_total") == sum(traffic.answers.values())
    assert delta("ocsp_responder_try_later_total", issuer="stale") == traffic.try_later["stale"]
    assert delta("ocsp_responder_try_later_total", issuer="fresh") == 0
    # one request at a time: never more live signings in a worker than its slots (2)
    assert delta("ocsp_responder_live_signing_rejected_total") == 0
    hits = delta("ocsp_responder_cache_hits_total")
    misses = delta("ocsp_responder_cache_misses_total")
    assert hits + misses == traffic.cacheable, (hits, misses, traffic.cacheable)
    assert misses == 3, misses  # 3 cacheable serials, each signed once for the host
    assert delta("ocsp_responder_signing_duration_seconds_count") == misses + traffic.nonces
    assert delta("ocsp_responder_cache_evictions_total") == 0
    entries = metric(after, "ocsp_responder_cache_entries")
    assert entries == misses, (entries, misses)  # one store: nothing evicted or refreshed
    assert metric(after, "ocsp_responder_cache_bytes") > entries * 1024
    assert metric(after, "ocsp_responder_serials", issuer="fresh") == 3  # signer, a, b

    victim = max(workers, key=lambda pid: _cache_entries_of(metrics_dir, pid))
    victim_entries = _cache_entries_of(metrics_dir, victim)
    assert victim_entries > 0
    os.kill(victim, signal.SIGKILL)
    server.wait_for_workers(workers, keep=1)
    final = scrape(port)
    # the store outlives the worker: the survivor's (and the new worker's) view stays
    assert metric(final, "ocsp_responder_cache_entries") == entries
    assert metric(final, "ocsp_responder_requests_total") == metric(
        after, "ocsp_responder_requests_total"
    )


def test_issuer_gauges_and_warning_windows(
    live_issuer: Callable[..., LiveIssuer], tmp_path: Path
) -> None:
    """The per-issuer gauges match the health report and the files; the two warning
    windows come from the config; check-config warns within them."""
    live = live_issuer(published=True, data_expiry_warning=691200, signer_expiry_warning=8640000)
    port = live.server.port
    name = live.issuing.name
    entry = only_issuer(health_report(port)[1])
    samples = scrape(port)
    now = time.time()

    def gauge(family: str) -> float:
        found = [v for labels, v in samples[family] if labels == {"issuer": name}]
        assert len(found) == 1, (family, samples[family])
        return found[0]

    assert gauge("ocsp_responder_data_expiry_warning_seconds") == 691200
    assert gauge("ocsp_responder_signer_expiry_warning_seconds") == 8640000
    assert gauge("ocsp_responder_issuer_up") == 1
    assert gauge("ocsp_responder_serials") == entry["serials"] == 4  # signer, a, b, c
    mtime = live.status_file.stat().st_mtime
    assert abs(gauge("ocsp_responder_data_age_seconds") - (now - mtime)) < 5
    expires = _time(entry["data_expires"]).timestamp()
    assert abs(gauge("ocsp_responder_data_expiry_seconds") - (expires - now)) < 5
    assert abs(expires - (mtime + 7 * 86400)) < 1
    not_after = _time(entry["signer_not_after"]).timestamp()
    assert abs(gauge("ocsp_responder_signer_expiry_seconds") - (not_after - now)) < 5
    accepted = gauge("ocsp_responder_last_reload_success_timestamp_seconds")
    assert abs(accepted - _time(entry["last_success"]).timestamp()) < 0.001

    done = check_config(live.server.config)
    assert done.returncode == 0, done.stderr
    assert f"issuer {name}: signer certificate expires in" in done.stderr, done.stderr
    assert f"issuer {name}: status data expires in" in done.stderr, done.stderr

    config = tmp_path / "defaults.toml"
    text = live.server.config.read_text()
    text = text.replace("data_expiry_warning = 691200\n", "").replace(
        "signer_expiry_warning = 8640000\n", ""
    )
    config.write_text(text)
    done = check_config(config)
    assert done.returncode == 0 and "expires in" not in done.stderr, done.stderr

    config.write_text(text.replace("[server]", "[server]\nsigner_expiry_warning = 31622401"))
    done = check_config(config)
    assert done.returncode == 1, done.stderr
    assert "server.signer_expiry_warning: must be between 0 and 31622400 s" in done.stderr
