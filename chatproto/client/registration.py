"""Where the registration stands, as far as the client can tell.

A L{Registration} follows the conversation that gives the user a nickname:
the welcome, C{/pseudo}, the prompt, the nickname, its password when
chatproto's server asks for it (a protected nickname), the verdict; the
lines the user sent before it (which the server answers with its welcome
again); and the tries again while a cluster cannot register a nickname:
0.5 s, then 1 s, 2 s, up to 4 s between tries, for C{timeout} seconds in
all (L{chatproto.client.timings.Timings}). It decides nothing about the
connection: L{chatproto.client.protocol.ChatClientProtocol} writes, waits
and closes.
"""

from __future__ import annotations

import enum

from twisted.internet.interfaces import IReactorTime

from chatproto.client.masking import masked, password_start
from chatproto.client.servers import Dialect
from chatproto.client.timings import Timings, seconds

__all__ = ["Registration", "Stage"]


class Stage(enum.Enum):
    """Where the registration stands, as far as the client can tell."""

    CONNECTED = "waiting for the welcome"
    WELCOMED = "the server waits for /pseudo"
    ASKED = "waiting for the nickname prompt"
    PROMPTED = "the server waits for a nickname"
    NICK_SENT = "waiting for the verdict on the nickname"
    #: The nickname is protected: the next line is its password.
    PASSWORD = "the server waits for the nickname's password"
    REGISTERED = "registered"
    #: The server will not take a nickname on this connection any more (the
    #: Ruby server's thread dies after C{Attention ce pseudo existe deja};
    #: C{projet.py} closes).
    SPENT = "refused for good on this connection"


class Registration:
    """The registration conversation: its stage, the nickname tried, the
    lines sent too early and the tries again during a cluster outage."""

    def __init__(self, clock: IReactorTime, timings: Timings) -> None:
        self.clock = clock
        self.timings = timings
        self.stage = Stage.CONNECTED
        #: The nickname sent, until the server's verdict on it.
        self.candidate = ""
        #: The candidate's password was sent: the verdict is on it.
        self.password_sent = False
        #: The nickname the server took, once it took one.
        self.nickname: str | None = None
        #: Lines sent while the server waits for /pseudo, not answered yet.
        self.early = 0
        self._outage_since: float | None = None
        self._outage_tries = 0

    @property
    def open(self) -> bool:
        """The server would take a nickname now."""
        return self.stage in (Stage.CONNECTED, Stage.WELCOMED, Stage.PROMPTED)

    def sending(self, line: str, dialect: Dialect) -> str | None:
        """The user's C{line} goes: the answer to wait for, if any."""
        if self.stage is Stage.WELCOMED and line == "/pseudo":
            self.stage = Stage.ASKED
            return "the nickname prompt"
        if self.stage is Stage.PROMPTED:
            self.stage = Stage.NICK_SENT
            self.candidate = masked(line.strip())
            self.password_sent = password_start(line) is not None
            return "an answer to the nickname"
        if self.stage is Stage.PASSWORD:
            self.stage = Stage.NICK_SENT
            self.password_sent = True
            return "an answer to the password"
        if self.stage is Stage.WELCOMED and line.startswith("/pseudo "):
            # The shortcut (C{/pseudo NICK}, or C{/pseudo NICK PASSWORD}):
            # the next line must wait for the verdict, as after a nickname
            # on its own line.
            self.stage = Stage.NICK_SENT
            words = line.split()
            self.candidate = words[1] if len(words) > 1 else ""
            self.password_sent = password_start(line) is not None
            return "an answer to the nickname"
        if self.stage is Stage.WELCOMED and dialect is not Dialect.SEED:
            self.early += 1  # answered with the welcome again
        return None

    def asked_password(self) -> None:
        """The candidate is protected: the server waits for its password."""
        self.stage = Stage.PASSWORD

    def refused(self, taken: bool, dialect: Dialect) -> str:
        """The server refused the candidate: return it."""
        self.password_sent = False
        if taken:
            self.stage = Stage.SPENT
        elif dialect is Dialect.SEED:
            self.stage = Stage.WELCOMED
        else:
            self.stage = Stage.PROMPTED
        nickname, self.candidate = self.candidate, ""
        return nickname

    def registered(self, nickname: str) -> None:
        self.stage = Stage.REGISTERED
        self.candidate = ""
        self.password_sent = False
        self.nickname = nickname
        self._outage_since = None
        self._outage_tries = 0

    def unavailable(self) -> str:
        """The cluster could not register the candidate, and the server waits
        for another try: return the candidate."""
        nickname, self.candidate = self.candidate, ""
        self.password_sent = False
        self.stage = Stage.PROMPTED
        return nickname

    def retry_delay(self) -> float | None:
        """How long to wait before trying again after L{unavailable}; None
        once the outage has lasted C{timeout} (L{outage} says so)."""
        now = self.clock.seconds()
        if self._outage_since is None:
            self._outage_since = now
        self._outage_tries += 1
        delay = min(
            self.timings.retry_first * 2 ** (self._outage_tries - 1),
            self.timings.retry_max,
        )
        if now + delay - self._outage_since > self.timings.timeout:
            return None
        return delay

    def outage(self, nickname: str) -> str:
        """The sentence that ends the tries for C{nickname}."""
        assert self._outage_since is not None
        tries = self._outage_tries
        return (
            f"The server could not register the nickname {nickname!r}:"
            f" registration stayed unavailable for"
            f" {seconds(self.clock.seconds() - self._outage_since)}"
            f" ({tries} tr{'y' if tries == 1 else 'ies'})."
        )
