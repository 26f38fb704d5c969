"""Per-request CPU cost of the POST-with-nonce path, layer by layer, in one process.

Run by profiling.py with the venv's python in a child process (the responder's
status-file watcher thread then ends with it)::

    python breakdown.py CONFIG SIGNER_KEY SIGNER_CERT BODIES LENGTHS COUNT

Prints one JSON object: microseconds of CPU (``time.process_time``) per request for

- ``signature``: the signer key signing 700 octets (a typical tbsResponseData) once;
- ``library_response``: cryptography building, signing and DER-encoding a
  BasicOCSPResponse for the request (one SingleResponse, the signer certificate,
  the nonce echoed): the floor for any Python responder using the library;
- ``decode_request``: cryptography parsing the DER request;
- ``wsgi_app``: the responder's WSGI app (``ocsp_responder.http:make_app``) answering
  the POST in-process, no HTTP server.

The difference between ``wsgi_app`` and ``library_response`` is the responder's own
code; the difference between the origin's CPU per request under wrk and ``wsgi_app``
is granian (HTTP, the RSGI adapter) and the sockets.
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import ocsp


def _per_call_us(func: Callable[[int], object], count: int) -> float:
    """CPU microseconds per call of ``func(i)`` for i in range(count)."""
    start = time.process_time()
    for i in range(count):
        func(i)
    return round((time.process_time() - start) / count * 1e6, 1)


def measure(config: Path, key_path: Path, cert_path: Path, bodies: list[bytes]) -> dict[str, Any]:
    """Measure every layer (see the module docstring).

    Returns:
        layer -> CPU microseconds per request, plus ``count``.
    """
    from ocsp_responder.http import make_app  # the contract's WSGI entry point

    key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    tbs = os.urandom(700)
    count = len(bodies)

    def signature(_: int) -> object:
        if isinstance(key, rsa.RSAPrivateKey):
            return key.sign(tbs, padding.PKCS1v15(), hashes.SHA256())
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return key.sign(tbs, ec.ECDSA(hashes.SHA256()))
        raise TypeError(f"{key_path}: unsupported key type {type(key).__name__}")

    requests = [ocsp.load_der_ocsp_request(b) for b in bodies]

    def library_response(i: int) -> object:
        req = requests[i]
        now = datetime.now(UTC).replace(microsecond=0)
        builder = (
            ocsp.OCSPResponseBuilder()
            .add_response_by_hash(
                issuer_name_hash=req.issuer_name_hash,
                issuer_key_hash=req.issuer_key_hash,
                serial_number=req.serial_number,
                algorithm=req.hash_algorithm,
                cert_status=ocsp.OCSPCertStatus.GOOD,
                this_update=now,
                next_update=now + timedelta(days=1),
                revocation_time=None,
                revocation_reason=None,
            )
            .responder_id(ocsp.OCSPResponderEncoding.HASH, cert)
            .certificates([cert])
        )
        nonce = req.extensions.get_extension_for_class(x509.OCSPNonce).value
        builder = builder.add_extension(nonce, critical=False)
        algorithm = hashes.SHA256()
        return builder.sign(key, algorithm).public_bytes(serialization.Encoding.DER)  # type: ignore[arg-type]

    app = make_app(config)

    def wsgi_app(i: int) -> object:
        body = bodies[i]
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": "/",
            "SCRIPT_NAME": "",
            "QUERY_STRING": "",
            "CONTENT_TYPE": "application/ocsp-request",
            "CONTENT_LENGTH": str(len(body)),
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8080",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "wsgi.input": io.BytesIO(body),
            "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr,
            "wsgi.version": (1, 0),
            "wsgi.multithread": False,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }
        status: list[str] = []
        out = b"".join(app(environ, lambda s, h, e=None: status.append(s)))
        if not status or not status[0].startswith("200"):
            raise RuntimeError(f"WSGI app answered {status}")
        return out

    wsgi_app(0)  # first call starts the watcher and warms caches
    return {
        "count": count,
        "signature_us": _per_call_us(signature, count),
        "decode_request_us": _per_call_us(lambda i: ocsp.load_der_ocsp_request(bodies[i]), count),
        "library_response_us": _per_call_us(library_response, count),
        "wsgi_app_us": _per_call_us(wsgi_app, count),
    }


def main(argv: list[str]) -> None:
    """Command line (see the module docstring); prints JSON and exits."""
    config, key, cert, blob, lengths, count = argv
    data = Path(blob).read_bytes()
    bodies, offset = [], 0
    for n in (int(x) for x in Path(lengths).read_text().split()[: int(count)]):
        bodies.append(data[offset : offset + n])
        offset += n
    print(json.dumps(measure(Path(config), Path(key), Path(cert), bodies)), flush=True)
    os._exit(0)  # do not wait for the responder's watcher thread


if __name__ == "__main__":
    main(sys.argv[1:])
