"""Fixtures of the fast unit layer (helpers in :mod:`support`): a fake clock, an
in-process PKI and a factory for the whole in-process stack.

Every unit test runs under :func:`in_process_only`: starting a process, opening a
network connection or sleeping fails the test (the integration layer, one directory
up, is where those belong).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from ocsp_responder.sources import Status

from .support import FakeClock, Pki, Stack, build_stack, make_pki


@pytest.fixture(autouse=True)
def in_process_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make subprocesses, forks, outgoing connections and sleeps fail the test."""

    def forbidden(what: str) -> Callable[..., Any]:
        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError(f"the unit layer must not {what}")

        return refuse

    monkeypatch.setattr(subprocess, "Popen", forbidden("start a process"))
    monkeypatch.setattr(os, "fork", forbidden("fork"))
    monkeypatch.setattr(socket.socket, "connect", forbidden("open a connection"))
    monkeypatch.setattr(time, "sleep", forbidden("sleep"))


@pytest.fixture
def clock() -> FakeClock:
    """A fresh :class:`FakeClock` at :data:`support.T0`."""
    return FakeClock()


@pytest.fixture(scope="session")
def pki() -> Pki:
    """The unit layer's CA and delegated signer (built once)."""
    return make_pki()


@pytest.fixture
def make_stack(pki: Pki, clock: FakeClock, tmp_path: Path) -> Callable[..., Stack]:
    """Factory ``make_stack(table, **settings)`` -> :class:`Stack` (see
    :func:`support.build_stack`) on this test's clock."""

    def make(table: Mapping[int, Status], **settings: Any) -> Stack:
        return build_stack(pki, clock, tmp_path / "state", table, **settings)

    return make
