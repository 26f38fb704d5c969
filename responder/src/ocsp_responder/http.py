"""The WSGI application: OCSP over HTTP (RFC 6960 appendix A, RFC 5019/9919 section 5).

* ``POST`` any path, body = DER OCSPRequest (``application/ocsp-request``; the
  Content-Type is not enforced). A body over ``max_request_size`` octets -> 413.
* ``GET`` (and ``HEAD``) ``/{prefix/}{url-encoded base64 DER}``: the request is the
  longest tail of the path that decodes (see :func:`der_from_path`). A path over
  4/3 x ``max_request_size`` + 1024 characters -> 414.
* Any other method -> 405 with ``Allow: GET, HEAD, POST``.

OCSP-level errors are HTTP 200 with an OCSP error body (as RFC 6960 clients expect).
Headers on successful responses without a nonce (RFC 5019 section 6.2 / RFC 9919)::

    Cache-Control: max-age=N, public, no-transform, must-revalidate
    Last-Modified: <thisUpdate>    Expires: <nextUpdate>    ETag: "<strong tag>"

where N = min(seconds until nextUpdate, ``http_cache_max_age``); ``If-None-Match``
with a matching tag -> 304. Nonce responses and error responses carry
``Cache-Control: no-cache, no-store`` so no cache keeps them.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from .request import MalformedRequest, Request, decode_request
from .responder import INTERNAL_ERROR, MALFORMED_REQUEST, Answer, Responder, build_responder

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]
Headers = list[tuple[str, str]]

CONTENT_TYPE = "application/ocsp-response"
NO_STORE = "no-cache, no-store"
#: GET paths: how many candidate tails are tried before giving up (bounds the work).
MAX_GET_CANDIDATES = 8


def request_from_path(raw_path: str) -> Request:
    """Recover and decode the OCSPRequest carried by a GET path (RFC 6960 appendix A.1).

    Tolerates what real clients and proxies send: any prefix (``/ocsp/...``), leading
    or doubled slashes, ``%2B``/``%2F``/``%3D`` escapes, ``+`` turned into a space,
    missing ``=`` padding, and the URL-safe alphabet. Because base64 may itself
    contain ``/``, the tails of the path after each ``/`` are tried longest first,
    and the first one that decodes to an OCSPRequest is taken (at most
    MAX_GET_CANDIDATES tails, each starting with ``M``, the base64 of a DER SEQUENCE).

    Args:
        raw_path: the request target as sent (a query string is ignored).

    Returns:
        The decoded request.

    Raises:
        MalformedRequest: no tail of the path is a base64 OCSPRequest (the message of
            the last decoding failure is kept).
    """
    path = urlsplit(raw_path).path if "://" in raw_path[:10] else raw_path.split("?", 1)[0]
    path = unquote(path).replace(" ", "+").translate(_URLSAFE)
    segments = path.split("/")
    candidates = (
        "/".join(segments[start:]).rstrip("=")
        for start in range(len(segments))
        if segments[start].startswith("M")
    )
    last = MalformedRequest(f"GET path holds no base64 OCSPRequest: {raw_path[:80]!r}")
    for _, candidate in zip(range(MAX_GET_CANDIDATES), candidates, strict=False):
        try:
            der = base64.b64decode(candidate + "=" * (-len(candidate) % 4), validate=True)
        except (binascii.Error, ValueError):
            continue
        try:
            return decode_request(der)
        except MalformedRequest as exc:
            last = exc
    raise last


_URLSAFE = str.maketrans("-_", "+/")


class OCSPApp:
    """WSGI callable serving a :class:`~ocsp_responder.responder.Responder`.

    Args:
        responder: answers decoded requests.
    """

    def __init__(self, responder: Responder) -> None:
        self.responder = responder
        server = responder.config.server
        self.max_request_size = server.max_request_size
        self.max_path = server.max_request_size * 4 // 3 + 1024
        self.http_cache_max_age = server.http_cache_max_age

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """Serve one HTTP request (PEP 3333)."""
        self.responder.watcher.ensure_running()
        method = environ.get("REQUEST_METHOD", "GET")
        head = method == "HEAD"
        if method not in ("GET", "HEAD", "POST"):
            return _plain(
                start_response,
                "405 Method Not Allowed",
                "use GET or POST (RFC 6960 appendix A)\n",
                [("Allow", "GET, HEAD, POST")],
            )
        try:
            if method == "POST":
                body = self._read_body(environ)
                if body is None:
                    return _plain(
                        start_response, "413 Content Too Large", "request body too large\n"
                    )
                request = decode_request(body)
            else:
                raw = (
                    environ.get("RAW_URI")
                    or environ.get("REQUEST_URI")
                    or (environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""))
                )
                if len(raw) > self.max_path:
                    return _plain(start_response, "414 URI Too Long", "request URI too long\n")
                request = request_from_path(raw)
        except MalformedRequest as exc:
            log.info("malformedRequest: %s", exc)
            return self._send(start_response, Answer(MALFORMED_REQUEST), environ, head)
        try:
            answer = self.responder.respond(request)
        except Exception:
            log.exception("internalError answering %s", request.cert_id)
            answer = Answer(INTERNAL_ERROR)
        return self._send(start_response, answer, environ, head)

    def _read_body(self, environ: dict[str, Any]) -> bytes | None:
        """Read the POST body; None when it is larger than max_request_size."""
        try:
            length = int(environ.get("CONTENT_LENGTH") or -1)
        except ValueError:
            length = -1
        if length > self.max_request_size:
            return None
        stream = environ["wsgi.input"]
        if length >= 0:
            return bytes(stream.read(length))
        body = bytes(stream.read(self.max_request_size + 1))
        return None if len(body) > self.max_request_size else body

    def _send(
        self, start_response: StartResponse, answer: Answer, environ: dict[str, Any], head: bool
    ) -> list[bytes]:
        signed = answer.signed
        if signed is None or not answer.cacheable:
            headers = [("Cache-Control", NO_STORE)]
        else:
            seconds = int((signed.next_update - datetime.now(UTC)).total_seconds())
            max_age = max(0, min(seconds, self.http_cache_max_age))
            headers = [
                ("Cache-Control", f"max-age={max_age}, public, no-transform, must-revalidate"),
                ("Last-Modified", signed.last_modified),
                ("Expires", signed.expires),
                ("ETag", signed.etag),
            ]
            if _etag_matches(environ.get("HTTP_IF_NONE_MATCH"), signed.etag):
                start_response("304 Not Modified", headers)
                return []
        headers += [("Content-Type", CONTENT_TYPE), ("Content-Length", str(len(answer.der)))]
        start_response("200 OK", headers)
        return [] if head else [answer.der]


def _etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 section 13.1.2: weak comparison of If-None-Match against ``etag``."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    tags = (tag.strip() for tag in if_none_match.split(","))
    return any(tag.removeprefix("W/") == etag for tag in tags)


def _plain(
    start_response: StartResponse, status: str, text: str, extra: Headers | None = None
) -> list[bytes]:
    body = text.encode()
    start_response(
        status,
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", NO_STORE),
            *(extra or []),
        ],
    )
    return [body]


def make_app(config_path: str | Path) -> OCSPApp:
    """Build the WSGI app from a config file, for any WSGI server.

    The status-file watcher starts with the first request in each process.

    Args:
        config_path: the TOML configuration.

    Returns:
        The WSGI callable.

    Raises:
        ConfigError: the configuration or a file it names has problems.
    """
    return OCSPApp(build_responder(config_path))
