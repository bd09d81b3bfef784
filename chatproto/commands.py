"""The commands of a registered user, each a function of the session and
the rest of its line (stripped), in one table (L{COMMANDS}) that the server
hands its sessions (L{chatproto.session.Server.commands}): the session's
dispatcher finds a line's command there, asks the server's moderation
whether an operator's may run, and answers a L{ChatError} the handler
raises with its text (docs/protocol.md lists the commands and their lines).
"""

from __future__ import annotations

import time
from typing import Final

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from chatproto import wire
from chatproto.accounts import AlreadyProtected, NotProtected, Unavailable
from chatproto.history import History, Kept, search_words
from chatproto.operators import Throttled
from chatproto.registry import ClusterUnreachable, valid_nickname
from chatproto.session import ChatError, Command, Session

# The lines /history sends when it is not told how many.
HISTORY_DEFAULT = 20
# The lines /unread sends at most (the most recent).
UNREAD_MOST = 500
# The lines /search sends at most; the words and characters it takes.
SEARCH_COUNT = 20
SEARCH_WORDS = 8
SEARCH_CHARACTERS = 200

# The length of a password /register takes, in characters.
PASSWORD_MIN = 6
PASSWORD_MAX = 128


def _private(session: Session, rest: str) -> None:
    """C{msg NICK TEXT}: a private line, to whichever node has NICK."""
    target, _, body = rest.lstrip(" ").partition(" ")
    if not target:
        raise ChatError(wire.PRIVATE_USAGE)
    if not valid_nickname(target):  # "msg bob:salut" is no empty line to "bob:salut"
        raise ChatError(wire.PRIVATE_NOT_A_NICK.format(target))
    if not body.strip():
        raise ChatError(wire.PRIVATE_EMPTY.format(target))
    assert session.nick is not None
    d = session.server.whisper(session.nick, target, body)
    d.addCallbacks(
        _whispered,
        _not_whispered,
        callbackArgs=(session, target),
        errbackArgs=(session, target),
    )
    session.wait_for(d)  # the lines after it wait for its answer


def _whispered(found: bool, session: Session, target: str) -> None:
    if not found:
        session.send(wire.notice(wire.NO_SUCH_USER.format(target)))


def _not_whispered(failure: Failure, session: Session, target: str) -> None:
    failure.trap(ClusterUnreachable)
    session.send(wire.notice(wire.PRIVATE_UNAVAILABLE.format(target)))


def _list(session: Session, argument: str) -> None:
    """C{/list}: the members of the current room (the lobby: every user)."""
    session.server.rooms.list_names(session)


def _quit(session: Session, argument: str) -> None:
    session.say_goodbye(wire.BYE, reason="quit")


def _help(session: Session, argument: str) -> None:
    session.send(wire.HELP)


def _rename(session: Session, argument: str) -> None:
    raise ChatError(wire.ALREADY_NAMED.format(session.nick))


def _history(session: Session, argument: str) -> None:
    """C{/history [N]}: the last N public lines (20 by default, at most the
    history's limit), to this user alone, between two marker lines.
    Registered users only: reading the room is being in it, seen in
    /list, and a connection that has no nickname yet stays cheap. The
    current room's lines (chatproto/rooms.py)."""
    history = session.server.rooms.history(session)
    most = history.limit
    if most <= 0:
        raise ChatError(wire.HISTORY_OFF)
    if " avant " in f" {argument} ":
        _history_before(session, argument)
        return
    if not argument:
        count = min(HISTORY_DEFAULT, most)
    elif argument.isascii() and argument.isdigit() and int(argument) > 0:
        count = min(int(argument), most)
    else:
        raise ChatError(wire.HISTORY_USAGE.format(most))
    d = history.last(count)
    d.addCallbacks(
        _send_history,
        _history_failed,
        callbackArgs=(session,),
        errbackArgs=(session,),
    )
    session.wait_for(d)  # the lines after it wait for its answer


