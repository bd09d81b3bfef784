"""--port ssl:... serves the same chat over TLS, as Twisted users expect, and
a mistake in its key or certificate is one sentence that names the file."""

from __future__ import annotations

import datetime
import os
import socket
import ssl as stdlib_ssl
import subprocess
import sys
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
from tests.test_twistd import (
    FOREGROUND,
    ROOT,
    WELCOME,
    assert_one_sentence,
    free_port,
    run_twistd,
    running,
)

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


# Without TLS support installed (pyOpenSSL and cryptography: Twisted's tls
# extra), an ssl: endpoint is one sentence naming what to install.
NO_TLS = (
    "serving TLS needs pyOpenSSL and cryptography, and this Python cannot "
    "import them (import of twisted.internet.ssl halted; None in sys.modules): "
    "pip install 'twisted[tls]'."
)


@pytest.mark.parametrize("option", ["--port", "--web", "--metrics"])
def test_an_ssl_endpoint_without_tls_support_says_what_to_install(
    tmp_path: Path, option: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "twisted.internet.ssl", None)
    key_file, cert_file = key_and_certificate(tmp_path)
    with pytest.raises(UsageError) as raised:
        Options().parseOptions(
            [option, f"ssl:0:privateKey={key_file}:certKey={cert_file}"]
        )
    assert str(raised.value) == f"{option}: {NO_TLS}"


def test_twistd_without_tls_support_ends_an_ssl_endpoint_with_one_line(
    tmp_path: Path,
) -> None:
    """As a user without pyOpenSSL runs it (here: its import blocked)."""
    key_file, cert_file = key_and_certificate(tmp_path)
    endpoint = f"ssl:0:privateKey={key_file}:certKey={cert_file}"
    without_openssl = (
        "import sys; sys.modules['OpenSSL'] = None; "
        f"sys.argv = ['twistd', *{[*FOREGROUND, 'chat', '--port', endpoint]!r}]; "
        "from twisted.scripts.twistd import run; run()"
    )
    result = subprocess.run(
        [sys.executable, "-c", without_openssl],
        cwd=tmp_path,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    sentence = NO_TLS.replace("twisted.internet.ssl", "OpenSSL")
    assert_one_sentence(result, f"twistd chat: --port: {sentence}\n", 2)
    assert result.stderr == f"twistd chat: --port: {sentence}\n".encode()


def mapped(pid: int) -> str:
    """The files a process has mapped: its shared libraries among them,
    each C extension it has imported (cryptography's _rust, _sqlite3)."""
    return Path(f"/proc/{pid}/maps").read_text()


needs_proc = pytest.mark.skipif(
    not Path("/proc/self/maps").exists(), reason="reads /proc/PID/maps"
)


@needs_proc
def test_twistd_serves_tls_with_pyopenssl_loaded(tmp_path: Path) -> None:
    """Under twistd, an ssl: endpoint serves the chat to a TLS client, and
    the server has cryptography loaded (the other test's check can fail)."""
    key_file, cert_file = key_and_certificate(tmp_path)
    port = free_port()
    endpoint = (
        f"ssl:{port}:interface=127.0.0.1:privateKey={key_file}:certKey={cert_file}"
    )
    with running(tmp_path, port, "--port", endpoint, "--store", "none") as (proc, _):
        context = stdlib_ssl.create_default_context(cafile=str(cert_file))
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            received = b""
            while WELCOME not in received:
                chunk = tls.recv(4096)
                assert chunk, f"closed; received {received!r}"
                received += chunk
        assert received.startswith(WELCOME)
        assert "/cryptography/" in mapped(proc.pid)


@needs_proc
@pytest.mark.parametrize("web", [False, True])
def test_twistd_without_an_ssl_endpoint_loads_no_tls(tmp_path: Path, web: bool) -> None:
    """A server that serves no TLS has neither pyOpenSSL nor cryptography
    loaded (14 MiB resident), with or without its web front end, whose
    Twisted imports them when it can; nor sqlite3 with --store none."""
    port = free_port()
    args = ["--port", f"tcp:{port}:interface=127.0.0.1", "--store", "none"]
    if web:
        args += ["--web", f"tcp:{free_port()}:interface=127.0.0.1"]
    with running(tmp_path, port, *args) as (proc, _):
        files = mapped(proc.pid)
    assert "/lib-dynload/" in files or "libpython" in files  # the maps are read
    assert "/cryptography/" not in files
    assert "_sqlite3" not in files
