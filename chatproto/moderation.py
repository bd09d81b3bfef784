"""Moderation: operators' commands, kicks and bans (docs/operating.md,
"Moderation").

C{/op PASSWORD} makes the session an operator, if the operators file
(chatproto/operators.py) lists its nickname with that password: the status
belongs to that session object, so a new connection (or another letter case
of the nickname, which names another user only if the registry let it in,
and it does not) must /op again. Wrong passwords are throttled per address,
like flood control: three tries, then one every five seconds. A check (84
ms of scrypt) runs in a thread of the reactor's pool, at most two at once,
so that the chat goes on meanwhile (chatproto/operators.py, L{Tries}).

A kick takes a user out of the chat with one line saying who and why, then
C{Deconnexion}; the others see the departure once, with the reason. A ban
kicks, and refuses new connections from the address until it expires: the
bans are kept in L{chatproto.bans.Bans}; on a server alone a ban (or an
unban) that cannot be written is refused, and changes nothing (in a
cluster, Redis has the truth).

Every act is one log event with named fields: C{act}, C{operator},
C{operator_address}, C{target}, C{target_address}, C{reason}, C{minutes}.

L{Moderation} answers the commands (the session's command table says which
are an operator's, and asks L{Moderation.is_operator} once before the
handler runs), and is what the room and the cluster's node call;
L{OperatorCheck} says who is an operator. In a cluster, L{ClusterBans}
keeps this node's copy of the cluster's bans in step with Redis, and
L{Answers} the waits for the answers of other nodes to bans of their
users.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any, Protocol

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from chatproto import wire
from chatproto.bans import Ban, Bans, ban_address
from chatproto.cluster_messages import Kick
from chatproto.operators import (
    DUMMY_HASH,
    Checker,
    Throttled,
    Tries,
    check_here,
    read_operators,
)
from chatproto.registry import Reach, nick_key

log = Logger()

DEFAULT_BAN_MINUTES = 60
MAX_BAN_MINUTES = 366 * 24 * 60  # a year

# How long the operator's node waits for the answer to a /ban of a user of
# another node (that node bans the address in Redis, then answers): if it
# died, or could not answer, meanwhile, the operator is told the outcome is
# unknown rather than nothing at all.
ANSWER_WAIT = 10.0


# The room, as moderation sees it


class User(Protocol):
    """What moderation uses of a user (a L{Session})."""

    nick: str | None
    host: str | None

    def send(self, data: bytes) -> None: ...
    def say_goodbye(self, *lines: bytes, reach: Reach = Reach.EVERYWHERE) -> None: ...


class Cluster(Protocol):
    """What moderation uses of the cluster
    (L{chatproto.cluster_roles.ClusterModeration})."""

    @property
    def accepting(self) -> bool:
        """Whether the node is in the cluster now (Redis answers): bans
        and unbans are refused otherwise."""

    def kick(self, kick: Kick) -> Deferred[bool]:
        """Carry a kick (a ban, if it has minutes) to the node that holds
        its target; fire with whether one does, and heard it."""

    def answer(self, operator: str, target: str, line: bytes) -> Deferred[bool]:
        """Send C{line}, the answer to C{operator}'s ban of C{target}, to the
        node that holds C{operator}, which hears it in L{Moderation.heard_answer};
        fire with whether one does, and heard it."""

    def share_ban(self, ban: Ban) -> Deferred[None]:
        """Make the ban hold on every node (Redis, and its bans channel);
        fails when Redis cannot be reached."""

    def share_unban(self, address: str) -> Deferred[None]:
        """Lift the ban on every node; fails when Redis cannot be reached."""


class Server(Protocol):
    """What moderation uses of the room (L{chatproto.server.ChatFactory})."""

    clock: IReactorTime

    @property
    def sessions(self) -> Mapping[str, User]: ...

    def stamp(self) -> str: ...
    def broadcast(self, line: bytes, exclude: Any = None) -> None: ...
    def withdraw(
        self, session: Any, reach: Reach = Reach.EVERYWHERE, reason: str = "lost"
    ) -> bool: ...


def _here(room: Server, session: User, nick: str) -> bool:
    """Whether C{session} is still in the chat (it may have left, or been
    kicked, while its password was checked or its command answered)."""
    return room.sessions.get(nick_key(nick)) is session


# The log of acts


def _log_kick(
    operator: str,
    operator_address: str | None,
    member: User,
    reason: str,
    minutes: int,
) -> None:
    log.info(
        "{operator} kicked {target} from {target_address}: {reason}",
        act="kick",
        operator=operator,
        operator_address=operator_address,
        target=member.nick,
        target_address=member.host,
        reason=reason,
        minutes=minutes,
    )


def _log_ban(
    operator: str,
    operator_address: str | None,
    ban: Ban,
    minutes: int,
    target: str | None,
) -> None:
    address, reason = ban.address, ban.reason
    log.info(
        "{operator} banned {address} for {minutes} minutes: {reason}",
        act="ban",
        operator=operator,
        operator_address=operator_address,
        target=target,
        target_address=address,
        address=address,
        minutes=minutes,
        reason=reason,
    )


# Taking users out


def expel_here(
    room: Server, member: User, operator: str, reason: str, minutes: int
) -> None:
    """Take C{member}, a user of this node, out of the chat: it is told
    by whom and why, then C{Deconnexion}; everyone sees its departure
    once, with the reason."""
    nick = member.nick
    assert nick is not None
    if minutes:
        told = wire.BANNED_YOU.format(operator, wire.minutes(minutes))
    else:
        told = wire.KICKED_YOU.format(operator)
    if reason:
        told += f" : {reason}"
    if room.withdraw(member, reason="banned" if minutes else "kicked"):
        line = wire.kicked_departure(
            room.stamp(), nick, operator, reason, banned=bool(minutes)
        )
        room.broadcast(line)
    # withdrawn: saying goodbye announces nothing more
    member.say_goodbye(wire.notice(told), wire.BYE)


def kick_banned(room: Server, ban: Ban) -> None:
    """Kick the users of this node connected from a banned address."""
    now = room.clock.seconds()
    minutes = max(1, math.ceil((ban.until - now) / 60))
    for member in list(room.sessions.values()):
        if member.host == ban.address:
            _log_kick(ban.by, None, member, ban.reason, minutes)
            expel_here(room, member, ban.by, ban.reason, minutes)


class OperatorCheck:
    """Who is an operator: /op's password check, throttled per address.

    C{operators} (nickname key -> hash) is the file's, replaced whole on a
    reload; C{operating} the sessions that passed /op, until they close."""

    def __init__(
        self,
        room: Server,
        operators: Mapping[str, str] | None = None,
        checker: Checker | None = None,
    ) -> None:
        self.room = room
        self.checker: Checker = checker or check_here
        self.tries = Tries(room.clock, act="op-failed")
        self.operators: Mapping[str, str] = operators or {}
        self.operating: set[User] = set()

    def reload(self, path: str) -> bool:
        """Read the operators file again; a broken one leaves the old list
        in force (and says why in the log). Whether it was read."""
        try:
            operators = read_operators(path)
        except ValueError as e:
            log.error(
                "operators file not reloaded, the old list stays: {why}",
                act="reload",
                path=path,
                why=str(e),
            )
            return False
        self.operators = operators
        log.info(
            "operators file reloaded: {count} operators",
            act="reload",
            path=path,
            count=len(operators),
        )
        return True

    def op(self, session: User, argument: str) -> Deferred[Any] | None:
        """Answer C{/op PASSWORD}: the check runs, throttled, then says;
        the check's Deferred, fired once it has said (None: answered at
        once), for the session's next lines to wait for."""
        nick = session.nick
        assert nick is not None
        if session in self.operating:
            session.send(wire.notice(wire.OP_ALREADY))
            return None
        if not self.operators:
            session.send(wire.notice(wire.OP_NONE))
            return None
        if not argument:
            session.send(wire.notice(wire.OP_USAGE))
            return None
        host = session.host
        stored = self.operators.get(nick_key(nick))
        # an unknown nickname costs a check too: the delay says nothing
        d = self.tries.check(host, self.checker, argument, stored or DUMMY_HASH)
        failures = self.tries.failures(host)
        d.addCallback(lambda right: right and stored is not None)
        d.addCallbacks(
            self._checked,
            self._check_failed,
            callbackArgs=(session, nick, host, failures),
            errbackArgs=(session, nick),
        )
        d.addErrback(lambda f: log.failure("answering /op", f))
        return d

    def _checked(
        self, good: bool, session: User, nick: str, host: str | None, failures: int
    ) -> None:
        here = _here(self.room, session, nick)
        if not good:
            log.warn(
                "{nick} from {address}: wrong operator password ({failures} in a row)",
                act="op-failed",
                nick=nick,
                address=host,
                failures=failures,
            )
            if here:
                session.send(wire.notice(wire.OP_WRONG))
            return
        if not here:  # gone meanwhile: nobody to make an operator
            log.info(
                "{nick} from {address} left before its operator password was checked",
                act="op-gone",
                nick=nick,
                address=host,
            )
            return
        if session in self.operating:  # two /op sent at once
            session.send(wire.notice(wire.OP_ALREADY))
            return
        self.operating.add(session)
        log.info(
            "{operator} from {operator_address} is an operator",
            act="op",
            operator=nick,
            operator_address=host,
        )
        session.send(wire.notice(wire.OP_GRANTED))

    def _check_failed(self, failure: Any, session: User, nick: str) -> None:
        if failure.check(Throttled):
            session.send(wire.notice(wire.OP_THROTTLED.format(failure.value.wait)))
            return
        log.failure("checking the operator password of {nick}", failure, nick=nick)
        if _here(self.room, session, nick):
            session.send(wire.notice(wire.OP_UNAVAILABLE))

    def is_operator(self, session: User, command: str) -> bool:
        """Whether C{session} is an operator; if not, it is told that
        C{command} is for operators."""
        if session in self.operating:
            return True
        session.send(wire.notice(wire.NOT_OPERATOR.format(command)))
        return False


