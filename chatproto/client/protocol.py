"""The client side of the chat line protocol (docs/protocol.md).

L{ChatClientProtocol} turns what a chat server sends into the typed events
of L{chatproto.client.events} (L{Welcome}, L{Public}, L{Refused}, ...) and
hands each one to a view: any object with a C{show(event)} method. The two
user interfaces of C{python -m chatproto.client} are such views, through a
L{chatproto.client.session.ClientSession}; this module knows nothing of them.
The protocol speaks to three servers: chatproto's own, the Ruby
C{server.rb} and the seed's C{projet.py}. It knows the wording of each,
answers C{ping} with C{pong} without showing it, and turns any line it does
not know into a L{Notice} that shows the line as it came. Every text an
event carries is made harmless by L{sanitize}.

Time, always read from the injected clock (L{Timings} holds the numbers):

 - C{quiet}: C{projet.py} sometimes sends a last line without its C{\\n}.
   Such a partial line, and a user list block that was never closed, are
   shown once the connection has been quiet for C{quiet} seconds, or when it
   closes: never later, and never twice.
 - C{timeout}: how long the client waits for an answer it needs before it
   gives up and says the server stopped answering: the first line after
   connecting, the nickname prompt after C{/pseudo}, the verdict on a
   nickname, the answer to C{/quit}. While it waits, the lines the user
   typed wait too, so that a server that reads one line at a time sees them
   in the order of the conversation. It is also how long the server may
   leave unread what the client wrote (see below).
 - C{missed_pings}: a chat may stay silent for hours, so silence alone is
   never an error. Once the server has sent two pings, though, their spacing
   is known, and C{missed_pings} such intervals without a byte from the
   server mean that it is gone. (C{projet.py} never pings.)
 - C{linger}: how long a connection the client closes may take to close
   (TLS waits for the server's close_notify) before it is cut.
 - C{send_interval}: C{projet.py} reads its socket in 1024-byte chunks and
   takes each chunk for one message, so two lines that arrive together
   become one garbled message. With that server, known by its lower-case
   welcome, the client writes one line per TCP segment and spaces them.
 - C{burst} and C{rate}: chatproto's server lets a connection send 5 lines
   at once, then 2 a second, queues a few more and disconnects a client that
   sends beyond that (C{Trop de messages trop vite}). So the client paces
   every line it writes for the user (registration and C{/quit} included,
   never a C{pong}) with a L{TokenBucket} a little slower than that: a
   paste or a piped file goes out whole, in order, at the rate the server
   takes. The Ruby server has no flood control and reads as fast as lines
   come, so once the registration shows it is that server (a user list
   block with no C{Bienvenue NICK} before it) the client stops pacing;
   until then it cannot tell the two apart (same welcome, same prompt) and
   paces, which costs nothing within the burst.

A hostile server cannot make the client hold without bound what it sends
or what it does not read: a line longer than C{MAX_LENGTH} is cut; a user
list block longer than C{ListBlock.MAX_LINES} lines or C{MAX_CHARS}
characters is shown as far as it went (a L{UserList} that is C{cut}), and
the lines after it as lines of their own. The protocol is the streaming
producer of its transport: once the transport holds more than it wants to
(its buffer size, 64 KiB for TCP) because the server does not read, the
user's lines wait, and a flood of pings is answered with one C{pong} once
the server has read the rest. A server that leaves it so for C{timeout}
seconds has stopped reading: the client closes, saying how many of the
user's lines were never sent.

What the client cannot deliver, it says: chatproto's server answers a line
it does not take with an C{Erreur ...} line (unknown command, absent user for
a private line, internal error...), and a line sent before registering with
the welcome again (so does the Ruby server): each one counts as one line
lost, and the session, which goes on, ends as a failure. A cut for flooding
ends it at once, counting the lines never sent. A nickname refused because
the cluster is unavailable (C{Erreur : inscription impossible pour le
moment...}) is tried again, waiting 0.5 s, then 1 s, 2 s, up to 4 s between
tries, for C{timeout} seconds in all, and then the session ends as a
failure.

Leaving (L{ChatClientProtocol.quit}) depends on where registration stands:

 - registered, or the server waits for C{/pseudo}: C{/quit}, then wait for
   C{Deconnexion} or the close. The Ruby server never closes after it, so the
   client closes; before registration it answers C{/quit} with its welcome,
   which is answer enough.
 - at the nickname prompt: the Ruby server would register C{/quit} as a
   nickname, so the client just closes (the Ruby server's thread ends,
   chatproto's server forgets the connection); C{projet.py}, which spins
   forever on a socket closed without C{/quit}, gets C{/quit} twice (refused
   as a nickname, then taken as the command).
 - at the password prompt of a protected nickname: chatproto's server would
   take C{/quit} for the password, so the client just closes.
 - after a taken nickname (the Ruby server's thread is dead, C{projet.py}
   closes): close once the server's last lines have come.

The parts of the protocol each have a class of their own, in the modules
below this one: L{chatproto.client.reading} (what a line means, and the
outcome), L{chatproto.client.registration}, L{chatproto.client.pacing},
L{chatproto.client.userlist}, L{chatproto.client.liveness}, and the
wording of each server in L{chatproto.client.servers}.

How a session ends decides the exit status of the command line client; the
last event is always one L{Disconnected}, whose C{ok} is true only when the
user left and the server acknowledged (or the user left before registering).
"""

