"""--port ssl:... serves the same chat over TLS, as Twisted users expect, and
a mistake in its key or certificate is one sentence that names the file."""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import reactor, ssl
from twisted.internet.endpoints import clientFromString, serverFromString, wrapClientTLS
from twisted.internet.protocol import Factory
from twisted.python.usage import UsageError

from chatproto.server import ChatFactory
from chatproto.tap import Options
from tests.peer import Peer
from tests.test_twistd import FOREGROUND, assert_one_sentence, run_twistd

r: Any = reactor


def key_and_certificate(directory: Path, stem: str = "") -> tuple[Path, Path]:
    """A new key and a self-signed certificate for localhost, in two PEM
    files (STEMkey.pem, STEMcert.pem), as C{openssl req -x509} writes them."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
        .sign(key, hashes.SHA256())
    )
    key_file, cert_file = directory / f"{stem}key.pem", directory / f"{stem}cert.pem"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_file, cert_file


def self_signed(directory: Path) -> Path:
    """The key and its certificate in one file, server.pem."""
    key_file, cert_file = key_and_certificate(directory)
    pem = directory / "server.pem"
    pem.write_bytes(key_file.read_bytes() + cert_file.read_bytes())
    return pem


@pytest.mark.parametrize("layout", ["one file", "two files"])
@pytest_twisted.ensureDeferred
async def test_a_tls_endpoint_serves_the_chat(tmp_path: Path, layout: str) -> None:
    """The --port option accepts ssl:, with the key and the certificate in
    one file or (the README's recipe) two, and a TLS client registers and
    chats."""
    if layout == "one file":
        cert_file = self_signed(tmp_path)
        files = f"privateKey={cert_file}"
    else:
        key_file, cert_file = key_and_certificate(tmp_path)
        files = f"privateKey={key_file}:certKey={cert_file}"
    options = Options()
    options.parseOptions(["--port", f"ssl:0:{files}:interface=127.0.0.1"])
    factory = ChatFactory(options["config"], clock=r)
    port = await serverFromString(r, options["port"]).listen(factory)
    try:
        trust = ssl.Certificate.loadPEM(cert_file.read_bytes())
        tls = ssl.optionsForClientTLS("localhost", trustRoot=trust)

        async def user(nick: bytes) -> Peer:
            tcp = clientFromString(r, f"tcp:127.0.0.1:{port.getHost().port}")
            peer = await wrapClientTLS(tls, tcp).connect(Factory.forProtocol(Peer))
            assert isinstance(peer, Peer)
            peer.send(b"/pseudo " + nick + b"\n")
            await peer.until(b"=>" + nick + b"\n----------------------\n")
            peer.take()
            return peer

        alice = await user(b"alice")
        bob = await user(b"bob")
        alice.send(b"chiffr\xc3\xa9\n")
        assert (await bob.until(b"\xc3\xa9\n")).endswith(b"-alice: chiffr\xc3\xa9\n")
        for peer in (alice, bob):
            assert peer.transport is not None
            peer.transport.loseConnection()
            await peer.closed
    finally:
        await port.stopListening()


def tls_mistake(directory: Path, case: str) -> tuple[str, str]:
    """An ssl: endpoint with one mistake in its files, and the sentence
    that names it."""
    key_file, cert_file = key_and_certificate(directory)
    other_key, _ = key_and_certificate(directory, "other")
    garbage = directory / "garbage.pem"
    garbage.write_text("not a PEM file\n")
    encrypted = directory / "encrypted.pem"
    encrypted.write_bytes(
        serialization.load_pem_private_key(key_file.read_bytes(), None).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    missing = directory / "missing.pem"
    return {
        "missing key": (
            f"ssl:0:privateKey={missing}:certKey={cert_file}",
            f"cannot read privateKey={missing}: No such file or directory.",
        ),
        "missing certificate": (
            f"ssl:0:privateKey={key_file}:certKey={missing}",
            f"cannot read certKey={missing}: No such file or directory.",
        ),
        "unreadable key": (
            f"ssl:0:privateKey={directory}:certKey={cert_file}",
            f"cannot read privateKey={directory}: Is a directory.",
        ),
        "mismatched": (
            f"ssl:0:privateKey={other_key}:certKey={cert_file}",
            f"the private key in {other_key} is not the certificate's in "
            f"{cert_file}: give the key the certificate was made with.",
        ),
        "certificate not PEM": (
            f"ssl:0:privateKey={key_file}:certKey={garbage}",
            f"{garbage} (certKey=) holds no PEM certificate.",
        ),
        "key not PEM": (
            f"ssl:0:privateKey={garbage}:certKey={cert_file}",
            f"{garbage} (privateKey=) holds no PEM private key.",
        ),
        "key alone": (  # the certificate is looked for in the key's file
            f"ssl:0:privateKey={key_file}",
            f"{key_file} holds no PEM certificate; give the certificate's file "
            "as certKey= (ssl:7443:privateKey=key.pem:certKey=cert.pem).",
        ),
        "encrypted key": (
            f"ssl:0:privateKey={encrypted}:certKey={cert_file}",
            f"the private key in {encrypted} is encrypted; write it unencrypted "
            f"(openssl pkey -in {encrypted} -out key.pem) and keep it private.",
        ),
    }[case]


TLS_MISTAKES = [
    "missing key",
    "missing certificate",
    "unreadable key",
    "mismatched",
    "certificate not PEM",
    "key not PEM",
    "key alone",
    "encrypted key",
]


@pytest.mark.parametrize("case", TLS_MISTAKES)
@pytest.mark.parametrize("option", ["--port", "--web"])
def test_a_bad_key_or_certificate_is_one_sentence_naming_the_file(
    tmp_path: Path, case: str, option: str
) -> None:
    endpoint, sentence = tls_mistake(tmp_path, case)
    with pytest.raises(UsageError) as raised:
        Options().parseOptions([option, endpoint])
    assert str(raised.value) == f"{option}: {sentence}"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_a_key_without_read_permission_is_one_sentence(tmp_path: Path) -> None:
    key_file, cert_file = key_and_certificate(tmp_path)
    key_file.chmod(0)
    with pytest.raises(UsageError) as raised:
        Options().parseOptions(
            ["--port", f"ssl:0:privateKey={key_file}:certKey={cert_file}"]
        )
    assert str(raised.value) == (
        f"--port: cannot read privateKey={key_file}: Permission denied."
    )


@pytest.mark.parametrize("case", ["key alone", "mismatched"])
def test_twistd_ends_a_bad_key_with_one_line_and_status_2(
    tmp_path: Path, case: str
) -> None:
    """As a user runs it: the sentence alone on stderr, no traceback."""
    endpoint, sentence = tls_mistake(tmp_path, case)
    result = run_twistd(tmp_path, *FOREGROUND, "chat", "--port", endpoint)
    assert_one_sentence(result, f"twistd chat: --port: {sentence}\n", 2)
    assert result.stderr == f"twistd chat: --port: {sentence}\n".encode()
    assert result.stdout == b""
