"""What each of the three servers says: chatproto's own, the Ruby
C{server.rb} and the seed's C{projet.py} (docs/protocol.md).

The wording the client recognises, the L{Dialect} a welcome line reveals,
and L{chat_event}, which reads a line of the chat itself (a public or
private message, an arrival, a departure) into its event. The texts here
are already sanitised (L{chatproto.client.protocol.sanitize}).
"""

from __future__ import annotations

import enum
import re

from chatproto import wire
from chatproto.client.events import Departure, Event, Joined, Private, Public

__all__ = [
    "DEPARTURE",
    "ERROR",
    "FLOOD",
    "GOODBYES",
    "GREETING",
    "INVALID_RUBY",
    "INVALID_SEED_START",
    "JOINED",
    "LIST_ENTRY",
    "LIST_TITLE",
    "NICKNAME",
    "PASSWORD_PROMPT",
    "PRIVATE",
    "PROMPTS",
    "PUBLIC",
    "RULE",
    "STAMPED",
    "TAKEN",
    "THROTTLED",
    "UNAVAILABLE",
    "WELCOMES",
    "Dialect",
    "chat_event",
]

#: A valid nickname (docs/protocol.md, "Connecting and registering").
NICKNAME = re.compile(r"[A-Za-z0-9_-]{2,12}")


class Dialect(enum.Enum):
    """Which family of server this is, known from its welcome line."""

    UNKNOWN = "unknown"
    #: The Ruby server or chatproto's own (same welcome, same prompt):
    #: registration tells them apart.
    RUBY = "ruby"
    #: chatproto's own server, known by its C{Bienvenue NICK} greeting.
    CHATPROTO = "chatproto"
    #: The seed's C{projet.py}: lower-case welcome, no pings, chunk framing.
    SEED = "seed"


WELCOMES = {
    "Bienvenue dans le chat v.1, enregistrez-vous avec la commande /pseudo": (
        Dialect.RUBY
    ),
    "bienvenue dans le chat, enregistrez-vous avec la commande /pseudo": Dialect.SEED,
}
PROMPTS = frozenset(
    {"Entrez votre pseudo: ", "Entrez votre pseudo:", "Entrez votre pseudo"}
)
INVALID_RUBY = "Rentrez un pseudo correct"
INVALID_SEED_START = "le pseudo proposé est invalide"
TAKEN = frozenset({"Attention ce pseudo existe deja", "Ce pseudo existe déjà"})
GOODBYES = frozenset({"Deconnexion", "Déconnexion"})
RULE = re.compile(r"-{10,}")
LIST_TITLE = "Utilisateurs en ligne:"
LIST_ENTRY = re.compile(r"=> ?(?P<nick>.*)")
GREETING = re.compile(r"Bienvenue (?P<nick>\S+)")
_TIME = r"\[(?P<time>\d{1,2}\.\d{1,2}\.\d{1,2})\]-"
PRIVATE = re.compile(_TIME + r"message privé de (?P<sender>\S+?): (?P<text>.*)")
# A kick or a ban adds its reason after the nickname (docs/protocol.md).
DEPARTURE = re.compile(
    _TIME + r"Déconnection de (?P<nick>.*?)(?: \((?:expulsé|banni) par .*\))?"
)
JOINED = re.compile(_TIME + r"Connexion de (?P<nick>\S+)")
PUBLIC = re.compile(_TIME + r"(?P<sender>\S+?): (?P<text>.*)")
STAMPED = re.compile(_TIME)
#: How chatproto's server answers a line it did not take (wire.py).
ERROR = re.compile(r"Erreur\b")
UNAVAILABLE = wire.UNAVAILABLE
FLOOD = wire.FLOOD
#: chatproto's server asks so for the password of a protected nickname
#: (docs/protocol.md): the next line it reads is the password.
PASSWORD_PROMPT = wire.PASSWORD_PROMPT
#: Too many password tries from this address: the nickname is refused for now.
THROTTLED = re.compile(re.escape(wire.OP_THROTTLED).replace(r"\{\}", r"\d+"))


def chat_event(text: str, nickname: str | None) -> Event | None:
    """The event of a line of the chat itself, stamped C{[H.M.S]-}, for the
    user registered as C{nickname}; None for any other line."""
    lines = (text,)
    if match := PRIVATE.fullmatch(text):
        return Private(
            lines=lines,
            time=match["time"],
            sender=match["sender"],
            text=_strip_ruby_prefix(match["text"], nickname),
        )
    if match := DEPARTURE.fullmatch(text):
        return Departure(lines=lines, time=match["time"], nickname=match["nick"])
    if match := JOINED.fullmatch(text):
        return Joined(lines=lines, time=match["time"], nickname=match["nick"])
    if match := PUBLIC.fullmatch(text):
        return Public(
            lines=lines, time=match["time"], sender=match["sender"], text=match["text"]
        )
    return None


def _strip_ruby_prefix(text: str, nickname: str | None) -> str:
    """The Ruby server repeats C{msg NICK } before a private text."""
    if nickname:
        prefix = f"msg {nickname} "
        if text[: len(prefix)].lower() == prefix.lower():
            return text[len(prefix) :]
    return text