from __future__ import annotations

import contextlib
from typing import cast

from twisted.internet.interfaces import (
    IConsumer,
    IDelayedCall,
    IPushProducer,
    IReactorTime,
)
from twisted.internet.protocol import ClientFactory, connectionDone
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from chatproto.client.events import ChatView, Goodbye, Notice
from chatproto.client.liveness import AnswerWait, PingWatch
from chatproto.client.pacing import QUIT, Item, Outbox, Quit, Register, TokenBucket
from chatproto.client.reading import Outcome, ServerReader
from chatproto.client.registration import Registration, Stage
from chatproto.client.servers import Dialect
from chatproto.client.timings import Timings, seconds
from chatproto.text import REPLACEMENT, UNSAFE

__all__ = [
    "ChatClientFactory",
    "ChatClientProtocol",
    "Timings",
    "TokenBucket",
    "sanitize",
]


# -- Making text harmless ---------------------------------------------------


#: C0 controls but TAB, and DEL, in caret notation.
_CARET = {code: "^" + chr(code + 0x40) for code in range(0x20) if code != 0x09} | {
    0x7F: "^?"
}


def sanitize(text: str) -> str:
    """Make C{text} safe to write to a terminal, keeping it readable.

    C0 controls but TAB, and DEL, become caret notation (ESC is C{^[}, so an
    escape sequence shows as C{^[[2J} and does nothing). Every other
    character chatproto's server replaces in a user's line
    (L{chatproto.text.UNSAFE}) becomes U+FFFD here too, whatever the server:
    C1 controls (C{\\x9b} is a one-byte CSI), the Unicode line separators,
    the bidirectional embeddings, overrides and isolates (which would show a
    line backwards) and the invisible characters that hide text. The marks
    LRM, RLM and ALM stay, as on the server: each is one invisible letter of
    its direction, which reorders nothing a letter of that script could not,
    and right-to-left text needs them.
    """
    return UNSAFE.sub(REPLACEMENT, text.translate(_CARET))


