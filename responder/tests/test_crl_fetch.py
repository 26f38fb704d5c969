"""CRL sources with ``urls``: ``ocsp-responder fetch-crls`` against a real nginx.

nginx serves a directory of CRLs written by ``openssl ca -gencrl`` (static files:
nginx sends ETag and Last-Modified and answers conditional requests with 304).
``fetch-crls`` runs as a subprocess (``--once``, or the long-running mode), keeps
the last good CRL under the responder's state_dir, and a real ``serve`` answers
from it; ``openssl ocsp`` is the oracle for every answer.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from openssl_ocsp import query
from openssl_pki import openssl
from responder_process import (
    Responder,
    check_config,
    free_port,
    responder_command,
    toml_config,
    wait_for,
)
from scenario import IssuingCA, LiveIssuer, Pki, new_issuing_ca
from test_nginx import Nginx, run_nginx

NAME = "fetched-ca"

SITE = """\
server {{
    listen 127.0.0.1:{port};
    root {www};
}}
"""


@dataclass
class CrlSite:
    """nginx serving ``www`` on 127.0.0.1:``port``."""

    www: Path
    nginx: Nginx

    def url(self, name: str = "ca.crl") -> str:
        return f"http://127.0.0.1:{self.nginx.port}/{name}"


@pytest.fixture
def crl_site(tmp_path: Path) -> Iterator[CrlSite]:
    """A real nginx serving the static directory tmp_path/www."""
    prefix = tmp_path / "nginx"
    www = tmp_path / "www"
    www.mkdir()
    prefix.mkdir()
    port = free_port()
    (prefix / "site.conf").write_text(SITE.format(port=port, www=www))
    server = run_nginx(prefix, port)
    yield CrlSite(www=www, nginx=server)
    server.stop()


@dataclass
class Setup:
    """A fresh CA whose CRL nginx serves at ``url``, and its responder's config."""

    issuing: IssuingCA
    site: CrlSite
    url: str
    config: Path
    directory: Path

    @property
    def served(self) -> Path:
        """The file nginx serves at ``url``."""
        return self.site.www / "ca.crl"

    @property
    def fetched(self) -> Path:
        """Where fetch-crls keeps the last good copy (the documented layout)."""
        digest = hashlib.sha256(self.url.encode()).hexdigest()[:16]
        return self.directory / "state" / "crl" / NAME / f"{digest}.crl"

    def publish(self) -> Path:
        """``openssl ca -gencrl`` to a temporary file, renamed over the served file."""
        temp = self.issuing.ca.gencrl(self.site.www / "next.crl.tmp")
        os.replace(temp, self.served)
        return self.served

    def fetch_once(self, *extra: str) -> subprocess.CompletedProcess[str]:
        return run_fetch(self.config, "--once", *extra)

    def live(self, server: Responder) -> LiveIssuer:
        """The scenario helper for openssl ocsp queries against ``server``."""
        return LiveIssuer(issuing=self.issuing, server=server, status_file=self.served)


