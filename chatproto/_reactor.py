"""The server's reactor: Twisted's epoll reactor, each event handed to its
connection without the legacy log context.

Twisted's EPollReactor hands every event through
C{twisted.python.log.callWithLogger}, which asks the connection for its
C{logPrefix()} and pushes it as the C{system} of a fresh context (two
dictionaries, a context stack) for the length of the call: 3.2 us an event
on this machine, 0.1 us without. An idle chat's CPU is its pings: one
read of C{pong} a ping, which cost 20 us all told, of which those 3.2 (see
docs/architecture.md, "The reactor"). The context names the connection
only in messages logged with Twisted's legacy C{log.msg}, and chatproto
logs with C{twisted.logger} (whose events carry their namespace). So
L{ChatReactor} calls the same C{_doReadOrWrite} directly, and logs what
escapes it (nothing but a failure to disconnect) as Twisted's does.

Installed by L{install} from twistd's chat plugin when no reactor is
installed yet (C{twistd --reactor} chooses another; tests run on
pytest-twisted's). Like chatproto/_twisted.py, it relies on attributes of
Twisted's that are no documented interface: EPollReactor's C{_poller},
C{_selectables} and C{_doReadOrWrite}; tests/test_twisted_contract.py
checks them with the installed Twisted.
"""

from __future__ import annotations

import sys

from twisted.internet.epollreactor import EPollReactor
from twisted.logger import Logger

log = Logger()


class ChatReactor(EPollReactor):
    """EPollReactor, each event handled without the log context."""

    def doPoll(self, timeout: float | None) -> None:
        """Wait at most C{timeout} seconds (None: as long as it takes) for
        events, and hand each to its connection."""
        selectables = self._selectables
        try:
            events = self._poller.poll(
                -1 if timeout is None else timeout, len(selectables)
            )
        except InterruptedError:  # a signal's handler ran: the loop goes on
            return
        handle = self._doReadOrWrite
        for fd, event in events:
            # A connection an earlier event closed in this same poll is
            # gone from the map: its event is for nobody.
            selectable = selectables.get(fd)
            if selectable is not None:
                try:
                    handle(selectable, fd, event)
                except Exception:
                    log.failure("event of {selectable}", selectable=selectable)

    doIteration = doPoll


def install() -> bool:
    """Install a L{ChatReactor} as the global reactor, unless one is
    installed already; return whether it was."""
    if "twisted.internet.reactor" in sys.modules:
        return False
    from twisted.internet.main import installReactor

    installReactor(ChatReactor())
    return True