@implementer(IPushProducer)
class ChatClientProtocol(LineReceiver):
    """One connection to a chat server, seen from the user's side.

    Call L{send} with each line the user types, L{register} to register a
    nickname, L{quit} to leave and L{give_up} to leave after a failure; read
    the outcome from the final L{Disconnected} event. It frames the
    server's bytes into lines, answers pings, writes the user's lines and
    leaves; what each line means is the L{ServerReader}'s, where the
    registration stands the L{Registration}'s, when a line may go the
    L{Outbox}'s, and the deadlines L{PingWatch}'s and L{AnswerWait}'s.
    """

    delimiter = b"\n"
    MAX_LENGTH = 65536

    def __init__(
        self,
        view: ChatView,
        clock: IReactorTime,
        timings: Timings | None = None,
        bucket: TokenBucket | None = None,
    ) -> None:
        self.view = view
        self.clock = clock
        self.timings = timings or Timings()
        bucket = bucket or TokenBucket(self.timings.burst, self.timings.rate)
        self.outbox = Outbox(clock, self.timings, bucket, self._ready, self._dispatch)
        self.registration = Registration(clock, self.timings)
        self.liveness = PingWatch(clock, self.timings, self.abort)
        self.answer = AnswerWait(clock, self.timings, self.abort)
        self.outcome = Outcome()
        self.reader = ServerReader(
            view, self.registration, self.outbox, self.outcome, self
        )
        #: The user left (L{quit}, L{give_up} or L{abort}): nothing more
        #: of theirs is sent.
        self.leaving = False
        #: C{/quit} was written: only C{Deconnexion} or the close answers it.
        self.quit_sent = False
        self._close_when_quiet = False
        self._closed = False
        self._skipping = False
        self._owed_newline = False
        self._refeed = b""
        self._quiet_timer: IDelayedCall | None = None
        #: Set while the transport holds more than it wants to: the
        #: deadline for the server to read it.
        self._unread_timer: IDelayedCall | None = None
        #: A ping came while the transport was so: one pong, once it is not.
        self._pong_owed = False
        self._linger_timer: IDelayedCall | None = None
        #: L{pause_reading} stopped reading the server.
        self._reading_paused = False

    @property
    def stage(self) -> Stage:
        """Where the registration stands, as far as the client can tell."""
        return self.registration.stage

    @property
    def dialect(self) -> Dialect:
        """Which server this is, as far as its lines have told so far."""
        return self.reader.dialect

    @property
    def nickname(self) -> str | None:
        """The nickname the server took, once it took one."""
        return self.registration.nickname

    @property
    def room(self) -> str | None:
        """The user's current room, once the server said it (chatproto's
        rooms); None before, and always with a server without rooms."""
        return self.reader.room

    # -- What the user does -------------------------------------------------

    def send(self, line: str) -> None:
        """Send a line the user typed; C{/quit} leaves as L{quit} does."""
        if line.strip() == "/quit":
            self.quit()
            return
        if self.leaving or self._closed:
            return
        self.outbox.put(line)

    def answer_password(self, password: str) -> None:
        """Send C{password}, which the server asked for (a protected
        nickname), before any line the user typed meanwhile, and before
        C{/quit} if the user is leaving already (the end of a pipe's input
        after its lines: they are to be said under that nickname)."""
        if self._closed:
            return
        self.outbox.queue.appendleft(password)
        self.outbox.pump()

    def register(self, nickname: str) -> None:
        """Register C{nickname}: C{/pseudo}, the prompt, then the nickname."""
        if self.leaving or self._closed:
            return
        self.outbox.put(Register(nickname))

    @property
    def waiting(self) -> int:
        """How many of the user's lines wait to be sent."""
        return self.outbox.waiting

    @property
    def can_register(self) -> bool:
        """The server would take a nickname on this connection now."""
        return not self._closed and self.registration.open

    def quit(self) -> None:
        """Leave once the lines already typed are sent: C{/quit}, then wait
        (C{timeout} at most) for C{Deconnexion} or the server's close."""
        if self.leaving or self._closed:
            return
        self.leaving = True
        self.outbox.put(QUIT)

    def give_up(self, reason: str | None = None) -> None:
        """Leave now, dropping the lines not sent yet, and end the session as
        a failure (with C{reason}, or the reason already known)."""
        if reason is not None:
            self.outcome.settle(False, reason)
        if self._closed or self.quit_sent:
            return
        self.outbox.queue.clear()
        self.outbox.queue.append(QUIT)
        self.leaving = True
        self.outbox.pump()

    def pause_reading(self) -> None:
        """Read nothing more from the server until L{resume_reading} (the
        user interface has too much left to show). Meanwhile the server's
        silence is the client's doing: a partial line is not shown for a
        quiet time, and no missed ping counts."""
        if self._closed or self.transport is None or self._reading_paused:
            return
        self._reading_paused = True
        self._cancel("_quiet_timer")
        self.liveness.stop()
        cast(IPushProducer, self.transport).pauseProducing()

    def resume_reading(self) -> None:
        """Read the server again."""
        if self._closed or self.transport is None or not self._reading_paused:
            return
        self._reading_paused = False
        cast(IPushProducer, self.transport).resumeProducing()
        self.liveness.watch()
        if self._buffer or self.reader.block is not None or self._close_when_quiet:
            self._restart_quiet()

    def abort(self, reason: str) -> None:
        """Close at once, as a failure, without a word to the server."""
        self.outcome.settle(False, reason)
        self.outbox.queue.clear()
        self.leaving = True
        self.close(abort=True)

    # -- Twisted -----------------------------------------------------------------

    def connectionMade(self) -> None:
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            with contextlib.suppress(OSError):  # not a TCP socket after all
                set_no_delay(True)
        # Every stream transport is its consumer too (TLS does not declare it).
        cast(IConsumer, self.transport).registerProducer(self, True)
        self.answer.expect("a welcome line")

    def pauseProducing(self) -> None:
        """The transport holds more than it wants to: the server is not
        reading. Write nothing more until it has read it. (Twisted's TCP
        transport says so again at each write while its buffer is full.)"""
        if self._unread_timer is None:
            self._unread_timer = self.clock.callLater(
                self.timings.timeout, self._unread
            )

    def resumeProducing(self) -> None:
        """The server read all the client wrote: answer the pings that came
        meanwhile (one pong), and send what waits."""
        self._cancel("_unread_timer")
        if self._pong_owed:
            self._pong_owed = False
            self.sendLine(b"pong")
        self.outbox.pump()

    def stopProducing(self) -> None:
        """The connection is lost: L{connectionLost} follows."""

    def dataReceived(self, data: bytes) -> None:
        self.liveness.heard()
        if self._skipping:
            end = data.find(b"\n")
            if end < 0:
                return
            data = data[end + 1 :]
            self._skipping = False
        if self._owed_newline and data:
            # This ends the partial line already shown after a quiet time.
            self._owed_newline = False
            for ending in (b"\r\n", b"\n"):
                if data.startswith(ending):
                    data = data[len(ending) :]
                    break
        super().dataReceived(data)
        while self._refeed and not self._closing:
            data, self._refeed = self._refeed, b""
            super().dataReceived(data)
        if self._closing:
            return
        partial = bool(data) and not data.endswith(b"\n")
        if self._reading_paused:
            self._cancel("_quiet_timer")  # resume_reading starts it again
        elif partial or self.reader.block is not None or self._close_when_quiet:
            self._restart_quiet()
        else:
            self._cancel("_quiet_timer")

    def lineReceived(self, line: bytes) -> None:
        if not self._closed:
            self._line(line)

    def _flush_buffer(self) -> bool:
        """Show what the line buffer holds: the lines left unread when the
        connection closed, and the last line even without its C{\\n}.
        Tell whether there was such a partial line."""
        *lines, partial = self.clearLineBuffer().split(b"\n")
        for line in lines:
            self._line(line)
        if partial:
            self._line(partial)
        return bool(partial)

    def lineLengthExceeded(self, line: bytes) -> None:
        head, newline, rest = line.partition(b"\n")
        shown = sanitize(head[:200].decode("utf-8", "replace"))
        # Without its end, the line's length is not known yet: only that
        # it passed the limit (a line of 10 MiB was said to be 112640 bytes).
        size = f"{len(head)} bytes" if newline else f"over {self.MAX_LENGTH} bytes"
        self.view.show(Notice(lines=(f"{shown}… ({size}, cut)",)))
        if newline:
            self._refeed = rest
        else:
            self._skipping = True

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._closed = True
        self._flush_buffer()
        self.reader.flush_block()
        for timer in ("_quiet_timer", "_unread_timer"):
            self._cancel(timer)
        self.answer.stop()
        self.outbox.stop()
        self.liveness.stop()
        self._cancel("_linger_timer")
        self.outbox.queue.clear()
        left = self.quit_sent or self.registration.candidate == "/quit"
        self.view.show(self.outcome.final(reason, left, self.reader.undelivered))

    # -- Incoming lines --------------------------------------------------------

    def _line(self, raw: bytes) -> None:
        text = sanitize(raw.decode("utf-8", "replace").removesuffix("\r"))
        if text == "ping":
            self._ping()
            return
        self.reader.line(text)

    def goodbye(self, text: str) -> None:
        """The server said C{Deconnexion} (C{text}): the session is over."""
        if self.leaving:
            self.outcome.settle(True, "Left the chat.")
        else:
            self.outcome.settle(False, "The server ended the session.")
        self.view.show(Goodbye(lines=(text,)))
        self.answer.stop()
        # The Ruby server never closes after Deconnexion: close here.
        self.close()

    def flooded(self, text: str) -> None:
        """Cut for flooding: the server closes; whatever waits here is lost."""
        why = self.outbox.unsent(
            "The server disconnected the client for sending too fast"
        )
        self.outbox.queue.clear()
        self.leaving = True
        self.answer.stop()
        self.answer.awaiting = None
        self.outcome.verdict = (False, why)
        self.view.show(Notice(lines=(text,)))
        self.close()

    @property
    def _closing(self) -> bool:
        return (
            self._closed
            or self.transport is None
            or bool(getattr(self.transport, "disconnecting", False))
        )

    # -- Liveness ----------------------------------------------------------------

    def _ping(self) -> None:
        self.liveness.pinged()
        if self._unread_timer is not None:
            self._pong_owed = True
        elif not self._closed:
            self.sendLine(b"pong")
        if not self._reading_paused:
            self.liveness.watch()

    def _unread(self) -> None:
        self._unread_timer = None
        self.abort(
            self.outbox.unsent(
                "The server stopped reading what the client sends"
                f" (nothing read for {seconds(self.timings.timeout)})"
            )
        )

    def _restart_quiet(self) -> None:
        if self._quiet_timer is not None and self._quiet_timer.active():
            self._quiet_timer.reset(self.timings.quiet)
        else:
            self._quiet_timer = self.clock.callLater(self.timings.quiet, self._quiet)

    def _quiet(self) -> None:
        self._quiet_timer = None
        self._owed_newline = self._flush_buffer()
        self.reader.flush_block()
        if self._close_when_quiet:
            self.close()

    # -- Outgoing lines -------------------------------------------------------

    def answered(self) -> None:
        """A line of the server answered what the client waited for, if
        anything: what waits may go."""
        if self.answer.answered():
            self.outbox.pump()

    def _ready(self) -> bool:
        """The outbox may hand out a line: no answer awaited, and the server
        reads what it is sent."""
        return (
            self.answer.awaiting is None
            and not self._closing
            and self._unread_timer is None
        )

    def _dispatch(self, item: Item) -> None:
        if isinstance(item, Register):
            self._dispatch_register(item.nickname)
        elif isinstance(item, Quit):
            self._dispatch_quit()
        else:
            awaited = self.registration.sending(item, self.reader.dialect)
            self._write(item)
            if awaited is not None:
                self.answer.expect(awaited)

    def _dispatch_register(self, nickname: str) -> None:
        if self.registration.stage is Stage.PROMPTED:
            self._dispatch(nickname)
        elif self.registration.stage is Stage.WELCOMED:
            self.outbox.queue.appendleft(nickname)
            self._dispatch("/pseudo")

    def _dispatch_quit(self) -> None:
        stage = self.registration.stage
        if stage is Stage.SPENT:
            # Let the server's last lines arrive (projet.py sends
            # Déconnexion), then close: nothing else will come.
            self._close_when_quiet = True
            self._restart_quiet()
        elif stage is Stage.PROMPTED and self.reader.dialect is Dialect.SEED:
            # projet.py spins forever on a socket closed without /quit; it
            # refuses /quit as a nickname, then takes the second as a command.
            self.outbox.queue.appendleft(QUIT)
            self._dispatch("/quit")
        elif stage in (Stage.PROMPTED, Stage.PASSWORD):
            # The Ruby server would take /quit for a nickname, chatproto's
            # for a password. Closed at its prompt, the Ruby server's thread
            # just dies (after 'Rentrez un pseudo correct' it registers a
            # ghost user: its bug, which any line would trigger too);
            # chatproto's server forgets the connection.
            self.outcome.settle(True, "Left the chat before registering.")
            self.close()
        else:
            self.quit_sent = True
            self._write("/quit")
            self.answer.expect("an answer to /quit")

    def _write(self, line: str) -> None:
        assert self.transport is not None
        self.transport.write(line.encode("utf-8", "replace") + self.delimiter)
        self.outbox.wrote()

    # -- Ending ------------------------------------------------------------------

    def close(self, abort: bool = False) -> None:
        """Close the connection: politely (TLS waits C{linger} at most), or
        at once with C{abort}."""
        self._cancel("_quiet_timer")
        self._close_when_quiet = False
        if self._closed or self.transport is None:
            return
        abort_connection = getattr(self.transport, "abortConnection", None)
        if abort and abort_connection is not None:
            abort_connection()
            return
        if getattr(self.transport, "disconnecting", False):
            return  # closing already
        # A transport with a producer waits for it to go before it closes.
        cast(IConsumer, self.transport).unregisterProducer()
        self.transport.loseConnection()
        if abort_connection is not None and not self._closed:
            # TLS waits for the server's close_notify, which may never come.
            self._cancel("_linger_timer")
            self._linger_timer = self.clock.callLater(
                self.timings.linger, abort_connection
            )

    def _cancel(self, name: str) -> None:
        timer: IDelayedCall | None = getattr(self, name)
        if timer is not None and timer.active():
            timer.cancel()
        setattr(self, name, None)


class ChatClientFactory(ClientFactory):
    """Builds one L{ChatClientProtocol} for C{view}, with the factory's
    clock and timings."""

    def __init__(
        self,
        view: ChatView,
        clock: IReactorTime,
        timings: Timings | None = None,
        bucket: TokenBucket | None = None,
    ) -> None:
        self.view = view
        self.clock = clock
        self.timings = timings or Timings()
        self.bucket = bucket

    def buildProtocol(self, addr: object) -> ChatClientProtocol:
        proto = ChatClientProtocol(self.view, self.clock, self.timings, self.bucket)
        proto.factory = self
        return proto
