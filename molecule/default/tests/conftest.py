"""Fixtures of the default scenario's verifier (testinfra, podman backend).

`host` (from testinfra) is the responder instance; `ca` drives the CA
instance, where the relying-party clients (openssl ocsp, curl) run.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
import testinfra

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared"))

from ocsp_testlib import CaInstance

_REPORT: list[str] = []


@pytest.fixture(scope="session")
def ca() -> CaInstance:
    """The CA instance with its test PKI (manifest written by prepare)."""
    name = os.environ["OCSP_TEST_CA_INSTANCE"]
    return CaInstance(
        testinfra.get_host(f"podman://{name}"), os.environ["OCSP_TEST_URL"]
    )


@pytest.fixture(scope="session")
def report() -> list[str]:
    """Lines printed at the end of the run (facts worth seeing, e.g. the exposure level)."""
    return _REPORT


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the collected report lines after the test results."""
    if _REPORT:
        terminalreporter.section("report")
        for line in _REPORT:
            terminalreporter.write_line(line)
