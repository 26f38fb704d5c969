"""The one reader of PEM-or-DER files: certificates, CRLs and private keys.

Every file the configuration names may be PEM (RFC 7468) or DER; a PEM file is
recognised by its ``-----BEGIN`` line and the first object of the expected type in
it is read. All parsing is :mod:`cryptography`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

T = TypeVar("T")


def pem_or_der(data: bytes, pem: Callable[[bytes], T], der: Callable[[bytes], T]) -> T:
    """Parse ``data`` with ``pem`` when it holds a PEM block, else with ``der``.

    Raises:
        ValueError: (from the parser) ``data`` is neither.
    """
    return pem(data) if b"-----BEGIN" in data else der(data)


def certificate(data: bytes) -> x509.Certificate:
    """One PEM or DER X.509 certificate (the first, for PEM).

    Raises:
        ValueError: neither a PEM nor a DER certificate.
    """
    return pem_or_der(data, x509.load_pem_x509_certificate, x509.load_der_x509_certificate)


def crl(data: bytes) -> x509.CertificateRevocationList:
    """One PEM or DER CRL (RFC 5280 section 5).

    Raises:
        ValueError: neither a PEM nor a DER CRL.
    """
    return pem_or_der(data, x509.load_pem_x509_crl, x509.load_der_x509_crl)


def private_key(data: bytes, password: bytes | None) -> PrivateKeyTypes:
    """One PEM or DER private key (PKCS#8, or the traditional PKCS#1 / SEC 1 forms).

    Args:
        data: the file's contents.
        password: the passphrase of an encrypted key, None for a plain one.

    Raises:
        ValueError: not a private key, or a wrong passphrase.
        TypeError: an encrypted key without ``password``, or ``password`` for a plain key.
    """
    return pem_or_der(
        data,
        lambda d: serialization.load_pem_private_key(d, password),
        lambda d: serialization.load_der_private_key(d, password),
    )
