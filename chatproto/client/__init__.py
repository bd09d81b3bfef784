"""The chat client: C{python -m chatproto.client [HOST] [PORT]}.

It talks to chatproto's server, the Ruby C{server.rb} and the seed's
C{projet.py}. Its modules import one way only, each from those before it:

 - L{events}: the typed events a server line becomes, plain data;
 - L{servers}: what each server says (chatproto's, the Ruby C{server.rb},
   the seed's C{projet.py}), and the L{servers.Dialect} that tells them
   apart; L{timings}: every delay, in one L{Timings}; L{masking}: which of
   the user's lines carry a password, never to be shown;
 - L{pacing}, L{liveness}, L{userlist}, L{registration}: the parts of the
   protocol, each with one job: the pacing of the user's lines (the
   L{TokenBucket} and the L{pacing.Outbox}); the server's pings and
   silence; the user list block; the registration conversation;
 - L{protocol}: L{ChatClientProtocol}, the LineReceiver that reads a
   server's lines into events and writes the user's, on an injected clock,
   with those parts; and its factory;
 - L{options}: the command line and the endpoint it names;
 - L{session}: what both interfaces share: a L{session.ClientSession} (the
   connections, the user's lines, one pacing for all), and L{session.run},
   which turns how it ended into the exit status;
 - L{pipe} and L{terminal}: the two user interfaces (each input line sent,
   each server line printed; or a prompt_toolkit line editor that stays at
   the bottom while messages arrive above it);
 - L{__main__}: C{python -m chatproto.client}, which picks one of the two.

This package itself re-exports the protocol and its events, and imports
nothing more: importing it installs no reactor and loads no prompt_toolkit.
Without Twisted (a Python other than the one it was installed in, which
finds the checkout's C{twisted/} plugin folder instead), importing it ends
the program with one sentence that says what to run: C{python -m} imports
the package before its C{__main__}, so the package is where it is said.
"""

import sys

from chatproto.client.events import (
    ChatView,
    CurrentRoom,
    Departure,
    Disconnected,
    Event,
    Goodbye,
    Joined,
    NicknamePrompt,
    Notice,
    PasswordPrompt,
    Private,
    Public,
    Refused,
    Registered,
    RoomDeparture,
    RoomEvent,
    RoomJoined,
    RoomPublic,
    Topic,
    UserList,
    Welcome,
)

try:
    from chatproto.client.protocol import (
        ChatClientFactory,
        ChatClientProtocol,
        Timings,
        TokenBucket,
    )
except ModuleNotFoundError as e:
    if (e.name or "").split(".")[0] != "twisted":
        raise
    raise SystemExit(
        f"chatproto.client needs Twisted, which {sys.executable} does not have "
        f"(no module named {e.name}): in the checkout, run "
        'make client ARGS="HOST PORT" (it installs .venv on first use) or '
        ".venv/bin/python -m chatproto.client HOST PORT; elsewhere, "
        "pip install . first."
    ) from None

__all__ = [
    "ChatClientFactory",
    "ChatClientProtocol",
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
    "Timings",
    "TokenBucket",
    "Topic",
    "UserList",
    "Welcome",
]