class Answers:
    """The answers this node's operators wait for, to their bans of other
    nodes' users (cluster mode): each wait ends when its answer comes, or
    after L{ANSWER_WAIT} seconds with a line saying the outcome is unknown."""

    def __init__(self, room: Server) -> None:
        self.room = room
        # The bans sent to another node that have not been answered yet, by
        # operator session and target's nickname key, oldest first.
        self._unanswered: dict[tuple[User, str], list[IDelayedCall]] = {}

    def await_answer(self, session: User, target: str) -> None:
        """Wait L{ANSWER_WAIT} seconds for the answer to C{session}'s ban of
        C{target}, a user of another node."""
        key = (session, nick_key(target))
        calls = self._unanswered.setdefault(key, [])
        calls.append(
            self.room.clock.callLater(ANSWER_WAIT, self._no_answer, key, target)
        )

    def answered(self, session: User, target_key: str) -> None:
        """The oldest wait for an answer to C{session}'s ban of that user
        ends (if one is left: it may have ended already)."""
        calls = self._unanswered.get((session, target_key))
        if calls:
            calls.pop(0).cancel()
            if not calls:
                del self._unanswered[(session, target_key)]

    def _no_answer(self, key: tuple[User, str], target: str) -> None:
        session = key[0]
        calls = self._unanswered[key]
        calls.pop(0)  # this one: the oldest
        if not calls:
            del self._unanswered[key]
        log.warn(
            "{operator}'s ban of {target} (on another node) was never answered",
            act="ban-unanswered",
            operator=session.nick,
            operator_address=session.host,
            target=target,
            target_address=None,
            wait=ANSWER_WAIT,
        )
        if session.nick is not None and _here(self.room, session, session.nick):
            session.send(wire.notice(wire.BAN_UNANSWERED.format(target)))

    def forget(self, session: User) -> None:
        """A session closed: its waits end."""
        for key in [key for key in self._unanswered if key[0] is session]:
            for call in self._unanswered.pop(key):
                call.cancel()


