"""Versions of everything a benchmark's figures depend on (``versions`` in RUN.json)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path


def _cmd_version(argv: list[str]) -> str:
    """First line of a tool's version output (stdout or stderr), or the error."""
    try:
        run = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=10)
    except OSError as exc:
        return f"unavailable: {exc}"
    text = (run.stdout + run.stderr).strip().splitlines()
    return text[0] if text else ""


def collect(venv: Path, repo: Path) -> dict[str, str]:
    """The tools, the Python packages, the kernel, the CPU and the repo's commit."""
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
    for dist in ("cryptography", "granian", "ocsp-responder", "Jinja2"):
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
        ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    out["repo_commit"] = git.stdout.strip() or "none"
    return out
