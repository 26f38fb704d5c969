"""The WSGI application: OCSP over HTTP (RFC 6960 appendix A, RFC 5019/9919 section 5).

What each request gets (methods, GET path forms, the HTTP errors 400/405/413/414, the
caching headers, 304) is the table "Protocol details" in the project's README.md.
Paths under ``/-/`` (``PATH_INFO``) are the monitoring endpoints, for every method,
before any OCSP decoding (:mod:`ocsp_responder.monitoring`).

No exception reaches the WSGI server, so nothing a client sends yields HTTP 500: an
unexpected exception becomes ``internalError`` (HTTP 200, no-store), its cause (type,
message, innermost frame; never a traceback) logged at ERROR once per distinct type +
message per ERROR_LOG_INTERVAL (60 s) by :class:`ErrorLog`. Client-supplied text in
log lines is escaped and cut to LOG_CLIP (200) characters.

Every OCSP request (not the ``/-/`` endpoints) is counted in
``ocsp_responder_requests_total{method, response}`` and timed in
``ocsp_responder_request_duration_seconds`` (:mod:`ocsp_responder.metrics`).
"""

from __future__ import annotations

import base64
import binascii
import logging
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from . import metrics
from .config import max_request_target
from .monitoring import PREFIX as MONITORING_PREFIX
from .monitoring import Monitoring
from .request import MalformedRequest, Request, decode_request
from .responder import INTERNAL_ERROR, MALFORMED_REQUEST, Answer, Responder
from .status_data import Clock, utc_now

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]
Headers = list[tuple[str, str]]
#: A body and the ``response`` label it is counted under (None: not counted).
Served = tuple[list[bytes], str | None]

CONTENT_TYPE = "application/ocsp-response"
NO_STORE = "no-cache, no-store"
#: GET paths: how many candidate tails are tried before giving up (bounds the work).
MAX_GET_CANDIDATES = 8
#: Client-supplied text in a log line is cut to this many characters.
LOG_CLIP = 200
#: An unexpected exception is logged once per this many seconds per distinct cause.
ERROR_LOG_INTERVAL = 60.0
#: Distinct causes remembered for that (the least recently logged are forgotten first).
ERROR_LOG_CAUSES = 256
#: ``response`` labels of requests answered without an OCSP body.
HTTP_ERROR = "http_error"
NOT_MODIFIED = "not_modified"


def clip(text: str, limit: int = LOG_CLIP) -> str:
    """Make client-supplied ``text`` safe for one log line.

    Args:
        text: any text (an exception message, a request path).
        limit: the most characters kept.

    Returns:
        ``text`` with backslashes, control and non-ASCII characters escaped
        (``\\n``, ``\\x00``, ``\\u2028``), cut to ``limit`` characters; a cut text
        ends with ``...(N chars)``, N being the length of ``text``.
    """
    escaped = text[: limit + 1].encode("unicode_escape").decode("ascii")
    if len(text) <= limit and len(escaped) <= limit:
        return escaped
    return f"{escaped[:limit]}...({len(text)} chars)"


class ErrorLog:
    """Logs unexpected exceptions at ERROR, once per distinct cause per interval.

    A cause is the exception's type and (clipped) message. Its first occurrence is
    logged with the innermost frame it was raised in (file:line in function), never
    a traceback; repeats within ``interval`` seconds are counted, and the count is
    reported with the next line logged for that cause.

    Args:
        logger: where to log.
        interval: seconds between two lines for the same cause.
        max_causes: causes remembered at once (bounds memory; the least recently
            logged is forgotten first).
        what: the start of each line (what the failure led to).
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = ERROR_LOG_INTERVAL,
        max_causes: int = ERROR_LOG_CAUSES,
        what: str = "internalError",
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.max_causes = max_causes
        self.what = what
        self._causes: OrderedDict[tuple[str, str], tuple[float, int]] = OrderedDict()
        self._lock = threading.Lock()

    def report(self, exc: BaseException) -> bool:
        """Count ``exc``, and log it unless its cause was logged less than ``interval`` ago.

        Args:
            exc: the exception caught (with its ``__traceback__``).

        Returns:
            True when a line was logged.
        """
        try:
            message = str(exc)
        except Exception:  # an exception whose __str__ fails must not escape either
            message = "(message not printable)"
        cause = (type(exc).__qualname__, clip(message))
        now = time.monotonic()
        with self._lock:
            last, unlogged = self._causes.get(cause, (float("-inf"), 0))
            if now - last < self.interval:
                self._causes[cause] = (last, unlogged + 1)
                return False
            self._causes[cause] = (now, 0)
            self._causes.move_to_end(cause)
            while len(self._causes) > self.max_causes:
                self._causes.popitem(last=False)
        more = f"; {unlogged} more since it was last logged" if unlogged else ""
        self.logger.error(
            "%s: %s: %s (raised at %s)%s", self.what, cause[0], cause[1], _origin(exc), more
        )
        return True


def _origin(exc: BaseException) -> str:
    """``file:line in function`` of the innermost frame of ``exc``'s traceback."""
    tb = exc.__traceback__
    if tb is None:
        return "unknown place"
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    return f"{Path(code.co_filename).name}:{tb.tb_lineno} in {code.co_name}"