def run_fetch(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``ocsp-responder fetch-crls --config CONFIG ARGS``."""
    return subprocess.run(
        [responder_command(), "fetch-crls", "--config", str(config), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def crl_number(crl: Path) -> int:
    """The cRLNumber of a CRL file, asked of ``openssl crl``."""
    form = "DER" if crl.read_bytes()[:1] == b"\x30" else "PEM"
    text = openssl("crl", "-in", crl, "-inform", form, "-noout", "-crlnumber").strip()
    return int(text.split("=", 1)[1], 16)


def stamp(path: Path) -> tuple[int, int, bytes]:
    """(inode, mtime_ns, contents) of a file."""
    st = path.stat()
    return st.st_ino, st.st_mtime_ns, path.read_bytes()


def write_config(directory: Path, issuing: IssuingCA, **source: object) -> Path:
    """A config with one ``crl`` issuer whose source is ``source`` (plus kind)."""
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "config.toml"
    config.write_text(
        toml_config(
            {"reload_interval": 0.2},
            [issuing.issuer_config(name=NAME, source={"kind": "crl", **source})],
        )
    )
    return config


@pytest.fixture
def setup(pki: Pki, tmp_path: Path, crl_site: CrlSite) -> Callable[..., Setup]:
    """Factory ``setup(**source)``: a fresh CA with leaves a, b, c, its first CRL
    published at the site, and a config whose source fetches it (``source`` adds or
    overrides keys of ``[issuer.source]``)."""

    def make(**source: object) -> Setup:
        issuing = new_issuing_ca(tmp_path, pki.root, "fetch-ca", leaves=("a", "b", "c"))
        url = crl_site.url()
        directory = tmp_path / "responder"
        table: dict[str, object] = {"urls": [url], "fetch_interval": 10, **source}
        config = write_config(directory, issuing, **table)
        made = Setup(issuing, crl_site, url, config, directory)
        made.publish()
        return made

    return make


def assert_failed(done: subprocess.CompletedProcess[str], url: str, reason: str) -> None:
    """Exit 1 and one error line naming the issuer, the URL and ``reason``."""
    assert done.returncode == 1, done
    assert f"issuer {NAME}: {url}: error: " in done.stderr, done
    assert reason in done.stderr, done


def test_once_installs_and_serve_answers_then_not_modified(
    setup: Callable[..., Setup], serve: Callable[..., Responder]
) -> None:
    s = setup()
    s.issuing.ca.revoke(s.issuing.leaves["a"].cert, "-crl_reason", "keyCompromise")
    s.publish()
    number = crl_number(s.served)

    done = s.fetch_once()
    assert done.returncode == 0, done
    assert done.stdout == f"issuer {NAME}: {s.url}: installed CRL number {number}\n", done
    assert s.fetched.read_bytes() == s.served.read_bytes()

    live = s.live(serve(s.config.read_text(), s.directory))
    assert live.status("a") == "revoked"
    assert live.answer("a").reason == "keycompromise"  # type: ignore[union-attr]
    assert live.status("b") == "good"

    before = stamp(s.fetched)
    time.sleep(0.05)  # a rewrite would show in mtime_ns
    again = s.fetch_once()
    assert again.returncode == 0, again
    assert again.stdout == f"issuer {NAME}: {s.url}: not modified\n", again
    assert stamp(s.fetched) == before
    assert live.status("a") == "revoked"


def test_long_running_fetcher_brings_a_new_revocation_without_restart(
    setup: Callable[..., Setup], serve: Callable[..., Responder]
) -> None:
    s = setup()
    assert s.fetch_once().returncode == 0
    live = s.live(serve(s.config.read_text(), s.directory))
    assert live.status("b") == "good"

    log = s.directory / "fetch-crls.log"
    with log.open("wb") as out:
        fetcher = subprocess.Popen(
            [responder_command(), "fetch-crls", "--config", str(s.config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        assert wait_for(lambda: "not modified" in log.read_text(), 15), log.read_text()
        s.issuing.ca.revoke(s.issuing.leaves["b"].cert, "-crl_reason", "superseded")
        s.publish()
        number = crl_number(s.served)
        # fetch_interval is 10 s: the new CRL is fetched within it, serve reloads it
        assert live.wait_status("b", "revoked", timeout=30) == "revoked", log.read_text()
        assert f"installed CRL number {number}" in log.read_text()
        assert live.status("a") == "good"
        fetcher.send_signal(signal.SIGTERM)
        assert fetcher.wait(10) == 0, log.read_text()
    finally:
        if fetcher.poll() is None:
            os.killpg(fetcher.pid, signal.SIGKILL)
            fetcher.wait()
    assert "Traceback" not in log.read_text()


def test_older_crl_is_refused_and_the_revocation_stays(
    setup: Callable[..., Setup], serve: Callable[..., Responder]
) -> None:
    s = setup()
    older = s.served.read_bytes()  # no revocation yet
    s.issuing.ca.revoke(s.issuing.leaves["a"].cert, "-crl_reason", "keyCompromise")
    s.publish()
    assert s.fetch_once().returncode == 0
    live = s.live(serve(s.config.read_text(), s.directory))
    assert live.status("a") == "revoked"
    kept = stamp(s.fetched)

    s.served.write_bytes(older)
    done = s.fetch_once()
    assert_failed(done, s.url, "is lower than")
    assert stamp(s.fetched) == kept
    assert live.status("a") == "revoked"


def test_bad_fetches_name_issuer_and_url_and_keep_the_last_good_file(
    setup: Callable[..., Setup], serve: Callable[..., Responder], pki: Pki, tmp_path: Path
) -> None:
    s = setup(fetch_max_bytes=2048)
    s.issuing.ca.revoke(s.issuing.leaves["a"].cert, "-crl_reason", "keyCompromise")
    s.publish()
    assert s.fetch_once().returncode == 0
    assert len(s.fetched.read_bytes()) < 2048
    live = s.live(serve(s.config.read_text(), s.directory))
    assert live.status("a") == "revoked", live.query("a").output
    kept = stamp(s.fetched)

    other = new_issuing_ca(tmp_path / "other", pki.root, "other-ca")
    cases: list[tuple[Callable[[], None], str]] = [
        (lambda: s.served.write_bytes(other.ca.gencrl().read_bytes()), "issued by"),
        (lambda: s.served.write_bytes(b"this is not a CRL\n"), "not a usable CRL"),
        (lambda: s.served.unlink(), "HTTP 404"),
        (lambda: s.served.write_bytes(b"0" * 4096), "over fetch_max_bytes"),
        (s.site.nginx.stop, "cannot connect"),
    ]
    for change, reason in cases:
        change()
        assert_failed(s.fetch_once(), s.url, reason)
        assert stamp(s.fetched) == kept, reason
    assert live.status("a") == "revoked"
    assert live.status("b") == "good"


def test_serve_before_the_first_fetch_answers_try_later_until_it_arrives(
    setup: Callable[..., Setup], serve: Callable[..., Responder], pki: Pki
) -> None:
    s = setup()
    s.issuing.ca.revoke(s.issuing.leaves["a"].cert, "-crl_reason", "keyCompromise")
    s.publish()
    # a second issuer (index source, its own files) must not be affected
    fetched_issuer = s.issuing.issuer_config(
        name=NAME, source={"kind": "crl", "urls": [s.url], "fetch_interval": 10}
    )
    s.config.write_text(
        toml_config({"reload_interval": 0.2}, [fetched_issuer, pki.ec.issuer_config()])
    )

    checked = check_config(s.config)
    assert checked.returncode == 1, checked
    assert f"issuer {NAME}" in checked.stderr and s.url in checked.stderr, checked
    assert "not fetched yet" in checked.stderr, checked
    assert f"issuer {pki.ec.name}" not in checked.stderr, checked

    live = s.live(serve(s.config.read_text(), s.directory))
    assert not s.fetched.exists()
    assert live.try_later("b")
    assert live.server.error_mentioning(NAME, s.url, "no status data yet") is not None
    other = query(live.server.url, pki.ec.trust, pki.ec.ca.cert, certs=[pki.ec.leaves["good"].cert])
    assert other.status_of(pki.ec.leaves["good"].cert).status == "good", other.output

    done = s.fetch_once("--issuer", NAME)
    assert done.returncode == 0, done
    assert live.wait_status("b", "good") == "good"
    assert live.status("a") == "revoked"
    assert check_config(s.config).returncode == 0


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        (
            {"urls": ["ftp://127.0.0.1/ca.crl"]},
            "issuer[1].source.urls[1]: must be an http:// or https:// URL",
        ),
        ({"urls": []}, "issuer[1].source.urls: must name at least one CRL"),
        ({"paths": [], "urls": []}, "issuer[1].source.urls: must name at least one CRL"),
        (
            {"urls": ["http://127.0.0.1/ca.crl"], "fetch_interval": 5},
            "issuer[1].source.fetch_interval: must be between 10 and 86400 s",
        ),
        (
            {"urls": ["http://127.0.0.1/ca.crl"], "proxy": "socks5://127.0.0.1:1080"},
            "issuer[1].source.proxy: must be an http:// or https:// URL",
        ),
    ],
)
def test_config_errors_name_the_key(
    pki: Pki, tmp_path: Path, source: dict[str, object], problem: str
) -> None:
    config = write_config(tmp_path / "bad", pki.crl, **source)
    checked = check_config(config)
    assert checked.returncode == 1, checked
    assert f"{config}: {problem}" in checked.stderr, checked
    fetched = run_fetch(config, "--once")
    assert fetched.returncode == 2, fetched
    assert f"{config}: {problem}" in fetched.stderr, fetched


def test_paths_and_urls_together(
    setup: Callable[..., Setup], serve: Callable[..., Responder]
) -> None:
    s = setup()  # the URL's CRL revokes nothing
    s.issuing.ca.revoke(s.issuing.leaves["a"].cert, "-crl_reason", "keyCompromise")
    local = s.issuing.ca.gencrl(s.directory / "local.crl.pem")  # revokes a
    write_config(s.directory, s.issuing, paths=[local], urls=[s.url], fetch_interval=10)

    live = s.live(serve(s.config.read_text(), s.directory))
    assert live.try_later("a")  # the local file alone is not all of the issuer's data

    assert s.fetch_once().returncode == 0
    assert live.wait_status("a", "revoked") == "revoked"
    assert live.status("b") == "good"


def test_unknown_issuer_is_a_config_error(setup: Callable[..., Setup]) -> None:
    s = setup()
    done = s.fetch_once("--issuer", "no-such-issuer")
    assert done.returncode == 2, done
    assert "issuer: no issuer named 'no-such-issuer'" in done.stderr, done
    assert not s.fetched.exists()


def test_check_config_allow_unfetched_excuses_only_the_missing_first_fetch(
    setup: Callable[..., Setup], pki: Pki, tmp_path: Path
) -> None:
    """``check-config --allow-unfetched`` (the role validates a new config.toml with it,
    before fetch-crls has run): a URL not fetched yet is a warning naming it, exit 0;
    anything else stays an error: a second, unfetched URL beside a kept CRL passes only
    with the option, and an expired signer fails with or without it."""
    s = setup()
    strict = check_config(s.config)
    assert strict.returncode == 1 and "not fetched yet" in strict.stderr, strict
    relaxed = check_config(s.config, "--allow-unfetched")
    assert relaxed.returncode == 0, relaxed
    assert f"warning: issuer {NAME}: " in relaxed.stderr and s.url in relaxed.stderr, relaxed
    assert "not fetched yet" in relaxed.stderr and "error" not in relaxed.stderr, relaxed
    assert f"issuer {NAME}: source " in relaxed.stdout, relaxed
    assert not s.fetched.exists()  # it fetched nothing itself

    assert s.fetch_once().returncode == 0
    assert check_config(s.config).returncode == 0
    second = s.site.url("second.crl")
    write_config(s.directory, s.issuing, urls=[s.url, second], fetch_interval=10)
    strict = check_config(s.config)
    assert strict.returncode == 1 and second in strict.stderr, strict
    relaxed = check_config(s.config, "--allow-unfetched")
    assert relaxed.returncode == 0 and second in relaxed.stderr, relaxed

    expired = new_issuing_ca(
        tmp_path / "expired",
        pki.root,
        "expired-signer-ca",
        signer_dates={"startdate": "20200101000000Z", "enddate": "20200201000000Z"},
    )
    write_config(s.directory, expired, urls=[s.site.url("expired.crl")], fetch_interval=10)
    for options in ((), ("--allow-unfetched",)):
        refused = check_config(s.config, *options)
        assert refused.returncode == 1, (options, refused)
        assert "signer certificate expired" in refused.stderr, (options, refused)
