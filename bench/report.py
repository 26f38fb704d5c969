"""What a benchmark run prints and writes: progress lines, tables, targets, RUN.json."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

MIX_TITLES = {
    "get": "GET without nonce",
    "post": "POST without nonce",
    "post_nonce": "POST with nonce (signed per request)",
}
SIGNER_TITLES = {"rsa": "RSA-2048", "ec": "EC P-256"}

#: (mix, signer, minimum ours/openssl req/s ratio at the highest concurrency, p99 no worse)
TARGETS = [
    ("get", "rsa", 8.0, True),
    ("get", "ec", 4.0, True),
    ("post", "rsa", 5.0, False),
    ("post", "ec", 5.0, False),
    ("post_nonce", "rsa", 1.0, False),
]
#: revocation visible at the origin within this many milliseconds
REVOCATION_TARGET_MS = 1000.0


def log(msg: str) -> None:
    """Progress line on stderr."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def log_point(point: dict[str, Any]) -> None:
    """Progress line of one measured point."""
    log(
        f"{point['target']:>7} {point['signer']:>3} {point['mix']:>10} "
        f"c={point['connections']:<3} "
        f"{point['rps']:>9.1f} req/s  p50 {point['p50_ms']} ms  p99 {point['p99_ms']} ms"
        f"  errors {point['errors']}"
    )


def _fmt(value: float | None, width: int, digits: int) -> str:
    """Right-aligned number, or a dash for missing values."""
    return f"{value:>{width}.{digits}f}" if value is not None else " " * (width - 1) + "-"


def ratio(ours: dict[str, Any] | None, peer: dict[str, Any] | None) -> float | None:
    """ours/openssl req/s, or None when either is missing or the peer did nothing."""
    if not ours or not peer or not peer.get("rps"):
        return None
    return round(float(ours["rps"]) / float(peer["rps"]), 2)


def table(points: list[dict[str, Any]], mix: str, signer: str, targets: list[str]) -> str:
    """One table: rows are concurrencies, column groups are targets, then ratios.

    Args:
        points: every measured point (``target``, ``mix``, ``signer``, ``connections``...).
        mix: mix name; signer: signer label.
        targets: column groups in order; the first is the reference (openssl).

    Returns:
        the table as text.
    """
    rows = [p for p in points if p["mix"] == mix and p["signer"] == signer]
    conns = sorted({p["connections"] for p in rows})
    ref = targets[0]
    head = f"{'c':>4} |"
    for t in targets:
        head += f" {t + ' req/s':>14} {'p50 ms':>7} {'p99 ms':>7} {'err':>5} |"
    for t in targets[1:]:
        head += f" {t + '/' + ref:>16}"
    lines = [f"{MIX_TITLES[mix]} - signer {SIGNER_TITLES[signer]}", head, "-" * len(head)]
    for c in conns:
        by_target = {p["target"]: p for p in rows if p["connections"] == c}
        line = f"{c:>4} |"
        for t in targets:
            p = by_target.get(t)
            line += (
                f" {_fmt(p['rps'] if p else None, 14, 1)} "
                f"{_fmt(p['p50_ms'] if p else None, 7, 2)} "
                f"{_fmt(p['p99_ms'] if p else None, 7, 2)} "
                f"{p['errors'] if p else '-':>5} |"
            )
        for t in targets[1:]:
            r = ratio(by_target.get(t), by_target.get(ref))
            line += f" {(f'{r:.2f}x' if r is not None else '-'):>16}"
        lines.append(line)
    return "\n".join(lines)


def check_targets(
    points: list[dict[str, Any]],
    revocation: dict[str, Any] | None,
    ours: str = "ours",
    peer: str = "openssl",
) -> list[dict[str, Any]]:
    """Compare the run with the issue's targets at the highest concurrency measured.

    Returns:
        one dict per target: ``what``, ``figure``, ``target``, ``met`` (None when the
        run has no figure for it).
    """
    out: list[dict[str, Any]] = []
    for mix, signer, minimum, p99_no_worse in TARGETS:
        rows = [p for p in points if p["mix"] == mix and p["signer"] == signer]
        if not rows:
            continue
        top = max(p["connections"] for p in rows)
        o = next((p for p in rows if p["target"] == ours and p["connections"] == top), None)
        r = next((p for p in rows if p["target"] == peer and p["connections"] == top), None)
        value = ratio(o, r)
        met = None if value is None else value >= minimum
        entry: dict[str, Any] = {
            "what": f"{mix} {signer} c={top}: {ours}/{peer} req/s",
            "figure": value,
            "target": f">= {minimum}x",
            "met": met,
        }
        if p99_no_worse and o and r and o.get("p99_ms") is not None:
            entry["p99_ms"] = {ours: o["p99_ms"], peer: r["p99_ms"]}
            entry["met"] = bool(met) and o["p99_ms"] <= (r["p99_ms"] or 0)
            entry["target"] += ", p99 no worse"
        out.append(entry)
    if revocation and "origin" in revocation:
        ms = revocation["origin"].get("first_revoked_ms")
        out.append(
            {
                "what": "revocation visible at the origin (ms)",
                "figure": ms,
                "target": f"<= {REVOCATION_TARGET_MS:.0f}",
                "met": None if ms is None else ms <= REVOCATION_TARGET_MS,
            }
        )
    return out


