"""nginx in front of the responder, from the project's site template (templates/nginx.conf.j2).

The template is rendered with plain Jinja2 (as bench/ does) into a complete
nginx.conf whose paths all live under the test's tmp_path, and the real nginx
binary runs it as a child process in front of a ``live_issuer`` responder.

* Revocation bound: once the cached answer's max-age has passed, nginx must not
  keep answering "good" from its cache when the responder is down (README,
  "Deploying for your own CA", step 4).
* Cache key: the key holds the POST body; a body up to client_max_body_size
  (and a request URI up to what nginx accepts) must fit nginx's key buffer
  (proxy_buffer_size), or nginx logs an error on every such request.
* Monitoring: /-/ paths reach the responder only from ocsp_responder_monitoring_allow
  (others get 403) and are never cached.
* Client address privacy: the access log shows the address as
  ocsp_responder_nginx_log_client_address says (truncated: IPv4 /24, IPv6 /48).
"""

from __future__ import annotations

import http.server
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import pytest
from cryptography.x509 import ocsp
from openssl_ocsp import NONCE_OID, RequestExtension, genconf_request, make_request
from responder_process import (
    HttpAnswer,
    assert_ocsp_error,
    free_port,
    get_path,
    http_call,
    post_ocsp,
    raw_status_line,
)
from scenario import LiveIssuer

NGINX = Path("/usr/sbin/nginx")
if not NGINX.exists():
    pytest.skip(
        f"{NGINX} is not installed (scripts/bootstrap installs nginx-light)",
        allow_module_level=True,
    )

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = "templates/nginx.conf.j2"

#: the role's default (ocsp_responder_max_request_size), also the responder's default
CLIENT_MAX_BODY_SIZE = 10240

MAIN_CONF = """\
{user}
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;

events {{
    worker_connections 64;
}}

http {{
    access_log off;
    client_body_temp_path {prefix}/tmp/client_body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    include {prefix}/site.conf;
}}
"""


#: the role's defaults (ocsp_responder_monitoring_allow, ocsp_responder_nginx_log_client_address)
MONITORING_ALLOW = ["127.0.0.1", "::1"]
LOG_CLIENT_ADDRESS = "truncated"


