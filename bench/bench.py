"""OCSP benchmark: the deployed stack (responder + nginx) against ``openssl ocsp``.

Run it with ``bench/run`` (see bench/README.md). One run:

1. builds or reuses the cached PKI (``openssl ca``: root, intermediate, >= 1,000
   leaves, 10 % revoked, RSA-2048 and EC P-256 delegated signers) and copies it
   for this run;
2. builds or reuses the request sets (DER, with and without nonce);
3. re-executes itself inside a private network namespace (only ``lo``), where
   every server and wrk run;
4. per signer: checks one good and one revoked sample per mix and server with the
   ``openssl ocsp`` client (a wrong answer fails the run), then measures every mix
   at every concurrency, a fresh ``openssl ocsp`` per point, interleaved with ours;
5. measures revocation propagation (``openssl ca -revoke`` -> first ``revoked``)
   at the origin, through nginx, and for ``openssl ocsp``;
6. prints a table per mix and signer and writes bench/results/RUN.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import Any

import check
import load
import pki as pkimod
import procs
import report
import reqsets
import stack

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PEER_NMIN = 1440  # nextUpdate of the peer's responses: 24 h, like ours' response_validity


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command line of ``bench/run``."""
    p = argparse.ArgumentParser(prog="bench/run", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--quick", action="store_true", help="2 s points (development); default 10 s points"
    )
    p.add_argument("--duration", type=float, help="seconds per point (overrides --quick)")
    p.add_argument(
        "--concurrency", default="1,8,64", help="comma-separated wrk -c values (default 1,8,64)"
    )
    p.add_argument("--signers", default="rsa,ec", help="comma-separated: rsa, ec")
    p.add_argument(
        "--mixes", default="get,post,post_nonce", help="comma-separated: get, post, post_nonce"
    )
    p.add_argument(
        "--with-origin",
        action="store_true",
        help="also measure the responder directly (no nginx) for every mix",
    )
    p.add_argument(
        "--peer-only",
        action="store_true",
        help="measure only openssl ocsp (when the responder is not installed)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="extra POST-with-nonce point (RSA, highest c) under py-spy; "
        "its summary goes into the results",
    )
    p.add_argument(
        "--no-warmup",
        action="store_true",
        help="do not send each cacheable request once before measuring ours",
    )
    p.add_argument(
        "--nonce-requests",
        type=int,
        default=60000,
        help="size of the nonce request set (distinct nonces; default 60000)",
    )
    p.add_argument("--leaves", type=int, default=1000, help="leaf certificates (default 1000)")
    p.add_argument(
        "--venv",
        type=Path,
        default=REPO / ".venv",
        help="venv holding ocsp-responder (default: the repo's .venv)",
    )
    p.add_argument(
        "--results",
        type=Path,
        default=BENCH / "results",
        help="directory for RUN.json and wrk outputs (default bench/results)",
    )
    p.add_argument("--keep", action="store_true", help="keep the run's temporary directory")
    args = p.parse_args(argv)
    args.duration = args.duration or (2.0 if args.quick else 10.0)
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c]
    args.signers = [s for s in args.signers.split(",") if s]
    args.mixes = [m for m in args.mixes.split(",") if m]
    for s in args.signers:
        if s not in pkimod.SIGNER_KEYS:
            p.error(f"--signers: unknown signer {s!r} (rsa, ec)")
    for m in args.mixes:
        if m not in report.MIX_TITLES:
            p.error(f"--mixes: unknown mix {m!r} (get, post, post_nonce)")
    if not args.concurrency or min(args.concurrency) < 1:
        p.error("--concurrency: positive integers")
    if args.leaves < 100:
        p.error("--leaves: at least 100")
    return args


def log(msg: str) -> None:
    """Progress line on stderr."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _cmd_version(argv: list[str]) -> str:
    """First line of a tool's version output (stdout or stderr), or the error."""
    try:
        run = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=10)
    except OSError as exc:
        return f"unavailable: {exc}"
    text = (run.stdout + run.stderr).strip().splitlines()
    return text[0] if text else ""


