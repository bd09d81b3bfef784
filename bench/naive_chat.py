"""The benchmark's floor: the chat protocol written the straightforward way.

A dict of users, one LineReceiver each, one LoopingCall each for the pings,
every line encoded once per receiver, the whole user list on registration.
Usage: python bench/naive_chat.py PORT [PING_INTERVAL]
"""

import re
import sys
import time

from twisted.internet import protocol, reactor, task
from twisted.protocols.basic import LineReceiver

NICK = re.compile(r"^[A-Za-z0-9_-]{2,12}$")


class Chat(LineReceiver):
    delimiter = b"\n"

    def __init__(self, users: dict[str, "Chat"], interval: float) -> None:
        self.users, self.interval = users, interval
        self.name, self.state, self.missed = "", "NEW", 0
        self.pinger = task.LoopingCall(self.ping)

    def connectionMade(self) -> None:
        self.say(
            "Bienvenue dans le chat v.1, enregistrez-vous avec la commande /pseudo"
        )

    def connectionLost(self, reason: object = None) -> None:
        if self.pinger.running:
            self.pinger.stop()
        if self.users.get(self.name.lower()) is self:
            del self.users[self.name.lower()]
            self.broadcast(f"{stamp()}-Déconnection de {self.name}")

    def say(self, text: str) -> None:
        self.sendLine(text.encode("utf-8"))

    def ping(self) -> None:
        self.missed += 1
        if self.missed > 3 and self.transport:
            self.transport.loseConnection()
        self.say("ping")

    def broadcast(self, text: str) -> None:
        for user in self.users.values():
            if user is not self:
                user.say(text)

    def lineReceived(self, data: bytes) -> None:
        line = data.decode("utf-8", "replace").rstrip("\r")
        if self.state == "NEW":
            if line == "/pseudo":
                self.state = "NICK"
                self.say("Entrez votre pseudo: ")
            else:
                self.connectionMade()
        elif self.state == "NICK":
            if not NICK.match(line):
                self.say("Rentrez un pseudo correct")
            elif line.lower() in self.users:
                self.say("Attention ce pseudo existe deja")
            else:
                self.name, self.state = line, "CHAT"
                self.users[line.lower()] = self
                self.say(f"Bienvenue {line}")
                self.list()
                self.pinger.start(self.interval, now=False)
        elif line == "pong":
            self.missed = 0
        elif line == "/list":
            self.list()
        elif line == "/quit":
            self.say("Deconnexion")
            if self.transport:
                self.transport.loseConnection()
        elif line.strip():
            self.broadcast(f"{stamp()}-{self.name}: {line}")

    def list(self) -> None:
        names = "".join(f"=>{user.name}\n" for user in self.users.values())
        self.say(f"{'-' * 22}\nUtilisateurs en ligne:\n{names}{'-' * 22}")


def stamp() -> str:
    t = time.localtime()
    return f"[{t.tm_hour}.{t.tm_min}.{t.tm_sec}]"


class ChatFactory(protocol.ServerFactory):
    def __init__(self, interval: float) -> None:
        self.users: dict[str, Chat] = {}
        self.interval = interval

    def buildProtocol(self, addr: object) -> Chat:
        return Chat(self.users, self.interval)


if __name__ == "__main__":
    interval = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
    reactor.listenTCP(int(sys.argv[1]), ChatFactory(interval), interface="127.0.0.1")
    reactor.run()
