"""What both user interfaces share: one chat session, from the first
connection to the exit status.

A L{ClientSession} owns the connection (a L{ChatClientProtocol}, and a new one when
a refused nickname is asked again), the user's lines until there is one to
take them, and one L{TokenBucket} for all its connections, because
chatproto's server remembers what an address spent: the pacing of
L{chatproto.client.pacing} spans reconnections. A user interface (a
L{ClientUI}: the pipe, L{chatproto.client.pipe}, or the terminal,
L{chatproto.client.terminal}) shows the events and feeds the user's lines;
L{run} runs one session on a reactor and turns its end into the exit status.

When the server asks for the password of a protected nickname (a
L{PasswordPrompt}), the session answers it with the password of
C{--password-file} if it was given; otherwise the user's next line is the
password, and L{ClientSession.asking_password} says so to the interface
(the terminal reads it without echo). The client sends a password only
then, or when the user types a command that carries one.

Exit status: 0 after a C{/quit} the server acknowledged (or leaving before
registering), when no line of the user was refused; 1, with one sentence on
standard error, when the server refuses the nickname (in a pipe), cannot
register it because its cluster stays unavailable for C{--timeout}, cuts the
client for flooding, answered some of the user's lines with an error line
(the session goes on; the sentence at the end counts them), ends the
session, closes, cannot be reached or stops answering; 2 for a usage error.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet import defer, error
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.python.failure import Failure

from chatproto.client.events import (
    Disconnected,
    Event,
    PasswordPrompt,
    Refused,
    Registered,
)
from chatproto.client.masking import masked
from chatproto.client.options import (
    ClientOptions,
    build_parser,
    make_endpoint,
    read_password,
)
from chatproto.client.pacing import TokenBucket
from chatproto.client.protocol import ChatClientFactory, ChatClientProtocol
from chatproto.client.registration import Stage
from chatproto.client.servers import NICKNAME
from chatproto.client.timings import Timings, seconds

__all__ = ["ClientSession", "ClientUI", "run"]


class ClientUI(Protocol):
    """What a L{ClientSession} needs from a user interface."""

    def show(self, event: Event) -> None:
        """Show one event of the protocol."""

    def ask_nickname(self, why: str) -> None:
        """A nickname was refused (C{why} says so): the next line the user
        types is another try."""

    def start(self) -> None:
        """Start reading the user's lines, for L{ClientSession.user_line}."""

    def stop(self) -> Deferred[None] | None:
        """The session is over: show what is left to show, stop reading;
        fire once the terminal is back to normal."""


class _Relay:
    """The view of one connection attempt: stale attempts are not heard."""

    def __init__(self, session: ClientSession, attempt: int) -> None:
        self.session = session
        self.attempt = attempt

    def show(self, event: Event) -> None:
        self.session._event(self.attempt, event)


