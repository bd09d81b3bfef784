"""The typed events a chat server's lines become (docs/protocol.md).

L{chatproto.client.protocol.ChatClientProtocol} reads the server and hands
each event to a L{ChatView}: any object with a C{show(event)} method, such as
the two user interfaces. The events are plain frozen data, with no behaviour
and no imports from the rest of the client, so that a view depends on them
alone, never on how the server's lines were parsed. Every text an event
carries was made harmless for a terminal before the event was built
(L{chatproto.client.protocol.sanitize}).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol as TypingProtocol

__all__ = [
    "ChatView",
    "CurrentRoom",
    "Departure",
    "Disconnected",
    "Event",
    "Goodbye",
    "Joined",
    "NicknamePrompt",
    "Notice",
    "PasswordPrompt",
    "Private",
    "Public",
    "Refused",
    "Registered",
    "RoomDeparture",
    "RoomEvent",
    "RoomJoined",
    "RoomPublic",
    "Topic",
    "UserList",
    "Welcome",
]


@dataclass(frozen=True, kw_only=True)
class Event:
    """Something the user interface shows.

    @ivar lines: the lines of the server this event stands for, in the order
        they came, sanitised and without their line ending. A pipe shows
        exactly these, one per line. Events the client infers (a
        L{Registered} without a greeting line, L{Disconnected}) have none.
    """

    lines: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Welcome(Event):
    """The greeting that asks for C{/pseudo}."""


@dataclass(frozen=True, kw_only=True)
class NicknamePrompt(Event):
    """The server waits for a nickname."""


@dataclass(frozen=True, kw_only=True)
class PasswordPrompt(Event):
    """The nickname sent is protected: the server waits for its password."""


@dataclass(frozen=True, kw_only=True)
class Registered(Event):
    """The server took C{nickname}: its greeting line (chatproto's
    C{Bienvenue NICK}), or nothing when the user list is the only sign."""

    nickname: str


@dataclass(frozen=True, kw_only=True)
class Refused(Event):
    """The server refused C{nickname}, as taken or as invalid. When a
    password went with it, C{why} says what may have been refused instead:
    a wrong password, one tried too often (C{taken} then: the client takes
    it as it takes a taken nickname), or a password for a nickname nobody
    protects."""

    nickname: str
    taken: bool
    why: str | None = None

    @property
    def sentence(self) -> str:
        why = self.why or ("it is already taken" if self.taken else "it is not valid")
        return f"The server refused the nickname {self.nickname!r}: {why}."


@dataclass(frozen=True, kw_only=True)
class UserList(Event):
    """The block of registered users; C{complete} is false when the server
    never closed it and the client showed it after a quiet time, or when it
    was C{cut}: longer than the client keeps
    (L{chatproto.client.userlist.ListBlock.MAX_LINES}), it is
    shown as far as it went, and the lines after it are events of their own."""

    nicknames: tuple[str, ...]
    complete: bool = True
    cut: bool = False


@dataclass(frozen=True, kw_only=True)
class Public(Event):
    """C{[H.M.S]-SENDER: TEXT}"""

    time: str
    sender: str
    text: str


@dataclass(frozen=True, kw_only=True)
class Private(Event):
    """C{[H.M.S]-message privé de SENDER: TEXT}, for this user only. The Ruby
    server repeats C{msg NICK } before the text; C{text} is without it."""

    time: str
    sender: str
    text: str


@dataclass(frozen=True, kw_only=True)
class Joined(Event):
    """C{[H.M.S]-Connexion de NICK} (chatproto's server only)."""

    time: str
    nickname: str


@dataclass(frozen=True, kw_only=True)
class Departure(Event):
    """C{[H.M.S]-Déconnection de NICK}"""

    time: str
    nickname: str


@dataclass(frozen=True, kw_only=True)
class RoomEvent(Event):
    """A line about one room of chatproto's server (docs/protocol.md,
    "Rooms"), C{room} its name as the server shows it (C{#salle}). The
    lobby's lines are the chat's own events, not these."""

    room: str


@dataclass(frozen=True, kw_only=True)
class CurrentRoom(RoomEvent):
    """C{Salon courant : #NAME}: C{room} is now where the user's plain lines
    go (after C{/join}, or C{/part} of the current room)."""


@dataclass(frozen=True, kw_only=True)
class RoomPublic(RoomEvent):
    """C{[H.M.S]-#NAME SENDER: TEXT}"""

    time: str
    sender: str
    text: str


@dataclass(frozen=True, kw_only=True)
class RoomJoined(RoomEvent):
    """C{[H.M.S]-#NAME Connexion de NICK}"""

    time: str
    nickname: str


@dataclass(frozen=True, kw_only=True)
class RoomDeparture(RoomEvent):
    """C{[H.M.S]-#NAME Départ de NICK}: NICK left the room (C{/part}); a
    user who leaves the chat is announced in the lobby only."""

    time: str
    nickname: str


@dataclass(frozen=True, kw_only=True)
class Topic(RoomEvent):
    """A room's topic: set by an operator (C{[H.M.S]-#NAME Sujet : TEXT (par
    NICK)}, with C{time} and C{setter}), or told (C{Sujet de #NAME : TEXT});
    C{text} is None for C{#NAME n'a pas de sujet}."""

    text: str | None
    time: str | None = None
    setter: str | None = None


@dataclass(frozen=True, kw_only=True)
class Goodbye(Event):
    """C{Deconnexion} (or C{Déconnexion}): the server ends the session."""


@dataclass(frozen=True, kw_only=True)
class Notice(Event):
    """A line the client does not know, shown as it came."""


@dataclass(frozen=True, kw_only=True)
class Disconnected(Event):
    """The connection is closed; always the last event.

    @ivar ok: the user left, and the server acknowledged C{/quit} (or the
        user left before registering), and no line of the user was refused.
    @ivar reason: one sentence for the user.
    """

    ok: bool
    reason: str


class ChatView(TypingProtocol):
    """What the protocol delivers its events to."""

    def show(self, event: Event) -> None: ...
