"""Revocation propagation: ``openssl ca -revoke`` while pollers ask the servers.

Reported per poller: milliseconds from the end of the ``openssl ca`` command to the
first ``revoked`` and to the last ``good``, for ours (origin and nginx, GET and POST)
and for a fresh ``openssl ocsp``; and whether ours was restarted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import check
import peer
import procs
import stack
from pki import IndexEntry, Pki
from report import log
from reqsets import RequestSet

#: name -> (send one request and return the body, interval s, max wait s)
Pollers = dict[str, tuple[Callable[[], bytes], float, float]]


def _poll(
    name: str,
    *,
    send: Callable[[], bytes],
    interval: float,
    deadline: float,
    samples: dict[str, list[tuple[float, str]]],
    stop: threading.Event,
) -> None:
    """Poll in a thread: record (monotonic time, status) until stopped or deadline."""
    out = samples.setdefault(name, [])
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            status = check.cert_status(send())
        except OSError as exc:
            status = f"error: {exc}"
        out.append((time.monotonic(), status))
        time.sleep(interval)


def propagation(pki: Pki, pollers: Pollers, serial: int) -> dict[str, Any]:
    """Revoke ``serial`` with ``openssl ca -revoke`` while pollers run.

    Args:
        pki: the run's PKI (its index.txt is changed).
        pollers: name -> (send one request and return the body, interval s, max wait s).
        serial: a certificate index.txt lists as good.

    Returns:
        per poller: ``first_revoked_ms`` (from the end of ``openssl ca -revoke``),
        ``last_good_ms``, ``polls``; plus the revoke command's duration.
    """
    samples: dict[str, list[tuple[float, str]]] = {}
    stop = threading.Event()
    t0 = time.monotonic()
    threads = [
        threading.Thread(
            target=_poll,
            daemon=True,
            args=(name,),
            kwargs={
                "send": send,
                "interval": interval,
                "deadline": t0 + 0.5 + wait + 2,
                "samples": samples,
                "stop": stop,
            },
        )
        for name, (send, interval, wait) in pollers.items()
    ]
    for t in threads:
        t.start()
    time.sleep(0.5)  # every poller answers "good" (and nginx has cached it) first
    before = time.monotonic()
    pki.revoke(serial, "keyCompromise")
    revoked_at = time.monotonic()
    out: dict[str, Any] = {
        "serial": f"{serial:X}",
        "revoke_command_ms": round((revoked_at - before) * 1000, 1),
    }
    # wait until every poller has seen "revoked" for 1 s, or its deadline
    while any(t.is_alive() for t in threads):
        now = time.monotonic()
        settled = all(
            any(s == "revoked" and ts < now - 1.0 for ts, s in samples.get(n, []))
            and all(s == "revoked" for ts, s in samples.get(n, []) if ts > now - 1.0)
            for n in pollers
        )
        if settled:
            break
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join(timeout=10)
    for name, (_, interval, wait) in pollers.items():
        seen = samples.get(name, [])
        before_good = [s for ts, s in seen if ts < before]
        first = next((ts for ts, s in seen if ts >= revoked_at and s == "revoked"), None)
        last_good = max((ts for ts, s in seen if ts >= revoked_at and s == "good"), default=None)
        out[name] = {
            "poll_interval_ms": interval * 1000,
            "max_wait_s": wait,
            "polls": len(seen),
            "before_revocation": sorted(set(before_good)),
            "first_revoked_ms": round((first - revoked_at) * 1000, 1) if first else None,
            "last_good_ms": round((last_good - revoked_at) * 1000, 1) if last_good else None,
            "errors": sum(s.startswith("error") for _, s in seen),
        }
    return out


def _ours(
    ours: stack.Ours, pki: Pki, plain: RequestSet, i: int, *, signer: str, repo: Path
) -> dict[str, Any]:
    """Propagation to ours' origin and through nginx (GET and POST) for request ``i``."""
    der, path = plain.der(i), plain.get_path(i)
    origin, front_get, front_post = (
        check.Client(ours.origin_port),
        check.Client(ours.nginx_port),
        check.Client(ours.nginx_port),
    )
    max_age = int(stack.role_defaults(repo)["ocsp_responder_http_cache_max_age"])
    pollers: Pollers = {
        "origin": (lambda: origin.post(der).body, 0.01, 10.0),
        "nginx_get": (lambda: front_get.get(path).body, 0.05, max_age + 15.0),
        "nginx_post": (lambda: front_post.post(der).body, 0.05, max_age + 15.0),
    }
    log(
        f"revocation propagation (ours, {signer}): up to {max_age + 15} s "
        "(nginx keeps a good answer up to http_cache_max_age)"
    )
    pids = ours.origin.group_pids()
    out = propagation(pki, pollers, plain.serials[i])
    out["restarted"] = not ours.origin.alive() or ours.origin.group_pids() != pids
    out["http_cache_max_age_s"] = max_age
    for c in (origin, front_get, front_post):
        c.close()
    return out


def measure(
    ours: stack.Ours | None,
    signer: str,
    *,
    processes: procs.Processes,
    pki: Pki,
    plain: RequestSet,
    expected: dict[int, IndexEntry],
    port: int,
    repo: Path,
) -> dict[str, Any]:
    """Propagation for ours (origin + nginx, when running) and a fresh peer on ``port``.

    Returns:
        ``{"ours": ..., "origin": ..., "openssl": ...}`` (``revocation`` of RUN.json).
    """
    good = [i for i, s in enumerate(plain.serials) if expected[s].status == "V"]
    res: dict[str, Any] = {}
    if ours is not None:
        res["ours"] = _ours(ours, pki, plain, good[-1], signer=signer, repo=repo)
        res["origin"] = res["ours"]["origin"]
    i = good[-2]
    der = plain.der(i)
    server, _ = peer.start(processes, pki, signer, port, name="openssl-revocation")
    client = check.Client(port)
    log(f"revocation propagation (openssl ocsp, {signer})")
    res["openssl"] = propagation(
        pki, {"openssl": (lambda: client.post(der).body, 0.01, 10.0)}, plain.serials[i]
    )
    client.close()
    processes.stop(server, grace=2.0)
    return res
