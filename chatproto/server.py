"""The chat server: the wire protocol of docs/protocol.md and the factory it shares.

L{ChatServerProtocol} frames, limits and dispatches one connection's lines;
L{ChatFactory} holds what connections share: the configuration, the clock,
the registry of nicknames, the local sessions and the one ping loop.
"""

from __future__ import annotations

import collections
import contextlib
import enum
import functools
import ipaddress
import socket
import time
from collections.abc import Callable
from typing import Any, ClassVar, Protocol, cast

from twisted.internet import tcp
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import (
    IDelayedCall,
    IHalfCloseableProtocol,
    IReactorTime,
)
from twisted.internet.protocol import ServerFactory
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from chatproto import wire
from chatproto.config import ServerConfig
from chatproto.registry import (
    MemoryRegistry,
    NicknameTaken,
    Reach,
    Registry,
    RegistryUnavailable,
    nick_key,
    valid_nickname,
)
from chatproto.text import clean

log = Logger()

# Public lines made in one reactor turn are written together, but a batch
# goes out early when it reaches either bound: what each user is handed at
# once, and what each sender's copy (the batch less its own lines) costs,
# stay small.
BATCH_LINES = 64
BATCH_BYTES = 64 * 1024


# A client whose transport holds more than max_output is cut once that has
# lasted OUTPUT_GRACE seconds, or at once past OUTPUT_HARD_LIMIT times it.
OUTPUT_GRACE = 1.0
OUTPUT_HARD_LIMIT = 4

# An unregistered connection makes room for a newcomer only once it has been
# connected this long. A herd of honest clients reconnecting at once (a
# restart) must not evict each other before they had time to register, which
# takes them a round trip or two; a squatter, which never registers, is old.
EVICTION_GRACE = 10.0


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


# Inbox entries that stand for an over-long line, which is not kept: it costs
# flood tokens like any line (one per max_line bytes), and its sender gets one
# error line when its turn comes. A real line never holds a newline, so these
# are never mistaken for one.
TOO_LONG = b"\n"  # an over-long line: one error line
STILL_TOO_LONG = b"\n\n"  # max_line more bytes of one: a token, nothing said


class Relay(Protocol):
    """Carries lines to the users of other server processes (cluster mode)."""

    def publish(self, line: bytes) -> None:
        """Deliver a public line to every user on the other nodes."""

    def whisper(self, target: str, line: bytes) -> Deferred[bool]:
        """Deliver a private line to C{target} on whichever node has it;
        fire with whether such a user exists."""


class Transport(Protocol):
    """What the protocol uses of its transport (TCP, TLS, UNIX, or a test's)."""

    def write(self, data: bytes) -> None: ...
    def loseConnection(self) -> None: ...
    def abortConnection(self) -> None: ...
    def registerProducer(self, producer: object, streaming: bool) -> None: ...
    def getPeer(self) -> object: ...


def unsent(transport: object) -> int | None:
    """How many bytes a transport holds that the kernel has not taken yet.

    Twisted's file-descriptor transports (TCP and UNIX, and TLS over them)
    keep this in C{dataBuffer}, C{offset} and C{_tempDataLen}; it is read
    only after the transport said its buffer is full. For a transport
    without them (a test's), None: the caller counts what it wrote since.
    """
    for layer in (transport, getattr(transport, "transport", None)):
        buffer = getattr(layer, "dataBuffer", None)
        if buffer is not None:
            pending: int = len(buffer) - layer.offset + layer._tempDataLen  # type: ignore[union-attr]
            return pending
    return None


def source(host: str | None) -> str | None:
    """Where a connection comes from, for the per-address limits: its IPv4
    address, or the /64 of its IPv6 address (what one subscriber is usually
    given: 2**64 addresses to pick from, one at a time)."""
    if host is None or ":" not in host:
        return host
    try:
        address = ipaddress.IPv6Address(host.partition("%")[0])
    except ValueError:
        return host
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((address, 64), strict=False))


@functools.lru_cache(maxsize=4096)
def network(host: str | None, prefix: int, prefix6: int) -> str | None:
    """The network a source() is in, for the per-network limit: its IPv4
    /C{prefix}, or its IPv6 /C{prefix6} (at most the /64 source() keeps),
    as C{192.0.2.0/24} or C{2001:db8:1::/48}. A host that is not an address
    (a test's; a UNIX socket's None) is its own network.

    Called when a connection comes and when it goes, for hosts that come
    back: cached. Computed with the socket module's functions rather than
    ipaddress's objects (measured: 2-5 us a call, against 13 for IPv4 and
    42 for IPv6)."""
    if host is None:
        return None
    address, _, length = host.partition("/")
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        packed = socket.inet_pton(family, address)
        given = int(length) if length else 128
    except (OSError, ValueError):
        return host
    width = 8 * len(packed)
    bits = max(0, min(prefix if family == socket.AF_INET else prefix6, given, width))
    number = int.from_bytes(packed, "big") >> (width - bits) << (width - bits)
    return f"{socket.inet_ntop(family, number.to_bytes(len(packed), 'big'))}/{bits}"


class ChatError(Exception):
    """A request the server refuses; its text is sent to the requester."""