class ClusterBans:
    """This node's copy of the cluster's bans, kept in step with Redis.

    In a cluster Redis has the truth, and C{bans} (the file) is this node's
    copy: a change made here holds as it is sent to Redis (L{update}), a
    change another node made holds when it is heard, and whoever is
    connected here from a newly banned address is kicked."""

    def __init__(self, room: Server, bans: Bans) -> None:
        self.room = room
        self.bans = bans
        # While the node reads the cluster's bans whole: the changes made or
        # heard meanwhile, by address (None: lifted), applied over the answer.
        self._since_read: dict[str, Ban | None] | None = None

    def update(self, address: str, ban: Ban | None) -> None:
        """A change of this node's copy, C{ban} for C{address} (None:
        lifted), made here as it is sent to Redis, or heard: it holds, and
        is kept while the cluster's bans are read (L{heard_bans})."""
        self.bans.update(address, ban)
        if self._since_read is not None:
            self._since_read[address] = ban

    def reading_bans(self) -> None:
        """The node asks Redis for the cluster's bans, whole: the changes
        made or heard until the answer comes are applied over it."""
        self._since_read = {}

    def heard_bans(self, bans: list[Ban]) -> None:
        """The cluster's bans, read whole (this node joined, or came back):
        Redis has the truth, this node's copy becomes it (no ban or unban
        is made while cut off: see L{Moderation._cut_off}), and whoever is
        connected here from an address newly banned is kicked."""
        changes, self._since_read = self._since_read or {}, None
        new = self.bans.replace(bans)
        for address, ban in changes.items():
            self.bans.update(address, ban)
        for ban in new:
            if self.bans.check(ban.address) == ban:
                kick_banned(self.room, ban)

    def heard_ban(self, ban: Ban) -> None:
        """Another node banned an address: it holds here too, and whoever
        is connected from it here is kicked."""
        now = self.room.clock.seconds()
        if ban.until <= now:
            return
        self.update(ban.address, ban)
        kick_banned(self.room, ban)

    def heard_unban(self, address: str) -> None:
        """Another node lifted the ban on C{address}: lifted here too."""
        self.update(address, None)