class ClientSession:
    """One chat session: the connection, the user's lines, how it ends.

    C{done} fires with C{(exit status, sentence or None)}. With C{reask}, a
    refused nickname is asked again (on the same connection when the server
    still waits for one, on a new connection otherwise); without it, a
    refusal ends the session. C{password} answers the server's password
    prompts.
    """

    def __init__(
        self,
        clock: IReactorTime,
        endpoint: IStreamClientEndpoint,
        target: str,
        *,
        timings: Timings | None = None,
        nickname: str | None = None,
        reask: bool = False,
        password: str | None = None,
    ) -> None:
        self.clock = clock
        self.endpoint = endpoint
        self.target = target
        self.timings = timings or Timings()
        self.nickname = nickname
        self.reask = reask
        self._password = password
        # One for all the connections: chatproto's server remembers what an
        # address spent, so reconnecting does not refill the burst.
        self.bucket = TokenBucket(self.timings.burst, self.timings.rate)
        self.ui: ClientUI | None = None
        self.done: Deferred[tuple[int, str | None]] = Deferred()
        #: The user left (L{user_quit}): their further lines are dropped.
        self.leaving = False
        #: A nickname was refused and the user is being asked another: the
        #: next line the user types is that nickname.
        self.reasking = False
        self._protocol: ChatClientProtocol | None = None
        self._attempt = 0
        self._pending: list[str] = []
        self._refusal: str | None = None
        self._interrupted = False

    def start(self) -> None:
        self._connect(self.nickname)

    @property
    def asking_password(self) -> bool:
        """The server waits for the password of the nickname sent, and the
        user is to type it: the next line the user types is that password."""
        proto = self._protocol
        return (
            self._password is None
            and proto is not None
            and proto.stage is Stage.PASSWORD
            and proto.waiting == 0
        )

    @property
    def waiting(self) -> int:
        """How many of the user's lines wait to be sent (pacing, or an
        answer the client waits for)."""
        if self._protocol is None:
            return len(self._pending)
        return self._protocol.waiting

    # -- What the user does --

    def user_line(self, text: str) -> None:
        """A line the user typed (or piped)."""
        if self.done.called or self.leaving:
            return
        if "\n" in text:
            # A paste on a terminal: each of its lines is one line, paced
            # and counted as such (and a /quit among them leaves).
            for line in text.split("\n"):
                self.user_line(line.removesuffix("\r"))
            return
        if text.strip() == "/quit":
            self.user_quit()
        elif self.reasking:
            self._retry(text.strip())
        elif self._protocol is not None:
            self._protocol.send(text)
        else:
            self._pending.append(text)

    def user_quit(self) -> None:
        """End of input, Ctrl-D, Ctrl-C or /quit: leave cleanly."""
        if self.done.called or self.leaving:
            return
        self.leaving = True
        if self._protocol is not None:
            self._protocol.quit()
        elif self.reasking:
            self._finish(1, self._refusal)

    def pause_reading(self) -> None:
        """Read nothing more from the server until L{resume_reading}: the
        user interface owes the terminal too many of its lines."""
        if self._protocol is not None:
            self._protocol.pause_reading()

    def resume_reading(self) -> None:
        """Read the server again."""
        if self._protocol is not None:
            self._protocol.resume_reading()

    def interrupt(self) -> None:
        """A signal: leave cleanly the first time, at once the second."""
        if self.done.called:
            return
        if not self._interrupted and not self.leaving:
            self._interrupted = True
            self.user_quit()
            return
        if self._protocol is not None:
            self._protocol.abort("Interrupted.")
        else:
            self._finish(1, "Interrupted.")

    # -- The connection --

    def _connect(self, nickname: str | None) -> None:
        self._attempt += 1
        attempt = self._attempt
        factory = ChatClientFactory(
            _Relay(self, attempt), self.clock, self.timings, self.bucket
        )
        connecting = self.endpoint.connect(factory)
        connecting.addTimeout(self.timings.timeout, self.clock)
        connecting.addCallbacks(
            lambda proto: self._connected(attempt, proto, nickname),
            lambda failure: self._unreachable(attempt, failure),
        )

    def _connected(
        self, attempt: int, proto: ChatClientProtocol, nickname: str | None
    ) -> None:
        if attempt != self._attempt or self.done.called:
            proto.abort("Not needed any more.")
            return
        self._protocol = proto
        if nickname is not None:
            proto.register(nickname)
        pending, self._pending = self._pending, []
        for line in pending:
            proto.send(line)
        if self.leaving:
            proto.quit()

    def _unreachable(self, attempt: int, failure: Failure) -> None:
        if attempt == self._attempt:
            self._finish(1, f"Cannot reach {self.target}: {self._why(failure)}.")

    def _why(self, failure: Failure) -> str:
        if failure.check(error.ConnectionRefusedError):
            return "the connection was refused"
        if failure.check(error.DNSLookupError):
            return "unknown host"
        if failure.check(defer.TimeoutError, error.TimeoutError):
            return f"no answer within {seconds(self.timings.timeout)}"
        return failure.getErrorMessage().strip().rstrip(".") or repr(failure.value)

    def _event(self, attempt: int, event: Event) -> None:
        if attempt != self._attempt or self.done.called:
            return
        assert self.ui is not None
        if isinstance(event, Disconnected):
            self._protocol = None
            if self.reasking and not self.leaving:
                return  # the next nickname goes on a new connection
            self._finish(0 if event.ok else 1, None if event.ok else event.reason)
            return
        if isinstance(event, PasswordPrompt) and self._password is not None:
            assert self._protocol is not None
            self._protocol.answer_password(self._password)
        self.ui.show(event)
        if isinstance(event, Registered):
            self.reasking = False
            self._refusal = None
        elif isinstance(event, Refused):
            self._refusal = event.sentence
            if self.reask and not self.leaving:
                self.reasking = True
                self.ui.ask_nickname(event.sentence)
            elif self._protocol is not None:
                self._protocol.give_up()

    def _retry(self, nickname: str) -> None:
        if not NICKNAME.fullmatch(nickname):
            assert self.ui is not None
            self.ui.ask_nickname(
                f"{masked(nickname)!r} is not a nickname:"
                " 2 to 12 letters, digits, '_' or '-'."
            )
            return
        self.reasking = False
        proto = self._protocol
        if proto is not None and proto.can_register:
            proto.register(nickname)
            return
        self._protocol = None
        self._connect(nickname)
        if proto is not None:  # after _connect: its end is a stale attempt's
            proto.abort("Reconnecting.")

    def _finish(self, code: int, sentence: str | None) -> None:
        if not self.done.called:
            self.done.callback((code, sentence))


def run(
    reactor: Any,
    options: ClientOptions,
    make_ui: Callable[[ClientSession], ClientUI],
    *,
    reask: bool,
) -> int:
    """Run one session on C{reactor} (not running yet) to its end; print
    the closing sentence on standard error and return the exit status."""
    password = None
    try:
        endpoint = make_endpoint(reactor, options)
        if options.password_file is not None:
            password, warning = read_password(options.password_file)
            if warning is not None:
                print(f"{build_parser().prog}: {warning}", file=sys.stderr)
    except ValueError as e:
        print(f"{build_parser().prog}: error: {e}", file=sys.stderr)
        return 2
    session = ClientSession(
        reactor,
        endpoint,
        options.target,
        timings=Timings(timeout=options.timeout),
        nickname=options.nick,
        reask=reask,
        password=password,
    )
    ui = session.ui = make_ui(session)
    result: list[tuple[int, str | None]] = []

    def stop(outcome: tuple[int, str | None]) -> None:
        result.append(outcome)
        stopped = ui.stop()
        if stopped is None:
            reactor.stop()
        else:
            stopped.addBoth(lambda _: reactor.stop())

    def begin() -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: reactor.callFromThread(session.interrupt))
        session.done.addCallback(stop)
        session.start()
        ui.start()

    reactor.callWhenRunning(begin)
    reactor.run()
    code, sentence = result[0] if result else (1, "Interrupted.")
    if sentence:
        print(sentence, file=sys.stderr)
    return code
