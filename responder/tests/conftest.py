"""Fixtures: the test PKI (``scenario.build_pki``) and ``ocsp-responder serve`` on loopback.

* ``pki`` (session): the PKI, built once with the openssl CLI.
* ``responder`` (session): one ``ocsp-responder serve`` for pki.rsa, pki.ec, pki.crl.
* ``live_issuer`` (per test): factory for a fresh intermediate with its own
  responder checking its files every 0.2 s, for tests that revoke, corrupt or
  rewrite files.
* ``serve`` (per test): factory for one more responder of a given config text
  (e.g. a second one started on the files a live issuer's responder reads).

Every responder runs as a child process on a free 127.0.0.1 port; it is
stopped with SIGTERM (SIGKILL after a timeout), and the log of every running
responder is attached to the report of a failing test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from responder_process import Responder, toml_config
from scenario import LiveIssuer, Pki, build_pki, main_config, new_issuing_ca

_running: list[Responder] = []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    """Attach the log of every running responder to a failing test's report."""
    report = yield
    if report.failed:
        for server in _running:
            report.sections.append(
                (f"ocsp-responder log ({server.config})", server.log_text()[-6000:])
            )
    return report


def start_responder(
    config_text: str, directory: Path, workers: int = 1, command_prefix: Sequence[str] = ()
) -> Iterator[Responder]:
    """Write ``directory``/config.toml, serve it, yield the Responder, then stop it.

    ``workers`` and ``command_prefix`` are passed to :class:`Responder`.
    """
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "config.toml"
    config.write_text(config_text)
    server = Responder(
        config, directory / "responder.log", workers=workers, command_prefix=command_prefix
    )
    server.start()
    _running.append(server)
    try:
        yield server
    finally:
        _running.remove(server)
        server.stop()


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """The session PKI (see scenario.py)."""
    return build_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def responder(pki: Pki) -> Iterator[Responder]:
    """``ocsp-responder serve`` for pki.rsa, pki.ec and pki.crl (scenario.main_config)."""
    yield from start_responder(main_config(pki), pki.base / "main-responder")


@pytest.fixture
def live_issuer(pki: Pki, tmp_path: Path) -> Iterator[Callable[..., LiveIssuer]]:
    """Factory ``live_issuer(source="index", published=False, **server)`` -> LiveIssuer.

    A fresh intermediate with valid leaves ``a``, ``b``, ``c``, served by its own
    responder with ``reload_interval = 0.2`` plus ``server`` settings. ``source``
    is ``index`` (the CA's index.txt, or with ``published`` a copy of it) or
    ``crl`` (the CA's CRL from ``openssl ca -gencrl``). Stopped after the test.

    More keywords: ``workers`` (serve worker processes, default 1), ``command_prefix``
    (run ``serve`` under it, see responder_process.no_dac_prefix), ``signer_dates``
    (``startdate``/``enddate`` of the delegated signer).
    """
    runs: list[Iterator[Responder]] = []

    def make(
        source: str = "index",
        published: bool = False,
        workers: int = 1,
        command_prefix: Sequence[str] = (),
        signer_dates: dict[str, str] | None = None,
        **server: object,
    ) -> LiveIssuer:
        issuing = new_issuing_ca(
            tmp_path,
            pki.root,
            f"live-{len(runs)}",
            leaves=("a", "b", "c"),
            signer_dates=signer_dates,
        )
        if source == "crl":
            status_file = issuing.ca.gencrl()
            table = {"kind": "crl", "paths": [status_file]}
        else:
            status_file = issuing.ca.index
            if published:
                status_file = issuing.ca.dir / "published" / "index.txt"
                status_file.parent.mkdir()
                status_file.write_bytes(issuing.ca.index.read_bytes())
            table = {"kind": "index", "path": status_file}
        text = toml_config(
            {"reload_interval": 0.2, **server}, [issuing.issuer_config(source=table)]
        )
        run = start_responder(text, issuing.ca.dir / "responder", workers, command_prefix)
        runs.append(run)
        return LiveIssuer(issuing=issuing, server=next(run), status_file=status_file)

    yield make
    for run in runs:
        run.close()


@pytest.fixture
def serve() -> Iterator[Callable[..., Responder]]:
    """Factory ``serve(config_text, directory, workers=1, command_prefix=())`` -> Responder.

    Writes ``directory``/config.toml (its state directory, by default, beside it),
    starts ``ocsp-responder serve`` on it and stops it after the test.
    """
    runs: list[Iterator[Responder]] = []

    def make(
        config_text: str,
        directory: Path,
        workers: int = 1,
        command_prefix: Sequence[str] = (),
    ) -> Responder:
        run = start_responder(config_text, directory, workers, command_prefix)
        runs.append(run)
        return next(run)

    yield make
    for run in runs:
        run.close()
