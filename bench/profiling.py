"""``--profile``: where ours spends a POST-with-nonce request's time.

Two views, both in RUN.json under ``profile``:
``layers``: CPU microseconds per request, layer by layer (breakdown.py, in one
process, nothing else running), next to the CPU per request of the origin, of nginx
and of ``openssl ocsp`` during the measured point at the same concurrency;
``py_spy``: an extra wrk point under ``py-spy record --native`` (wall-clock samples of
every granian worker; a worker waiting for a core on a busy host shows up in
whatever call it was in, typically a socket call).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import load
import report
import stack
from pki import Pki

BREAKDOWN = Path(__file__).resolve().with_name("breakdown.py")


def find_point(
    points: list[dict[str, Any]], target: str, signer: str, mix: str, conns: int
) -> dict[str, Any] | None:
    """The measured point of ``target`` for this signer, mix and concurrency, if any."""
    return next(
        (
            p
            for p in points
            if p["target"] == target
            and p["signer"] == signer
            and p["mix"] == mix
            and p["connections"] == conns
        ),
        None,
    )


def cpu_per_request(point: dict[str, Any] | None, group: str) -> float | None:
    """CPU microseconds per request of one server group during a measured point."""
    if not point or not point["requests"] or group not in point["cpu"]:
        return None
    cpu = point["cpu"][group]
    seconds = float(cpu["user_s"]) + float(cpu["system_s"])
    return round(seconds / int(point["requests"]) * 1e6, 1)


def breakdown(
    config: Path, mix: load.Mix, signer: str, *, python: Path, pki: Pki, count: int
) -> dict[str, Any]:
    """breakdown.py's figures for ``count`` requests of ``mix`` (or its error), in a child."""
    run = subprocess.run(
        [
            str(python),
            str(BREAKDOWN),
            str(config),
            str(pki.signer_key(signer)),
            str(pki.signer_cert(signer)),
            str(mix.requests.bodies),
            str(mix.requests.lengths),
            str(count),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    return json.loads(run.stdout) if run.returncode == 0 else {"error": run.stderr[-2000:]}


def under_wrk(points: list[dict[str, Any]], mix: str, conns: int, signer: str) -> dict[str, Any]:
    """CPU per request of the origin, nginx and the peer during the measured point."""
    ours_point = find_point(points, "ours", signer, mix, conns)
    peer_point = find_point(points, "openssl", signer, mix, conns)
    return {
        "origin_under_wrk_us": cpu_per_request(ours_point, "origin"),
        "nginx_under_wrk_us": cpu_per_request(ours_point, "nginx"),
        "openssl_under_wrk_us": cpu_per_request(peer_point, "openssl"),
        "connections": conns,
        "signer": signer,
    }


def py_spy(
    ours: stack.Ours,
    mix: load.Mix,
    conns: int,
    signer: str,
    *,
    spy: Path,
    duration: int,
    out_dir: Path,
) -> dict[str, Any]:
    """An extra wrk point through nginx while py-spy samples granian's main process and workers."""
    raw = out_dir / f"profile-{mix.name}-{signer}.txt"
    rec = subprocess.Popen(
        [
            str(spy),
            "record",
            "--pid",
            str(ours.origin.pid),
            "--subprocesses",
            "--native",
            "--format",
            "raw",
            "--rate",
            "200",
            "--duration",
            str(duration + 2),
            "--output",
            str(raw),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)
    point = load.run_wrk(
        ours.nginx_port,
        mix,
        connections=conns,
        duration=duration,
        out=out_dir / "wrk-profiled.txt",
        servers={"origin": ours.origin, "nginx": ours.nginx},
    )
    try:
        _, err = rec.communicate(timeout=duration + 30)
    except subprocess.TimeoutExpired:
        rec.kill()
        _, err = rec.communicate()
    summary: dict[str, Any] = (
        report.summarize_profile(raw) if raw.exists() else {"error": err[-1000:]}
    )
    summary.update(
        {
            "raw": raw.name,
            "rps_while_profiled": point["rps"],
            "connections": conns,
            "tool": "py-spy record --subprocesses --native "
            "--rate 200 (granian main process + workers), wall-clock",
        }
    )
    return summary


def profile(
    ours: stack.Ours,
    mix: load.Mix,
    conns: int,
    signer: str,
    *,
    venv: Path,
    pki: Pki,
    points: list[dict[str, Any]],
    duration: float,
    out_dir: Path,
) -> dict[str, Any]:
    """Both views for ``mix`` (POST with nonce) at ``conns``: ``{"layers", "py_spy"}``."""
    layers = breakdown(
        ours.config,
        mix,
        signer,
        python=venv / "bin" / "python",
        pki=pki,
        count=500 if duration < 5 else 2000,
    )
    layers.update(under_wrk(points, mix.name, conns, signer))
    out: dict[str, Any] = {"layers": layers}
    spy = venv / "bin" / "py-spy"
    if not spy.exists():
        out["py_spy"] = {"error": f"{spy} not found (pip install py-spy)"}
        return out
    out["py_spy"] = py_spy(
        ours, mix, conns, signer, spy=spy, duration=max(2, round(duration)), out_dir=out_dir
    )
    return out
