"""The WSGI app behind granian's RSGI interface (what ``ocsp-responder serve`` runs).

granian parses HTTP natively and hands each request to :meth:`RSGIApp.__rsgi__` on
the worker's event loop. The adapter reads a POST body there (bounded in octets and
time, so a slow client costs a coroutine, never the worker), then calls the
unchanged WSGI app (:class:`~ocsp_responder.http.OCSPApp`, PEP 3333) inline and
sends what it returned. The app is not run in a thread pool: on 2 cores that made
about 25 % fewer nonce answers and 40 % fewer pre-signed answers per second.

What the adapter answers itself:

* HTTP 408 (``Connection: close``) when a POST body has not fully arrived within
  :data:`BODY_TIMEOUT` seconds;
* HTTP 411 (``Connection: close``) for a POST with a ``Transfer-Encoding`` (chunked)
  body: granian ends a chunked body quietly where its framing breaks or the client
  stops, so a cut body could not be told from a whole one. OCSP clients send a
  ``Content-Length``, and nginx in front sends one for every body it forwards;
* HTTP 400 through the app (its "unreadable request body") when the body is shorter
  than its ``Content-Length`` (the client stopped) or cannot be read;
* HTTP 413 through the app when ``Content-Length`` is over ``max_request_size``: the
  body is not kept, and the connection is closed.

Before a 411 or 413 what the client still sends is read and dropped (at most
:data:`DRAIN_LIMIT` octets, :data:`DRAIN_TIMEOUT` seconds), so it reads the answer
rather than a connection reset.

The WSGI environ follows PEP 3333, with two differences from other servers' that the app
allows for: ``PATH_INFO`` is percent-decoded by granian and there is no ``RAW_URI``
(so the GET target limit, :func:`~ocsp_responder.config.max_request_target`, is
counted on the decoded path).
"""

from __future__ import annotations

import asyncio
import io
import logging
import sys
from dataclasses import dataclass
from typing import Any

from .http import ErrorLog, OCSPApp, internal_error_headers, text_headers
from .responder import INTERNAL_ERROR

log = logging.getLogger(__name__)

#: Seconds a POST body may take to arrive in full; then HTTP 408 and the connection
#: is closed. The request head has the same bound, set in granian
#: (:data:`ocsp_responder.server.HEADER_READ_TIMEOUT`).
BODY_TIMEOUT = 10.0

#: A body that will not be served (411, 413) is read and dropped up to this many
#: octets and seconds before the answer, so the client reads the answer.
DRAIN_LIMIT = 1024 * 1024
DRAIN_TIMEOUT = 2.0

_CLOSE = ("Connection", "close")


@dataclass(frozen=True)
class _Refusal:
    """An answer the adapter makes itself, without the app (the connection is closed)."""

    status: int
    text: bytes
    reason: str


_TIMED_OUT = _Refusal(
    408,
    b"request body not received in time\n",
    f"HTTP 408: request body not received within {BODY_TIMEOUT} s",
)
_LENGTH_REQUIRED = _Refusal(
    411,
    b"a POST needs a Content-Length (chunked request bodies are not accepted)\n",
    "HTTP 411: chunked request body refused",
)


