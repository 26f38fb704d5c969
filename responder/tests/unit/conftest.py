"""Fixtures of the fast unit layer (helpers in :mod:`support`): a fake clock, an
in-process PKI and a factory for the whole in-process stack."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from ocsp_responder.sources import Status

from .support import FakeClock, Pki, Stack, build_stack, make_pki


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
