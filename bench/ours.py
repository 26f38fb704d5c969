"""Ours, as measured beyond its wrk points: start-up, behaviour probes, the first pass.

The deployment itself (config from the role's template, nginx) is stack.py.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import check
import load
import procs
import stack
from pki import Pki
from report import log
from reqsets import RequestSet

ORIGIN_PORT = 8080
NGINX_PORT = 8081


def start(
    processes: procs.Processes, repo: Path, venv: Path, pki: Pki, signer: str, *, workdir: Path
) -> stack.Ours:
    """Start the responder and nginx for ``signer``."""
    ours = stack.start_ours(
        processes,
        repo,
        venv,
        pki,
        signer,
        workdir=workdir,
        origin_port=ORIGIN_PORT,
        nginx_port=NGINX_PORT,
    )
    log(
        f"ours ({signer}) up: responder :{ORIGIN_PORT} pid {ours.origin.pid}, "
        f"nginx :{NGINX_PORT} pid {ours.nginx.pid}"
    )
    return ours


def probe(notes: dict[str, Any], ours: stack.Ours, plain: RequestSet, nonce: RequestSet) -> None:
    """Record in ``notes`` the peer's probes run against ours (origin and nginx).

    Plus the same POST sent twice through nginx, without and with nonce: nginx must
    store answers without nonce and never answers with a nonce (``X-Cache-Status``).
    """
    der = plain.der(0)
    ports = procs.listening_ports()
    for label, port, server in (
        ("origin", ours.origin_port, ours.origin),
        ("nginx", ours.nginx_port, ours.nginx),
    ):
        notes[label] = {
            "bind_address": ports.get(port),
            "keepalive": check.probe_keepalive(port, der),
            "connect_close_probe": check.probe_connect_close(port, server, der),
            "malformed_request": check.probe_malformed(port, der),
        }
    client = check.Client(ours.nginx_port)
    try:
        seen = {}
        for label, body in (
            ("post_without_nonce", plain.der(len(plain) - 1)),
            ("post_with_nonce", nonce.der(len(nonce) - 1)),
        ):
            seen[label] = [client.post(body).headers.get("x-cache-status") for _ in range(2)]
    finally:
        client.close()
    notes["nginx"]["same_request_twice_x_cache_status"] = seen
    notes["nginx"]["nonce_response_stored"] = "HIT" in seen["post_with_nonce"]


def warm(port: int, mix: load.Mix) -> float:
    """Send every distinct request of a cacheable mix once; return seconds taken."""
    started = time.monotonic()
    client = check.Client(port)
    try:
        for i in range(len(mix.requests)):
            if mix.method == "get":
                client.get(mix.requests.get_path(i))
            else:
                client.post(mix.requests.der(i))
    finally:
        client.close()
    return round(time.monotonic() - started, 2)


def point(
    ours: stack.Ours,
    target: str,
    signer: str,
    mix: load.Mix,
    *,
    connections: int,
    duration: float,
    out_dir: Path,
) -> dict[str, Any]:
    """Measure ours through nginx (``ours``) or at the responder (``origin``)."""
    return load.point(
        ours.nginx_port if target == "ours" else ours.origin_port,
        mix,
        target=target,
        signer=signer,
        connections=connections,
        duration=duration,
        out_dir=out_dir,
        servers={"origin": ours.origin, "nginx": ours.nginx},
    )