class _UnreadableInput:
    """A ``wsgi.input`` whose read raises what reading the body raised, so the app
    answers its HTTP 400 (and counts the request)."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def read(self, size: int = -1) -> bytes:
        raise self.error


class RSGIApp:
    """RSGI application (granian's ``__rsgi__`` protocol) serving a WSGI app.

    Args:
        app: the WSGI app of the service built in the main process.
        max_request_size: ``[server] max_request_size``, octets: the most of a body
            that is read (plus one octet, so the app can tell it is too long).

    Attributes:
        errors: logs an unexpected exception of the adapter once per cause
            (:class:`~ocsp_responder.http.ErrorLog`); the client then gets an OCSP
            ``internalError`` (HTTP 200), never a 5xx.
    """

    def __init__(self, app: OCSPApp, max_request_size: int) -> None:
        self.app = app
        self.max_request_size = max_request_size
        self.errors = ErrorLog(log, what="answered internalError (adapter)")

    async def __rsgi__(self, scope: Any, proto: Any) -> None:  # noqa: ANN401 (granian types)
        """Serve one HTTP request.

        Args:
            scope: granian's RSGI scope (method, path, query_string, headers, ...).
            proto: granian's HTTP protocol object (body reads, ``response_bytes``).
        """
        if scope.proto != "http":  # websockets are off; nothing else is expected
            return
        try:
            environ = _environ(scope)
            close = False
            if scope.method == "POST":
                read = await self._body(environ, proto)
                if isinstance(read, _Refusal):
                    log.info("%s", read.reason)
                    proto.response_bytes(read.status, text_headers(read.text, [_CLOSE]), read.text)
                    return
                environ["wsgi.input"], close = read
            status, headers, content = self._call(environ)
        except Exception as exc:
            self.errors.report(exc)
            status = 200
            headers = internal_error_headers()
            content = b"" if scope.method == "HEAD" else INTERNAL_ERROR
            close = False
        if close:
            headers.append(_CLOSE)
        proto.response_bytes(status, headers, content)

    async def _body(
        self,
        environ: dict[str, Any],
        proto: Any,  # noqa: ANN401 (granian's)
    ) -> tuple[Any, bool] | _Refusal:
        """Read a POST body for ``wsgi.input``.

        Returns:
            (input, close): a readable ``wsgi.input`` (the body; one that raises when
            the body could not be read: the app answers 400; an empty one when
            ``Content-Length`` is over ``max_request_size``: the app answers 413), and
            whether the connection must be closed after the answer; or a
            :class:`_Refusal` the adapter answers itself (408, 411).
        """
        if "HTTP_TRANSFER_ENCODING" in environ:
            await _drain(proto)
            return _LENGTH_REQUIRED
        try:
            declared = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:  # granian refuses such a head itself; never reached
            declared = 0
        if declared > self.max_request_size:  # the app answers 413 from CONTENT_LENGTH
            await _drain(proto)
            return io.BytesIO(b""), True
        try:
            async with asyncio.timeout(BODY_TIMEOUT):
                body = bytes(await proto())  # at most Content-Length; a short one raises
        except TimeoutError:
            return _TIMED_OUT
        except Exception as exc:  # a body shorter than Content-Length, a client gone
            return _UnreadableInput(exc), True
        return io.BytesIO(body), False

    def _call(self, environ: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
        """Run the WSGI app; return (status code, headers, body octets)."""
        started: list[Any] = []

        def start_response(
            status: str,
            headers: list[tuple[str, str]],
            exc_info: Any = None,  # noqa: ANN401 (PEP 3333)
        ) -> None:
            started[:] = [status, headers]

        content = b"".join(self.app(environ, start_response))
        status, headers = started
        return int(status[:3]), list(headers), content


async def _drain(proto: Any) -> None:  # noqa: ANN401 (granian's)
    """Read and drop what is left of a body that will not be served, at most
    :data:`DRAIN_LIMIT` octets within :data:`DRAIN_TIMEOUT` seconds, so that a client
    still sending it reads the answer that follows rather than a connection reset."""
    seen = 0
    try:
        async with asyncio.timeout(DRAIN_TIMEOUT):
            async for chunk in proto:
                seen += len(chunk)
                if seen > DRAIN_LIMIT:
                    return
    except Exception:  # noqa: S110 (timed out, broken framing, a client gone: answer anyway)
        pass


def _environ(scope: Any) -> dict[str, Any]:  # noqa: ANN401 (granian's scope)
    """The PEP 3333 environ of an RSGI ``scope`` (without ``wsgi.input``)."""
    server_name, _, server_port = scope.server.rpartition(":")
    remote_addr, _, remote_port = scope.client.rpartition(":")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope.method,
        "SCRIPT_NAME": "",
        "PATH_INFO": scope.path,
        "QUERY_STRING": scope.query_string,
        "SERVER_NAME": server_name,
        "SERVER_PORT": server_port,
        "SERVER_PROTOCOL": f"HTTP/{scope.http_version}",
        "REMOTE_ADDR": remote_addr,
        "REMOTE_PORT": remote_port,
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.scheme,
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    for name, value in scope.headers.items():
        key = name.upper().replace("-", "_")
        if key in {"CONTENT_TYPE", "CONTENT_LENGTH"}:
            environ[key] = value
            continue
        key = "HTTP_" + key
        environ[key] = f"{environ[key]},{value}" if key in environ else value
    return environ