def render_site(
    listen_port: int,
    upstream: str,
    prefix: Path,
    *,
    monitoring_allow: list[str] | None = None,
    log_client_address: str = LOG_CLIENT_ADDRESS,
) -> str:
    """templates/nginx.conf.j2 rendered with plain Jinja2 for a loopback nginx."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(REPO)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    return env.get_template(TEMPLATE).render(
        ocsp_responder_server_name="ocsp.test",
        ocsp_responder_nginx_listen=[f"127.0.0.1:{listen_port}"],
        ocsp_responder_nginx_default_server=True,
        ocsp_responder_nginx_upstream=upstream,
        ocsp_responder_nginx_upstream_keepalive=4,
        ocsp_responder_nginx_cache_dir=str(prefix / "cache"),
        ocsp_responder_nginx_cache_zone_size="1m",
        ocsp_responder_nginx_cache_max_size="16m",
        ocsp_responder_nginx_cache_inactive="10m",
        ocsp_responder_nginx_cache_fallback_valid=60,
        ocsp_responder_nginx_client_max_body_size=CLIENT_MAX_BODY_SIZE,
        ocsp_responder_nginx_timeout=5,
        ocsp_responder_nginx_connect_timeout=2,
        ocsp_responder_nginx_access_log=str(prefix / "ocsp-access.log"),
        ocsp_responder_nginx_log_client_address=log_client_address,
        ocsp_responder_monitoring_allow=(
            MONITORING_ALLOW if monitoring_allow is None else monitoring_allow
        ),
    )


@dataclass
class Nginx:
    """A running nginx (master process, ``daemon off``) on a loopback port."""

    prefix: Path
    port: int
    process: subprocess.Popen[bytes]

    @property
    def error_log(self) -> Path:
        return self.prefix / "error.log"

    def error_log_text(self) -> str:
        return self.error_log.read_text(errors="replace") if self.error_log.exists() else ""

    def stop(self) -> None:
        """SIGQUIT (graceful), then SIGKILL to nginx's own process group."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def start_nginx(prefix: Path, upstream_port: int, **site: Any) -> Nginx:
    """Render the site and a main config under ``prefix``, start nginx, wait for its port.

    ``site``: keyword arguments of :func:`render_site` (monitoring_allow, log_client_address).
    """
    for sub in ("cache", "tmp"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    port = free_port()
    (prefix / "site.conf").write_text(
        render_site(port, f"127.0.0.1:{upstream_port}", prefix, **site)
    )
    return run_nginx(prefix, port)


def run_nginx(prefix: Path, port: int) -> Nginx:
    """Start nginx on ``prefix/site.conf`` (inside MAIN_CONF) and wait for ``port``."""
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    # As root (CI), workers run as root too: everything lives in root's 0700
    # tmp_path. As another user, nginx would ignore `user` with a warning.
    user = "user root root;" if os.geteuid() == 0 else ""
    conf = prefix / "nginx.conf"
    conf.write_text(MAIN_CONF.format(prefix=prefix, user=user))
    log = (prefix / "nginx.stderr").open("wb")
    command = [str(NGINX), "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
    with log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = Nginx(prefix=prefix, port=port, process=process)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(
                f"nginx exited {process.returncode}:\n"
                f"{(prefix / 'nginx.stderr').read_text(errors='replace')}\n"
                f"{server.error_log_text()}\n--- site.conf\n{(prefix / 'site.conf').read_text()}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return server
        except OSError:
            time.sleep(0.02)
    server.stop()
    raise AssertionError(f"nginx did not listen on {port} in 10 s:\n{server.error_log_text()}")


@pytest.fixture
def nginx_front(tmp_path: Path) -> Iterator[Callable[..., Nginx]]:
    """Factory ``nginx_front(live, **site)``: nginx from the template in front of
    ``live``'s responder (``live`` may also be a port); ``site`` as for render_site."""
    started: list[Nginx] = []

    def make(live: LiveIssuer | int, **site: Any) -> Nginx:
        port = live if isinstance(live, int) else live.server.port
        server = start_nginx(tmp_path / f"nginx-{len(started)}", port, **site)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


def cache_key_errors(front: Nginx) -> list[str]:
    """Error log lines about the cache key not fitting proxy_buffer_size.

    nginx 1.22 writes "proxy_buffer_size N is not enough for cache key, it should
    be increased to at least M"; releases before 1.7 wrote "cache key too large".
    """
    return [line[:300] for line in front.error_log_text().splitlines() if "cache key" in line]


def describe(answer: HttpAnswer, front: Nginx) -> str:
    """The answer and nginx's error log (long lines cut: they echo the request line)."""
    log = "\n".join(line[:300] for line in front.error_log_text().splitlines()[-20:])
    return f"{answer.describe()}\n--- nginx error log\n{log}"


def test_no_stale_good_after_max_age_when_responder_is_down(
    live_issuer: Callable[..., LiveIssuer],
    nginx_front: Callable[[LiveIssuer], Nginx],
    tmp_path: Path,
) -> None:
    live = live_issuer(http_cache_max_age=1)
    front = nginx_front(live)
    der = make_request(tmp_path / "a.der", live.issuing.ca.cert, [live.issuing.leaves["a"].cert])
    path = get_path(der)

    first = http_call(front.port, "GET", path)
    assert first.status == 200, describe(first, front)
    assert first.ocsp().certificate_status == ocsp.OCSPCertStatus.GOOD, describe(first, front)
    assert "max-age=1" in (first.headers.get("Cache-Control") or ""), describe(first, front)
    second = http_call(front.port, "GET", path)
    assert second.headers.get("X-Cache-Status") == "HIT", describe(second, front)
    assert second.body == first.body

    live.server.stop()
    time.sleep(2.5)  # nginx counts max-age in whole seconds: expired 1-2 s after storing

    late = http_call(front.port, "GET", path)
    assert late.status in (502, 504), (
        "nginx answered from its cache past max-age while the responder is down:\n"
        + describe(late, front)
    )


def test_large_post_body_fits_the_cache_key(
    live_issuer: Callable[..., LiveIssuer],
    nginx_front: Callable[[LiveIssuer], Nginx],
    tmp_path: Path,
) -> None:
    live = live_issuer()
    front = nginx_front(live)
    # A request with an 8,950-octet nonce (RFC 9654 allows 1..128): about 9,000 octets
    # in all, within client_max_body_size; the responder says malformedRequest.
    nonce = RequestExtension(NONCE_OID, critical=False, content=b"\x5a" * 8950)
    der = genconf_request(
        tmp_path / "big.der", live.issuing.ca.cert, live.issuing.leaves["a"].serial, [nonce]
    )
    assert 9000 <= len(der) <= CLIENT_MAX_BODY_SIZE, len(der)

    answer = post_ocsp(front.port, der)
    assert_ocsp_error(answer, ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
    assert answer.headers.get("X-Cache-Status") == "MISS", describe(answer, front)
    assert cache_key_errors(front) == [], describe(answer, front)


def test_key_of_largest_request_fits(
    live_issuer: Callable[..., LiveIssuer],
    nginx_front: Callable[[LiveIssuer], Nginx],
) -> None:
    """The largest key nginx lets through: a body of client_max_body_size octets
    POSTed to a request URI that just fits nginx's 8 KiB request line buffer."""
    live = live_issuer()
    front = nginx_front(live)
    request_line_room = 8192 - len("POST  HTTP/1.1\r\n")
    uri = "/" + "u" * (request_line_room - 1)
    body = b"\x30" * CLIENT_MAX_BODY_SIZE

    answer = http_call(front.port, "POST", uri, body, {"Content-Type": "application/ocsp-request"})
    assert answer.status not in (413, 414, 400), describe(answer, front)
    assert answer.headers.get("X-Cache-Status") == "MISS", describe(answer, front)
    assert cache_key_errors(front) == [], describe(answer, front)


#: Malformed HTTP that nginx refuses itself, before the responder sees it. Without
#: the template's error_page, an unknown Transfer-Encoding gets 501 and an unknown
#: HTTP version 505: client errors must not come back as 5xx (invariant 3).
MALFORMED_HTTP: dict[str, bytes] = {
    "unknown-transfer-encoding": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\nConnection: close\r\n\r\n"
    ),
    "transfer-coding-before-chunked": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n"
        b"Connection: close\r\n\r\n0\r\n\r\n"
    ),
    "http-version-3.7": b"GET / HTTP/3.7\r\nHost: x\r\nConnection: close\r\n\r\n",
    "http-version-2.0": b"GET / HTTP/2.0\r\nHost: x\r\nConnection: close\r\n\r\n",
    "chunked-and-content-length": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n"
        b"Connection: close\r\n\r\n0\r\n\r\n"
    ),
    "negative-content-length": (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\nConnection: close\r\n\r\n"
    ),
    "http2-preface-on-http1": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "header-over-buffers": b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 20000 + b"\r\n\r\n",
    "bad-absolute-target": b"GET http://[/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    "connect": b"CONNECT x:443 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(MALFORMED_HTTP))
def test_malformed_http_gets_a_4xx_not_a_5xx(
    live_issuer: Callable[..., LiveIssuer],
    nginx_front: Callable[[LiveIssuer], Nginx],
    name: str,
) -> None:
    """Framing nginx refuses itself (unknown Transfer-Encoding, HTTP version, ...) -> 4xx."""
    live = live_issuer()
    front = nginx_front(live)
    line = raw_status_line(front.port, MALFORMED_HTTP[name])
    parts = line.split(b" ")
    assert len(parts) >= 2 and parts[0].startswith(b"HTTP/1."), line
    assert parts[1].startswith(b"4"), f"{name}: nginx answered {line!r}"


# --- the monitoring endpoints (/-/) and the access log -----------------------


class CountingUpstream:
    """A stand-in responder: answers every request with a running count and headers
    that would let nginx cache the answer for 10 minutes; remembers the paths asked."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        upstream = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                upstream.paths.append(self.path)
                body = f"{len(upstream.paths)}\n".encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Cache-Control", "public, max-age=600")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def counting_upstream() -> Iterator[CountingUpstream]:
    upstream = CountingUpstream()
    yield upstream
    upstream.close()


def access_log_lines(front: Nginx) -> list[str]:
    """The site's access log, after stopping nginx (which flushes its 64 KiB buffer)."""
    front.stop()
    log = front.prefix / "ocsp-access.log"
    return log.read_text().splitlines() if log.exists() else []


def test_monitoring_paths_are_never_cached(
    counting_upstream: CountingUpstream, nginx_front: Callable[..., Nginx]
) -> None:
    """From an allowed address every /-/ request reaches the responder, even when
    its answer says it may be cached; the same answer on an OCSP path is cached."""
    front = nginx_front(counting_upstream.port)
    answers = [http_call(front.port, "GET", path) for path in ["/-/metrics"] * 3 + ["/-/health"]]
    assert [a.status for a in answers] == [200] * 4, [a.describe() for a in answers]
    assert [a.body for a in answers] == [b"1\n", b"2\n", b"3\n", b"4\n"], "served from a cache"
    assert all("X-Cache-Status" not in a.headers for a in answers), answers[-1].describe()
    assert counting_upstream.paths == ["/-/metrics"] * 3 + ["/-/health"]
    # The control: these headers do make nginx cache an OCSP GET.
    first, second = (http_call(front.port, "GET", "/MEkwRzBF") for _ in range(2))
    assert (first.headers.get("X-Cache-Status"), second.headers.get("X-Cache-Status")) == (
        "MISS",
        "HIT",
    ), second.describe()
    # Allowed monitoring requests are not logged; OCSP requests are.
    lines = access_log_lines(front)
    assert [line for line in lines if "/-/" in line] == [], lines
    assert len([line for line in lines if "/MEkwRzBF" in line]) == 2, lines


def test_monitoring_endpoints_of_the_responder_through_nginx(
    live_issuer: Callable[..., LiveIssuer], nginx_front: Callable[..., Nginx]
) -> None:
    live = live_issuer()
    front = nginx_front(live)
    for _ in range(2):
        answer = http_call(front.port, "GET", "/-/health")
        assert answer.status != 403, describe(answer, front)
        assert "X-Cache-Status" not in answer.headers, describe(answer, front)
        assert answer.status == 200, describe(answer, front)
        assert json.loads(answer.body)["status"] == "ok", describe(answer, front)
        assert "no-store" in (answer.headers.get("Cache-Control") or ""), describe(answer, front)
    metrics = http_call(front.port, "GET", "/-/metrics")
    assert metrics.status == 200, describe(metrics, front)
    assert b"ocsp_responder_issuer_up" in metrics.body, describe(metrics, front)


def test_monitoring_refused_outside_the_allow_list(
    live_issuer: Callable[..., LiveIssuer], nginx_front: Callable[..., Nginx], tmp_path: Path
) -> None:
    live = live_issuer()
    front = nginx_front(live, monitoring_allow=["192.0.2.1", "2001:db8::/32"])
    for method, path in [
        ("GET", "/-/health"),
        ("GET", "/-/health?brief"),
        ("HEAD", "/-/health"),
        ("GET", "/-/metrics"),
        ("GET", "/-/other"),
    ]:
        answer = http_call(front.port, method, path)
        assert answer.status == 403, f"{method} {path}: {describe(answer, front)}"
    # OCSP itself is for everyone.
    der = make_request(tmp_path / "a.der", live.issuing.ca.cert, [live.issuing.leaves["a"].cert])
    ocsp_answer = http_call(front.port, "GET", get_path(der))
    assert ocsp_answer.status == 200, describe(ocsp_answer, front)
    assert ocsp_answer.ocsp().certificate_status == ocsp.OCSPCertStatus.GOOD
    # Refused requests are logged (with the truncated address), and never in
    # nginx's error log, which would name the client in full.
    lines = access_log_lines(front)
    refused = [line for line in lines if "/-/" in line]
    assert len(refused) == 5, lines
    assert all(line.startswith("127.0.0.0 - ") and '" 403 ' in line for line in refused), lines
    assert "127.0.0.1" not in front.error_log_text(), front.error_log_text()


@pytest.mark.parametrize(
    ("mode", "shown"), [("truncated", "127.0.0.0"), ("full", "127.0.0.1"), ("none", "-")]
)
def test_access_log_client_address(
    counting_upstream: CountingUpstream,
    nginx_front: Callable[..., Nginx],
    mode: str,
    shown: str,
) -> None:
    front = nginx_front(counting_upstream.port, log_client_address=mode)
    assert http_call(front.port, "GET", "/MEkwRzBF").status == 200
    lines = access_log_lines(front)
    assert len(lines) == 1, lines
    assert lines[0].split(" ", 1)[0] == shown, lines[0]
    assert "127.0.0.1" not in lines[0] or mode == "full", lines[0]


#: client address -> what the access log shows with log_client_address "truncated"
TRUNCATED = {
    "10.88.0.7": "10.88.0.0",
    "10.88.0.0": "10.88.0.0",
    "192.0.2.255": "192.0.2.0",
    "8.8.8.8": "8.8.8.0",
    "2001:db8:7:1::5": "2001:db8:7::",
    "2001:db8:7::": "2001:db8:7::",
    "2001:db8::1": "2001:db8::",
    "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff": "2001:db8:ffff::",
    "1:2:3:4:5:6:7:8": "1:2:3::",
    "2001::7:1": "2001::",
    "fe80::1": "fe80::",
    "::1": "::",
    "::": "::",
    "::ffff:10.1.2.3": "::ffff:10.1.2.0",
    "64:ff9b::10.1.2.3": "64:ff9b::",
    "unix:": "-",
}


def test_truncation_of_client_addresses(tmp_path: Path) -> None:
    """The template's own map, fed from a request header instead of $remote_addr
    (a test cannot choose its source address), answers what the log would show."""
    site = render_site(free_port(), "127.0.0.1:9", tmp_path)
    block = re.search(
        r"^map \$remote_addr \$ocsp_responder_log_client \{\n.*?^\}\n", site, re.M | re.S
    )
    assert block, site
    port = free_port()
    prefix = tmp_path / "map"
    prefix.mkdir()
    (prefix / "site.conf").write_text(
        block.group(0).replace("$remote_addr", "$http_x_client", 1)
        + f"server {{\n    listen 127.0.0.1:{port};\n    access_log off;\n"
        "    location / {\n        default_type text/plain;\n"
        '        return 200 "$ocsp_responder_log_client\\n";\n    }\n}\n'
    )
    front = run_nginx(prefix, port)
    try:
        shown = {
            address: http_call(port, "GET", "/", headers={"X-Client": address})
            .body.decode()
            .strip()
            for address in TRUNCATED
        }
    finally:
        front.stop()
    assert shown == TRUNCATED