class _UnreadableBody(Exception):
    """The POST body could not be read (broken chunked encoding, a client gone)."""


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
    try:
        path = urlsplit(raw_path).path if "://" in raw_path[:10] else raw_path.split("?", 1)[0]
    except ValueError as exc:  # an absolute target with a bad host, such as "http://["
        raise MalformedRequest(f"unparsable request target: {exc}") from exc
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
    """WSGI callable (PEP 3333) serving a :class:`~ocsp_responder.responder.Responder`.

    Built by :func:`ocsp_responder.loader.load_service` (or :func:`make_app`).

    Args:
        responder: answers decoded requests.
        monitoring: answers the ``/-/`` paths.
        max_request_size: largest POST body, octets (larger: 413); GET request
            targets longer than :func:`~ocsp_responder.config.max_request_target` of
            it get 414.
        http_cache_max_age: cap on ``Cache-Control: max-age``, seconds.
        prepare: called before every request (the status watcher's
            ``ensure_running``: it starts the reload thread in each forked worker).
        clock: returns the current time, aware UTC (max-age is counted from it).
    """

    def __init__(
        self,
        responder: Responder,
        monitoring: Monitoring,
        *,
        max_request_size: int,
        http_cache_max_age: int,
        prepare: Callable[[], None] = lambda: None,
        clock: Clock = utc_now,
    ) -> None:
        self.responder = responder
        self.monitoring = monitoring
        self.max_request_size = max_request_size
        self.max_path = max_request_target(max_request_size)
        self.http_cache_max_age = http_cache_max_age
        self.prepare = prepare
        self.clock = clock
        self.errors = ErrorLog(log)
        self.metric_errors = ErrorLog(log, what="metrics not updated")
        self.monitoring_errors = ErrorLog(log, what="monitoring endpoint failed (HTTP 500)")
        found = metrics.get()
        self._requests = found.requests
        self._duration = found.request_duration

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """Serve one HTTP request (PEP 3333); no exception escapes to the server.

        Args:
            environ: the WSGI environment.
            start_response: the WSGI callable taking status and headers.

        Returns:
            The body: one bytes object, or none for HEAD and 304.
        """
        started = time.perf_counter()
        method = environ.get("REQUEST_METHOD", "GET")
        response: str | None
        try:
            self.prepare()
            body, response = self._serve(environ, start_response, method)
        except Exception as exc:
            self.errors.report(exc)
            headers = internal_error_headers()
            # exc_info lets a server replace headers not yet sent (PEP 3333).
            start_response("200 OK", headers, sys.exc_info())
            body = [] if method == "HEAD" else [INTERNAL_ERROR]
            response = "internalError"
        if response is not None:
            try:
                counter = self._requests.get((method, response))
                if counter is None:
                    counter = self._requests["other", response]
                counter.inc()
                self._duration.observe(time.perf_counter() - started)
            except Exception as exc:  # the answer is made: a metrics failure only logs
                self.metric_errors.report(exc)
        return body

    def _serve(self, environ: dict[str, Any], start_response: StartResponse, method: str) -> Served:
        """Everything :meth:`__call__` does, except turning exceptions into internalError;
        also returns the ``response`` label to count the request under."""
        path_info = environ.get("PATH_INFO", "")
        if path_info.startswith(MONITORING_PREFIX):
            try:
                status, headers, text = self.monitoring.answer(
                    method, path_info, environ.get("QUERY_STRING", "")
                )
            except Exception as exc:  # never a 200 (a healthy look) when it failed
                self.monitoring_errors.report(exc)
                text = b"internal error (logged)\n"
                status, headers = "500 Internal Server Error", text_headers(text)
            start_response(status, headers)
            return ([] if method == "HEAD" else [text]), None
        head = method == "HEAD"
        if method not in ("GET", "HEAD", "POST"):
            return _plain(
                start_response,
                "405 Method Not Allowed",
                "use GET or POST (RFC 6960 appendix A)\n",
                [("Allow", "GET, HEAD, POST")],
            ), HTTP_ERROR
        try:
            if method == "POST":
                body = self._read_body(environ)
                if body is None:
                    return _plain(
                        start_response, "413 Content Too Large", "request body too large\n"
                    ), HTTP_ERROR
                request = decode_request(body)
            else:
                raw = (
                    environ.get("RAW_URI")
                    or environ.get("REQUEST_URI")
                    or (environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""))
                )
                if len(raw) > self.max_path:
                    return _plain(
                        start_response, "414 URI Too Long", "request URI too long\n"
                    ), HTTP_ERROR
                request = request_from_path(raw)
        except _UnreadableBody as exc:
            log.info("unreadable request body: %s", clip(str(exc)))
            return _plain(
                start_response, "400 Bad Request", "unreadable request body\n"
            ), HTTP_ERROR
        except MalformedRequest as exc:
            log.info("malformedRequest: %s", clip(str(exc)))
            return self._send(start_response, Answer(MALFORMED_REQUEST), environ, head)
        answer = self.responder.respond(request)
        return self._send(start_response, answer, environ, head)

    def _read_body(self, environ: dict[str, Any]) -> bytes | None:
        """Read the POST body; None when it is larger than max_request_size.

        Raises:
            _UnreadableBody: the server's input stream raised (bad chunked framing,
                the client went away).
        """
        try:
            length = int(environ.get("CONTENT_LENGTH") or -1)
        except ValueError:
            length = -1
        if length > self.max_request_size:
            return None
        stream = environ["wsgi.input"]
        try:
            if length >= 0:
                return bytes(stream.read(length))
            body = bytes(stream.read(self.max_request_size + 1))
        except Exception as exc:
            raise _UnreadableBody(f"{type(exc).__name__}: {exc}") from exc
        return None if len(body) > self.max_request_size else body

    def _send(
        self, start_response: StartResponse, answer: Answer, environ: dict[str, Any], head: bool
    ) -> Served:
        signed = answer.signed
        if signed is None or not answer.cacheable:
            headers = [("Cache-Control", NO_STORE)]
        else:
            seconds = int((signed.next_update - self.clock()).total_seconds())
            max_age = max(0, min(seconds, self.http_cache_max_age))
            headers = [
                ("Cache-Control", f"max-age={max_age}, public, no-transform, must-revalidate"),
                ("Last-Modified", signed.last_modified),
                ("Expires", signed.expires),
                ("ETag", signed.etag),
            ]
            if _etag_matches(environ.get("HTTP_IF_NONE_MATCH"), signed.etag):
                start_response("304 Not Modified", headers)
                return [], NOT_MODIFIED
        headers += [("Content-Type", CONTENT_TYPE), ("Content-Length", str(len(answer.der)))]
        start_response("200 OK", headers)
        return ([] if head else [answer.der]), answer.response_status