def versions(venv: Path) -> dict[str, str]:
    """Versions of everything the figures depend on."""
    out = {
        "openssl": _cmd_version(["openssl", "version"]),
        "nginx": _cmd_version(["nginx", "-v"]),
        "wrk": _cmd_version(["wrk", "-v"]),
        "python_bench": sys.version.split()[0],
        "python_venv": _cmd_version([str(venv / "bin" / "python"), "-V"]),
        "kernel": platform.release(),
        "cpus": str(os.cpu_count()),
        "py-spy": _cmd_version([str(venv / "bin" / "py-spy"), "--version"]),
    }
    for dist in ("cryptography", "gunicorn", "ocsp-responder", "Jinja2"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    model = [
        ln.split(":", 1)[1].strip()
        for ln in Path("/proc/cpuinfo").read_text().splitlines()
        if ln.startswith("model name")
    ]
    out["cpu_model"] = model[0] if model else platform.processor()
    git = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    out["repo_commit"] = git.stdout.strip() or "none"
    return out


class Run:
    """State of one benchmark run inside the private network namespace."""

    def __init__(self, args: argparse.Namespace) -> None:
        """Prepare directories, the PKI copy and the request sets."""
        self.args = args
        self.run_id = time.strftime("%Y%m%dT%H%M%S")
        self.results_dir: Path = args.results
        self.results_dir.mkdir(parents=True, exist_ok=True)
        self.out_dir = self.results_dir / self.run_id
        self.out_dir.mkdir()
        self.workdir = Path(tempfile.mkdtemp(prefix="ocsp-bench-"))
        self.workdir.chmod(0o711)  # nginx workers (www-data) reach their cache below it
        (self.workdir / "logs").mkdir()
        self.processes = procs.Processes(self.workdir / "logs")
        self.points: list[dict[str, Any]] = []
        self.result: dict[str, Any] = {
            "run_id": self.run_id,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "argv": sys.argv[1:],
            "netns": os.environ.get(procs.NETNS_ENV),
            "duration_per_point_s": args.duration,
            "concurrency": args.concurrency,
            "versions": versions(args.venv),
            "peer_notes": {},
            "ours_notes": {},
            "correctness": [],
            "points": self.points,
        }
        self._port = 9000

    def port(self) -> int:
        """A new loopback port for a fresh peer (no reuse of a port in TIME_WAIT)."""
        self._port += 1
        return self._port

    # -- preparation -------------------------------------------------------

    def prepare(self) -> None:
        """Cached PKI -> per-run copy; cached request sets; the mixes."""
        started = time.monotonic()
        cached, built = pkimod.cached(BENCH / ".cache" / "pki", leaves=self.args.leaves)
        log(
            f"PKI {'built' if built else 'reused'} in {time.monotonic() - started:.1f} s: "
            f"{cached.root}"
        )
        self.pki = pkimod.working_copy(cached, self.workdir / "pki")
        manifest = cached.manifest()
        key = str(manifest["built_at"])
        leaves = {s: cached.leaf_cert(s) for s in cached.leaf_serials()}
        started = time.monotonic()
        self.plain = reqsets.cached(
            BENCH / ".cache" / "requests-plain",
            cached.issuer_cert,
            leaves,
            count=len(leaves),
            nonce=False,
            key=key,
        )
        self.nonce = reqsets.cached(
            BENCH / ".cache" / "requests-nonce",
            cached.issuer_cert,
            leaves,
            count=self.args.nonce_requests,
            nonce=True,
            key=key,
        )
        log(
            f"request sets ready in {time.monotonic() - started:.1f} s: "
            f"{len(self.plain)} without nonce, {len(self.nonce)} with nonce"
        )
        self.expected = self.pki.expected()
        counts = {
            "good": sum(e.status == "V" for e in self.expected.values()),
            "revoked": sum(e.status == "R" for e in self.expected.values()),
        }
        self.result["pki"] = {
            "leaves": len(self.expected),
            **counts,
            "index_rows": len(pkimod.read_index(self.pki.index)),
            "built_now": built,
            "cache": str(cached.root),
        }
        self.result["request_sets"] = {
            "without_nonce": len(self.plain),
            "with_nonce": len(self.nonce),
            "cert_id_hash": "sha1",
            "nonce_octets": 16,
        }
        mixes = {
            "get": load.Mix("get", "get", self.plain, cacheable=True),
            "post": load.Mix("post", "post", self.plain, cacheable=True),
            "post_nonce": load.Mix("post_nonce", "post", self.nonce, cacheable=False),
        }
        self.mixes = [mixes[m] for m in self.args.mixes]

    # -- correctness ---------------------------------------------------------

    def samples(self, mix: load.Mix) -> list[int]:
        """Indexes of the first good and the first revoked request of a mix's set."""
        picked: dict[str, int] = {}
        for i, serial in enumerate(mix.requests.serials):
            status = "revoked" if self.expected[serial].status == "R" else "good"
            picked.setdefault(status, i)
            if len(picked) == 2:
                break
        return sorted(picked.values())

    def verify_mix(self, port: int, mix: load.Mix, target: str, signer: str) -> None:
        """Check a good and a revoked sample of ``mix`` on ``port``.

        Raises:
            RuntimeError: a response does not verify or has the wrong status.
        """
        client = check.Client(port)
        try:
            for i in self.samples(mix):
                der = mix.requests.der(i)
                serial = mix.requests.serials[i]
                entry = self.expected[serial]
                reply = (
                    client.get(mix.requests.get_path(i))
                    if mix.method == "get"
                    else client.post(der)
                )
                res = check.verify(
                    der,
                    reply,
                    serial=serial,
                    expected_status="revoked" if entry.status == "R" else "good",
                    expected_reason=entry.reason,
                    root_pem=self.pki.root_cert,
                    issuer_pem=self.pki.issuer_cert,
                )
                res.update({"target": target, "signer": signer, "mix": mix.name})
                self.result["correctness"].append(res)
                if not res["ok"]:
                    raise RuntimeError(
                        f"wrong answer from {target} ({signer}, {mix.name}, "
                        f"serial {serial:X}): {res['problems']}"
                    )
        finally:
            client.close()

    # -- peer ------------------------------------------------------------------

    def peer_probes(self, signer: str) -> None:
        """Record how ``openssl ocsp`` behaves (each probe on a fresh instance)."""
        notes = self.result["peer_notes"]
        der = self.plain.der(0)
        port = self.port()
        server, bound = stack.start_peer(
            self.processes, self.pki, signer, port, nmin=PEER_NMIN, name="openssl-probe"
        )
        notes["bind_address"] = (
            f"{bound} port {port}: every interface (-port takes no "
            "address); run inside the private netns"
        )
        notes["keepalive"] = check.probe_keepalive(port, der)
        notes["stop_after_keepalive_probe"] = self.processes.stop(server, grace=3.0)
        port = self.port()
        server, _ = stack.start_peer(
            self.processes, self.pki, signer, port, nmin=PEER_NMIN, name="openssl-probe"
        )
        notes["connect_close_probe"] = check.probe_connect_close(port, server, der)
        notes["stop_after_connect_close_probe"] = self.processes.stop(server, grace=3.0)
        port = self.port()
        server, _ = stack.start_peer(
            self.processes, self.pki, signer, port, nmin=PEER_NMIN, name="openssl-probe"
        )
        notes["malformed_request"] = check.probe_malformed(port, der)
        notes["cpu_after_malformed_request"] = procs.cpu_rates(server.group_pids(), 1.0)
        notes["stop_after_malformed_request"] = self.processes.stop(server, grace=3.0)
        notes["how_the_benchmark_copes"] = (
            "ocsp.lua replaces wrk.resolve() so wrk's connect()+close() probe never reaches "
            "the peer; readiness is read from /proc/net/tcp* (no connection); a fresh peer "
            "is started for every point and its process group is killed after it (wrk "
            "closing connections at the end of a point leaves children spinning)"
        )

    def peer_point(self, signer: str, mix: load.Mix, conns: int) -> dict[str, Any]:
        """Measure one point against a fresh ``openssl ocsp``."""
        port = self.port()
        server, _ = stack.start_peer(self.processes, self.pki, signer, port, nmin=PEER_NMIN)
        try:
            point = load.run_wrk(
                port,
                mix,
                connections=conns,
                duration=self.args.duration,
                out=self.out_dir / f"wrk-openssl-{signer}-{mix.name}-c{conns}.txt",
                servers={"openssl": server},
            )
            point["cpu_after_point"] = procs.cpu_rates(server.group_pids(), 0.5)
        finally:
            stop = self.processes.stop(server, grace=1.0)
        point["stop"] = stop
        return point

    # -- ours ------------------------------------------------------------------

    def start_ours(self, signer: str) -> stack.Ours:
        """Start the responder and nginx for ``signer``."""
        ours = stack.start_ours(
            self.processes,
            REPO,
            self.args.venv,
            self.pki,
            signer,
            workdir=self.workdir,
            origin_port=8080,
            nginx_port=8081,
        )
        log(
            f"ours ({signer}) up: responder :8080 pid {ours.origin.pid}, nginx :8081 "
            f"pid {ours.nginx.pid}"
        )
        return ours

    def ours_probes(self, ours: stack.Ours) -> None:
        """Record the same behaviours for our stack (origin and nginx)."""
        der = self.plain.der(0)
        notes = self.result["ours_notes"]
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
        # nginx must store non-nonce answers and never nonce answers (X-Cache-Status)
        client = check.Client(ours.nginx_port)
        try:
            seen = {}
            for label, body in (
                ("post_without_nonce", self.plain.der(len(self.plain) - 1)),
                ("post_with_nonce", self.nonce.der(len(self.nonce) - 1)),
            ):
                seen[label] = [client.post(body).headers.get("x-cache-status") for _ in range(2)]
        finally:
            client.close()
        notes["nginx"]["same_request_twice_x_cache_status"] = seen
        notes["nginx"]["nonce_response_stored"] = "HIT" in seen["post_with_nonce"]

    def warm(self, port: int, mix: load.Mix) -> float:
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

    def cpu_per_request(
        self, target: str, signer: str, mix: str, conns: int, group: str
    ) -> float | None:
        """CPU microseconds per request of one server group during a measured point."""
        point = next(
            (
                p
                for p in self.points
                if p["target"] == target
                and p["signer"] == signer
                and p["mix"] == mix
                and p["connections"] == conns
            ),
            None,
        )
        if not point or not point["requests"] or group not in point["cpu"]:
            return None
        cpu = point["cpu"][group]
        seconds = float(cpu["user_s"]) + float(cpu["system_s"])
        return round(seconds / int(point["requests"]) * 1e6, 1)

    def profile(self, ours: stack.Ours, mix: load.Mix, conns: int, signer: str) -> None:
        """Where ours spends its per-request time in ``mix`` (POST with nonce).

        Two views, both in RUN.json under ``profile``:
        ``layers``: CPU microseconds per request, layer by layer (breakdown.py, in one
        process, nothing else running), next to the CPU per request of the origin, of
        nginx and of ``openssl ocsp`` during the measured point at ``conns``;
        ``py_spy``: an extra wrk point under ``py-spy record --native`` (wall-clock
        samples of every gunicorn worker; a worker waiting for a core on a busy host
        shows up in whatever call it was in, typically a socket call).
        """
        count = 500 if self.args.duration < 5 else 2000
        run = subprocess.run(
            [
                str(self.args.venv / "bin" / "python"),
                str(BENCH / "breakdown.py"),
                str(ours.config),
                str(self.pki.signer_key(signer)),
                str(self.pki.signer_cert(signer)),
                str(mix.requests.bodies),
                str(mix.requests.lengths),
                str(count),
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        layers: dict[str, Any] = (
            json.loads(run.stdout) if run.returncode == 0 else {"error": run.stderr[-2000:]}
        )
        layers.update(
            {
                "origin_under_wrk_us": self.cpu_per_request(
                    "ours", signer, mix.name, conns, "origin"
                ),
                "nginx_under_wrk_us": self.cpu_per_request(
                    "ours", signer, mix.name, conns, "nginx"
                ),
                "openssl_under_wrk_us": self.cpu_per_request(
                    "openssl", signer, mix.name, conns, "openssl"
                ),
                "connections": conns,
                "signer": signer,
            }
        )
        profile: dict[str, Any] = {"layers": layers}
        spy = self.args.venv / "bin" / "py-spy"
        if not spy.exists():
            profile["py_spy"] = {"error": f"{spy} not found (pip install py-spy)"}
            self.result["profile"] = profile
            return
        raw = self.out_dir / f"profile-{mix.name}-{signer}.txt"
        duration = max(2, round(self.args.duration))
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
            out=self.out_dir / "wrk-profiled.txt",
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
                "--rate 200 (gunicorn master + workers), wall-clock",
            }
        )
        profile["py_spy"] = summary
        self.result["profile"] = profile

    # -- revocation ------------------------------------------------------------

    def _poll(
        self,
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

    def propagation(
        self, pollers: dict[str, tuple[Callable[[], bytes], float, float]], serial: int
    ) -> dict[str, Any]:
        """Revoke ``serial`` with ``openssl ca -revoke`` while pollers run.

        Args:
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
                target=self._poll,
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
        self.pki.revoke(serial, "keyCompromise")
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
            last_good = max(
                (ts for ts, s in seen if ts >= revoked_at and s == "good"), default=None
            )
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

    def revocation(self, ours: stack.Ours | None, signer: str) -> None:
        """Measure revocation propagation for ours (origin + nginx) and the peer."""
        good = [i for i, s in enumerate(self.plain.serials) if self.expected[s].status == "V"]
        res: dict[str, Any] = {}
        if ours is not None:
            i = good[-1]
            der, path = self.plain.der(i), self.plain.get_path(i)
            origin, front_get, front_post = (
                check.Client(ours.origin_port),
                check.Client(ours.nginx_port),
                check.Client(ours.nginx_port),
            )
            max_age = int(stack.role_defaults(REPO)["ocsp_responder_http_cache_max_age"])
            pollers = {
                "origin": (lambda: origin.post(der).body, 0.01, 10.0),
                "nginx_get": (lambda: front_get.get(path).body, 0.05, max_age + 15.0),
                "nginx_post": (lambda: front_post.post(der).body, 0.05, max_age + 15.0),
            }
            log(
                f"revocation propagation (ours, {signer}): up to {max_age + 15} s "
                "(nginx keeps a good answer up to http_cache_max_age)"
            )
            pids = ours.origin.group_pids()
            res["ours"] = self.propagation(pollers, self.plain.serials[i])
            res["ours"]["restarted"] = not ours.origin.alive() or ours.origin.group_pids() != pids
            res["ours"]["http_cache_max_age_s"] = max_age
            res["origin"] = res["ours"]["origin"]
            for c in (origin, front_get, front_post):
                c.close()
        i = good[-2]
        der = self.plain.der(i)
        port = self.port()
        server, _ = stack.start_peer(
            self.processes, self.pki, signer, port, nmin=PEER_NMIN, name="openssl-revocation"
        )
        peer = check.Client(port)
        log(f"revocation propagation (openssl ocsp, {signer})")
        res["openssl"] = self.propagation(
            {"openssl": (lambda: peer.post(der).body, 0.01, 10.0)}, self.plain.serials[i]
        )
        peer.close()
        self.processes.stop(server, grace=2.0)
        self.result["revocation"] = res

    # -- the run ---------------------------------------------------------------

    def measure(self) -> None:
        """Correctness, probes and every point, signer by signer."""
        want_ours = not self.args.peer_only
        if want_ours:
            missing = [
                p
                for p in (
                    self.args.venv / "bin" / "ocsp-responder",
                    REPO / "templates" / "nginx.conf.j2",
                    REPO / "roles" / "ocsp_responder" / "templates" / "config.toml.j2",
                )
                if not p.exists()
            ]
            if missing:
                raise RuntimeError(
                    "ours cannot run, missing: "
                    + ", ".join(map(str, missing))
                    + " (use --peer-only to measure openssl ocsp alone)"
                )
        log("probing openssl ocsp behaviours")
        self.peer_probes(self.args.signers[0])
        for n, signer in enumerate(self.args.signers):
            port = self.port()
            server, _ = stack.start_peer(
                self.processes,
                self.pki,
                signer,
                port,
                nmin=PEER_NMIN,
                name=f"openssl-{signer}-check",
            )
            for mix in self.mixes:
                self.verify_mix(port, mix, "openssl", signer)
            self.processes.stop(server, grace=2.0)
            ours = None
            if want_ours:
                ours = self.start_ours(signer)
                for mix in self.mixes:
                    self.verify_mix(ours.nginx_port, mix, "ours", signer)
                    self.verify_mix(ours.origin_port, mix, "origin", signer)
                if n == 0:
                    self.ours_probes(ours)
            log(f"correctness OK ({signer}): {len(self.mixes)} mixes, good + revoked samples")
            for mix in self.mixes:
                if ours is not None and mix.cacheable and not self.args.no_warmup:
                    warm = {"nginx_s": self.warm(ours.nginx_port, mix)}
                    if self.args.with_origin:
                        warm["origin_s"] = self.warm(ours.origin_port, mix)
                    self.result.setdefault("warmup", []).append(
                        {"signer": signer, "mix": mix.name, **warm}
                    )
                for conns in self.args.concurrency:
                    self.add(self.peer_point(signer, mix, conns), "openssl", signer, mix)
                    if ours is not None:
                        self.ours_point(ours, "ours", signer, mix, conns)
                        if self.args.with_origin:
                            self.ours_point(ours, "origin", signer, mix, conns)
            if ours is not None and signer == "rsa" and self.args.profile:
                nonce = next((m for m in self.mixes if m.name == "post_nonce"), None)
                if nonce is not None:
                    log("profiling ours (POST with nonce, RSA)")
                    self.profile(ours, nonce, max(self.args.concurrency), signer)
            if n == len(self.args.signers) - 1:
                self.revocation(ours, signer)
            if ours is not None:
                self.result["ours_notes"].setdefault("stop", {})[signer] = {
                    "nginx": self.processes.stop(ours.nginx),
                    "origin": self.processes.stop(ours.origin, grace=30.0),
                }

    def ours_point(
        self, ours: stack.Ours, target: str, signer: str, mix: load.Mix, conns: int
    ) -> None:
        """Measure ours through nginx (``ours``) or at the responder (``origin``)."""
        port = ours.nginx_port if target == "ours" else ours.origin_port
        point = load.run_wrk(
            port,
            mix,
            connections=conns,
            duration=self.args.duration,
            out=self.out_dir / f"wrk-{target}-{signer}-{mix.name}-c{conns}.txt",
            servers={"origin": ours.origin, "nginx": ours.nginx},
        )
        self.add(point, target, signer, mix)

    def add(self, point: dict[str, Any], target: str, signer: str, mix: load.Mix) -> None:
        """Record a point and log it."""
        point.update({"target": target, "signer": signer, "mix": mix.name})
        self.points.append(point)
        log(
            f"{target:>7} {signer:>3} {mix.name:>10} c={point['connections']:<3} "
            f"{point['rps']:>9.1f} req/s  p50 {point['p50_ms']} ms  p99 {point['p99_ms']} ms"
            f"  errors {point['errors']}"
        )

    def finish(self, error: str | None) -> Path:
        """Print the tables and write RUN.json (also after a failure)."""
        targets = (
            ["openssl"]
            + ([] if self.args.peer_only else ["ours"])
            + (["origin"] if self.args.with_origin else [])
        )
        tables = []
        for mix in self.args.mixes:
            for signer in self.args.signers:
                if any(p["mix"] == mix and p["signer"] == signer for p in self.points):
                    tables.append(report.table(self.points, mix, signer, targets))
        self.result["tables"] = tables
        self.result["targets"] = report.check_targets(self.points, self.result.get("revocation"))
        self.result["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.result["error"] = error
        path = self.results_dir / f"{self.run_id}.json"
        path.write_text(json.dumps(self.result, indent=1, default=str) + "\n")
        print()
        for t in tables:
            print(t + "\n")
        rev = self.result.get("revocation", {})
        if rev:
            print(
                "Revocation propagation (ms from the end of `openssl ca -revoke` to the "
                "first 'revoked'):"
            )
            for name in ("origin", "nginx_get", "nginx_post"):
                if name in rev.get("ours", {}):
                    r = rev["ours"][name]
                    print(
                        f"  ours {name:<11} {r['first_revoked_ms']} (last 'good' at "
                        f"{r['last_good_ms']})"
                    )
            if "openssl" in rev:
                r = rev["openssl"]["openssl"]
                print(
                    f"  openssl ocsp     {r['first_revoked_ms']} (last 'good' at "
                    f"{r['last_good_ms']})"
                )
        prof = self.result.get("profile")
        if prof:
            print("\n" + report.profile_text(prof))
        if self.result["targets"]:
            print("\nTargets (highest concurrency):")
            for t in self.result["targets"]:
                mark = {True: "met", False: "MISSED", None: "n/a"}[t["met"]]
                print(f"  {mark:>6}  {t['what']}: {t['figure']} (target {t['target']})")
        print(f"\nresults: {path}")
        return path

    def cleanup(self) -> None:
        """Stop every process, keep the servers' logs, remove the temporary directory."""
        self.processes.stop_all()
        logs = self.out_dir / "logs"
        logs.mkdir(exist_ok=True)
        for log_file in [*self.workdir.glob("logs/*.log"), *self.workdir.glob("nginx-*/error.log")]:
            name = (
                log_file.name
                if log_file.parent.name == "logs"
                else f"{log_file.parent.name}-{log_file.name}"
            )
            shutil.copyfile(log_file, logs / name)
        if self.args.keep:
            log(f"kept {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _raise_on_term(signum: int, frame: FrameType | None) -> None:
    """SIGTERM/SIGHUP -> SystemExit, so that ``finally`` blocks stop the servers."""
    raise SystemExit(128 + signum)


def run_inside(args: argparse.Namespace) -> int:
    """The benchmark proper (already inside the private network namespace)."""
    signal.signal(signal.SIGTERM, _raise_on_term)
    signal.signal(signal.SIGHUP, _raise_on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started ignoring it
    run = Run(args)
    error: str | None = None
    try:
        run.prepare()
        run.measure()
    except KeyboardInterrupt:
        error = "interrupted (SIGINT)"
    except SystemExit as exc:
        error = f"stopped by signal {int(exc.code or 0) - 128}"
    except Exception as exc:  # recorded in RUN.json, the run exits 1
        error = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
    finally:
        run.cleanup()
    with contextlib.suppress(KeyboardInterrupt):
        run.finish(error)
    if error:
        log(f"FAILED: {error}")
        return 1
    return 0


def main(argv: list[str]) -> int:
    """Entry point: re-run inside a fresh network namespace, then delete it."""
    args = parse_args(argv)
    if procs.in_private_netns():
        return run_inside(args)
    if os.geteuid() != 0:
        print("bench/run needs root (ip netns, nginx user switch)", file=sys.stderr)
        return 2
    for tool in ("openssl", "wrk", "nginx", "ip"):
        if shutil.which(tool) is None:
            print(
                f"bench/run: {tool} not found (apt-get install openssl wrk nginx-light iproute2)",
                file=sys.stderr,
            )
            return 2
    name = f"ocspbench{os.getpid()}"
    with procs.netns(name) as prefix:
        env = dict(os.environ, **{procs.NETNS_ENV: name})
        child = subprocess.Popen(
            [*prefix, sys.executable, str(Path(__file__).resolve()), *argv], env=env
        )

        def forward(signum: int, frame: FrameType | None) -> None:
            """Pass SIGTERM/SIGHUP on: the child stops its servers and writes RUN.json."""
            child.send_signal(signum)

        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGHUP, forward)
        try:
            return child.wait()
        except KeyboardInterrupt:
            # the child got the same SIGINT and is stopping its servers
            try:
                return child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                child.kill()
                return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