#: py-spy buckets: label -> substring of a frame; a sample counts for a bucket when any
#: frame of its stack contains the substring (so buckets may overlap).
PROFILE_BUCKETS = {
    "responder WSGI app (OCSPApp.__call__)": "OCSPApp.__call__",
    "  signing (OCSPResponseBuilder.sign)": "OCSPResponseBuilder.sign",
    "  RSA/EC arithmetic in OpenSSL": "ossl_",
    "rsgi adapter (environ, body read)": "rsgi.py",
    "accept (socket.accept)": "socket.accept (",
}


def summarize_profile(raw: Path, top: int = 25) -> dict[str, Any]:
    """Summarize a ``py-spy record --format raw`` file (collapsed stacks + counts).

    Returns:
        ``{"samples": n, "self": [(frame, percent)], "inclusive": [(frame, percent)],
        "buckets": {label: percent}}`` (see :data:`PROFILE_BUCKETS`); process frames
        added by ``--subprocesses`` are left out.
    """
    buckets: Counter[str] = Counter()
    self_counts: Counter[str] = Counter()
    incl_counts: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if not f.startswith("process ")]
        if not frames:
            continue
        total += count
        self_counts[frames[-1]] += count
        for frame in set(frames):
            incl_counts[frame] += count
        for label, needle in PROFILE_BUCKETS.items():
            if any(needle in f for f in frames):
                buckets[label] += count

    def pct(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(f, round(100.0 * n / total, 1)) for f, n in counter.most_common(top)]

    return {
        "samples": total,
        "self": pct(self_counts) if total else [],
        "inclusive": pct(incl_counts) if total else [],
        "buckets": {
            label: round(100.0 * buckets[label] / total, 1) if total else 0.0
            for label in PROFILE_BUCKETS
        },
    }


def profile_text(profile: dict[str, Any]) -> str:
    """The profile section of the printed report (see profiling.py)."""
    lines: list[str] = []
    layers = profile.get("layers", {})
    if "error" in layers:
        lines.append(f"per-request CPU breakdown failed: {layers['error']}")
    elif layers:
        signer = SIGNER_TITLES.get(layers.get("signer", ""), "")
        lines.append(
            f"Where a POST-with-nonce request's CPU goes ({signer}, microseconds per request):"
        )
        rows = [
            ("signature alone (key.sign)", layers.get("signature_us")),
            ("+ cryptography builds/signs/encodes the response", layers.get("library_response_us")),
            ("+ the responder's WSGI app, in-process", layers.get("wsgi_app_us")),
            (
                f"origin under wrk, c={layers.get('connections')} (+ granian, sockets)",
                layers.get("origin_under_wrk_us"),
            ),
            ("nginx under wrk (proxying)", layers.get("nginx_under_wrk_us")),
            ("openssl ocsp under wrk, all its processes", layers.get("openssl_under_wrk_us")),
        ]
        for label, value in rows:
            lines.append(f"  {label:<58} {_fmt(value, 8, 1)}")
    spy = profile.get("py_spy", {})
    if "error" in spy:
        lines.append(f"py-spy failed: {spy['error']}")
    elif spy:
        lines.append(
            f"py-spy, wall-clock, {spy['samples']} samples of the granian workers "
            f"({spy['rps_while_profiled']} req/s while profiled):"
        )
        for label, value in spy.get("buckets", {}).items():
            lines.append(f"  {value:5.1f}%  {label}")
        lines.append("  top frames by self time:")
        for frame, value in spy.get("self", [])[:10]:
            lines.append(f"  {value:5.1f}%  {frame[:110]}")
    return "\n".join(lines)


def revocation_text(rev: dict[str, Any]) -> str:
    """The revocation propagation section of the printed report."""
    lines = [
        "Revocation propagation (ms from the end of `openssl ca -revoke` to the first 'revoked'):"
    ]
    for name in ("origin", "nginx_get", "nginx_post"):
        if name in rev.get("ours", {}):
            r = rev["ours"][name]
            lines.append(
                f"  ours {name:<11} {r['first_revoked_ms']} (last 'good' at {r['last_good_ms']})"
            )
    if "openssl" in rev:
        r = rev["openssl"]["openssl"]
        lines.append(
            f"  openssl ocsp     {r['first_revoked_ms']} (last 'good' at {r['last_good_ms']})"
        )
    return "\n".join(lines)


def finish(
    result: dict[str, Any],
    *,
    mixes: list[str],
    signers: list[str],
    targets: list[str],
    error: str | None,
    path: Path,
) -> Path:
    """Complete ``result`` (tables, targets, end time, error), write it to ``path``, print it.

    Args:
        result: the run's RUN.json so far; its ``points`` are every measured point.
        mixes, signers: the run's, in table order.
        targets: column groups of the tables (``openssl`` first).
        error: why the run stopped early, or None.
        path: the RUN.json to write.

    Returns:
        ``path``.
    """
    points = result["points"]
    tables = [
        table(points, mix, signer, targets)
        for mix in mixes
        for signer in signers
        if any(p["mix"] == mix and p["signer"] == signer for p in points)
    ]
    result["tables"] = tables
    result["targets"] = check_targets(points, result.get("revocation"))
    result["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    result["error"] = error
    path.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print()
    for t in tables:
        print(t + "\n")
    rev = result.get("revocation", {})
    if rev:
        print(revocation_text(rev))
    prof = result.get("profile")
    if prof:
        print("\n" + profile_text(prof))
    if result["targets"]:
        print("\nTargets (highest concurrency):")
        for t in result["targets"]:
            mark = {True: "met", False: "MISSED", None: "n/a"}[t["met"]]
            print(f"  {mark:>6}  {t['what']}: {t['figure']} (target {t['target']})")
    print(f"\nresults: {path}")
    return path
