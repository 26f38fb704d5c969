"""Certificate status over POST, checked by the real ``openssl ocsp`` client.

Every answer must verify (``Response verify OK``: signature by the delegated
signer, the signer's chain to the root, the signer's OCSPSigning EKU), carry
the status index.txt or the CRL implies, and pass openssl's time checks.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from openssl_ocsp import (
    NONCE_OID,
    OcspRun,
    RequestExtension,
    check_response,
    genconf_request,
    make_request,
    query,
)
from openssl_pki import expected_ocsp_reason, ocsp_hashes, read_index
from responder_process import Responder, assert_ocsp_error, post_ocsp
from scenario import REVOCATIONS, VALIDITY, IssuingCA, Pki

DIGESTS = ["sha1", "sha256", "sha384", "sha512"]


def assert_clean(run: OcspRun) -> None:
    """The answer verified and openssl had no complaint (times, nonce, signer)."""
    assert run.verified, run.output
    assert not run.complaints, run.output


def issuing(pki: Pki, name: str) -> IssuingCA:
    return {"rsa": pki.rsa, "ec": pki.ec, "crl": pki.crl}[name]


@pytest.mark.parametrize("digest", DIGESTS)
@pytest.mark.parametrize("ca_name", ["rsa", "ec"])
def test_good_certificate_verifies_with_each_certid_hash(
    pki: Pki, responder: Responder, ca_name: str, digest: str
) -> None:
    """A valid certificate is good, for CertIDs made with SHA-1 (openssl's default) to SHA-512.

    openssl looks the status up by the CertID it sent, so a response that did not
    echo the request's hash algorithm shows up as "No Status found".
    """
    ca = issuing(pki, ca_name)
    leaf = next(v for k, v in ca.leaves.items() if k.startswith("good"))
    run = query(
        responder.url,
        ca.trust,
        ca.ca.cert,
        certs=[leaf.cert],
        digest=None if digest == "sha1" else digest,
    )
    assert_clean(run)
    status = run.status_of(leaf.cert)
    assert status.status == "good", run.output
    assert status.this_update is not None and status.next_update is not None, run.output
    assert (status.next_update - status.this_update).total_seconds() == VALIDITY[ca_name]


@pytest.mark.parametrize("digest", ["sha1", "sha256"])
def test_response_echoes_certid_hash_algorithm(
    pki: Pki, responder: Responder, digest: str, tmp_path: Path
) -> None:
    """The SingleResponse's CertID uses the hash algorithm of the request's CertID."""
    leaf = pki.ec.leaves["good"]
    der = make_request(tmp_path / "req.der", pki.ec.ca.cert, [leaf.cert], digest=digest)
    answer = post_ocsp(responder.port, der)
    parsed = answer.ocsp()
    assert parsed.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    assert parsed.hash_algorithm.name == digest
    assert parsed.serial_number == leaf.serial


@pytest.mark.parametrize("label", sorted(REVOCATIONS))
def test_revoked_certificate_shows_reason_and_time_from_index(
    pki: Pki, responder: Responder, label: str
) -> None:
    """Each way ``openssl ca -revoke`` records a revocation gives the matching OCSP answer."""
    leaf = pki.rsa.leaves[label]
    row = read_index(pki.rsa.ca.index)[leaf.serial]
    assert row.status == "R"
    run = query(responder.url, pki.rsa.trust, pki.rsa.ca.cert, certs=[leaf.cert], digest="sha256")
    assert_clean(run)
    status = run.status_of(leaf.cert)
    # An R row with reason removeFromCRL is answered as the row says: revoked, with
    # that reason (README, "How certificate status is decided").
    assert status.status == "revoked", run.output
    assert status.revocation_time == row.revocation_time, run.output
    expected = expected_ocsp_reason(row.reason)
    if expected == "unspecified":
        # RFC 5280 5.3.1 asks that reason code unspecified be left out; either form is fine.
        assert status.reason in {None, "unspecified"}, run.output
    else:
        assert status.reason == expected, run.output


def test_expired_row_is_good(pki: Pki, responder: Responder) -> None:
    """An ``E`` row (written by ``openssl ca -updatedb``) was issued and not revoked: good."""
    leaf = pki.rsa.leaves["expired"]
    assert read_index(pki.rsa.ca.index)[leaf.serial].status == "E"
    run = query(responder.url, pki.rsa.trust, pki.rsa.ca.cert, certs=[leaf.cert])
    assert_clean(run)
    assert run.status_of(leaf.cert).status == "good", run.output


@pytest.mark.parametrize("ca_name", ["rsa", "ec"])
def test_serial_never_issued_is_unknown(pki: Pki, responder: Responder, ca_name: str) -> None:
    """A serial absent from index.txt is unknown, never good (BRs)."""
    ca = issuing(pki, ca_name)
    serial = max(read_index(ca.ca.index)) + 0x1000
    run = query(responder.url, ca.trust, ca.ca.cert, serials=[serial])
    assert_clean(run)
    assert run.status_of(serial).status == "unknown", run.output


def test_same_serial_under_two_issuers(pki: Pki, responder: Responder) -> None:
    """Two issuers with different signers in one config: each answers from its own data.

    Both CAs issued serial 0x1002; only the EC CA revoked it.
    """
    serial = pki.ec.leaves["keyCompromise"].serial
    assert read_index(pki.rsa.ca.index)[serial].status == "V"
    answers = {}
    for ca in (pki.rsa, pki.ec):
        run = query(responder.url, ca.trust, ca.ca.cert, serials=[serial])
        assert_clean(run)
        answers[ca.name] = run.status_of(serial)
    assert answers[pki.rsa.name].status == "good"
    assert answers[pki.ec.name].status == "revoked"
    assert answers[pki.ec.name].reason == "keycompromise"


def test_two_issuers_are_signed_by_their_own_signers(
    pki: Pki, responder: Responder, tmp_path: Path
) -> None:
    """Each issuer's answer is signed by its own delegated signer, sent in ``certs``."""
    for ca in (pki.rsa, pki.ec, pki.crl):
        leaf = ca.leaves["good"] if "good" in ca.leaves else ca.leaves["good-1"]
        der = make_request(tmp_path / f"{ca.name}.der", ca.ca.cert, [leaf.cert])
        parsed = post_ocsp(responder.port, der).ocsp()
        assert parsed.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
        assert [c.serial_number for c in parsed.certificates] == [ca.signer.serial]
        signer_pem = parsed.certificates[0].public_bytes(serialization.Encoding.PEM)
        assert signer_pem == ca.signer.cert.read_bytes(), ca.name


def test_responder_id_by_key_and_by_name(pki: Pki, responder: Responder, tmp_path: Path) -> None:
    """pki.rsa is configured ``by_key`` (the default), pki.ec ``by_name`` (RFC 6960 4.2.1)."""
    rsa_der = make_request(tmp_path / "rsa.der", pki.rsa.ca.cert, [pki.rsa.leaves["good-1"].cert])
    by_key = post_ocsp(responder.port, rsa_der).ocsp()
    assert by_key.responder_name is None
    assert by_key.responder_key_hash is not None
    assert by_key.responder_key_hash.hex() == ocsp_hashes(pki.rsa.signer.cert)["Public key"]

    ec_der = make_request(tmp_path / "ec.der", pki.ec.ca.cert, [pki.ec.leaves["good"].cert])
    by_name = post_ocsp(responder.port, ec_der).ocsp()
    assert by_name.responder_key_hash is None
    assert by_name.responder_name is not None
    name_hash = hashlib.sha1(by_name.responder_name.public_bytes()).hexdigest()
    assert name_hash == ocsp_hashes(pki.ec.signer.cert)["Subject"]


def test_signature_hash_setting_is_used(pki: Pki, responder: Responder, tmp_path: Path) -> None:
    """pki.ec is configured with ``signature_hash = "sha384"``, pki.rsa with the default sha256."""
    for ca, leaf, expected in ((pki.ec, "good", hashes.SHA384), (pki.rsa, "good-1", hashes.SHA256)):
        der = make_request(tmp_path / f"{ca.name}.der", ca.ca.cert, [ca.leaves[leaf].cert])
        parsed = post_ocsp(responder.port, der).ocsp()
        assert isinstance(parsed.signature_hash_algorithm, expected), ca.name


def test_nonce_is_echoed(pki: Pki, responder: Responder) -> None:
    """With ``-nonce`` openssl checks the response carries the same nonce (RFC 9654)."""
    leaf = pki.ec.leaves["good"]
    run = query(responder.url, pki.ec.trust, pki.ec.ca.cert, certs=[leaf.cert], nonce=True)
    assert_clean(run)  # openssl prints "WARNING: no nonce in response" or "Nonce Verify error"
    assert run.status_of(leaf.cert).status == "good"


def test_issuer_not_served_is_unauthorized(pki: Pki, responder: Responder, tmp_path: Path) -> None:
    """A CertID naming a CA the responder does not serve (the root) -> unauthorized,
    as HTTP 200 and not cacheable."""
    run = query(responder.url, pki.rsa.trust, pki.root.cert, certs=[pki.rsa.ca.cert])
    assert run.responder_error == "unauthorized", run.output
    der = make_request(tmp_path / "root.der", pki.root.cert, [pki.ec.ca.cert], digest="sha256")
    assert_ocsp_error(post_ocsp(responder.port, der), ocsp.OCSPResponseStatus.UNAUTHORIZED)


# ---------------------------------------------------------------- hand-built requests
# Requests openssl ocsp cannot make, written with openssl asn1parse -genconf.


def _answer_to(responder: Responder, der: bytes) -> ocsp.OCSPResponse:
    answer = post_ocsp(responder.port, der)
    assert answer.status == 200, answer.describe()
    return answer.ocsp()


def test_genconf_request_is_a_valid_request(pki: Pki, responder: Responder, tmp_path: Path) -> None:
    """Control for the tests below: a plain genconf request gets a normal, verified answer."""
    leaf = pki.ec.leaves["good"]
    der = genconf_request(tmp_path / "plain.der", pki.ec.ca.cert, leaf.serial)
    answer = post_ocsp(responder.port, der)
    run = check_response(answer.body, tmp_path, pki.ec.trust, pki.ec.ca.cert, [leaf.cert])
    assert_clean(run)
    assert run.status_of(leaf.cert).status == "good", run.output


@pytest.mark.parametrize("size", [1, 32, 128])
def test_nonce_of_1_to_128_octets_is_echoed(
    pki: Pki, responder: Responder, tmp_path: Path, size: int
) -> None:
    """RFC 9654: nonces of 1..128 octets are echoed."""
    nonce = bytes(range(256))[-size:]
    der = genconf_request(
        tmp_path / "nonce.der",
        pki.ec.ca.cert,
        pki.ec.leaves["good"].serial,
        [RequestExtension(NONCE_OID, False, nonce)],
    )
    parsed = _answer_to(responder, der)
    assert parsed.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    assert parsed.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == nonce


@pytest.mark.parametrize("size", [0, 129])
def test_nonce_outside_1_to_128_octets_is_malformed(
    pki: Pki, responder: Responder, tmp_path: Path, size: int
) -> None:
    """RFC 9654: an empty nonce or one over 128 octets -> malformedRequest."""
    der = genconf_request(
        tmp_path / "nonce.der",
        pki.ec.ca.cert,
        pki.ec.leaves["good"].serial,
        [RequestExtension(NONCE_OID, False, b"\x5a" * size)],
    )
    assert_ocsp_error(post_ocsp(responder.port, der), ocsp.OCSPResponseStatus.MALFORMED_REQUEST)


#: An unregistered OID under id-pkix-ocsp.
UNKNOWN_OID = "1.3.6.1.5.5.7.48.1.127"


def test_unknown_noncritical_extension_is_ignored(
    pki: Pki, responder: Responder, tmp_path: Path
) -> None:
    """An unknown non-critical request extension is ignored: a normal, verified answer."""
    leaf = pki.ec.leaves["good"]
    der = genconf_request(
        tmp_path / "odd.der",
        pki.ec.ca.cert,
        leaf.serial,
        [RequestExtension(UNKNOWN_OID, False, b"hello")],
    )
    answer = post_ocsp(responder.port, der)
    run = check_response(answer.body, tmp_path, pki.ec.trust, pki.ec.ca.cert, [leaf.cert])
    assert_clean(run)
    assert run.status_of(leaf.cert).status == "good", run.output
    assert all(ext.oid.dotted_string != UNKNOWN_OID for ext in answer.ocsp().extensions)


def test_unknown_critical_extension_is_malformed(
    pki: Pki, responder: Responder, tmp_path: Path
) -> None:
    """An unknown critical request extension -> malformedRequest (documented)."""
    der = genconf_request(
        tmp_path / "critical.der",
        pki.ec.ca.cert,
        pki.ec.leaves["good"].serial,
        [RequestExtension(UNKNOWN_OID, True, b"hello")],
    )
    assert_ocsp_error(post_ocsp(responder.port, der), ocsp.OCSPResponseStatus.MALFORMED_REQUEST)


def test_several_certids_get_a_wellformed_answer(
    pki: Pki, responder: Responder, tmp_path: Path
) -> None:
    """Two CertIDs in one request: a well-formed OCSP answer, HTTP 200, never a 5xx.

    The documented answer is malformedRequest.
    """
    certs = [pki.rsa.leaves["good-1"].cert, pki.rsa.leaves["keyCompromise"].cert]
    der = make_request(tmp_path / "two.der", pki.rsa.ca.cert, certs)
    answer = post_ocsp(responder.port, der)
    assert answer.status == 200, answer.describe()
    assert answer.ocsp().response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    run = query(responder.url, pki.rsa.trust, pki.rsa.ca.cert, certs=certs)
    assert run.responder_error == "malformedrequest", run.output


def test_signed_request_is_answered(pki: Pki, responder: Responder) -> None:
    """A request signed by the client (``-signer/-signkey``) is answered like any other."""
    client = pki.rsa.leaves["good-2"]
    leaf = pki.rsa.leaves["good-1"]
    run = query(
        responder.url,
        pki.rsa.trust,
        pki.rsa.ca.cert,
        certs=[leaf.cert],
        extra=["-signer", client.cert, "-signkey", client.key],
    )
    assert_clean(run)
    assert run.status_of(leaf.cert).status == "good", run.output


# ---------------------------------------------------------------- CRL source


def test_crl_source_revoked_entries(pki: Pki, responder: Responder) -> None:
    """Certificates listed in the configured CRLs are revoked with the CRL's time and reason."""
    rows = read_index(pki.crl.ca.index)
    for label in ("keyCompromise", "cessationOfOperation", "hold-instruction"):
        leaf = pki.crl.leaves[label]
        run = query(
            responder.url, pki.crl.trust, pki.crl.ca.cert, certs=[leaf.cert], digest="sha256"
        )
        assert_clean(run)
        status = run.status_of(leaf.cert)
        assert status.status == "revoked", run.output
        assert status.revocation_time == rows[leaf.serial].revocation_time, run.output
        assert status.reason == expected_ocsp_reason(rows[leaf.serial].reason), run.output


def test_crl_source_absent_is_good(pki: Pki, responder: Responder) -> None:
    """Not listed in any CRL -> good; a CRL cannot tell a never-issued serial from a valid one."""
    leaf = pki.crl.leaves["good"]
    never = max(read_index(pki.crl.ca.index)) + 0x1000
    for certs, serials, label in (([leaf.cert], [], leaf.cert), ([], [never], never)):
        run = query(responder.url, pki.crl.trust, pki.crl.ca.cert, certs=certs, serials=serials)
        assert_clean(run)
        assert run.status_of(label).status == "good", run.output
