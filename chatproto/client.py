"""The terminal chat client: C{python -m chatproto.client [HOST] [PORT]}.

It talks to chatproto's server, the Ruby C{server.rb} and the seed's
C{projet.py} (see L{chatproto.clientproto} for how it reads each of them).

Two user interfaces render the protocol's events:

 - interactive (standard input and output are terminals): a prompt_toolkit
   line editor with history stays at the bottom while messages arrive above
   it; private messages and server notices have their own colours; a refused
   nickname is asked again. See L{chatproto._tty}.
 - pipe (otherwise): each input line is sent, each line the server sends is
   written to standard output as it came (made harmless), one per line; at
   the end of input the client sends C{/quit} and waits for the answer.

Both pace what the user sends to chatproto's server (its flood control
would cut a paste or a piped file): see L{chatproto.clientproto}.

Exit status: 0 after a C{/quit} the server acknowledged (or leaving before
registering), when no line of the user was refused; 1, with one sentence on
standard error, when the server refuses the nickname (in a pipe), cannot
register it because its cluster stays unavailable for C{--timeout}, cuts the
client for flooding, answered some of the user's lines with an error line
(the session goes on; the sentence at the end counts them), ends the
session, closes, cannot be reached or stops answering; 2 for a usage error.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TextIO

from twisted.internet import defer, error
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, clientFromString
from twisted.internet.interfaces import (
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.python.failure import Failure

from chatproto.clientproto import (
    NICKNAME,
    ChatClientFactory,
    ChatClientProtocol,
    Disconnected,
    Event,
    Refused,
    Registered,
    Timings,
    TokenBucket,
    seconds,
)

__all__ = ["Options", "PipeUI", "Session", "main", "parse_args"]

DEFAULT_HOST = "localhost"
DEFAULT_PORT = 7000


# -- The command line ----------------------------------------------------------


@dataclass(frozen=True)
class Options:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    endpoint: str | None = None
    nick: str | None = None
    timeout: float = 10.0

    @property
    def target(self) -> str:
        """The server, as the user named it."""
        return self.endpoint or f"{self.host}:{self.port}"


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"a port is between 1 and 65535: {port}")
    return port


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0: {text}")
    return seconds


def _nickname(text: str) -> str:
    if not NICKNAME.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a valid nickname (2 to 12 letters, digits, '_' or '-')"
        )
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m chatproto.client",
        description=(
            "Chat with a chatproto, Ruby ProjetReseaux or projet.py server. On a"
            " terminal: a line editor with history, messages above it. In a pipe:"
            " each input line is sent, each server line is printed, and /quit is"
            " sent at the end of input."
        ),
        epilog=(
            "Commands go to the server: /pseudo, /list, msg NICK TEXT, /quit."
            " Lines go out at most 4 at once, then 1.9 a second, under chatproto's"
            " flood control. Exit status: 0 after a /quit the server acknowledged"
            " with every line taken; 1 when the server refuses the nickname,"
            " cannot register it (cluster unavailable for --timeout), cuts the"
            " client for flooding, answers lines with an error, ends the session,"
            " closes, cannot be reached or stops answering; 2 for a usage error."
        ),
    )
    parser.add_argument(
        "host",
        nargs="?",
        metavar="HOST",
        help=f"server host name or address (default: {DEFAULT_HOST})",
    )
    parser.add_argument(
        "port",
        nargs="?",
        type=_port,
        metavar="PORT",
        help=f"server port (default: {DEFAULT_PORT})",
    )
    parser.add_argument(
        "--connect",
        metavar="ENDPOINT",
        help=(
            "a Twisted client endpoint instead of HOST and PORT, for example"
            " tcp:host=example.org:port=7000 or tls:host=example.org:port=7443"
        ),
    )
    parser.add_argument(
        "--nick",
        type=_nickname,
        metavar="NICK",
        help="register NICK on connecting (/pseudo, then the nickname)",
    )
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help=(
            "how long to wait for an answer the client needs: the connection,"
            " the welcome, the nickname prompt and verdict, the answer to /quit;"
            " also how long to keep trying a nickname while the server's cluster"
            " cannot register it (default: 10)"
        ),
    )
    return parser


def parse_args(argv: Sequence[str] | None = None) -> Options:
    """Parse the command line; exit with status 2 and a usage message on
    error, as argparse does."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.connect is not None and (args.host is not None or args.port is not None):
        parser.error("give either HOST [PORT] or --connect ENDPOINT, not both")
    return Options(
        host=args.host if args.host is not None else DEFAULT_HOST,
        port=args.port if args.port is not None else DEFAULT_PORT,
        endpoint=args.connect,
        nick=args.nick,
        timeout=args.timeout,
    )


def make_endpoint(reactor: Any, options: Options) -> IStreamClientEndpoint:
    """The endpoint to connect to; C{ValueError} for a bad endpoint string."""
    if options.endpoint is None:
        return HostnameEndpoint(
            reactor, options.host, options.port, timeout=options.timeout
        )
    try:
        return clientFromString(reactor, options.endpoint)
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError(f"invalid endpoint {options.endpoint!r}: {e}") from None


# -- A session, whatever the user interface ---------------------------------------


