"""The client's command line: C{python -m chatproto.client [HOST] [PORT]},
its options, and the endpoint they name.

Apart from what a valid nickname is (L{chatproto.client.servers.NICKNAME}),
it knows nothing of the chat: L{parse_args} exits with status 2 and
argparse's usage message on a mistake, and L{make_endpoint} raises
C{ValueError} for an endpoint string Twisted cannot read, which the caller
reports the same way; so does L{read_password} for a password file it
cannot use. The password itself is read only then, never kept in the
options (whose repr a traceback would show).
"""

from __future__ import annotations

import argparse
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.endpoints import HostnameEndpoint, clientFromString
from twisted.internet.interfaces import IStreamClientEndpoint

from chatproto.client.servers import NICKNAME

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "ClientOptions",
    "build_parser",
    "make_endpoint",
    "parse_args",
    "read_password",
]

DEFAULT_HOST = "localhost"
DEFAULT_PORT = 7000


@dataclass(frozen=True)
class ClientOptions:
    """The client's command line, parsed: where to connect, as whom."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    endpoint: str | None = None
    nick: str | None = None
    timeout: float = 10.0
    password_file: str | None = None

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
            "Commands go to the server: /pseudo, /list, msg NICK TEXT, /history [N],"
            " /search WORDS, /unread (what was said since you last left),"
            " /join #ROOM, /part [#ROOM], /rooms, /topic [TEXT] (on a server"
            " with rooms: the prompt shows your current room, and another"
            " room's lines have its name highlighted),"
            " /register PASSWORD, /unregister PASSWORD, /help, /quit;"
            " a password is never shown nor kept in the line editor's history."
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
    parser.add_argument(
        "--password-file",
        metavar="FILE",
        help=(
            "when the server asks for the password of a protected nickname,"
            " answer with the first line of FILE (keep it readable by you alone)"
        ),
    )
    return parser


def parse_args(argv: Sequence[str] | None = None) -> ClientOptions:
    """Parse the command line; exit with status 2 and a usage message on
    error, as argparse does."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.connect is not None and (args.host is not None or args.port is not None):
        parser.error("give either HOST [PORT] or --connect ENDPOINT, not both")
    return ClientOptions(
        host=args.host if args.host is not None else DEFAULT_HOST,
        port=args.port if args.port is not None else DEFAULT_PORT,
        endpoint=args.connect,
        nick=args.nick,
        timeout=args.timeout,
        password_file=args.password_file,
    )


def read_password(path: str) -> tuple[str, str | None]:
    """The password in the file C{path}, its first line without the line
    ending, and a warning when others may read the file (or None).
    C{ValueError}, one sentence, when the file cannot be read, is not
    UTF-8 text or holds no password."""
    try:
        with open(path, "rb") as f:
            first = f.readline()
            mode = os.fstat(f.fileno()).st_mode
    except OSError as e:
        raise ValueError(
            f"cannot read the password file {path!r}: {e.strerror or e}"
        ) from None
    try:
        password = first.decode("utf-8").removesuffix("\n").removesuffix("\r")
    except UnicodeDecodeError:
        raise ValueError(f"the password file {path!r} is not UTF-8 text") from None
    if not password:
        raise ValueError(
            f"the password file {path!r} holds no password on its first line"
        )
    warning = None
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        warning = (
            f"warning: the password file {path!r} is readable by other users"
            f" (chmod 600 {path} would keep it yours)"
        )
    return password, warning


def make_endpoint(reactor: Any, options: ClientOptions) -> IStreamClientEndpoint:
    """The endpoint to connect to; C{ValueError} for a bad endpoint string."""
    if options.endpoint is None:
        return HostnameEndpoint(
            reactor, options.host, options.port, timeout=options.timeout
        )
    unreadable: tuple[type[Exception], ...] = ()
    if options.endpoint.partition(":")[0] == "tls":
        # Twisted reads a tls: endpoint's files (trustRoots=, certificate=,
        # privateKey=) as it parses it, with OpenSSL: only a client that
        # asks for TLS imports it.
        from OpenSSL.crypto import Error

        unreadable = (Error,)
    try:
        return clientFromString(reactor, options.endpoint)
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError(f"invalid endpoint {options.endpoint!r}: {e}") from None
    except unreadable as e:
        raise ValueError(
            f"cannot read the files of {options.endpoint!r} ({e}): trustRoots= "
            "names a directory holding only PEM certificates."
        ) from None
