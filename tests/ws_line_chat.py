"""A tiny chat over a WebSocket, for bench/chatbench.c's ws dialect.

    python tests/ws_line_chat.py [--ping S] [--port P]

Listens on 127.0.0.1 on port P (default 0: a free port), prints that port on
a line, and serves
the line protocol of docs/protocol.md over C{twisted.web.websocket} at
C{/ws}: each text message from a client is one line, each line to a client
one text message without its C{\\n}. Only what chatbench's chat dialect
waits for: the welcome line, C{/pseudo} and its prompt, C{Bienvenue NICK}
and the user list block (the asker alone), public lines to the others with a
stamp, a C{ping} line every S seconds (C{pong} answered lines are ignored).

It also exercises the parts of RFC 6455 a browser chat may use and chatbench
must handle: every other line to a client is cut into a text frame and
continuation frames, and every S seconds the server sends a WebSocket ping
frame whose pong it checks. On SIGTERM it prints one JSON line of what it
saw (pongs, bad pongs, lines) and exits.

It stands in for the server's own --web front end, which lives on another
branch; it is no part of the chat.
"""

from __future__ import annotations

import argparse
import json
import struct
import time

from twisted.internet import reactor, task
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from twisted.web.websocket import WebSocketResource, WebSocketTransport

WELCOME = "Bienvenue dans le chat v.1, enregistrez-vous avec la commande /pseudo"
PROMPT = "Entrez votre pseudo: "
HYPHENS = "-" * 22
FRAGMENT = 5  # characters per frame of a line sent in pieces


def frame(opcode: int, payload: bytes, fin: bool) -> bytes:
    """One unmasked server frame (RFC 6455 5.2), for lines sent in pieces:
    wsproto sends a message whole, and a browser chat server may not."""
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        return head + bytes([n]) + payload
    if n < 65536:
        return head + bytes([126]) + struct.pack("!H", n) + payload
    return head + bytes([127]) + struct.pack("!Q", n) + payload


class Chat:
    """The users and what the server saw."""

    def __init__(self) -> None:
        self.users: dict[str, User] = {}
        self.stats = {"connections": 0, "lines": 0, "pongs": 0, "bad_pongs": 0}

    def ping_all(self) -> None:
        for user in list(self.users.values()):
            user.send("ping")
            user.transport.ping(b"hb")


class User:
    """One WebSocket connection, registering then chatting."""

    def __init__(self, chat: Chat) -> None:
        self.chat = chat
        self.nick: str | None = None
        self.prompted = False
        self.sent = 0
        self.transport: WebSocketTransport

    def negotiationStarted(self, transport: WebSocketTransport) -> None:
        self.transport = transport

    def negotiationFinished(self) -> None:
        self.chat.stats["connections"] += 1
        self.send(WELCOME)

    def send(self, line: str) -> None:
        """One line, one message; every other one in pieces of FRAGMENT
        characters (a text frame, then continuation frames)."""
        self.sent += 1
        if self.sent % 2 or len(line) <= FRAGMENT:
            self.transport.sendTextMessage(line)
            return
        data = line.encode()
        pieces = [data[i : i + FRAGMENT] for i in range(0, len(data), FRAGMENT)]
        frames = [
            frame(0x1 if i == 0 else 0x0, piece, i == len(pieces) - 1)
            for i, piece in enumerate(pieces)
        ]
        tcp = getattr(self.transport, "transport", None)
        if tcp is None:  # not twisted's wire protocol: send it whole
            self.transport.sendTextMessage(line)
            return
        tcp.write(b"".join(frames))

    def textMessageReceived(self, message: str) -> None:
        line = message.rstrip("\r\n")
        self.chat.stats["lines"] += 1
        if self.nick is None:
            if line == "/pseudo":
                self.prompted = True
                self.send(PROMPT)
            elif self.prompted and line and line not in self.chat.users:
                self.nick = line
                self.chat.users[line] = self
                self.send(f"Bienvenue {line}")
                for text in (HYPHENS, "Utilisateurs en ligne:", f"=>{line}", HYPHENS):
                    self.send(text)
            else:
                self.send(WELCOME)
            return
        if line == "pong" or not line.strip():
            return
        t = time.localtime()
        stamped = f"[{t.tm_hour}.{t.tm_min}.{t.tm_sec}]-{self.nick}: {line}"
        for other in list(self.chat.users.values()):
            if other is not self:
                other.send(stamped)

    def bytesMessageReceived(self, data: bytes | bytearray) -> None:
        pass

    def pongReceived(self, payload: bytes) -> None:
        self.chat.stats["pongs" if payload == b"hb" else "bad_pongs"] += 1

    def connectionLost(self, reason: Failure) -> None:
        if self.nick is not None and self.chat.users.get(self.nick) is self:
            del self.chat.users[self.nick]


class Factory:
    def __init__(self, chat: Chat) -> None:
        self.chat = chat

    def buildProtocol(self, request: Request) -> User:
        return User(self.chat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ping", type=float, default=1.0, help="seconds")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    args = parser.parse_args()
    chat = Chat()
    root = Resource()
    root.putChild(b"ws", WebSocketResource(Factory(chat)))
    site = Site(root)
    port = reactor.listenTCP(args.port, site, interface="127.0.0.1")  # type: ignore[arg-type]
    task.LoopingCall(chat.ping_all).start(args.ping, now=False)

    def report() -> None:
        print(json.dumps(chat.stats), flush=True)

    reactor.addSystemEventTrigger("before", "shutdown", report)
    print(port.getHost().port, flush=True)  # type: ignore[attr-defined]
    reactor.run()


if __name__ == "__main__":
    main()
