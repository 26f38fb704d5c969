"""Running wrk for one measurement point and reading its figures.

A point is bounded by wrk's own ``-d`` duration; the harness also kills wrk after
``duration + 30`` seconds if it has not exited.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import procs
from reqsets import RequestSet

LUA = Path(__file__).resolve().with_name("ocsp.lua")


@dataclass(frozen=True)
class Mix:
    """A request mix.

    Attributes:
        name: ``get``, ``post`` or ``post_nonce``.
        method: ``get`` or ``post`` (the Lua script's mode).
        requests: the pre-built request set it replays.
        cacheable: whether HTTP caches may store the answers (no nonce).
    """

    name: str
    method: str
    requests: RequestSet
    cacheable: bool

    def wrk_args(self, threads: int) -> list[str]:
        """Arguments after ``--`` for ocsp.lua."""
        data = self.requests.get_paths if self.method == "get" else self.requests.bodies
        return [self.method, str(data), str(self.requests.lengths), str(threads)]


def threads_for(connections: int) -> int:
    """wrk threads for a concurrency: one per core, never more than connections."""
    return max(1, min(connections, os.cpu_count() or 1, 2))


def run_wrk(
    port: int,
    mix: Mix,
    *,
    connections: int,
    duration: float,
    out: Path,
    servers: dict[str, procs.Server] | None = None,
) -> dict[str, object]:
    """Run one wrk point against ``http://127.0.0.1:PORT/``.

    Args:
        port: target port.
        mix: the request mix.
        connections: wrk ``-c`` (concurrency).
        duration: seconds (wrk ``-d``).
        out: file receiving wrk's full text output (``--latency``).
        servers: label -> server process group under test, to account its CPU use.

    Returns:
        the point's figures: ``rps``, ``p50_ms``, ``p99_ms``, ``errors`` (non-2xx/3xx
        responses + socket errors), ``wrk`` (everything ocsp.lua's done() printed),
        ``cpu`` (label -> user/system CPU seconds of each server's processes during the
        point), ``server_cpu_s`` (their sum), ``loadavg_before``.

    Raises:
        RuntimeError: wrk failed or printed no figures (its output is included).
    """
    threads = threads_for(connections)
    argv = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration:g}s",
        "--timeout",
        "5s",
        "--latency",
        "-s",
        str(LUA),
        f"http://127.0.0.1:{port}/",
        "--",
        *mix.wrk_args(threads),
    ]
    loadavg = Path("/proc/loadavg").read_text().split()[:3]
    groups = {label: s.group_pids() for label, s in (servers or {}).items()}
    cpu_before = {label: procs.cpu_times(pids) for label, pids in groups.items()}
    run = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=duration + 30)
    cpu_after = {label: procs.cpu_times(pids) for label, pids in groups.items()}
    cpu: dict[str, dict[str, float]] = {}
    for label, after in cpu_after.items():
        before = cpu_before[label]
        user = sum(u - before.get(p, (0.0, 0.0))[0] for p, (u, _) in after.items())
        system = sum(s - before.get(p, (0.0, 0.0))[1] for p, (_, s) in after.items())
        cpu[label] = {"user_s": round(user, 2), "system_s": round(system, 2)}
    out.write_text(" ".join(argv) + "\n\n" + run.stdout + run.stderr)
    figures = None
    for line in run.stdout.splitlines():
        if line.startswith("BENCHJSON "):
            figures = json.loads(line.removeprefix("BENCHJSON "))
    if run.returncode != 0 or figures is None:
        raise RuntimeError(
            f"wrk failed ({run.returncode}): {' '.join(argv)}\n"
            f"{run.stdout[-2000:]}{run.stderr[-2000:]}"
        )
    errors = figures["errors"]
    latency = figures["latency_us"]
    seconds = figures["duration_us"] / 1e6
    socket_errors = errors["connect"] + errors["read"] + errors["write"] + errors["timeout"]
    return {
        "connections": connections,
        "threads": threads,
        "duration_s": round(seconds, 3),
        "requests": figures["requests"],
        "rps": round(figures["requests"] / seconds, 1) if seconds else 0.0,
        "p50_ms": round(latency["p50"] / 1000, 3) if figures["requests"] else None,
        "p99_ms": round(latency["p99"] / 1000, 3) if figures["requests"] else None,
        "errors": errors["status"] + socket_errors,
        "non_2xx": errors["status"],
        "socket_errors": socket_errors,
        "cpu": cpu,
        "server_cpu_s": round(sum(c["user_s"] + c["system_s"] for c in cpu.values()), 2),
        "loadavg_before": loadavg,
        "wrk": figures,
        "wrk_output": out.name,
    }


def point(
    port: int,
    mix: Mix,
    *,
    target: str,
    signer: str,
    connections: int,
    duration: float,
    out_dir: Path,
    servers: dict[str, procs.Server],
) -> dict[str, object]:
    """One measured point; wrk's output goes to ``out_dir/wrk-TARGET-SIGNER-MIX-cN.txt``."""
    return run_wrk(
        port,
        mix,
        connections=connections,
        duration=duration,
        out=out_dir / f"wrk-{target}-{signer}-{mix.name}-c{connections}.txt",
        servers=servers,
    )
