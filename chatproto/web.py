"""The chat in a browser: the page, and the line protocol over a WebSocket.

C{--web ENDPOINT} serves, beside the TCP port, an HTTP site (L{site}): the
page at C{/} (static files of chatproto/webpage, no build step; with its
manifest, drawn icons and service worker, it installs on a phone's home
screen: L{page_files}), and at
C{/ws} a WebSocket that speaks the line protocol of docs/protocol.md. A
browser user is a L{Session} on the very same room (L{ChatFactory}) as a TCP
user: registration, flood control, pings, output bounds, departures and
cluster mode are the session's and the room's, not this module's. What is
here is framing only, and the limits Twisted's WebSocket lacks:

 - each text message from the browser is what a TCP user's line is with its
   C{\\n} (so a message holding newlines is several lines, as a paste is);
   each line the server writes is one text message, without its C{\\n};
 - a message is refused past --max-line bytes, or past 64 fragments, with
   close code 1009, while it arrives rather than once it is whole
   (L{_Capped}); a binary message is refused with 1003;
 - a request whose C{Host} is not a name the site serves (localhost, the
   address it is reached at, --web-host) is refused with 421, the page's
   and the WebSocket's alike (L{served_host}): without the check, a page
   on a domain that resolves to this server (DNS rebinding) could chat
   from its visitor's address;
 - a handshake whose C{Origin} is neither the page's own nor one of
   --web-origin is refused with 403 (L{ChatWebSocketResource}): without the
   check, any site a user visits could chat in their name;
 - the idle timeout is the chat's own: a registered browser is pinged like
   a TCP user, and the page answers each C{ping} line with C{pong};
 - output to a browser that stops reading is bounded by --max-output, by
   the very L{Output} a TCP connection has, over L{Frames}.
 - until its handshake, a connection is the site's, bounded and timed as
   chatproto/sites.py says (the chat counts it once it is a WebSocket,
   as a TCP connection, L{_Builder}).

Three things here go past the documented interface of Twisted's WebSocket.
L{_Capped} replaces its wire protocol's two message buffers (the private
C{_textBuffer} and C{_bytesBuffer}, through chatproto/_twisted.py), as
Twisted has no size limit of its own: if a Twisted release renames them,
every WebSocket is refused at once (never served without the limit), and
tests/test_web.py and tests/test_twisted_contract.py fail. L{_Lingering}
replaces its C{transport} (a public attribute), so that a close the server
starts does not lose its close frame to a reset, and so that the frames
Twisted writes itself (pongs) count against --max-output. And
L{ChatWebSocket} takes the upgraded HTTP channel's C{dataReceived} and
C{rawDataReceived} (L{ChatWebSocket.dataReceived}), so that the bytes
that came in the handshake's own read reach the WebSocket rather than be
kept for a next request that never comes, and so that nothing is parsed
after the server's close frame; tests/test_web.py checks both.

The page's files are read once, when the site is made: after editing them,
restart the server.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast
from urllib.parse import urlsplit

from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import CACHED
from twisted.web.pages import notFound
from twisted.web.resource import Resource
from twisted.web.server import Request
from twisted.web.websocket import WebSocketResource
from wsproto.utilities import LocalProtocolError

from chatproto._twisted import direct_socket, replace_message_buffers
from chatproto.admission import Admission, source
from chatproto.icons import icon
from chatproto.output import Output, write_to
from chatproto.session import GONE, Session
from chatproto.sites import BoundedSite, Channel, admission

if TYPE_CHECKING:
    from chatproto.config import ServerConfig
    from chatproto.server import ChatFactory

log = Logger()

PAGE = Path(__file__).resolve().parent / "webpage"
PAGE_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
    "manifest.webmanifest": "application/manifest+json",
    "sw.js": "text/javascript; charset=utf-8",
}
# The home screen icons, drawn when the site is made (chatproto/icons.py).
PAGE_ICONS = {"icon-192.png": 192, "icon-512.png": 512}
# In sw.js, what the site replaces with the page's version (L{page_files}).
VERSION_MARK = b"__PAGE_VERSION__"

# Only the page's own script, style, WebSocket, manifest and service worker;
# nothing inline, no frame.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self'; manifest-src 'self'; "
    "worker-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
)

# WebSocket close codes (RFC 6455, 7.4.1).
NORMAL = 1000
UNSUPPORTED_DATA = 1003  # a binary message: this chat is text
MESSAGE_TOO_BIG = 1009  # past --max-line, or past MAX_FRAGMENTS

# The pieces a message may come in (see _Capped).
MAX_FRAGMENTS = 64


class WebSocket(Protocol):
    """What this module uses of Twisted's WebSocket transport: the public
    L{twisted.web.websocket.WebSocketTransport}, its C{transport}, the TCP
    (or TLS) connection it sits on, and its C{dataReceived} (it is that
    connection's protocol)."""

    transport: Any

    def sendTextMessage(self, text: str) -> None: ...
    def loseConnection(self, code: int = NORMAL, reason: str = "") -> None: ...
    def dataReceived(self, data: bytes) -> None: ...


class WebSession(Session):
    """A browser's session: the very same rules as a TCP user's; the
    metrics count it under front end C{web}."""

    __slots__ = ()
    front_end = "web"


class Frames:
    """The transport an L{Output} writes to for a WebSocket: lines in, one
    text message per line out.

    The session and the fan-out write whole lines, several at a time; each
    becomes one text message without its C{\\n}, decoded as UTF-8 (the
    server's lines are bytes; a byte that is not UTF-8 becomes U+FFFD, as a
    browser's text message must be valid). C{transport} is the TCP
    connection underneath, where L{chatproto.output.unsent} finds what is
    held and L{Output.open} fixes the send buffer: the same congestion
    logic as TCP, on the bytes the frames take."""

    __slots__ = ("_socket", "closed", "closing", "transport", "websocket")

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        transport = websocket.transport
        self.transport = getattr(transport, "_transport", transport)
        self._socket = direct_socket(self.transport)
        # The close code and reason the next loseConnection sends.
        self.closing: tuple[int, str] = (NORMAL, "")
        self.closed = False  # a close frame went out: nothing after it

    def write(self, data: bytes) -> None:
        """Frames go to the TCP (or TLS) connection under the WebSocket, as
        its sendTextMessage would write them, but framed once for every
        browser given the same bytes (see L{frames}), and straight to the
        socket as a TCP user's lines are (L{write_to}, behind any frame
        Twisted holds); none after a close frame, either side's."""
        transport = self.transport
        if self.closed or getattr(transport, "disconnecting", False):
            return
        write_to(transport, self._socket, frames(data))

    def loseConnection(self) -> None:
        self.closed = True
        code, reason = self.closing
        linger = getattr(self.websocket.transport, "linger", None)
        if linger is not None:
            linger()
        try:
            self.websocket.loseConnection(code, reason)
        except LocalProtocolError:  # closed already: close the TCP side
            self.transport.loseConnection()

    def abortConnection(self) -> None:
        self.transport.abortConnection()

    def registerProducer(self, producer: object, streaming: bool) -> None:
        """Be told when the TCP connection's buffer fills and drains.

        The HTTP channel that did the handshake is the connection's producer
        until now; once upgraded it reads nothing more, and the L{Output}
        takes its place (a transport has one producer)."""
        transport = self.transport
        with contextlib.suppress(RuntimeError):  # a test's, with none
            transport.unregisterProducer()
        transport.registerProducer(producer, streaming)

    def getPeer(self) -> object:
        return self.transport.getPeer()

    def setTcpNoDelay(self, enabled: bool) -> None:
        set_nodelay = getattr(self.transport, "setTcpNoDelay", None)
        if set_nodelay is not None:
            set_nodelay(enabled)


# The last write framed, and its frames: a pass of the fan-out gives every
# member the same bytes object (one join for all), so each is framed once
# per pass, not once per browser. Holding the bytes keeps their identity
# from being reused by other bytes.
_framed: tuple[bytes, bytes] = (b"", b"")


def frames(data: bytes) -> bytes:
    """Whole lines as WebSocket text frames, one per line without its
    C{\n} (server frames are not masked: the same bytes for every browser);
    a line that is not UTF-8 has its bad bytes replaced (U+FFFD), as a text
    message must be valid UTF-8."""
    global _framed
    last, framed = _framed
    if data is last:
        return framed
    lines = data.split(b"\n")
    if lines[-1]:  # never happens: every write is whole lines
        log.warn("a write without its newline: {data!r}", data=data)
    else:
        lines.pop()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        lines = [line.decode("utf-8", "replace").encode() for line in lines]
    out = []
    for line in lines:
        size = len(line)
        if size < 126:
            out.append(bytes((0x81, size)))
        elif size < 65536:
            out.append(b"\x81\x7e" + size.to_bytes(2, "big"))
        else:
            out.append(b"\x81\x7f" + size.to_bytes(8, "big"))
        out.append(line)
    framed = b"".join(out)
    _framed = (data, framed)
    return framed


class _Lingering:
    """The TCP connection as Twisted's WebSocket wire protocol sees it, so
    that a close does not destroy the close frame.

    Twisted closes a WebSocket by writing its close frame and closing the
    TCP connection, which stops reading. If the browser is still sending (a
    refused message: the rest of it is on its way), the kernel answers that
    unread data with a reset, and the reset can make the browser's kernel
    discard the close frame before the browser reads it: it sees no close
    code (1006) instead of 1009 (2 runs in 9 of
    tests/test_web_sockets.py without this). So a close the server starts
    (L{linger}, then the close) only shuts the sending side (a FIN after the
    close frame), and reading goes on, dropped unparsed
    (L{ChatWebSocket.dataReceived}), until the browser closes too or the
    L{Output}'s close_timeout aborts.
    A close the browser starts (its close frame) closes at once: it has
    stopped sending, and keeping the connection would keep the user in the
    chat until its pings run out.

    Twisted writes some frames itself, here: the pong to each ping frame,
    and the close frames. Once the session is started, its
    L{ChatWebSocket} (C{owner}) is told of each (L{ChatWebSocket.answered}):
    a client that sends pings and reads nothing had the server hold its
    pongs without bound (53 to 650 MiB in a minute, from one WebSocket that
    never registered)."""

    __slots__ = ("_half_close", "_transport", "owner")

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self._half_close = False
        self.owner: ChatWebSocket | None = None

    def linger(self) -> None:
        """The next close is the server's: half-close."""
        self._half_close = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def write(self, data: bytes) -> None:
        self._transport.write(data)
        if self.owner is not None:
            self.owner.answered(len(data))

    def loseConnection(self) -> None:
        half_close = getattr(self._transport, "loseWriteConnection", None)
        if self._half_close and half_close is not None:
            self._half_close = False  # the next one closes for good
            half_close()
        else:
            self._transport.loseConnection()


class _Capped:
    """A message buffer that refuses a message past a size as it arrives.

    Twisted's WebSocket wire protocol adds each fragment of a message to a
    buffer (C{add}) and hands the whole message over when it ends
    (C{done}); it has no limit, and a 32 MiB message stalled the reactor for
    14 s. This one stands in for it, counts the UTF-8 bytes it is given and
    the pieces they come in, and past C{limit} bytes (-1: any message at
    all) or L{MAX_FRAGMENTS} pieces tells C{refuse} once, with the reason,
    and keeps nothing more.

    The pieces are bounded as a fragment may be empty: millions of empty
    ones were kept one list entry each, and each costs wsproto some 13 us
    whatever it holds (while they came, /list took 100-200 ms, not 0.4).
    A message is one line to flood control, so its pieces are few: a
    browser sends a message in one, and a piece that arrives over several
    reads is handed over in as many parts."""

    __slots__ = ("chunks", "empty", "limit", "refuse", "size")

    def __init__(self, empty: str | bytes, limit: int, refuse: Any) -> None:
        self.empty = empty
        self.limit = limit
        self.refuse = refuse
        self.chunks: list[Any] = []
        self.size = 0

    def add(self, new: str | bytes | bytearray) -> None:
        if self.size < 0:  # refused: skip to the end of the message
            return
        self.size += len(new.encode() if isinstance(new, str) else new)
        if self.size > self.limit:
            reason = f"message de plus de {self.limit} octets"
        elif len(self.chunks) == MAX_FRAGMENTS:
            reason = f"message en plus de {MAX_FRAGMENTS} fragments"
        else:
            self.chunks.append(new)
            return
        self.chunks, self.size = [], -1
        self.refuse(reason)

    def done(self) -> Any:
        chunks, self.chunks, self.size = self.chunks, [], 0
        if isinstance(self.empty, str):
            return "".join(chunks)
        return b"".join(chunks)


class ChatWebSocket:
    """One browser's WebSocket (a L{twisted.web.websocket.WebSocketProtocol}):
    text messages to lines, for a L{Session}; the TCP twin is
    L{chatproto.server.ChatServerProtocol}."""

    def __init__(self, factory: ChatFactory, host: str | None, channel: Any) -> None:
        self.factory = factory
        self.host = host
        self.channel = channel  # the HTTP channel of the handshake
        self.websocket = cast(WebSocket, None)
        self.frames = cast(Frames, None)
        self.output = cast(Output, None)
        self.session = cast(Session, None)
        self.refused = False

    def negotiationStarted(self, transport: Any) -> None:
        """The handshake is under way: keep the transport, cap its message
        buffers before any message can arrive, and make its close linger
        (L{_Lingering})."""
        self.websocket = transport
        limit = self.factory.config.max_line
        transport.transport = _Lingering(transport.transport)
        try:
            replace_message_buffers(
                transport,
                _Capped("", limit, self._too_big),
                _Capped(b"", -1, self._binary),
            )
        except AttributeError:
            log.error(
                "this Twisted's WebSocket has no message buffers to cap: "
                "WebSockets are refused"
            )
            self.refused = True

    def negotiationFinished(self) -> None:
        """The WebSocket is open: take the connection's reads (see
        L{dataReceived}), start the session (welcome, or refusal)."""
        self.frames = Frames(self.websocket)
        channel = self.channel
        channel.dataReceived = channel.rawDataReceived = self.dataReceived
        # HTTPChannel turns Nagle off for every connection; a chat's own
        # policy (--nodelay, see Output.talking) decides instead.
        self.frames.setTcpNoDelay(False)
        if self.refused:  # no limit, no chat
            self.frames.abortConnection()
            return
        factory = self.factory
        self.output = Output(self.frames, factory)
        self.session = WebSession(factory, self.output, self.host)
        self.websocket.transport.owner = self  # told of Twisted's pongs
        self.session.start()

    def dataReceived(self, data: bytes) -> None:
        """The connection's bytes, every one of them once it is upgraded.

        Twisted's upgrade sends the HTTP channel's next reads to the
        WebSocket, but the rest of the handshake's own read (frames a client
        sent right behind its handshake) to the channel's
        C{rawDataReceived}, which keeps them for a next request: they were
        lost, and past 16 KiB the channel stopped reading the connection.

        Once the server's close frame is out, reads are dropped unparsed,
        until the client closes too (it has the close frame and a FIN) or
        close_timeout aborts: what a client sends then (the rest of a
        refused message, a flood of empty fragments) would cost wsproto
        some 13 us a frame for nothing. In the read that carries it, a
        ping behind the close frame gets no pong: wsproto refuses to send
        one after a close frame, and Twisted's attempt raised up to the
        reactor (a traceback in the log, the connection dropped)."""
        if self.frames.closed:
            return
        with contextlib.suppress(LocalProtocolError):
            self.websocket.dataReceived(data)

    def textMessageReceived(self, message: str) -> None:
        """A message: the lines of a TCP read of C{message} and C{\\n}, each
        without one trailing C{\\r}. It is at most --max-line bytes (see
        L{_Capped}), so no line in it is too long."""
        if self.refused:
            return
        session = self.session
        for line in message.encode().split(b"\n"):
            if session.state is GONE:
                return
            if line[-1:] == b"\r":
                line = line[:-1]
            session.line_received(line)

    def bytesMessageReceived(self, data: bytes | bytearray) -> None:
        """Refused as it starts (L{_binary}): never here."""

    def answered(self, size: int) -> None:
        """Twisted wrote a frame of its own (L{_Lingering}): the pong to a
        ping frame of the client's, or a close frame. It counts against
        --max-output as the chat's lines do, and the ping costs the client
        a flood token as a line does: each frame costs wsproto some 13 us,
        and a client that pinged as fast as it could (reading its pongs)
        kept every user's /list at 186 ms."""
        self.output.wrote(size)
        self.session.charge()

    def pongReceived(self, payload: bytes) -> None:
        """The chat's pings are lines (C{ping}, answered C{pong}), as for a
        TCP user: WebSocket pongs mean nothing here, but each costs the
        client a flood token, as a ping frame does (L{answered})."""
        if self.refused:
            return
        self.session.charge()

    def connectionLost(self, reason: Failure) -> None:
        if self.session is None:  # lost during the handshake
            return
        self.output.lost()
        self.session.lost()

    def _too_big(self, reason: str) -> None:
        self._refuse(MESSAGE_TOO_BIG, reason)

    def _binary(self, reason: str) -> None:
        self._refuse(UNSUPPORTED_DATA, "messages texte seulement")

    def _refuse(self, code: int, reason: str) -> None:
        """Close with C{code}: the user leaves the chat (its departure said
        once), the close frame carries the reason."""
        if self.refused:
            return
        self.refused = True
        log.info(
            "{nick} refused ({code}): {reason}",
            nick=self.session.nick,
            code=code,
            reason=reason,
        )
        if self.session.state is GONE:  # closing already
            return
        self.frames.closing = (code, reason)
        self.session.say_goodbye()


def allowed_origin(origin: str, host: str | None, origins: frozenset[str]) -> bool:
    """Whether a handshake's C{Origin} may open a WebSocket: the page's own
    origin (its host and port are the request's C{Host}; the scheme may
    differ behind a TLS proxy, which changes nothing for the host), or one of
    --web-origin."""
    if normal_origin(origin) in origins:
        return True
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or host is None:
        return False
    return parts.netloc.lower() == host.lower()


def normal_origin(origin: str) -> str:
    """An origin as browsers send it: lower case, no trailing slash."""
    return origin.strip().rstrip("/").lower()


def parse_origins(values: list[str]) -> frozenset[str]:
    """The --web-origin values (each repeatable, or comma-separated), each
    checked to be an origin: C{http[s]://host[:port]}, nothing more."""
    origins = set()
    for value in values:
        for item in value.split(","):
            origin = normal_origin(item)
            if not origin:
                continue
            parts = urlsplit(origin)
            if (
                parts.scheme not in ("http", "https")
                or not parts.netloc
                or parts.path
                or parts.query
                or parts.fragment
            ):
                raise ValueError(
                    f"{item.strip()!r} is not an origin; write it as a browser "
                    "sends it, like https://chat.example.org or http://host:8080."
                )
            origins.add(origin)
    return frozenset(origins)


# The names every site serves, whatever its address and --web-host.
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})