class Moderation:
    """The operators' commands of one room: /op, /kick, /ban, /unban, /bans.

    Who is an operator is L{OperatorCheck}'s; the kicks and bans are made
    here, and in a cluster carried to the other nodes and heard from them."""

    def __init__(
        self,
        room: Server,
        operators: Mapping[str, str] | None = None,
        bans: Bans | None = None,
        checker: Checker | None = None,
    ) -> None:
        self.room = room
        self.op_check = OperatorCheck(room, operators, checker)
        self.bans = bans if bans is not None else Bans(room.clock)
        self.cluster: Cluster | None = None  # cluster mode: the node
        self.cluster_bans = ClusterBans(room, self.bans)
        self.answers = Answers(room)

    # Connections

    def refusal(self, host: str | None) -> bytes | None:
        """The line that refuses a connection from a banned address, or None
        (the room counts and logs the refusal)."""
        ban = self.bans.check(host)
        if ban is None:
            return None
        # logged by the room's metrics, as the other refusals are
        left = max(1, math.ceil((ban.until - self.room.clock.seconds()) / 60))
        return wire.notice(wire.BANNED.format(wire.minutes(left)))

    def forget(self, session: User) -> None:
        """A session closed: its operator status goes with it, and its
        waits for answers."""
        self.op_check.operating.discard(session)
        self.answers.forget(session)

    def reload(self, path: str) -> bool:
        """Read the operators file again (L{OperatorCheck.reload})."""
        return self.op_check.reload(path)

    def op(self, session: User, argument: str) -> Deferred[Any] | None:
        """Anyone's C{/op PASSWORD} (L{OperatorCheck.op})."""
        return self.op_check.op(session, argument)

    def is_operator(self, session: User, command: str) -> bool:
        """Whether C{session} may use C{command}, an operator's (the
        session's command table asks, once, before the handler runs)."""
        return self.op_check.is_operator(session, command)

    def operates(self, session: User) -> bool:
        """Whether C{session} is an operator, nothing said either way
        (C{/topic} asks, with its own answer)."""
        return session in self.op_check.operating

    # /kick, /ban, /unban, /bans

    def kick(self, session: User, argument: str) -> None:
        """An operator's C{/kick NICK [REASON]}."""
        target, _, reason = argument.partition(" ")
        if not target:
            session.send(wire.notice(wire.KICK_USAGE))
            return
        self._expel(session, target, reason.strip(), 0)

    def ban(self, session: User, argument: str) -> None:
        """An operator's C{/ban NICK|ADDRESS [MINUTES] [REASON]}."""
        target, _, rest = argument.partition(" ")
        words = rest.split(" ", 1)
        minutes = DEFAULT_BAN_MINUTES
        first = words[0]
        if first.isascii() and first.isdigit():
            minutes = int(words.pop(0))
        elif first[:1].isdigit() or (first[:1] in "+-" and first[1:2].isdigit()):
            # "-5", "1.5", "10min", "²": minutes mistyped, not a reason (a
            # ban of the default 60 minutes would be a surprise; int("²")
            # raised ValueError)
            minutes = 0
        reason = " ".join(words).strip()
        if not target or not 1 <= minutes <= MAX_BAN_MINUTES:
            session.send(wire.notice(wire.BAN_USAGE.format(MAX_BAN_MINUTES)))
            return
        if self._cut_off(session, wire.BAN_UNAVAILABLE):
            return
        address = ban_address(target)
        operator = session.nick
        assert operator is not None
        if address is not None:
            ban = self._hold(session, address, minutes, reason)
            if ban is None:  # not saved: nothing changed
                return
            self._ban(session, ban, minutes, None)
            # whoever is connected from there now is kicked too
            for member in list(self.room.sessions.values()):
                if member.host == address and member is not session:
                    _log_kick(operator, session.host, member, reason, minutes)
                    expel_here(self.room, member, operator, reason, minutes)
            return
        self._expel(session, target, reason, minutes)

    def _hold(
        self, session: User, address: str, minutes: int, reason: str
    ) -> Ban | None:
        """C{session}'s ban of C{address}, made to hold here. A server
        alone keeps its bans in its file, their truth: the ban holds once
        written there, and when it cannot be, nothing changes, the operator
        is told why (None). In a cluster, Redis has the truth (see
        L{_record_ban}) and the file is this node's copy."""
        nick = session.nick
        assert nick is not None
        ban = Ban(address, self.room.clock.seconds() + 60 * minutes, nick, reason)
        if self.cluster is not None:
            self.cluster_bans.update(address, ban)
            return ban
        try:
            self.bans.add(ban)
        except OSError as e:
            self._not_saved(session, "ban", address, e)
            return None
        return ban

    def _not_saved(self, session: User, act: str, address: str, error: OSError) -> None:
        """The bans file could not be written for C{session}'s ban (or
        unban) of C{address}: logged, and the operator told."""
        log.error(
            "the {act} of {address} by {operator} could not be written to "
            "{path}: refused, nothing changed ({why})",
            act=f"{act}-failed",
            operator=session.nick,
            operator_address=session.host,
            address=address,
            target_address=address,
            path=self.bans.path,
            why=error.strerror or str(error),
        )
        session.send(wire.notice(wire.BANS_NOT_SAVED))

    def _ban(
        self, session: User, ban: Ban | None, minutes: int, target: str | None
    ) -> None:
        """Log C{ban} (held: L{_hold}), share it in a cluster, and answer
        the operator."""
        nick = session.nick
        assert nick is not None
        d = self._record_ban(nick, session.host, ban, minutes, target)

        def answer(line: bytes) -> None:
            if _here(self.room, session, nick):  # the operator may have left
                session.send(line)

        d.addCallback(answer)
        d.addErrback(lambda f: log.failure("banning {ban}", f, ban=ban))

    def _cut_off(self, session: User, text: str) -> bool:
        """In a cluster that cannot be reached, a ban or an unban would hold
        on this node only, and be undone when it is back (Redis has the
        cluster's bans): refused, with C{text}, for the operator to retry."""
        if self.cluster is None or self.cluster.accepting:
            return False
        session.send(wire.notice(text))
        return True

    def _record_ban(
        self,
        operator: str,
        operator_address: str | None,
        ban: Ban | None,
        minutes: int,
        target: str | None,
    ) -> Deferred[bytes]:
        """Log C{ban}, held here (and make it hold on every node of a
        cluster); the line that answers the operator, once Redis holds it."""
        if ban is None:  # a user of a UNIX socket: nothing to refuse
            return succeed(wire.notice(wire.KICK_DONE.format(target)))
        address = ban.address
        if self.cluster is None:
            _log_ban(operator, operator_address, ban, minutes, target)
            return succeed(
                wire.notice(wire.BAN_DONE.format(address, wire.minutes(minutes)))
            )

        def shared(_: object) -> bytes:
            _log_ban(operator, operator_address, ban, minutes, target)
            return wire.notice(wire.BAN_DONE.format(address, wire.minutes(minutes)))

        def failed(failure: Any) -> bytes:
            log.warn(
                "the ban of {address} by {operator} did not reach Redis: lifted",
                act="ban-failed",
                operator=operator,
                address=address,
                why=failure.getErrorMessage(),
            )
            if self.bans.by_address.get(address) == ban:
                self.cluster_bans.update(address, None)
            return wire.notice(wire.BAN_UNAVAILABLE)

        return self.cluster.share_ban(ban).addCallbacks(shared, failed)

    def unban(self, session: User, argument: str) -> None:
        """An operator's C{/unban ADDRESS}."""
        address = ban_address(argument)
        if address is None:
            session.send(wire.notice(wire.UNBAN_USAGE))
            return
        if self._cut_off(session, wire.UNBAN_UNAVAILABLE):
            return
        lifted = self.bans.by_address.get(address)
        if lifted is None:
            session.send(wire.notice(wire.NOT_BANNED.format(address)))
            return
        if self.cluster is None:  # the file is the truth: lifted once written
            try:
                self.bans.remove(address)
            except OSError as e:
                self._not_saved(session, "unban", address, e)
                return
            self._unbanned(session, address)
            return
        self.cluster_bans.update(address, None)  # Redis is the truth
        nick = session.nick
        assert nick is not None

        def shared(_: object) -> None:
            self._unbanned(session, address)

        def failed(failure: Any) -> None:
            log.warn(
                "lifting the ban of {address} did not reach Redis: it holds",
                act="unban-failed",
                operator=nick,
                address=address,
                why=failure.getErrorMessage(),
            )
            if address not in self.bans.by_address:
                self.cluster_bans.update(address, lifted)
            if _here(self.room, session, nick):
                session.send(wire.notice(wire.UNBAN_UNAVAILABLE))

        d = self.cluster.share_unban(address).addCallbacks(shared, failed)
        d.addErrback(lambda f: log.failure("lifting {address}", f, address=address))

    def _unbanned(self, session: User, address: str) -> None:
        nick = session.nick
        assert nick is not None
        log.info(
            "{operator} lifted the ban on {address}",
            act="unban",
            operator=session.nick,
            operator_address=session.host,
            target_address=address,
            address=address,
        )
        if _here(self.room, session, nick):
            session.send(wire.notice(wire.UNBAN_DONE.format(address)))

    def list_bans(self, session: User, argument: str) -> None:
        """An operator's C{/bans}: the bans in force, soonest to end first."""
        bans = self.bans.active()
        if not bans:
            session.send(wire.notice(wire.NO_BANS))
            return
        now = self.room.clock.seconds()
        lines = [wire.notice(wire.BANS_TITLE.format(len(bans)))]
        for ban in bans:
            until = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ban.until))
            left = max(1, math.ceil((ban.until - now) / 60))
            lines.append(
                wire.notice(
                    wire.ban_entry(ban.address, until, left, ban.by, ban.reason)
                )
            )
        session.send(b"".join(lines))

    # Kicks, here or on another node

    def _expel(self, session: User, target: str, reason: str, minutes: int) -> None:
        """Kick C{target} (and ban its address for C{minutes}, if not 0),
        wherever it is."""
        assert session.nick is not None
        member = self.room.sessions.get(nick_key(target))
        if member is session:
            session.send(wire.notice(wire.KICK_SELF))
            return
        if member is not None:
            ban = None
            if minutes and member.host is not None:  # (UNIX socket: no address)
                ban = self._hold(session, member.host, minutes, reason)
                if ban is None:  # not saved: nobody is kicked
                    return
            _log_kick(session.nick, session.host, member, reason, minutes)
            expel_here(self.room, member, session.nick, reason, minutes)
            if minutes:  # the ban's line answers the operator
                self._ban(session, ban, minutes, member.nick)
            else:
                session.send(wire.notice(wire.KICK_DONE.format(member.nick)))
            return
        if self.cluster is None:
            session.send(wire.notice(wire.NO_SUCH_USER.format(target)))
            return
        # Another node's user, maybe: that node expels it (and, for a ban,
        # resolves its address, bans it everywhere and answers the operator).
        kick = Kick(nick_key(target), minutes, session.nick, session.host, reason)
        if minutes:  # waiting before it is sent: the answer may come first
            self.answers.await_answer(session, target)
        d = self.cluster.kick(kick)

        def kicked(found: bool) -> None:
            if found and minutes:
                return  # the user's node answers, once the ban is made
            if minutes:  # no node took it: answered here
                self.answers.answered(session, nick_key(target))
            if found:
                log.info(
                    "{operator} kicked {target} (on another node): {reason}",
                    act="kick",
                    operator=session.nick,
                    operator_address=session.host,
                    target=target,
                    target_address=None,
                    reason=reason,
                    minutes=0,
                )
                session.send(wire.notice(wire.KICK_DONE.format(target)))
            else:
                session.send(wire.notice(wire.NO_SUCH_USER.format(target)))

        def failed(failure: Any) -> None:
            log.failure("kicking {target}", failure, target=target)
            if minutes:
                self.answers.answered(session, nick_key(target))
            session.send(wire.notice(wire.KICK_UNAVAILABLE.format(target)))

        d.addCallbacks(kicked, failed)

    def heard_kick(self, kick: Kick) -> None:
        """Another node's operator kicked a user of this node; with
        minutes, banned it, and this node, which knows its address, makes
        the ban (for every node) and answers the operator."""
        target, minutes, operator = kick.target, kick.minutes, kick.operator
        address, reason = kick.address, kick.reason
        member = self.room.sessions.get(nick_key(target))
        if member is None or member.nick is None:
            if minutes:  # gone meanwhile: the operator waits for an answer
                line = wire.notice(wire.NO_SUCH_USER.format(target))
                self._answer(operator, target, line)
            return
        _log_kick(operator, address, member, reason, minutes)
        nick, host = member.nick, member.host
        expel_here(self.room, member, operator, reason, minutes)
        if minutes:
            ban = None  # a user of a UNIX socket: no address
            if host is not None:
                until = self.room.clock.seconds() + 60 * minutes
                ban = Ban(host, until, operator, reason)
                self.cluster_bans.update(host, ban)  # a cluster's: Redis is the truth
            d = self._record_ban(operator, address, ban, minutes, nick)
            d.addCallback(lambda line: self._answer(operator, nick, line))
            d.addErrback(lambda f: log.failure("banning {nick}", f, nick=nick))

    def _answer(self, operator: str, target: str, line: bytes) -> None:
        """Answer C{operator}'s ban of C{target}, here or on its node."""
        if nick_key(operator) in self.room.sessions:
            self.heard_answer(operator, target, line)
        elif self.cluster is not None:
            d = self.cluster.answer(operator, target, line)
            d.addErrback(lambda f: log.failure("answering {nick}", f, nick=operator))

    def heard_answer(self, operator: str, target: str, line: bytes) -> None:
        """The answer to C{operator}'s ban of C{target} (C{line}, to tell
        it), from the node that held C{target}: it ends the wait. Only an
        operator is told (another user may have its nickname now)."""
        session = self.room.sessions.get(nick_key(operator))
        if session is None or session not in self.op_check.operating:
            return
        self.answers.answered(session, nick_key(target))
        session.send(line)

    # Bans from the other nodes (cluster mode): the node's entry points

    def heard_ban(self, ban: Ban) -> None:
        """Another node banned an address (L{ClusterBans.heard_ban})."""
        self.cluster_bans.heard_ban(ban)

    def heard_unban(self, address: str) -> None:
        """Another node lifted a ban (L{ClusterBans.heard_unban})."""
        self.cluster_bans.heard_unban(address)

    def reading_bans(self) -> None:
        """The node reads the cluster's bans (L{ClusterBans.reading_bans})."""
        self.cluster_bans.reading_bans()

    def heard_bans(self, bans: list[Ban]) -> None:
        """The cluster's bans, read whole (L{ClusterBans.heard_bans})."""
        self.cluster_bans.heard_bans(bans)
