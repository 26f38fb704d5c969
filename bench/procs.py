"""Processes the benchmark starts, the private network namespace, and small probes.

Every server runs in its own process group, so that stopping it reaches every
process it forked (``openssl ocsp -multi`` children, granian workers, nginx workers)
and Ctrl-C reaches only the harness, which then stops them; the kernel sends it
SIGTERM if the harness dies (PR_SET_PDEATHSIG). Not a new session: ``openssl ocsp
-multi`` calls setpgid(0, 0) and exits 1 when that fails, as it does for a session
leader.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """preexec_fn: SIGTERM this child when the harness process exits (Linux prctl)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Server:
    """A started server process.

    Attributes:
        name: label used in logs and errors.
        argv: the command line.
        log: file receiving its stdout and stderr.
        proc: the process (leader of its own process group).
    """

    name: str
    argv: list[str]
    log: Path
    proc: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        """Process id of the leader (openssl parent, granian main process, nginx master)."""
        return self.proc.pid

    def group_pids(self) -> list[int]:
        """Every live process of the server's process group (leader included)."""
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if os.getpgid(int(entry.name)) == self.proc.pid:
                    pids.append(int(entry.name))
            except (ProcessLookupError, PermissionError):
                continue
        return sorted(pids)

    def alive(self) -> bool:
        """Whether the leader still runs."""
        return self.proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the server's log (for error messages)."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, grace: float = 5.0) -> dict[str, object]:
        """Stop the whole process group: ``sig``, then SIGKILL after ``grace`` seconds.

        Returns:
            what happened: ``{"signal": name, "group_exited_after_s": float | None
            (None: not within grace), "killed_pids": [pids still alive after grace,
            SIGKILLed]}``.
        """
        outcome: dict[str, object] = {
            "signal": signal.Signals(sig).name,
            "group_exited_after_s": None,
            "killed_pids": [],
        }
        start = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        deadline = start + grace
        while time.monotonic() < deadline:
            if self.proc.poll() is not None and not self.group_pids():
                outcome["group_exited_after_s"] = round(time.monotonic() - start, 3)
                break
            time.sleep(0.02)
        else:
            outcome["killed_pids"] = self.group_pids()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
        return outcome


@dataclass
class Processes:
    """Every server started by a run; :meth:`stop_all` ends them (also on errors).

    Attributes:
        logdir: directory for the servers' logs.
        servers: started servers, in start order.
    """

    logdir: Path
    servers: list[Server] = field(default_factory=list)

    def start(self, name: str, argv: list[str], cwd: Path | None = None) -> Server:
        """Start a server in its own process group with its output in ``logdir/NAME.log``.

        Raises:
            OSError: the program cannot be started.
        """
        log = self.logdir / f"{name}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=cwd,
                process_group=0,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - prctl only
            )
        server = Server(name, argv, log, proc)
        self.servers.append(server)
        return server

    def stop(
        self, server: Server, sig: int = signal.SIGTERM, grace: float = 5.0
    ) -> dict[str, object]:
        """Stop one server (see :meth:`Server.stop`) and forget it."""
        outcome = server.stop(sig, grace)
        if server in self.servers:
            self.servers.remove(server)
        return outcome

    def stop_all(self) -> None:
        """Stop every server still known, newest first."""
        for server in reversed(list(self.servers)):
            self.stop(server, grace=3.0)


def listening_ports() -> dict[int, str]:
    """TCP ports in LISTEN state in this network namespace.

    Returns:
        port -> local address as the kernel shows it (``0.0.0.0``, ``::``, ``127.0.0.1``),
        read from /proc/net/tcp and /proc/net/tcp6 without opening any connection.
    """
    found: dict[int, str] = {}
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] != "0A":  # TCP_LISTEN
                continue
            addr_hex, port_hex = fields[1].split(":")
            raw = bytes.fromhex(addr_hex)
            # /proc shows the address as host-order 32-bit words
            words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            family = socket.AF_INET6 if v6 else socket.AF_INET
            found[int(port_hex, 16)] = socket.inet_ntop(family, words)
    return found


def wait_listening(server: Server, port: int, timeout: float = 15.0) -> str:
    """Wait until ``port`` is in LISTEN state, without connecting to it.

    Returns:
        the bound address (see :func:`listening_ports`).

    Raises:
        RuntimeError: the server exited or did not listen in time (with its log tail).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ports = listening_ports()
        if port in ports:
            return ports[port]
        if not server.alive():
            raise RuntimeError(
                f"{server.name} exited with {server.proc.returncode} before "
                f"listening on {port}:\n{server.log_tail()}"
            )
        time.sleep(0.02)
    raise RuntimeError(
        f"{server.name} not listening on {port} after {timeout} s:\n{server.log_tail()}"
    )


def cpu_times(pids: list[int]) -> dict[int, tuple[float, float]]:
    """(user, system) CPU seconds so far of each live pid (from /proc/PID/stat)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, tuple[float, float]] = {}
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[pid] = (int(stat[11]) / tick, int(stat[12]) / tick)
    return out


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """User+system CPU seconds so far of each live pid (from /proc/PID/stat)."""
    return {pid: user + system for pid, (user, system) in cpu_times(pids).items()}


def cpu_rates(pids: list[int], seconds: float = 1.0) -> dict[int, float]:
    """CPU use of each pid over ``seconds`` (1.0 = one full core)."""
    before = cpu_seconds(pids)
    time.sleep(seconds)
    after = cpu_seconds(pids)
    return {pid: round((after[pid] - before.get(pid, 0.0)) / seconds, 2) for pid in after}


# ---------------------------------------------------------------------------
# network namespace
# ---------------------------------------------------------------------------

NETNS_ENV = "OCSP_BENCH_NETNS"


def in_private_netns() -> bool:
    """Whether this process runs inside the namespace created by :func:`netns`."""
    return bool(os.environ.get(NETNS_ENV))


@contextlib.contextmanager
def netns(name: str) -> Iterator[list[str]]:
    """Create a network namespace with only ``lo`` (up), delete it on exit.

    ``openssl ocsp -port`` binds every interface; inside this namespace "every
    interface" is loopback only, so no benchmark traffic can leave the host.

    Yields:
        the argv prefix that runs a command inside it (``ip netns exec NAME``).

    Raises:
        subprocess.CalledProcessError: ``ip netns`` failed (not root, no netns support).
    """
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, text=True)
    try:
        subprocess.run(
            ["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"],
            check=True,
            capture_output=True,
            text=True,
        )
        yield ["ip", "netns", "exec", name]
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
