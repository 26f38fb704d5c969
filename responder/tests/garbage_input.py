"""Client input that holds no OCSPRequest, shared by the unit layer (the WSGI app
driven in-process, tests/unit/test_http_app.py) and the integration layer (the
same paths sent to a real `ocsp-responder serve`, tests/test_http.py).

Each must be answered HTTP 200 with an OCSP malformedRequest, never a 5xx.
"""

from __future__ import annotations

import base64
from urllib.parse import quote

#: GET request paths (RFC 6960 appendix A.1: the base64 DER request, URL-encoded,
#: after the responder's path) that decode to no OCSPRequest.
GARBAGE_GET_PATHS: list[str] = [
    "/",
    "/favicon.ico",
    "/ocsp/not-base64!!",
    "/%ZZ%ZZ",
    "/" + quote(base64.b64encode(b"garbage in, garbage out").decode(), safe=""),
    "/MEIwQDA%2B",
    "/..%2F..%2Fetc%2Fpasswd",
    "/ocsp/" + "A" * 300,
]
