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
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import FrameType
from typing import Any

import check
import load
import ours as oursmod
import peer
import pki as pkimod
import procs
import profiling
import report
import reqsets
import revocation
import stack
import versions
from report import log

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent


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
            "versions": versions.collect(args.venv, REPO),
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

    def verify(self, port: int, mix: load.Mix, target: str, signer: str) -> None:
        """Correctness of ``mix`` on ``port`` (a wrong answer raises RuntimeError)."""
        check.verify_mix(
            port,
            mix,
            target=target,
            signer=signer,
            expected=self.expected,
            pki=self.pki,
            record=self.result["correctness"],
        )

    def measure(self) -> None:
        """Correctness, probes and every point, signer by signer."""
        args = self.args
        want_ours = not args.peer_only
        missing = stack.missing(REPO, args.venv) if want_ours else []
        if missing:
            raise RuntimeError(
                "ours cannot run, missing: "
                + ", ".join(map(str, missing))
                + " (use --peer-only to measure openssl ocsp alone)"
            )
        log("probing openssl ocsp behaviours")
        peer.probe(
            self.result["peer_notes"],
            self.processes,
            self.pki,
            args.signers[0],
            new_port=self.port,
            der=self.plain.der(0),
        )
        for n, signer in enumerate(args.signers):
            port = self.port()
            server, _ = peer.start(
                self.processes, self.pki, signer, port, name=f"openssl-{signer}-check"
            )
            for mix in self.mixes:
                self.verify(port, mix, "openssl", signer)
            self.processes.stop(server, grace=2.0)
            ours = None
            if want_ours:
                ours = oursmod.start(
                    self.processes, REPO, args.venv, self.pki, signer, workdir=self.workdir
                )
                for mix in self.mixes:
                    self.verify(ours.nginx_port, mix, "ours", signer)
                    self.verify(ours.origin_port, mix, "origin", signer)
                if n == 0:
                    oursmod.probe(self.result["ours_notes"], ours, self.plain, self.nonce)
            log(f"correctness OK ({signer}): {len(self.mixes)} mixes, good + revoked samples")
            for mix in self.mixes:
                self.measure_mix(ours, signer, mix)
            if ours is not None and signer == "rsa" and args.profile:
                nonce = next((m for m in self.mixes if m.name == "post_nonce"), None)
                if nonce is not None:
                    log("profiling ours (POST with nonce, RSA)")
                    self.result["profile"] = profiling.profile(
                        ours,
                        nonce,
                        max(args.concurrency),
                        signer,
                        venv=args.venv,
                        pki=self.pki,
                        points=self.points,
                        duration=args.duration,
                        out_dir=self.out_dir,
                    )
            if n == len(args.signers) - 1:
                self.result["revocation"] = revocation.measure(
                    ours,
                    signer,
                    processes=self.processes,
                    pki=self.pki,
                    plain=self.plain,
                    expected=self.expected,
                    port=self.port(),
                    repo=REPO,
                )
            if ours is not None:
                self.result["ours_notes"].setdefault("stop", {})[signer] = {
                    "nginx": self.processes.stop(ours.nginx),
                    "origin": self.processes.stop(ours.origin, grace=30.0),
                }

    def measure_mix(self, ours: stack.Ours | None, signer: str, mix: load.Mix) -> None:
        """The first pass (cacheable mixes on ours), then every concurrency of one mix."""
        args = self.args
        if ours is not None and mix.cacheable and not args.no_warmup:
            warm = {"nginx_s": oursmod.warm(ours.nginx_port, mix)}
            if args.with_origin:
                warm["origin_s"] = oursmod.warm(ours.origin_port, mix)
            self.result.setdefault("warmup", []).append({"signer": signer, "mix": mix.name, **warm})
        ours_targets = [] if ours is None else ["ours"] + (["origin"] if args.with_origin else [])
        for conns in args.concurrency:
            point = peer.point(
                self.processes,
                self.pki,
                signer,
                self.port(),
                mix,
                connections=conns,
                duration=args.duration,
                out_dir=self.out_dir,
            )
            self.add(point, "openssl", signer, mix)
            for target in ours_targets:
                point = oursmod.point(
                    ours,
                    target,
                    signer,
                    mix,
                    connections=conns,
                    duration=args.duration,
                    out_dir=self.out_dir,
                )
                self.add(point, target, signer, mix)

    def add(self, point: dict[str, Any], target: str, signer: str, mix: load.Mix) -> None:
        """Record a point and log it."""
        point.update({"target": target, "signer": signer, "mix": mix.name})
        self.points.append(point)
        report.log_point(point)

    def finish(self, error: str | None) -> Path:
        """Print the tables and write RUN.json (also after a failure)."""
        targets = (
            ["openssl"]
            + ([] if self.args.peer_only else ["ours"])
            + (["origin"] if self.args.with_origin else [])
        )
        return report.finish(
            self.result,
            mixes=self.args.mixes,
            signers=self.args.signers,
            targets=targets,
            error=error,
            path=self.results_dir / f"{self.run_id}.json",
        )

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
