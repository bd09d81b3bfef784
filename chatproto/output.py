"""How bytes leave the server for one connection.

An L{Output} is a connection's only write path: the session's lines, the
fan-out's public lines, C{sendLine}, the last lines before a close. Bytes
leave in the order they were written, whichever way each goes (straight to
the socket, or through Twisted's buffer). It is also the transport's
producer: Twisted tells it when the peer stops taking what is sent, and it
cuts a reader that stays too far behind.

What it reads of Twisted's file-descriptor transports beyond their
documented interface (how much one holds, its socket) it reads through
chatproto/_twisted.py, the one module that does.
"""

from __future__ import annotations

import contextlib
import socket
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from zope.interface import implementer

from chatproto._twisted import direct_socket, holds, socket_of, unsent

if TYPE_CHECKING:
    from chatproto.config import ServerConfig

# A client whose transport holds more than max_output is cut once that has
# lasted OUTPUT_GRACE seconds, or at once past OUTPUT_HARD_LIMIT times it.
OUTPUT_GRACE = 1.0
OUTPUT_HARD_LIMIT = 4


def send_buffer(max_output: int) -> int:
    """The kernel's send buffer for one connection (SO_SNDBUF), fixed.

    Left to itself, Linux grows it up to tcp_wmem's maximum (4 MiB) for a
    client that stopped reading, beyond what max_output lets the server hold:
    200 stalled readers pinned 753 MiB of kernel memory. A quarter of
    max_output, between 64 and 256 KiB (the kernel reserves twice that for
    its overhead), keeps what a stalled reader costs, kernel and server
    together, within a small multiple of max_output, and still carries
    2.5 MB/s to a client 100 ms away: far more than a chat sends."""
    return min(256 * 1024, max(64 * 1024, max_output // 4))


def write_to(transport: Any, sock: socket.socket | None, data: bytes) -> None:
    """Write bytes to a Twisted transport, in order: straight to C{sock}, the
    socket of a plain TCP transport, while Twisted holds nothing for it
    (what the kernel does not take, Twisted sends later, after it), and
    through the transport otherwise (C{sock} None: TLS, a test's, a closing
    connection).

    A plain Twisted write to an idle TCP transport costs three system calls:
    two to watch the socket for writability and back, and the send.
    Profiled under load, the first two were a quarter of the server's time.
    Twisted's buffer is read at every write (L{holds}), so that bytes others
    wrote through the transport (a WebSocket's own frames) are never
    overtaken."""
    if sock is not None and not holds(transport):
        try:
            sent = sock.send(data)
        except OSError:  # full, or broken: Twisted's own write finds out
            sent = 0
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)


class Transport(Protocol):
    """What an Output uses of its transport (TCP, TLS, UNIX, or a test's)."""

    def write(self, data: bytes) -> None: ...
    def loseConnection(self) -> None: ...
    def abortConnection(self) -> None: ...
    def registerProducer(self, producer: object, streaming: bool) -> None: ...
    def getPeer(self) -> object: ...


class Owner(Protocol):
    """Who an Output tells that its reader fell too far behind."""

    def overflowed(self, backlog: int) -> None: ...


class Limits(Protocol):
    """Where an Output or an Inbox reads its limits and the time (the
    room)."""

    config: ServerConfig
    clock: IReactorTime


@implementer(IPushProducer)
class Output:
    """The write path of one connection.

    Invariants: every byte written to the connection after L{open} goes
    through L{write} or L{close}, so they leave in order (see L{write_to});
    C{_socket} is set only for a plain TCP transport that is open, and
    C{_held} is true whenever Twisted may hold bytes for it (then writes go
    through Twisted, behind them); once closing, nothing more is written.
    """

    # One per connection, 10,000 of them: slots, not a dictionary each (and
    # the socket, not its bound send method: 72 bytes less each).
    __slots__ = (
        "_backlog",
        "_closing_call",
        "_held",
        "_over_since",
        "_socket",
        "congested",
        "limits",
        "owner",
        "transport",
    )

    def __init__(self, transport: Transport, limits: Limits) -> None:
        self.transport = transport
        self.limits = limits
        self.owner: Owner | None = None
        self.congested = False  # the transport's buffer is full: count
        self._socket: socket.socket | None = None  # write straight to it
        self._held = False  # Twisted may hold bytes for the socket
        self._backlog = 0
        self._over_since: float | None = None
        self._closing_call: IDelayedCall | None = None

    def open(self, owner: Owner) -> None:
        """The connection is admitted: become its producer, fix its send
        buffer, and write straight to its socket if it is plain TCP."""
        self.owner = owner
        transport = self.transport
        transport.registerProducer(self, True)
        self._socket = direct_socket(transport)
        handle = socket_of(transport)
        if handle is not None:  # TCP, TLS over TCP, UNIX
            with contextlib.suppress(OSError):
                handle.setsockopt(
                    socket.SOL_SOCKET,
                    socket.SO_SNDBUF,
                    send_buffer(self.limits.config.max_output),
                )

    def write(self, data: bytes) -> None:
        """Write bytes, keeping their order: straight to the socket of a
        plain TCP connection while Twisted holds nothing for it (what the
        kernel does not take, Twisted sends later), through the transport
        otherwise (TLS, a test's, a closing connection).

        L{write_to}, unrolled: only this Output writes to a plain TCP
        transport (L{close} stops the direct path first), so Twisted can
        hold bytes for it only after a write the kernel did not take all of
        (C{_held}); until then its buffer is not read. Reading it at every
        write cost 150 to 290 ns a write on a socketpair, and 5 to 6% of the
        server's CPU per delivery at 1 line/s (docs/architecture.md, "The
        held flag")."""
        sock = self._socket
        if sock is not None:
            if self._held:
                self._held = holds(self.transport)
            if not self._held:
                try:
                    sent = sock.send(data)
                except OSError:  # full, or broken: Twisted's own write finds out
                    sent = 0
                if sent == len(data):
                    if self.congested:
                        self._wrote_while_congested(sent)
                    return
                data = data[sent:]
                self._held = True
        self.transport.write(data)
        if self.congested:
            self._wrote_while_congested(len(data))

    def wrote(self, size: int) -> None:
        """Another writer put C{size} bytes in this connection's transport
        (a WebSocket's pongs, which Twisted writes itself): they count
        against max_output as this Output's own do."""
        if self.congested:
            self._wrote_while_congested(size)

    def _wrote_while_congested(self, size: int) -> None:
        """Cut the client if what its transport holds stayed above max_output
        for OUTPUT_GRACE seconds, or passed OUTPUT_HARD_LIMIT times it: a
        reader that keeps up drains one busy turn's burst in that time."""
        self._backlog += size
        held = unsent(self.transport)
        if held is None:
            held = self._backlog
        limit = self.limits.config.max_output
        if held <= limit:
            self._over_since = None
            return
        now = self.limits.clock.seconds()
        if self._over_since is None:
            self._over_since = now
        if held > OUTPUT_HARD_LIMIT * limit or now - self._over_since >= OUTPUT_GRACE:
            self.congested = False  # cut once
            if self.owner is not None:
                self.owner.overflowed(self._backlog)

    def talking(self) -> None:
        """Turn Nagle's algorithm off for this connection (TCP_NODELAY).

        With it on, the kernel holds a small write back until the client
        acknowledges the previous one. A client that only reads acknowledges
        at once, so holding costs it nothing and saves segments; a client
        that also sends delays its acknowledgements, hoping to carry them on
        its next line (40 ms on Linux, 200 ms elsewhere), and every line to
        it would wait that long. So talkers, once they talk, get each write
        at once (--nodelay talkers, the default). The session calls it
        once."""
        set_nodelay = getattr(self.transport, "setTcpNoDelay", None)
        if set_nodelay is not None:
            with contextlib.suppress(OSError):  # closing under us
                set_nodelay(True)

    def close(self, *lines: bytes) -> None:
        """Write the last lines, then close once they are sent, or abort
        after close_timeout (a peer that does not read them)."""
        self._socket = None  # from now on, the transport sends and closes
        self.congested = False
        for line in lines:
            self.transport.write(line)
        if self._closing_call is None:
            limits = self.limits
            self._closing_call = limits.clock.callLater(
                limits.config.close_timeout, self.transport.abortConnection
            )
        self.transport.loseConnection()

    def abort(self) -> None:
        """Disconnect at once, without flushing (a dead or stuck peer)."""
        self._socket = None
        self.congested = False
        self.transport.abortConnection()

    def lost(self) -> None:
        """The connection is closed: nothing more is written."""
        self._socket = None
        self.congested = False
        self.owner = None
        call, self._closing_call = self._closing_call, None
        if call is not None and call.active():
            call.cancel()

    # IPushProducer: the transport tells us when its buffer fills and empties.

    def pauseProducing(self) -> None:
        """The transport's buffer passed its size (64 KiB): from now on each
        write checks how much it holds."""
        if self.owner is None:
            return
        self.congested = True
        self._backlog = unsent(self.transport) or 0

    def resumeProducing(self) -> None:
        """The transport has sent everything it held."""
        self.congested = False
        self._backlog = 0
        self._over_since = None

    def stopProducing(self) -> None:
        """The connection is going away; connectionLost does the rest."""