class State(enum.Enum):
    WELCOMED = "welcomed"  # connected, has not asked for a nickname
    NAMING = "naming"  # sent /pseudo: the next line is the nickname
    JOINING = "joining"  # the registry is deciding on the nickname
    CHATTING = "chatting"  # registered
    GONE = "gone"  # left, kicked or disconnected: nothing more is written


@implementer(IHalfCloseableProtocol)
class ChatServerProtocol(LineReceiver):
    """One client's connection.

    Lines are cut on C{\\n} (one trailing C{\\r} is dropped), refused beyond
    C{max_line} bytes, and then wait in a small inbox that a token bucket
    drains: a burst, then a steady rate. Pongs skip the inbox. The transport
    is told we are its producer, so that when it stops being able to send we
    learn it, and count what piles up behind a client that stopped reading.
    """

    delimiter = b"\n"
    factory: ChatFactory
    transport: Transport  # type: ignore[assignment]

    nick: str | None = None
    state = State.WELCOMED
    missed_pings = 0
    host: str | None = None  # its source(): what per-address limits count

    _buffer = b""
    _discarding = False  # inside an over-long line: skip to its end
    _discarded = 0  # bytes of it skipped and not yet counted as a line
    _busy = False  # a registry call is under way: lines wait for it
    _draining = False
    _ended = False  # the client closed its side: it quits after its lines
    _nodelay = False  # TCP_NODELAY set on the transport
    _send: Callable[[bytes], int] | None = None  # see connectionMade
    _seen = -1  # the number of the last public line given; -1: not a member
    _held = False  # Twisted may hold bytes for this client: write through it
    _congested = False
    _backlog = 0
    _tokens = 0.0
    _refilled = 0.0
    _over_since: float | None = None
    _drain_call: IDelayedCall | None = None
    _registration_call: IDelayedCall | None = None
    _closing_call: IDelayedCall | None = None

    # Lines waiting their turn: a list only while there are some, as most
    # connections are idle most of the time (10,000 empty lists: 560 KB).
    _inbox: list[bytes] | None = None

    def __init__(self) -> None:
        # Every attribute a connection will set, set here in one order: an
        # instance that adds attributes late, or in another order, gets a
        # dictionary of its own (measured: 416 bytes more per user).
        self.factory = cast(ChatFactory, None)
        self.connected = 0
        self.transport = cast(Transport, None)
        self.host = None
        self.nick = None
        self.state = State.WELCOMED
        self.missed_pings = 0
        self._tokens = 0.0
        self._refilled = 0.0
        self._registration_call = None
        self._buffer = b""
        self._discarding = False
        self._discarded = 0
        self._inbox = None
        self._draining = False
        self._ended = False
        self._busy = False
        self._nodelay = False
        self._send = None
        self._held = False
        self._seen = -1

    # Connection life

    def connectionMade(self) -> None:
        factory = self.factory
        self.host = source(getattr(self.transport.getPeer(), "host", None))
        refusal = factory.admit(self)
        if refusal is not None:
            self.state = State.GONE
            self._close(refusal)
            return
        config = factory.config
        self._refilled = factory.clock.seconds()
        self._tokens = factory.tokens_for(self.host, self._refilled)
        self.transport.registerProducer(self, True)
        transport = self.transport
        if isinstance(transport, tcp.Connection) and not transport.TLS:
            # A plain Twisted write to an idle TCP transport costs three
            # system calls: two to watch the socket for writability and
            # back, and the send. Profiled under load, the first two were a
            # quarter of the server's time: write() sends straight to the
            # socket whenever Twisted holds nothing for it.
            self._send = transport.socket.send
        handle = getattr(transport, "socket", None) or getattr(
            getattr(transport, "transport", None), "socket", None
        )
        if handle is not None:  # TCP, TLS over TCP, UNIX
            with contextlib.suppress(OSError):
                handle.setsockopt(
                    socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer(config.max_output)
                )
        if config.nodelay == "all":
            self._send_at_once()
        if config.registration_timeout > 0:
            self._registration_call = factory.clock.callLater(
                config.registration_timeout, self._registration_expired
            )
        self.send(wire.WELCOME)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._send = None
        self._leave()
        if self._refilled:  # admitted: what it spent of its burst stays spent
            self.factory.remember_tokens(self.host, self._tokens, self._refilled)
        self.state = State.GONE
        for call in (self._drain_call, self._registration_call, self._closing_call):
            if call is not None and call.active():
                call.cancel()
        self._drain_call = self._registration_call = self._closing_call = None
        self._inbox = None
        self.factory.congested.discard(self)
        self.factory.forget(self)

    # Output

    def send(self, data: bytes) -> None:
        """Write bytes to this client, unless it is gone or too far behind.

        Public lines this client has not been given yet go first, so that
        it sees every line in the order the server made them."""
        if self.state is State.GONE:
            return
        self.factory.catch_up(self)
        self.write(data)
        if self._congested:
            self.wrote_while_congested(len(data))

    def write(self, data: bytes) -> None:
        """Write bytes to the transport, keeping their order: straight to the
        socket of a plain TCP connection while Twisted holds nothing for it
        (what the kernel does not take, Twisted sends later), through the
        transport otherwise (TLS, a test's, a closing connection)."""
        send = self._send
        if send is not None:
            if self._held:
                transport: Any = self.transport
                self._held = bool(transport.dataBuffer or transport._tempDataLen)
            if not self._held:
                try:
                    sent = send(data)
                except OSError:  # full, or broken: Twisted's own write finds out
                    sent = 0
                if sent == len(data):
                    return
                data = data[sent:]
                self._held = True
        self.transport.write(data)

    def wrote_while_congested(self, size: int) -> None:
        """Cut the client if what its transport holds stayed above max_output
        for OUTPUT_GRACE seconds, or passed OUTPUT_HARD_LIMIT times it: a
        reader that keeps up drains one busy turn's burst in that time."""
        if self.state is State.GONE:
            return
        self._backlog += size
        held = unsent(self.transport)
        if held is None:
            held = self._backlog
        limit = self.factory.config.max_output
        if held <= limit:
            self._over_since = None
            return
        now = self.factory.clock.seconds()
        if self._over_since is None:
            self._over_since = now
        if held > OUTPUT_HARD_LIMIT * limit or now - self._over_since >= OUTPUT_GRACE:
            self._overflowed()

    def pauseProducing(self) -> None:
        """The transport's buffer passed its size (64 KiB): from now on each
        write checks how much it holds."""
        self._congested = True
        self._backlog = unsent(self.transport) or 0
        self.factory.congested.add(self)

    def resumeProducing(self) -> None:
        """The transport has sent everything it held."""
        self._congested = False
        self._backlog = 0
        self._over_since = None
        self.factory.congested.discard(self)

    def readConnectionLost(self) -> None:
        """The client closed its side of the connection (C{nc -N}, a script's
        C{shutdown}): its input is over, as if it had typed /quit after its
        last line. Lines still waiting their turn go out first, at the flood
        rate; a last line without its newline counts as a line."""
        if self.state is State.GONE:
            return
        self._ended = True
        if self._buffer and not self._discarding:
            self.dataReceived(b"\n")
        self._drain()

    def writeConnectionLost(self) -> None:
        """The server never closes only its own side."""

    def stopProducing(self) -> None:
        """The connection is going away; connectionLost does the rest."""

    def _overflowed(self) -> None:
        log.info(
            "{nick} stopped reading ({backlog} bytes pending): disconnected",
            nick=self.nick,
            backlog=self._backlog,
        )
        self.drop()

    def drop(self) -> None:
        """Disconnect at once, without flushing (a dead or stuck peer)."""
        self._send = None
        self._leave()
        self.state = State.GONE
        self.factory.congested.discard(self)
        self.transport.abortConnection()

    def _close(self, *lines: bytes) -> None:
        """Say the last lines, then close once they are sent (or too late)."""
        self._stop_registration_timer()
        self._send = None  # from now on, the transport sends and closes
        for line in lines:
            self.transport.write(line)
        self.state = State.GONE
        self._closing_call = self.factory.clock.callLater(
            self.factory.config.close_timeout, self.transport.abortConnection
        )
        self.transport.loseConnection()

    def say_goodbye(self, *lines: bytes, reach: Reach = Reach.EVERYWHERE) -> None:
        """Leave the chat with these last lines, the departure announced as
        far as C{reach} says (a cluster may have announced it already)."""
        self._leave(reach)
        self._close(*lines)

    def _leave(self, reach: Reach = Reach.EVERYWHERE) -> None:
        if self.state is State.CHATTING:
            self.state = State.GONE
            self.factory.depart(self, reach)

    # Input: framing, limits, flood control

    def dataReceived(self, data: bytes) -> None:
        """Cut lines, then let the flood limit take them in turn.

        Lines wait in the inbox, which the token bucket drains: a burst at
        once, then flood_rate a second. Tokens are spent before the inbox is
        measured, so a read of many lines (a paste, lines queued in the
        kernel while the server stalled) is not a flood: only what is left
        waiting past flood_queue lines or flood_queue_bytes is."""
        if self.state is State.GONE:
            return
        config = self.factory.config
        if self._discarding:
            end = data.find(b"\n")
            self._skip(len(data) if end < 0 else end)
            if end < 0:
                self._check_flood()
                return
            data = data[end + 1 :]
            self._discarding = False
        if self._buffer:
            data = self._buffer + data
        lines = data.split(b"\n")
        self._buffer = lines.pop()
        inbox = self._inbox
        for line in lines:
            if line[-1:] == b"\r":
                line = line[:-1]
            if len(line) > config.max_line:
                self._queue_too_long(len(line))
                inbox = self._inbox
            elif line == b"pong" and self.missed_pings:
                self.missed_pings = 0  # the answer to a ping: not counted
            elif inbox is None:
                inbox = self._inbox = [line]
            else:
                inbox.append(line)
        if len(self._buffer) > config.max_line + 1:
            self._queue_too_long(len(self._buffer))
            self._buffer = b""
            self._discarding = True
        if self._inbox is None:
            return
        self._drain()
        self._check_flood()

    def _queue_too_long(self, size: int) -> None:
        """An over-long line takes its turn like a line: one entry that gets
        the error line, and one more per max_line bytes beyond the first."""
        self._inbox = inbox = self._inbox or []
        inbox.append(TOO_LONG)
        extra = size // (self.factory.config.max_line + 1) - 1
        inbox.extend([STILL_TOO_LONG] * min(extra, self.factory.config.flood_queue))
        self._discarded = 0

    def _skip(self, size: int) -> None:
        """Bytes of an over-long line, skipped: each max_line of them costs a
        token, so that endless lines are bounded by flood control too."""
        lines, self._discarded = divmod(
            self._discarded + size, self.factory.config.max_line + 1
        )
        if lines:
            self._inbox = inbox = self._inbox or []
            inbox.extend([STILL_TOO_LONG] * min(lines, self.factory.config.flood_queue))
            self._drain()

    def _check_flood(self) -> None:
        """Cut a client whose waiting lines passed either bound."""
        inbox = self._inbox
        if inbox is None or self.state is State.GONE:
            return
        config = self.factory.config
        if (
            len(inbox) > config.flood_queue
            or sum(map(len, inbox)) > config.flood_queue_bytes
        ):
            log.info("{nick} flooded: disconnected", nick=self.nick)
            self.say_goodbye(wire.FLOODED)

    def _send_at_once(self) -> None:
        """Turn Nagle's algorithm off for this connection (TCP_NODELAY).

        With it on, the kernel holds a small write back until the client
        acknowledges the previous one. A client that only reads acknowledges
        at once, so holding costs it nothing and saves segments; a client
        that also sends delays its acknowledgements, hoping to carry them on
        its next line (40 ms on Linux, 200 ms elsewhere), and every line to
        it would wait that long. So talkers, once they talk, get each write
        at once (--nodelay talkers, the default)."""
        self._nodelay = True
        set_nodelay = getattr(self.transport, "setTcpNoDelay", None)
        if set_nodelay is not None:
            with contextlib.suppress(OSError):  # closing under us
                set_nodelay(True)

    def _too_long(self) -> None:
        self.send(wire.notice(wire.TOO_LONG.format(self.factory.config.max_line)))

    def _drain(self) -> None:
        if self._draining:  # a handler finished synchronously: the loop goes on
            return
        self._draining = True
        try:
            while self._inbox and not self._busy and self.state is not State.GONE:
                if self._drain_call is not None or not self._take_token():
                    return
                self._handle(self._inbox.pop(0))
        finally:
            self._draining = False
            if not self._inbox:
                self._inbox = None
        ended = self._ended and self._inbox is None and not self._busy
        if ended and self.state is not State.GONE:
            self.say_goodbye(wire.BYE)

    def _take_token(self) -> bool:
        config = self.factory.config
        if config.flood_rate <= 0:
            return True
        now = self.factory.clock.seconds()
        tokens = self._tokens + (now - self._refilled) * config.flood_rate
        self._tokens = min(float(config.flood_burst), tokens)
        self._refilled = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        wait = (1 - self._tokens) / config.flood_rate
        self._drain_call = self.factory.clock.callLater(wait, self._resume_drain)
        return False

    def _resume_drain(self) -> None:
        self._drain_call = None
        self._drain()

    # Dispatch

    def _handle(self, raw: bytes) -> None:
        if raw == b"pong":  # unasked for: it counted as a line, and does nothing
            return
        if raw == TOO_LONG:
            self._too_long()
            return
        if raw == STILL_TOO_LONG:
            return
        text = clean(raw)
        try:
            if self.state is State.CHATTING:
                self._chat(text)
            elif self.state is State.NAMING:
                self._naming(text)
            else:
                self._welcomed(text)
        except ChatError as e:
            self.send(wire.notice(str(e)))
        except Exception:
            self._unexpected(Failure())

    def _welcomed(self, text: str) -> None:
        command, _, argument = text.strip().partition(" ")
        if command == "/pseudo":
            self._ask_nickname(argument.strip())
        elif command == "/quit":
            self.say_goodbye(wire.BYE)
        elif command == "/help":
            self.send(wire.HELP)
        else:
            self.send(wire.WELCOME)

    def _naming(self, text: str) -> None:
        """The answer to the prompt: a nickname, or a command (C{/pseudo NICK}
        is the shortcut here too, as after a refused nickname)."""
        nick = text.strip()
        if nick.partition(" ")[0] in ("/quit", "/pseudo", "/help"):
            self._welcomed(nick)
        else:
            self._claim(nick)

    def _ask_nickname(self, nick: str) -> None:
        if nick:
            self._claim(nick)
        else:
            self.state = State.NAMING
            self.send(wire.PROMPT)

    def _claim(self, nick: str) -> None:
        self.state = State.NAMING
        if not valid_nickname(nick):
            self.send(wire.INVALID_NICK)
            return
        self.state = State.JOINING
        self._busy = True
        d = self.factory.registry.claim(nick)
        d.addCallbacks(self._claimed, self._not_claimed)
        d.addErrback(self._unexpected)
        d.addBoth(self._unbusy)

    def _claimed(self, nick: str) -> None:
        if self.state is not State.JOINING:  # disconnected while waiting
            self.factory.registry.release(nick)
            return
        self._stop_registration_timer()
        self.nick = nick
        self.factory.registered(self)
        self.send(wire.notice(f"Bienvenue {nick}"))
        if self.state is State.GONE:  # that very write cut it: it stopped reading
            self.factory.registry.release(nick)
            return
        self.state = State.CHATTING
        self.factory.join(self)

    def _not_claimed(self, failure: Failure) -> None:
        if self.state is not State.JOINING:
            return
        self.state = State.NAMING
        if failure.check(NicknameTaken):
            self.send(wire.TAKEN)
        elif failure.check(RegistryUnavailable):
            self.send(wire.notice(wire.UNAVAILABLE))
        else:
            failure.raiseException()

    def _unbusy(self, result: object) -> None:
        self._busy = False
        self._drain()

    def _unexpected(self, failure: Failure) -> None:
        log.failure("unexpected error for {nick}", failure, nick=self.nick)
        self.send(wire.notice(wire.INTERNAL_ERROR))

    def _chat(self, text: str) -> None:
        if not self._nodelay and self.factory.config.nodelay == "talkers":
            self._send_at_once()
        stripped = text.strip()
        if stripped.startswith("/"):
            command, _, argument = stripped.partition(" ")
            handler = self._commands.get(command)
            if handler is None:
                raise ChatError(wire.UNKNOWN_COMMAND.format(command))
            handler(self, argument.strip())
        elif text.startswith("msg "):
            self._private(text[4:])
        elif stripped:
            self.factory.say(self, text)

    def _private(self, rest: str) -> None:
        target, _, body = rest.lstrip(" ").partition(" ")
        if not target:
            raise ChatError(wire.PRIVATE_USAGE)
        if not body.strip():
            raise ChatError(wire.PRIVATE_EMPTY.format(target))
        assert self.nick is not None
        d = self.factory.whisper(self.nick, target, body)
        d.addCallbacks(
            self._whispered,
            self._not_whispered,
            callbackArgs=(target,),
            errbackArgs=(target,),
        )
        d.addErrback(self._unexpected)

    def _whispered(self, found: bool, target: str) -> None:
        if not found:
            self.send(wire.notice(wire.NO_SUCH_USER.format(target)))

    def _not_whispered(self, failure: Failure, target: str) -> None:
        failure.trap(RegistryUnavailable)
        self.send(wire.notice(wire.PRIVATE_UNAVAILABLE.format(target)))

    def _list(self, argument: str) -> None:
        self.factory.registry.names().addCallback(self._send_names)

    def _send_names(self, names: tuple[list[str], int]) -> None:
        self.send(wire.user_list(*names))

    def _quit(self, argument: str) -> None:
        self.say_goodbye(wire.BYE)

    def _help(self, argument: str) -> None:
        self.send(wire.HELP)

    def _rename(self, argument: str) -> None:
        raise ChatError(wire.ALREADY_NAMED.format(self.nick))

    _commands: ClassVar[dict[str, Callable[[ChatServerProtocol, str], None]]] = {
        "/list": _list,
        "/quit": _quit,
        "/help": _help,
        "/pseudo": _rename,
    }

    def _stop_registration_timer(self) -> None:
        """Registered, or closing: the registration time limit no longer
        applies."""
        if self._registration_call is not None and self._registration_call.active():
            self._registration_call.cancel()
        self._registration_call = None

    def _registration_expired(self) -> None:
        self._registration_call = None
        if self.state in (State.WELCOMED, State.NAMING, State.JOINING):
            self._close(wire.notice(wire.REGISTRATION_EXPIRED))

    def make_room(self) -> None:
        """This connection never registered and is the oldest such: it is
        closed, told why, so that a newcomer gets in (see ChatFactory.admit).
        One already closing just goes."""
        if self.state is not State.GONE:
            self._close(wire.notice(wire.MADE_ROOM))


