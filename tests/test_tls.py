"""--port ssl:... serves the same chat over TLS, as Twisted users expect."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import reactor, ssl
from twisted.internet.endpoints import clientFromString, serverFromString, wrapClientTLS
from twisted.internet.protocol import Factory

from chatproto.server import ChatFactory
from chatproto.tap import Options
from tests.peer import Peer

r: Any = reactor


def self_signed(directory: Path) -> Path:
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
    pem = directory / "server.pem"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        + cert.public_bytes(serialization.Encoding.PEM)
    )
    return pem


@pytest_twisted.ensureDeferred
async def test_a_tls_endpoint_serves_the_chat(tmp_path: Path) -> None:
    """The --port option accepts ssl:, and a TLS client registers and chats."""
    pem = self_signed(tmp_path)
    options = Options()
    options.parseOptions(["--port", f"ssl:0:privateKey={pem}:interface=127.0.0.1"])
    factory = ChatFactory(options["config"], clock=r)
    port = await serverFromString(r, options["port"]).listen(factory)
    try:
        trust = ssl.Certificate.loadPEM(pem.read_bytes())
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
