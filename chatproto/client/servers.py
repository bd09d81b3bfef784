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
from chatproto.client.events import (
    Departure,
    Event,
    Joined,
    Private,
    Public,
    RoomDeparture,
    RoomEvent,
    RoomJoined,
    RoomPublic,
    Topic,
)

__all__ = [
    "ANSWERS",
    "CURRENT_ROOM",
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
    "room_event",
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
# Rooms (chatproto's server only, docs/protocol.md "Rooms"): a name as the
# server shows it, in lower case.
_ROOM = r"(?P<room>#[a-z0-9_-]{1,24})"
#: The user's current room, after /join or /part: the only line that tells
#: the client the server has rooms (the Ruby server and projet.py never
#: send it).
CURRENT_ROOM = re.compile("Salon courant : " + _ROOM)
_ROOM_TOPIC_SET = re.compile(
    _TIME + _ROOM + r" Sujet : (?P<text>.*) \(par (?P<nick>\S+)\)"
)
_ROOM_TOPIC = re.compile("Sujet de " + _ROOM + " : (?P<text>.*)")
_ROOM_NO_TOPIC = re.compile(_ROOM + " n'a pas de sujet")
_ROOM_JOINED = re.compile(_TIME + _ROOM + r" Connexion de (?P<nick>\S+)")
_ROOM_DEPARTURE = re.compile(_TIME + _ROOM + r" Départ de (?P<nick>\S+)")
_ROOM_PUBLIC = re.compile(_TIME + _ROOM + r" (?P<sender>\S+?): (?P<text>.*)")
#: How chatproto's server answers a line it did not take (wire.py).
ERROR = re.compile(r"Erreur\b")
#: The error lines that refuse nothing: the command was taken, and this is
#: its answer. /unread from a nickname with no visit known (a first visit)
#: has nothing to show; that is no line of the user's lost.
ANSWERS = frozenset({wire.UNREAD_UNKNOWN})
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


def room_event(text: str) -> RoomEvent | None:
    """The event of a line of a room other than the lobby (a message, an
    arrival, a departure, its topic), or None for any other line. Only for
    a server known to have rooms: on the Ruby server, whose nicknames may
    hold anything, C{[H.M.S]-#a b: c} is a lobby line of user C{#a b}."""
    lines = (text,)
    if match := _ROOM_TOPIC_SET.fullmatch(text):
        return Topic(
            lines=lines,
            room=match["room"],
            text=match["text"],
            time=match["time"],
            setter=match["nick"],
        )
    if match := _ROOM_TOPIC.fullmatch(text):
        return Topic(lines=lines, room=match["room"], text=match["text"])
    if match := _ROOM_NO_TOPIC.fullmatch(text):
        return Topic(lines=lines, room=match["room"], text=None)
    if match := _ROOM_JOINED.fullmatch(text):
        return RoomJoined(
            lines=lines, room=match["room"], time=match["time"], nickname=match["nick"]
        )
    if match := _ROOM_DEPARTURE.fullmatch(text):
        return RoomDeparture(
            lines=lines, room=match["room"], time=match["time"], nickname=match["nick"]
        )
    if match := _ROOM_PUBLIC.fullmatch(text):
        return RoomPublic(
            lines=lines,
            room=match["room"],
            time=match["time"],
            sender=match["sender"],
            text=match["text"],
        )
    return None
