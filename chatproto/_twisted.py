"""The one module that reads or replaces attributes of Twisted's objects
that are no documented interface (but for the server's reactor, a
subclass of Twisted's epoll reactor: chatproto/_reactor.py).

Each is worth its risk (speed, a limit Twisted lacks, a sentence instead
of a traceback), and each is touched by one function here, whose docstring
names the attributes it relies on. tests/test_twisted_contract.py checks
every one of them with the Twisted that is installed, on real connections
where it takes one, and CI runs it on the lowest Twisted setup.cfg allows
and on the latest, so that a release that changes them fails a test before
it fails a user.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import types
from collections.abc import Sequence
from importlib import import_module
from typing import Any


def unsent(transport: object) -> int | None:
    """How many bytes a transport holds that the kernel has not taken yet.

    Twisted's file-descriptor transports (TCP and UNIX, and TLS over them,
    under its C{transport}) keep this in C{dataBuffer}, C{offset} and
    C{_tempDataLen}; it is read only after the transport said its buffer is
    full. For a transport without them (a test's), None: the caller counts
    what it wrote since.
    """
    for layer in (transport, getattr(transport, "transport", None)):
        buffer = getattr(layer, "dataBuffer", None)
        if buffer is not None:
            pending: int = len(buffer) - layer.offset + layer._tempDataLen  # type: ignore[union-attr]
            return pending
    return None


def holds(transport: Any) -> bool:
    """Whether a plain TCP transport (one L{direct_socket} gave a socket
    for) holds bytes it has not handed to the kernel yet: its
    C{dataBuffer} or C{_tempDataLen}. A direct write must then wait behind
    them."""
    return bool(transport.dataBuffer or transport._tempDataLen)


# twisted.internet.tcp's Connection, once direct_socket has imported it.
_tcp_connection: type | None = None


def direct_socket(transport: object) -> socket.socket | None:
    """The socket to write to straight: a plain TCP transport's (a
    L{tcp.Connection} whose C{TLS} is false: its C{socket}); None for any
    other (TLS, UNIX, a test's)."""
    global _tcp_connection
    if _tcp_connection is None:
        # Imported at the first connection, once the server has chosen how
        # (see import_without_tls); and kept: an import statement here cost
        # 1 us a connection, 5% of a herd's registrations (py-spy).
        from twisted.internet import tcp

        _tcp_connection = tcp.Connection
    if isinstance(transport, _tcp_connection) and not transport.TLS:  # type: ignore[attr-defined]
        sock: socket.socket = transport.socket  # type: ignore[attr-defined]
        return sock
    return None


# The two strings that name a connection, by its protocol's class: see
# share_labels.
_labels: dict[type, tuple[str, str]] = {}


def share_labels(transport: object, protocol: object) -> None:
    """Make the two strings that name a TCP server transport shared by
    every connection of C{protocol}'s class.

    Twisted's C{tcp.Server} makes two for each connection: C{logstr}
    (what C{logPrefix()} gives: the system of the events logged in its
    callbacks, C{ChatServerProtocol,1234,192.0.2.1}) and C{repstr} (what
    C{repr} gives, C{<ChatServerProtocol #1234 on 7000>}), 166 bytes a
    connection (bench/memory.py), 1.6 MiB for 10,000 idle users; chatproto
    logs its own events with the nickname and the address. They become
    C{ChatServerProtocol} and C{<ChatServerProtocol connection>}. A
    transport without both as strings (TLS, UNIX, a test's) is left as it
    is. (Not read through C{vars()}: that would make the instance's
    dictionary, 63 bytes more.)"""
    if not (
        isinstance(getattr(transport, "repstr", None), str)
        and isinstance(getattr(transport, "logstr", None), str)
    ):
        return
    kind = type(protocol)
    labels = _labels.get(kind)
    if labels is None:
        name = kind.__name__
        labels = _labels[kind] = (name, f"<{name} connection>")
    transport.logstr, transport.repstr = labels  # type: ignore[attr-defined]


def socket_of(transport: object) -> Any:
    """The socket under a transport, for its options: the C{socket} of a
    TCP or UNIX transport, or of the one under a TLS layer (its
    C{transport}); None for any other (a test's)."""
    return getattr(transport, "socket", None) or getattr(
        getattr(transport, "transport", None), "socket", None
    )


def replace_message_buffers(websocket: Any, text: object, binary: object) -> None:
    """Put C{text} and C{binary} in place of the message buffers of
    Twisted's WebSocket wire protocol (C{twisted.web.websocket}'s
    transport), its private C{_textBuffer} and C{_bytesBuffer}: each
    fragment of a message goes to the buffer's C{add}, and the whole
    message is taken from its C{done}. Raise AttributeError, replacing
    nothing, if this Twisted has no such buffers."""
    if not (hasattr(websocket, "_textBuffer") and hasattr(websocket, "_bytesBuffer")):
        raise AttributeError("_textBuffer")
    websocket._textBuffer = text
    websocket._bytesBuffer = binary


def endpoint_address(endpoint: object) -> tuple[str, int] | None:
    """The interface and the port number a server endpoint will listen on:
    C{_interface} and C{_port} of the TCP, TCP6 and SSL endpoints that
    C{serverFromString} makes (the port as given: Twisted accepts any
    integer); None for any other (a UNIX socket)."""
    port = getattr(endpoint, "_port", None)
    interface = getattr(endpoint, "_interface", None)
    if not isinstance(port, int) or not isinstance(interface, str):
        return None
    return interface, port


# What imports pyOpenSSL (and with it cryptography) as Twisted starts: its
# TCP transport (for startTLS), its reactors' base class (for listenSSL and
# connectSSL) and its endpoints (for ssl: and tls:).
TLS_IMPORTERS = (
    "twisted.internet.tcp",
    "twisted.internet.posixbase",
    "twisted.internet.endpoints",
)


def import_without_tls(names: Sequence[str] = TLS_IMPORTERS) -> bool:
    """Import the modules C{names} with pyOpenSSL kept out, if it is not
    imported yet; return whether they all were.

    Each of C{TLS_IMPORTERS} (and others of Twisted: twisted.web.client,
    which twisted.web.websocket imports) imports pyOpenSSL when it can and
    does without it when it cannot (C{try: ... except ImportError}), and
    pyOpenSSL brings in cryptography: some 14 MiB resident in a server
    that serves no TLS. A C{None} in C{sys.modules} makes an import fail
    (the import system's documented way to block one); it is taken away
    again at once, so that a later import of pyOpenSSL works. But these
    modules stay without TLS for the life of the process: tcp's
    C{Connection} has no C{startTLS} and its C{TLS} stays false, the
    reactor has no C{listenSSL} (posixbase's C{tls} and C{ssl} are None),
    and the endpoints make no C{ssl:} or C{tls:} endpoint. So only a
    process that will serve no TLS calls this, before anything imports
    them.

    Nothing is kept out when pyOpenSSL is already imported (a test run, a
    reactor chosen with C{twistd --reactor}). A module that cannot be
    imported without pyOpenSSL (a later Twisted's), or not at all, is left
    out: it is imported as usual, or fails, where it is needed."""
    if "OpenSSL" in sys.modules:
        return False
    sys.modules["OpenSSL"] = None  # type: ignore[assignment]
    try:
        for name in names:
            with contextlib.suppress(ImportError):
                import_module(name)
    finally:
        if "OpenSSL" in sys.modules and sys.modules["OpenSSL"] is None:
            del sys.modules["OpenSSL"]
    return all(name in sys.modules for name in names)


# What txredisapi imports of Twisted's TLS at its top: twisted.internet.ssl
# (for ClientContextFactory, in annotations and when a connection asks for
# TLS) and twisted.protocols.tls (for TLSMemoryBIOFactory, in its TLS
# endpoint). Both import pyOpenSSL unconditionally. chatproto's Redis
# connections are plain: chatproto/_redis.py makes its own endpoints and
# never asks txredisapi for TLS.
REDIS_TLS_MODULES = ("twisted.internet.ssl", "twisted.protocols.tls")


class WithoutTLS:
    """What a placeholder of L{import_with_tls_placeholders} gives for any
    name: a class that cannot be made."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise RuntimeError("TLS was kept out of this process (chatproto._twisted)")


class _Placeholder(types.ModuleType):
    """A module whose every public name is L{WithoutTLS}."""

    def __getattr__(self, name: str) -> type[WithoutTLS]:
        if name.startswith("__"):
            raise AttributeError(name)
        return WithoutTLS


def import_with_tls_placeholders(
    name: str, placeholders: Sequence[str] = REDIS_TLS_MODULES
) -> bool:
    """Import the module C{name} with pyOpenSSL kept out, and the modules
    C{placeholders} (which cannot be imported without it) standing in as
    placeholders for the length of that import; return whether it was
    imported so.

    For txredisapi, which imports Twisted's TLS at its top but uses it only
    for a connection that asks for TLS: a cluster node keeps some 14 MiB of
    pyOpenSSL and cryptography out, as a server alone does
    (L{import_without_tls}, which must come first). The placeholders leave
    C{sys.modules} with the import, so that a later import of the real
    modules works (pyOpenSSL and all); txredisapi keeps them as its own
    names, whose every attribute is L{WithoutTLS}. Nothing is kept out when
    pyOpenSSL or one of C{placeholders} is imported already."""
    if "OpenSSL" in sys.modules or any(p in sys.modules for p in placeholders):
        import_module(name)
        return False
    sys.modules["OpenSSL"] = None  # type: ignore[assignment]
    for placeholder in placeholders:
        sys.modules[placeholder] = _Placeholder(placeholder)
    try:
        import_module(name)
    finally:
        for placeholder in placeholders:
            if isinstance(sys.modules.get(placeholder), _Placeholder):
                del sys.modules[placeholder]
        if "OpenSSL" in sys.modules and sys.modules["OpenSSL"] is None:
            del sys.modules["OpenSSL"]
    return "OpenSSL" not in sys.modules
