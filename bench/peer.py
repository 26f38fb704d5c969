"""The peer, ``openssl ocsp``: its command line, a fresh instance, its probes, one point.

Every probe and every point gets a fresh instance on a new port (see bench/README.md,
"`openssl ocsp` behaviours": a child spins after a connection closes early or a
malformed request, so an instance is never reused).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import check
import load
import procs
from pki import Pki

NMIN = 1440  # nextUpdate of the peer's responses: 24 h, like ours' response_validity


def argv(pki: Pki, signer: str, port: int, nmin: int) -> list[str]:
    """The ``openssl ocsp`` responder command line the classic guides use, with -multi 2."""
    return [
        "openssl",
        "ocsp",
        "-index",
        str(pki.index),
        "-CA",
        str(pki.issuer_cert),
        "-rsigner",
        str(pki.signer_cert(signer)),
        "-rkey",
        str(pki.signer_key(signer)),
        "-port",
        str(port),
        "-multi",
        "2",
        "-nmin",
        str(nmin),
    ]


def start(
    processes: procs.Processes,
    pki: Pki,
    signer: str,
    port: int,
    *,
    nmin: int = NMIN,
    name: str = "",
) -> tuple[procs.Server, str]:
    """Start a fresh ``openssl ocsp`` peer and wait for its listening socket (no connect).

    Returns:
        (the server, the address it bound as the kernel shows it).
    """
    server = processes.start(name or f"openssl-{signer}", argv(pki, signer, port, nmin))
    bound = procs.wait_listening(server, port)
    deadline = time.monotonic() + 2.0
    while len(server.group_pids()) < 3 and time.monotonic() < deadline:  # parent + 2 children
        time.sleep(0.01)
    return server, bound


def probe(
    notes: dict[str, Any],
    processes: procs.Processes,
    pki: Pki,
    signer: str,
    *,
    new_port: Callable[[], int],
    der: bytes,
) -> None:
    """Record in ``notes`` how ``openssl ocsp`` behaves (each probe on a fresh instance).

    Args:
        notes: filled as the probes go (``peer_notes`` of RUN.json).
        processes: where the instances are started.
        pki: the run's PKI; signer: ``rsa`` or ``ec``.
        new_port: gives a port not used before.
        der: a valid request without nonce.
    """
    port = new_port()
    server, bound = start(processes, pki, signer, port, name="openssl-probe")
    notes["bind_address"] = (
        f"{bound} port {port}: every interface (-port takes no "
        "address); run inside the private netns"
    )
    notes["keepalive"] = check.probe_keepalive(port, der)
    notes["stop_after_keepalive_probe"] = processes.stop(server, grace=3.0)
    port = new_port()
    server, _ = start(processes, pki, signer, port, name="openssl-probe")
    notes["connect_close_probe"] = check.probe_connect_close(port, server, der)
    notes["stop_after_connect_close_probe"] = processes.stop(server, grace=3.0)
    port = new_port()
    server, _ = start(processes, pki, signer, port, name="openssl-probe")
    notes["malformed_request"] = check.probe_malformed(port, der)
    notes["cpu_after_malformed_request"] = procs.cpu_rates(server.group_pids(), 1.0)
    notes["stop_after_malformed_request"] = processes.stop(server, grace=3.0)
    notes["how_the_benchmark_copes"] = (
        "ocsp.lua replaces wrk.resolve() so wrk's connect()+close() probe never reaches "
        "the peer; readiness is read from /proc/net/tcp* (no connection); a fresh peer "
        "is started for every point and its process group is killed after it (wrk "
        "closing connections at the end of a point leaves children spinning)"
    )


def point(
    processes: procs.Processes,
    pki: Pki,
    signer: str,
    port: int,
    mix: load.Mix,
    *,
    connections: int,
    duration: float,
    out_dir: Path,
) -> dict[str, Any]:
    """Measure one point against a fresh ``openssl ocsp`` on ``port``, then stop it."""
    server, _ = start(processes, pki, signer, port)
    try:
        result: dict[str, Any] = load.point(
            port,
            mix,
            target="openssl",
            signer=signer,
            connections=connections,
            duration=duration,
            out_dir=out_dir,
            servers={"openssl": server},
        )
        result["cpu_after_point"] = procs.cpu_rates(server.group_pids(), 0.5)
    finally:
        stop = processes.stop(server, grace=1.0)
    result["stop"] = stop
    return result