class ChatFactory(ServerFactory):
    """What every connection of one server process shares."""

    protocol = ChatServerProtocol  # type: ignore[assignment]
    noisy = False

    def __init__(
        self,
        config: ServerConfig | None = None,
        clock: IReactorTime | None = None,
        registry: Registry | None = None,
        relay: Relay | None = None,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor

            clock = cast(IReactorTime, reactor)
        self.config = config or ServerConfig()
        self.clock = clock
        self.registry: Registry = registry or MemoryRegistry()
        self.relay = relay
        self.sessions: dict[str, ChatServerProtocol] = {}
        self.congested: set[ChatServerProtocol] = set()
        # Public lines some users have not been given yet: line i of the log
        # is number _base + i + 1; each session keeps the number of the last
        # line it was given (_seen). Lines every session has are dropped.
        self._log: list[tuple[bytes, ChatServerProtocol | None]] = []
        self._base = 0
        self._spoke: dict[ChatServerProtocol, int] = {}  # its last line's number
        self._joined: dict[int, bytes] = {}  # lines after N, to the end
        self._waiting = 0  # lines no pass has started on, and their bytes
        self._waiting_size = 0
        self._pass: list[ChatServerProtocol] = []  # left to serve, last first
        self._pass_from = 0  # the last line's number when the pass started
        self._pass_call: IDelayedCall | None = None
        # A pass or a flush is giving users their lines. A write may cut a
        # reader, whose departure is a new line: it joins what is being
        # served, and never starts a flush inside the one under way.
        self._serving = False
        self._flushed = float("-inf")  # when the last pass started
        self._rate = 0.0  # deliveries per second of public lines, lately
        self._delivered = 0  # since _counted_since
        self._counted_since = clock.seconds()
        self.connections: set[ChatServerProtocol] = set()
        self.per_host: collections.Counter[str] = collections.Counter()
        self.per_network: collections.Counter[str] = collections.Counter()
        # The connections not registered yet, oldest first, with when they
        # came. An OrderedDict, not a dict: taking the first of a dict whose
        # first entries were deleted walks over their holes (measured with
        # 5,000 entries, evicting the oldest and adding one: 4 us a step
        # against 0.17 for an OrderedDict).
        self.unregistered: collections.OrderedDict[ChatServerProtocol, float] = (
            collections.OrderedDict()
        )
        self.spent_tokens: dict[str, tuple[float, float]] = {}
        self.stopping = False
        self._stopped: Deferred[None] | None = None
        self._pinger = LoopingCall(self._ping)
        self._pinger.clock = clock
        self._stamp_second = -1
        self._stamp = ""

    # Connections

    def admit(self, proto: ChatServerProtocol) -> bytes | None:
        """Count a new connection in, or say why it is refused.

        Connections that never register must not keep others out: when the
        server is full, or the unregistered ones are at their share, the
        oldest unregistered one makes room for the newcomer, if it has been
        connected for EVICTION_GRACE (squatters are old; a herd of honest
        clients connecting at once is young, and the share does not bind
        against it). A newcomer refused for its address or its network
        evicts nobody. Each limit is a counter: O(1) per connection."""
        config = self.config
        if self.stopping:
            return wire.notice(wire.STOPPING)
        now = self.clock.seconds()
        full = len(self.connections) >= config.max_connections
        victim = None
        if full or len(self.unregistered) >= config.unregistered_limit:
            victim = self._oldest_unregistered(now)
            if victim is None and full:
                return wire.notice(wire.SERVER_FULL)
        host = proto.host if config.max_per_ip > 0 else None
        if host is not None and self.per_host[host] >= config.max_per_ip:
            return wire.notice(wire.TOO_MANY_FROM_HOST)
        net = self._network(proto.host)
        if net is not None and self.per_network[net] >= config.network_limit:
            return wire.notice(wire.TOO_MANY_FROM_NETWORK)
        if victim is not None:
            victim.make_room()
            self.forget(victim)  # closing: its slot is the newcomer's now
        if host is not None:
            self.per_host[host] += 1
        if net is not None:
            self.per_network[net] += 1
        self.connections.add(proto)
        self.unregistered[proto] = now
        return None

    def _oldest_unregistered(self, now: float) -> ChatServerProtocol | None:
        """The unregistered connection that came first, if it has been
        connected for EVICTION_GRACE (if it has not, none has)."""
        for proto, since in self.unregistered.items():
            return proto if now - since >= EVICTION_GRACE else None
        return None

    def _network(self, host: str | None) -> str | None:
        """What the per-network limit counts C{host} in; None: no limit."""
        config = self.config
        if host is None or config.network_limit <= 0:
            return None
        return network(host, config.network_prefix, config.network_prefix6)

    def registered(self, proto: ChatServerProtocol) -> None:
        """A connection registered its nickname: it is no squatter."""
        self.unregistered.pop(proto, None)

    def tokens_for(self, host: str | None, now: float) -> float:
        """The flood tokens a new connection from C{host} starts with: a full
        burst, unless connections from there spent them lately (reconnecting
        does not refill the burst)."""
        burst = float(self.config.flood_burst)
        spent = self.spent_tokens.get(host) if host is not None else None
        if spent is None:
            return burst
        tokens, at = spent
        return min(burst, tokens + (now - at) * self.config.flood_rate)

    def remember_tokens(self, host: str | None, tokens: float, at: float) -> None:
        """Keep what a closing connection left of its burst, until it would
        have refilled (hosts are forgotten lazily, when there are many)."""
        if host is None or self.config.flood_rate <= 0:
            return
        now = self.clock.seconds()
        left = min(
            self.tokens_for(host, now), tokens + (now - at) * self.config.flood_rate
        )
        if left >= self.config.flood_burst:
            self.spent_tokens.pop(host, None)
            return
        self.spent_tokens[host] = (left, now)
        if len(self.spent_tokens) > 2 * self.config.max_connections:
            full = [
                h
                for h in self.spent_tokens
                if self.tokens_for(h, now) >= self.config.flood_burst
            ]
            for h in full:
                del self.spent_tokens[h]

    def forget(self, proto: ChatServerProtocol) -> None:
        """A connection is closed: it no longer counts against any limit."""
        if proto not in self.connections:
            return
        self.connections.discard(proto)
        self.unregistered.pop(proto, None)
        host = proto.host
        if host is not None and self.config.max_per_ip > 0:
            self.per_host[host] -= 1
            if self.per_host[host] <= 0:
                del self.per_host[host]
        net = self._network(host)
        if net is not None:
            self.per_network[net] -= 1
            if self.per_network[net] <= 0:
                del self.per_network[net]
        if self.stopping and not self.connections and self._stopped is not None:
            stopped, self._stopped = self._stopped, None
            stopped.callback(None)

    # Membership

    def join(self, proto: ChatServerProtocol) -> None:
        """A connection registered its nickname: it joins the chat."""
        assert proto.nick is not None
        proto._seen = self._end  # lines made before: not for it
        self.sessions[nick_key(proto.nick)] = proto
        if not self._pinger.running and self.config.ping_interval > 0:
            self._pinger.start(self.config.ping_interval, now=False)
        self.registry.names(self.config.list_limit).addCallback(proto._send_names)
        log.info("{nick} joined", nick=proto.nick)
        if len(self.sessions) <= self.config.join_notice_limit:
            line = f"{self.stamp()}-Connexion de {proto.nick}\n".encode()
            self.broadcast(line, exclude=proto)

    def depart(
        self, proto: ChatServerProtocol, reach: Reach = Reach.EVERYWHERE
    ) -> None:
        """A registered user left, for whatever reason: say it once, as far
        as C{reach} says (a stopping server tells everyone it stops instead)."""
        if not self.withdraw(proto, reach) or self.stopping or reach is Reach.NOWHERE:
            return
        assert proto.nick is not None
        line = wire.departure_prefix(self.stamp()) + proto.nick.encode() + b"\n"
        if reach is Reach.EVERYWHERE:
            self.broadcast(line)
        else:
            self.deliver(line)

    def withdraw(
        self, proto: ChatServerProtocol, reach: Reach = Reach.EVERYWHERE
    ) -> bool:
        """Take a registered user out of the chat without a word to anyone,
        its nickname released as far as C{reach} says: whether it was in."""
        assert proto.nick is not None
        if self.sessions.get(nick_key(proto.nick)) is not proto:
            return False
        self._serve(proto)  # lines made before it left still reach it
        proto._seen = -1
        del self.sessions[nick_key(proto.nick)]
        self.registry.release(proto.nick, reach).addErrback(
            lambda f: log.failure("releasing {nick}", f, nick=proto.nick)
        )
        if not self.sessions:  # nobody left to give lines to: no timer
            self.flush()
            if self._pinger.running:
                self._pinger.stop()
        log.info("{nick} left", nick=proto.nick)
        return True

    # Messages

    def stamp(self) -> str:
        """The server's local time as the Ruby server writes it: [H.M.S]."""
        now = int(self.clock.seconds())
        if now != self._stamp_second:
            t = time.localtime(now)
            self._stamp = f"[{t.tm_hour}.{t.tm_min}.{t.tm_sec}]"
            self._stamp_second = now
        return self._stamp

    def say(self, sender: ChatServerProtocol, text: str) -> None:
        self.broadcast(f"{self.stamp()}-{sender.nick}: {text}\n".encode(), sender)

    def broadcast(self, line: bytes, exclude: ChatServerProtocol | None = None) -> None:
        """Send one encoded line to every user here but C{exclude}, and to
        the other nodes of a cluster."""
        self._queue(line, exclude)
        if self.relay is not None:
            self.relay.publish(line)

    def deliver(self, line: bytes) -> None:
        """A public line from another node: for every user here."""
        self._queue(line, None)

    def _queue(self, line: bytes, exclude: ChatServerProtocol | None) -> None:
        """Public lines go out in passes over the users: one write per user
        per pass, whatever the number of lines, from the end of the reactor
        turn (pass_size users at a time, see ServerConfig).

        Each write to a user is a system call, most of the server's time.
        So while the chat delivers more than batch_threshold lines a second
        (lines times users, measured over the last second), a pass also
        waits until batch_delay has passed since the previous one started:
        each user gets at most one write per batch_delay, and lines wait at
        most that long. Below it, nothing waits: latency is what matters."""
        if not self.sessions:
            return
        self._log.append((line, exclude))
        if exclude is not None:
            self._spoke[exclude] = self._end
        self._joined.clear()
        self._waiting += 1
        self._waiting_size += len(line)
        self._delivered += len(self.sessions)
        full = self._waiting >= BATCH_LINES or self._waiting_size >= BATCH_BYTES
        if full and not self._serving:
            self.flush()
        elif not self._pass and self._pass_call is None:
            self._schedule_pass()

    @property
    def _end(self) -> int:
        """The number of the last public line made."""
        return self._base + len(self._log)

    def _schedule_pass(self) -> None:
        wait = 0.0
        if self._rate >= self.config.batch_threshold:
            wait = self._flushed + self.config.batch_delay - self.clock.seconds()
        self._pass_call = self.clock.callLater(max(0.0, wait), self._run_pass)

    def _run_pass(self) -> None:
        """Serve the next pass_size users of the pass, starting one if none is
        under way; when it ends, start another if lines came meanwhile."""
        self._pass_call = None
        if not self._pass:
            self._pass = list(self.sessions.values())
            self._pass.reverse()
            self._pass_from = self._end
            self._waiting = self._waiting_size = 0
            self._flushed = now = self.clock.seconds()
            if now - self._counted_since >= 1.0:
                self._rate = self._delivered / (now - self._counted_since)
                self._counted_since, self._delivered = now, 0
        chunk = self._pass
        # _serve, unrolled for the common case: a user who made none of the
        # lines, given the same bytes as the others (profiled: the loop's
        # own cost is most of what the server spends outside the kernel).
        # A write that cuts a reader adds its departure to the log and
        # empties the cache: the last line's number is read again after
        # any call that may cut.
        end = self._end
        spoke, joined, chatting = self._spoke, self._joined, State.CHATTING
        self._serving = True
        try:
            for _ in range(min(self.config.pass_size, len(chunk))):
                proto = chunk.pop()
                start = proto._seen
                if start >= end or proto.state is not chatting:
                    continue
                data = joined.get(start)
                if data is None or proto in spoke:
                    self._serve(proto)
                    end = self._end
                    continue
                proto._seen = end
                proto.write(data)
                if proto._congested:
                    proto.wrote_while_congested(len(data))
                    end = self._end
        finally:
            self._serving = False
        if chunk:
            self._pass_call = self.clock.callLater(0, self._run_pass)
            return
        # Every user has every line up to the pass's start (a newcomer, all
        # lines made before it came): those are nobody's any more.
        self._forget(self._pass_from)
        if self._log:
            self._schedule_pass()

    def _serve(self, proto: ChatServerProtocol) -> None:
        """Give a user the public lines it has not been given: the same
        bytes as everyone, or, if it made some of them, all but its own."""
        if proto._seen < 0:  # not (or no longer) in the chat: no public line
            return
        start, end = max(proto._seen, self._base), self._end
        if start >= end:
            return
        proto._seen = end
        lines = self._log[start - self._base :]
        if self._spoke.get(proto, 0) > start:
            data = b"".join([line for line, by in lines if by is not proto])
            if not data:
                return
        else:
            cached = self._joined.get(start)
            if cached is None:
                cached = self._joined[start] = b"".join([line for line, _ in lines])
            data = cached
        proto.write(data)
        if proto._congested:
            proto.wrote_while_congested(len(data))

    def catch_up(self, proto: ChatServerProtocol) -> None:
        """Give a user the public lines made so far, before another line."""
        if proto._seen < self._end:
            self._serve(proto)

    def _forget(self, upto: int) -> None:
        """Drop the lines up to number C{upto}: every user has them."""
        drop = upto - self._base
        if drop <= 0:
            return
        del self._log[:drop]
        self._base = upto
        self._joined.clear()
        self._spoke = {p: n for p, n in self._spoke.items() if n > upto}

    def flush(self) -> None:
        """Give every user every public line now."""
        if self._serving:  # a pass or flush under way gives them out
            return
        if self._pass_call is not None:
            if self._pass_call.active():
                self._pass_call.cancel()
            self._pass_call = None
        self._pass = []
        self._waiting = self._waiting_size = 0
        if not self._log:
            return
        self._flushed = self.clock.seconds()
        self._serving = True
        try:
            # Serving may cut a reader, whose departure is a new line: the
            # users already served get it in the next round, until none
            # comes. The sessions are read anew each round, as cuts remove
            # some.
            while self._log:
                upto = self._end
                for proto in tuple(self.sessions.values()):
                    self._serve(proto)
                self._forget(upto)
        finally:
            self._serving = False

    def whisper(self, sender: str, target: str, text: str) -> Deferred[bool]:
        line = f"{self.stamp()}-message privé de {sender}: {text}\n".encode()
        if self.deliver_private(target, line):
            return succeed(True)
        if self.relay is not None:
            return self.relay.whisper(target, line)
        return succeed(False)

    def deliver_private(self, target: str, line: bytes) -> bool:
        """Send a private line to C{target} if it is connected here."""
        proto = self.sessions.get(nick_key(target))
        if proto is None:
            return False
        proto.send(line)
        return True

    # Liveness

    def _ping(self) -> None:
        try:
            limit = self.config.max_missed_pings
            for proto in tuple(self.sessions.values()):
                if proto.missed_pings >= limit:
                    log.info("{nick} stopped answering pings", nick=proto.nick)
                    proto.drop()
                else:
                    proto.missed_pings += 1
                    proto.send(wire.PING)
        except Exception:
            log.failure("ping loop")

    # Shutdown

    def shutdown(self) -> Deferred[None]:
        """Tell every client the server stops, close, and fire when all are
        closed (clients that do not go are cut after C{shutdown_timeout})."""
        self.flush()
        self.stopping = True
        if self._pinger.running:
            self._pinger.stop()
        for proto in tuple(self.connections):
            if proto.state is not State.GONE:
                proto.say_goodbye(wire.notice(wire.STOPPING), wire.BYE)
        if not self.connections:
            return succeed(None)
        self._stopped = Deferred()
        timer = self.clock.callLater(self.config.shutdown_timeout, self._cut_all)
        self._stopped.addBoth(lambda r: timer.cancel() if timer.active() else None)
        return self._stopped

    def _cut_all(self) -> None:
        for proto in tuple(self.connections):
            proto.transport.abortConnection()