def _etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 section 13.1.2: weak comparison of If-None-Match against ``etag``."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    tags = (tag.strip() for tag in if_none_match.split(","))
    return any(tag.removeprefix("W/") == etag for tag in tags)


def text_headers(body: bytes, extra: Headers | None = None) -> Headers:
    """Headers of a plain-text (UTF-8) answer of ``body`` octets, never cached, followed
    by ``extra`` (list of (name, value))."""
    return [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("Cache-Control", NO_STORE),
        *(extra or []),
    ]


def internal_error_headers() -> Headers:
    """Headers of the OCSP ``internalError`` answer (:data:`INTERNAL_ERROR`, HTTP 200,
    never cached) sent when serving a request raised; a new list each call."""
    return [
        ("Cache-Control", NO_STORE),
        ("Content-Type", CONTENT_TYPE),
        ("Content-Length", str(len(INTERNAL_ERROR))),
    ]


def _plain(
    start_response: StartResponse, status: str, text: str, extra: Headers | None = None
) -> list[bytes]:
    body = text.encode()
    start_response(status, text_headers(body, extra))
    return [body]


def make_app(config_path: str | Path) -> OCSPApp:
    """Build the WSGI app from a config file, for any WSGI server.

    The status-file watcher starts with the first request in each process. The same
    as ``load_service(config_path).app`` (:func:`ocsp_responder.loader.load_service`).

    Args:
        config_path: the TOML configuration.

    Returns:
        The WSGI callable.

    Raises:
        ConfigError: the configuration or a file it names has problems.
    """
    from .loader import load_service

    return load_service(config_path).app