class ClientUI(Protocol):
    """What a L{Session} needs from a user interface."""

    def show(self, event: Event) -> None:
        """Show one event of the protocol."""

    def ask_nickname(self, why: str) -> None:
        """A nickname was refused (C{why} says so): the next line the user
        types is another try."""

    def start(self) -> None:
        """Start reading the user's lines, for L{Session.user_line}."""

    def stop(self) -> Deferred[None] | None:
        """The session is over: stop reading; fire once the terminal is
        back to normal."""


class _Relay:
    """The view of one connection attempt: stale attempts are not heard."""

    def __init__(self, session: Session, attempt: int) -> None:
        self.session = session
        self.attempt = attempt

    def show(self, event: Event) -> None:
        self.session._event(self.attempt, event)


class Session:
    """One chat session: the connection, the user's lines, how it ends.

    C{done} fires with C{(exit status, sentence or None)}. With C{reask}, a
    refused nickname is asked again (on the same connection when the server
    still waits for one, on a new connection otherwise); without it, a
    refusal ends the session.
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
    ) -> None:
        self.clock = clock
        self.endpoint = endpoint
        self.target = target
        self.timings = timings or Timings()
        self.nickname = nickname
        self.reask = reask
        # One for all the connections: chatproto's server remembers what an
        # address spent, so reconnecting does not refill the burst.
        self.bucket = TokenBucket(self.timings.burst, self.timings.rate)
        self.ui: ClientUI | None = None
        self.done: Deferred[tuple[int, str | None]] = Deferred()
        self.leaving = False
        self.reasking = False
        self._protocol: ChatClientProtocol | None = None
        self._attempt = 0
        self._pending: list[str] = []
        self._refusal: str | None = None
        self._interrupted = False

    def start(self) -> None:
        self._connect(self.nickname)

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
                f"{nickname!r} is not a nickname: 2 to 12 letters, digits, '_' or '-'."
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


# -- Pipe mode -----------------------------------------------------------------


class PipeUI:
    """Standard input to the session, line by line; each server line to
    C{out} as it came, one per line."""

    def __init__(
        self,
        session: Session,
        out: TextIO,
        input_fd: int | None,
        call_from_thread: Callable[..., None],
    ) -> None:
        self.session = session
        self.out = out
        self.input_fd = input_fd
        self.call_from_thread = call_from_thread
        self.broken = False

    def show(self, event: Event) -> None:
        if self.broken or not event.lines:
            return
        try:
            self.out.write("".join(line + "\n" for line in event.lines))
            self.out.flush()
        except (BrokenPipeError, ValueError):
            # Nobody reads any more (| head): leave, and keep Python quiet
            # about the lost output at exit.
            self.broken = True
            with contextlib.suppress(OSError, ValueError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, self.out.fileno())
            self.session.user_quit()

    def ask_nickname(self, why: str) -> None:
        """Never asked: in a pipe a refusal ends the session."""

    def start(self) -> None:
        if self.input_fd is None:
            self.session.user_quit()
            return
        threading.Thread(
            target=read_lines,
            args=(self.input_fd, self._lines, self.call_from_thread),
            name="stdin",
            daemon=True,
        ).start()

    def _lines(self, lines: list[str]) -> None:
        for line in lines:
            self.session.user_line(line)
        if not lines:
            self.session.user_quit()

    def stop(self) -> None:
        return None


def read_lines(
    fd: int,
    deliver: Callable[[list[str]], None],
    call_from_thread: Callable[..., None],
) -> None:
    """Read C{fd} to its end (in a thread), calling C{deliver} in the
    reactor thread with each batch of lines, and with C{[]} at the end.

    C{os.read} rather than C{sys.stdin}: a daemon thread blocked in a
    buffered read would hold its lock when the interpreter exits.
    """
    rest = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            chunk = b""
        if not chunk:
            break
        *lines, rest = (rest + chunk).split(b"\n")
        if lines:
            call_from_thread(deliver, [_decode(line) for line in lines])
    if rest:
        call_from_thread(deliver, [_decode(rest)])
    call_from_thread(deliver, [])


def _decode(line: bytes) -> str:
    return line.decode("utf-8", "replace").removesuffix("\r")


# -- Running ---------------------------------------------------------------------


def run(
    reactor: Any,
    options: Options,
    make_ui: Callable[[Session], ClientUI],
    *,
    reask: bool,
) -> int:
    """Run one session on C{reactor} (not running yet) to its end; print
    the closing sentence on standard error and return the exit status."""
    try:
        endpoint = make_endpoint(reactor, options)
    except ValueError as e:
        print(f"{build_parser().prog}: error: {e}", file=sys.stderr)
        return 2
    session = Session(
        reactor,
        endpoint,
        options.target,
        timings=Timings(timeout=options.timeout),
        nickname=options.nick,
        reask=reask,
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


def run_pipe(options: Options) -> int:
    """Pipe mode, on the default reactor."""
    from twisted.internet import reactor as default_reactor

    reactor: Any = default_reactor
    with contextlib.suppress(AttributeError, ValueError):
        sys.stdout.reconfigure(errors="replace")  # type: ignore[union-attr]
    try:
        input_fd: int | None = sys.stdin.fileno()
    except (AttributeError, ValueError, OSError):  # no standard input at all
        input_fd = None
    return run(
        reactor,
        options,
        lambda session: PipeUI(session, sys.stdout, input_fd, reactor.callFromThread),
        reask=False,
    )


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    if sys.stdin.isatty() and sys.stdout.isatty():
        from chatproto._tty import run_interactive

        return run_interactive(options)
    return run_pipe(options)


if __name__ == "__main__":
    sys.exit(main())