_HOST_NAME = re.compile(
    r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*"
)


def host_name(host: str) -> str:
    """A host as the site compares it: lower case, no brackets, no final
    dot, an IP address in its short form (an IPv4 one mapped in IPv6 as
    the IPv4 one)."""
    host = host.strip().lower().removesuffix(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.compressed


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def served_host(header: str | None, local: object, hosts: frozenset[str]) -> bool:
    """Whether a request's C{Host} header names this site: localhost,
    127.0.0.1 or [::1], the address the connection reached (C{local}, the
    transport's own address), or one of --web-host (C{hosts}); its port
    does not matter. A request without one is not served."""
    if header is None:
        return False
    header = header.strip()
    if header.startswith("["):  # [IPv6]:port
        name = header.partition("]")[0] + "]"
    else:
        name, _, port = header.rpartition(":")
        if not name or not port.isdigit():
            name = header
    name = host_name(name)
    here = getattr(local, "host", None)
    return (
        name in LOCAL_HOSTS
        or name in hosts
        or (isinstance(here, str) and name == host_name(here))
    )


def parse_hosts(values: list[str]) -> frozenset[str]:
    """The --web-host values (each repeatable, or comma-separated), each
    checked to be a host name or an IP address, with no scheme or port."""
    hosts = set()
    for value in values:
        for item in value.split(","):
            host = host_name(item)
            if not host:
                continue
            if not (_HOST_NAME.fullmatch(host) or _is_address(host)):
                raise ValueError(
                    f"{item.strip()!r} is not a host name; give the name alone "
                    "(no scheme, no port), like chat.example.org."
                )
            hosts.add(host)
    return frozenset(hosts)


def check_web_options(options: Any) -> None:
    """Check --web, --web-origin and --web-host (twistd chat's options),
    with a sentence for a mistake: C{web} becomes an endpoint string or
    None, C{web_origins} the set of origins allowed, and C{web_hosts} the
    set of host names served."""
    from twisted.internet import reactor
    from twisted.python.usage import UsageError

    try:
        options["web_origins"] = parse_origins(options.get("web_origin", []))
    except ValueError as e:
        raise UsageError(f"--web-origin: {e}") from None
    try:
        options["web_hosts"] = parse_hosts(options.get("web_host", []))
    except ValueError as e:
        raise UsageError(f"--web-host: {e}") from None
    web = options.get("web")
    if web is None:
        given = "--web-origin" if options.get("web_origin") else "--web-host"
        raise UsageError(f"{given} is for the web page: give --web too.")
    if web.isdigit():
        web = options["web"] = f"tcp:{web}"
    try:
        serverFromString(reactor, web)
    except (ValueError, KeyError, TypeError) as e:
        raise UsageError(
            f"--web: {web!r} is not an endpoint Twisted knows ({e}); try "
            "tcp:8080 or a bare port number."
        ) from None


class ChatWebSocketResource(WebSocketResource):
    """C{/ws}: Twisted's WebSocket resource, with an Origin check first.

    A browser sends C{Origin} with every WebSocket handshake, and any page
    may open one to any server: without this check, a site a user visits
    could join the chat in their name. A handshake without C{Origin} (not a
    browser: websocat, a script) is let in, as a TCP client is."""

    def __init__(self, factory: ChatFactory, origins: frozenset[str]) -> None:
        super().__init__(cast(Any, _Builder(factory)))
        self.chat = factory
        self.origins = origins

    def render_GET(self, request: Request) -> bytes | int:
        origin = request.getHeader("origin")
        if origin is not None and not allowed_origin(
            origin, request.getHeader("host"), self.origins
        ):
            self.chat.metrics.refused("origin_not_allowed", _client(request))
            request.setResponseCode(403)
            request.setHeader("content-type", "text/plain; charset=utf-8")
            return b"origin not allowed (see --web-origin)\n"
        return cast("bytes | int", super().render_GET(request))


def _client(request: Request) -> str | None:
    """Where a request comes from, as the per-address limits count it."""
    return source(getattr(request.getClientAddress(), "host", None))


class _Builder:
    """Builds a browser's L{ChatWebSocket} on the chat's room."""

    def __init__(self, factory: ChatFactory) -> None:
        self.factory = factory

    def buildProtocol(self, request: Request) -> ChatWebSocket:
        """Called as the connection becomes a WebSocket: it leaves the
        site's count, for the chat's (L{Channel.upgraded})."""
        cast(Channel, request.channel).upgraded()
        return ChatWebSocket(self.factory, _client(request), request.channel)


class _Root(Resource):
    """C{/}: the page's files and C{/ws}; anything else is not found."""

    def getChild(self, path: bytes, request: Request) -> Any:
        return notFound()


class _PageFile(Resource):
    """One file of the page, read once: small files, sent whole (no ranges,
    no directory, nothing from the disk at request time).

    C{no-cache}: a browser may keep a file but asks the server each time
    whether it is still the one (its C{ETag}, a hash of it: C{304}, no body,
    when it is), so that a page updated on the server is the page users
    get on their next load; the same for the service worker (sw.js), which
    is how an installed page learns of an update."""

    isLeaf = True

    def __init__(self, body: bytes, content_type: str) -> None:
        super().__init__()
        self.body = body
        self.content_type = content_type
        self.etag = b'"' + hashlib.sha256(body).hexdigest()[:32].encode() + b'"'

    def render_GET(self, request: Request) -> bytes:
        request.setHeader("content-type", self.content_type)
        request.setHeader("cache-control", "no-cache")
        if request.setETag(self.etag) is CACHED:
            return b""
        return self.body

    def render_HEAD(self, request: Request) -> bytes:
        return self.render_GET(request)


class _Refusal(Resource):
    """An answer with no page: a status (its code and message) and one
    line of text."""

    isLeaf = True

    def __init__(self, code: int, message: bytes, text: bytes) -> None:
        super().__init__()
        self.code = code
        self.message = message
        self.text = text

    def render(self, request: Request) -> bytes:
        request.setResponseCode(self.code, self.message)
        request.setHeader("content-type", "text/plain; charset=utf-8")
        return self.text


MISDIRECTED = _Refusal(
    421, b"Misdirected Request", b"host not served (see --web-host)\n"
)


class _SecureSite(BoundedSite):
    """The site, whose every response carries the security headers (the
    page's, its files', a 404's, a refused handshake's), which answers
    only the host names it serves (L{served_host}; 421 for any other), and
    whose connections are bounded (chatproto/sites.py) until they are
    WebSockets."""

    def __init__(
        self,
        resource: Resource,
        clock: IReactorTime,
        connections: Admission[Channel],
        hosts: frozenset[str] = frozenset(),
    ) -> None:
        super().__init__(resource, clock, connections)
        self.hosts = hosts  # --web-host: the names served besides localhost

    def getResourceFor(self, request: Request) -> Resource:
        for name, value in SECURITY_HEADERS:
            request.setHeader(name, value)
        host = request.getHeader("host")
        if not served_host(host, request.getHost(), self.hosts):
            self.admission.metrics.refused("host_not_served", _client(request))
            return MISDIRECTED
        return cast(Resource, super().getResourceFor(request))

    def log(self, request: Any) -> None:
        """No access log: the chat logs who joins and leaves, as for TCP."""


def pending_limit(config: ServerConfig) -> int:
    """The connections the site holds before they are WebSockets: a quarter
    of --max-connections, and at least 64 (a page load opens up to six)."""
    return max(64, config.max_connections // 4)


def site(
    factory: ChatFactory,
    origins: frozenset[str] = frozenset(),
    hosts: frozenset[str] = frozenset(),
) -> BoundedSite:
    """The page at C{/}, its files, and the WebSocket at C{/ws}; nothing
    else (no directory listing), for the host names served (localhost, the
    address reached, C{hosts}). Timeouts run on the chat's clock; refused
    connections count in the chat's metrics."""
    root = _Root()
    for name, (body, content_type) in page_files().items():
        page = _PageFile(body, content_type)
        root.putChild(b"" if name == "index.html" else name.encode(), page)
    root.putChild(b"ws", ChatWebSocketResource(factory, origins))
    connections = admission(
        factory.config, pending_limit(factory.config), factory.clock, factory.metrics
    )
    return _SecureSite(root, factory.clock, connections, hosts)


def page_files() -> dict[str, tuple[bytes, str]]:
    """The page's files, by name: their bytes and content type. The icons
    are drawn (L{PAGE_ICONS}); in the service worker, L{VERSION_MARK}
    becomes the page's version, a hash of every other file, so that any
    change to the page is a new worker for the browsers that have one."""
    files = {
        name: ((PAGE / name).read_bytes(), content_type)
        for name, content_type in PAGE_FILES.items()
    }
    for name, size in PAGE_ICONS.items():
        files[name] = (icon(size), "image/png")
    worker, content_type = files["sw.js"]
    if VERSION_MARK not in worker:
        raise ValueError(f"{PAGE / 'sw.js'} lacks {VERSION_MARK.decode()}")
    version = hashlib.sha256()
    for name in sorted(files):
        version.update(name.encode() + b"\0" + files[name][0] + b"\0")
    mark = version.hexdigest()[:16].encode()
    files["sw.js"] = (worker.replace(VERSION_MARK, mark), content_type)
    return files