def _send_history(kept: list[Kept], session: Session) -> None:
    """The answer to /history, in one write: after the public lines this
    user has not been given yet (send() gives those first). Its lines are
    the newest of C{kept} that fit in half of max_output: 500 lines of
    4 KiB (2 MiB) would leave a reader on a slow link more than
    max_output behind, and Output would cut it as one that stopped
    reading."""
    kept = _newest_within(kept, session.server.config.max_output // 2)
    lines = _by_day(kept, session.server.clock.seconds())
    session.send(wire.history_block(lines, len(kept)))


def _newest_within(kept: list[Kept], budget: int) -> list[Kept]:
    """The newest lines of C{kept} whose bytes add up to C{budget} at most
    (the newest one whatever its size)."""
    size = 0
    for start in range(len(kept) - 1, 0, -1):
        size += len(kept[start].line)
        if size + len(kept[start - 1].line) > budget:
            return kept[start:]
    return kept


def _history_failed(failure: Failure, session: Session) -> None:
    failure.trap(ClusterUnreachable)
    session.send(wire.notice(wire.HISTORY_UNAVAILABLE))


def _history_before(session: Session, argument: str) -> None:
    """C{/history N avant K}: the N lines kept before line K (C{fin}:
    after the newest line), to this user alone, numbered in their header:
    a page that scrolls up asks for the lines before the first it has."""
    history = session.server.rooms.history(session)
    most = history.limit
    count, _, start = argument.partition(" avant ")
    count, start = count.strip(), start.strip()
    if not (
        count.isascii()
        and count.isdigit()
        and int(count) > 0
        and (start == "fin" or (start.isascii() and start.isdigit()))
    ):
        raise ChatError(wire.HISTORY_BEFORE_USAGE.format(most))
    d = history.before(None if start == "fin" else int(start), min(int(count), most))
    d.addCallbacks(
        _send_before,
        _history_failed,
        callbackArgs=(session,),
        errbackArgs=(session,),
    )
    session.wait_for(d)  # the lines after it wait for its answer


def _send_before(kept: list[Kept], session: Session) -> None:
    if not kept:
        session.send(wire.notice(wire.HISTORY_START))
        return
    lines = _by_day(kept, session.server.clock.seconds())
    session.send(
        wire.history_before_block(lines, len(kept), kept[0].number, kept[-1].number)
    )


def _unread(session: Session, argument: str) -> None:
    """C{/unread}: the public lines kept since this nickname's read
    position (chatproto/positions.py), the last UNREAD_MOST of them, to
    this user alone; one line when there are none, or no position."""
    history = session.server.history
    if history.limit <= 0:
        raise ChatError(wire.HISTORY_OFF)
    if argument:
        raise ChatError(wire.UNREAD_USAGE)
    nick = session.nick
    assert nick is not None
    positions = session.server.positions
    d = positions.find(nick)
    d.addCallback(_read_since, history, positions.arrival(nick))
    d.addCallbacks(
        _send_unread,
        _unread_failed,
        callbackArgs=(session,),
        errbackArgs=(session,),
    )
    session.wait_for(d)  # the lines after it wait for its answer


def _read_since(
    position: int | None, history: History, arrival: int | None
) -> Deferred[tuple[int, list[Kept]]] | None:
    """The lines since C{position}, up to this user's arrival: those after
    it were given to it as they came."""
    if position is None:
        return None
    return history.after(position, UNREAD_MOST, arrival)


def _send_unread(since: tuple[int, list[Kept]] | None, session: Session) -> None:
    if since is None:
        session.send(wire.notice(wire.UNREAD_UNKNOWN))
        return
    total, kept = since
    if not kept:
        session.send(wire.notice(wire.UNREAD_NONE))
        return
    lines = _by_day(kept, session.server.clock.seconds())
    session.send(
        wire.unread_block(lines, total, len(kept), kept[0].number, kept[-1].number)
    )


def _unread_failed(failure: Failure, session: Session) -> None:
    failure.trap(ClusterUnreachable, Unavailable)
    session.send(wire.notice(wire.UNREAD_UNAVAILABLE))


def _search(session: Session, argument: str) -> None:
    """C{/search WORDS}: the last SEARCH_COUNT public lines that hold every
    word of WORDS (case and accents aside: L{search_words}), to this user
    alone, between two marker lines; or one line saying none does.
    Registered users only, as /history; each costs a line of flood control,
    as any line. The current room's lines, as /history."""
    history = session.server.rooms.history(session)
    if history.limit <= 0:
        raise ChatError(wire.HISTORY_OFF)
    words = [] if len(argument) > SEARCH_CHARACTERS else search_words(argument)
    if not 1 <= len(words) <= SEARCH_WORDS:
        raise ChatError(wire.SEARCH_USAGE.format(SEARCH_WORDS, SEARCH_CHARACTERS))
    d = history.search(words, SEARCH_COUNT)
    d.addCallbacks(
        _send_found,
        _search_failed,
        callbackArgs=(session, argument),
        errbackArgs=(session,),
    )
    session.wait_for(d)  # the lines after it wait for its answer


def _send_found(kept: list[Kept], session: Session, words: str) -> None:
    """The answer to /search, in one write, as /history's."""
    if not kept:
        session.send(wire.notice(wire.SEARCH_NONE.format(words)))
        return
    lines = _by_day(kept, session.server.clock.seconds())
    session.send(wire.search_block(words, lines, len(kept)))


def _search_failed(failure: Failure, session: Session) -> None:
    failure.trap(ClusterUnreachable)
    session.send(wire.notice(wire.SEARCH_UNAVAILABLE))


def _by_day(kept: list[Kept], now: float) -> list[bytes]:
    """The lines of C{kept}, those of each day other than today (the
    server's local time, C{now}) after the line naming their day."""
    today = time.localtime(now)[:3]
    day = today
    lines = []
    for entry in kept:
        when = time.localtime(entry.when)
        if when[:3] != day:
            day = when[:3]
            if day != today:
                lines.append(wire.day_line(when))
        lines.append(entry.line)
    return lines


# Rooms (chatproto/rooms.py): /join, /part, /rooms, /topic.


def _join(session: Session, argument: str) -> None:
    session.server.rooms.join(session, argument)


def _part(session: Session, argument: str) -> None:
    session.server.rooms.part(session, argument)


def _rooms(session: Session, argument: str) -> None:
    session.server.rooms.list_rooms(session, argument)


def _topic(session: Session, argument: str) -> None:
    """C{/topic [TEXT]}: anyone reads the topic, an operator sets it (its
    own refusal, not /kick's: reading is everyone's)."""
    operator = bool(argument) and session.server.moderation.operates(session)
    session.server.rooms.topic(session, argument, operator)


# Protected nicknames (chatproto/accounts.py): the user's own.


def _register(session: Session, argument: str) -> None:
    """C{/register PASSWORD}: protect the user's nickname (its hash made
    in a thread; the user's next lines wait for the answer)."""
    if not PASSWORD_MIN <= len(argument) <= PASSWORD_MAX:
        raise ChatError(wire.REGISTER_USAGE.format(PASSWORD_MIN, PASSWORD_MAX))
    nick = session.nick
    assert nick is not None
    d = session.server.protection.protect(session.host, nick, argument)
    d.addCallbacks(
        lambda _: session.send(wire.notice(wire.REGISTER_DONE.format(nick))),
        _not_protected,
        errbackArgs=(session, nick),
    )
    session.wait_for(d)


def _not_protected(failure: Failure, session: Session, nick: str) -> None:
    failure.trap(AlreadyProtected, Throttled, Unavailable)
    error = failure.value
    if isinstance(error, AlreadyProtected):
        session.send(wire.notice(wire.ALREADY_PROTECTED.format(nick)))
    elif isinstance(error, Throttled):
        session.send(wire.notice(wire.OP_THROTTLED.format(error.wait)))
    else:
        session.send(wire.notice(wire.REGISTER_UNAVAILABLE))


def _unregister(session: Session, argument: str) -> None:
    """C{/unregister PASSWORD}: free the user's nickname, if the password
    is its own (checked in a thread, throttled as at registration)."""
    if not argument:
        raise ChatError(wire.UNREGISTER_USAGE)
    nick = session.nick
    assert nick is not None
    d = session.server.protection.unprotect(session.host, nick, argument)
    d.addCallbacks(
        _unprotected,
        _not_unprotected,
        callbackArgs=(session, nick),
        errbackArgs=(session, nick),
    )
    session.wait_for(d)


def _unprotected(right: bool, session: Session, nick: str) -> None:
    if right:
        session.send(wire.notice(wire.UNREGISTER_DONE.format(nick)))
    else:
        session.send(wire.notice(wire.UNREGISTER_WRONG.format(nick)))


def _not_unprotected(failure: Failure, session: Session, nick: str) -> None:
    failure.trap(NotProtected, Throttled, Unavailable)
    error = failure.value
    if isinstance(error, NotProtected):
        session.send(wire.notice(wire.NOT_PROTECTED.format(nick)))
    elif isinstance(error, Throttled):
        session.send(wire.notice(wire.OP_THROTTLED.format(error.wait)))
    else:
        session.send(wire.notice(wire.UNREGISTER_UNAVAILABLE))


# The operators' commands, and /op: the server's moderation answers them.


def _op(session: Session, argument: str) -> None:
    d = session.server.moderation.op(session, argument)
    if d is not None:  # the password is checked in a thread
        session.wait_for(d)  # the lines after it wait for its answer


def _kick(session: Session, argument: str) -> None:
    session.server.moderation.kick(session, argument)


def _ban(session: Session, argument: str) -> None:
    session.server.moderation.ban(session, argument)


def _unban(session: Session, argument: str) -> None:
    session.server.moderation.unban(session, argument)


def _bans(session: Session, argument: str) -> None:
    session.server.moderation.list_bans(session, argument)


# Every command of the chat, users' and operators', by name; and "msg", the
# private line (msg NICK TEXT), which the session finds by its first word.
COMMANDS: Final[dict[str, Command]] = {
    "msg": Command(_private),
    "/list": Command(_list),
    "/quit": Command(_quit),
    "/help": Command(_help),
    "/pseudo": Command(_rename),
    "/history": Command(_history),
    "/search": Command(_search),
    "/unread": Command(_unread),
    "/join": Command(_join),
    "/part": Command(_part),
    "/rooms": Command(_rooms),
    "/topic": Command(_topic),
    "/register": Command(_register),
    "/unregister": Command(_unregister),
    "/op": Command(_op),
    "/kick": Command(_kick, operators_only=True),
    "/ban": Command(_ban, operators_only=True),
    "/unban": Command(_unban, operators_only=True),
    "/bans": Command(_bans, operators_only=True),
}
