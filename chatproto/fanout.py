"""The fan-out: how the public lines reach every user of the room.

Each write to a user is a system call, most of the server's time. So the
lines are not written one by one: they are kept in a log, and passes over
the users give each one, in one write, every line it has not been given.
Users who made none of those lines get the same bytes, joined once.

L{Log} is that log and the places in it, for the lobby (L{FanOut}) and
for each named room (chatproto/rooms.py): every line of every log is
numbered from one counter, the server's order, so that a user in the lobby
and rooms is given the lines of all its logs merged in the order they were
made (L{gather}).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from chatproto.metrics import Metrics
from chatproto.session import Session, State

if TYPE_CHECKING:
    from chatproto.config import ServerConfig

# Public lines made in one reactor turn are written together, but a batch
# goes out early when it reaches either bound: what each user is handed at
# once, and what each sender's copy (the batch less its own lines) costs,
# stay small.
BATCH_LINES = 64
BATCH_BYTES = 64 * 1024


class Log:
    """Lines, in the order made, for readers who each hold a place in it.

    Line i is number C{base + i + 1} here (a reader's place: the number of
    the last line it was given), and C{numbers[i]} in the server's order,
    drawn from the counter every log of the server shares (L{gather}
    merges logs by it). Invariants: only lines some reader has not been
    given are kept (the owner calls L{forget} once every reader has them);
    a reader is never given a line it made (C{spoke}: the place of each
    sender's last line)."""

    __slots__ = ("base", "counter", "joined", "lines", "numbers", "spoke")

    def __init__(self, counter: Iterator[int]) -> None:
        self.counter = counter
        self.lines: list[tuple[bytes, Session | None]] = []
        self.numbers: list[int] = []
        self.base = 0
        self.spoke: dict[Session, int] = {}  # its last line's place
        self.joined: dict[int, bytes] = {}  # lines after place N, to the end

    @property
    def end(self) -> int:
        """The place of the last line: a reader below it has lines to take."""
        return self.base + len(self.lines)

    def add(self, line: bytes, sender: Session | None) -> None:
        """A line for every reader but C{sender}."""
        self.lines.append((line, sender))
        self.numbers.append(next(self.counter))
        if sender is not None:
            self.spoke[sender] = self.base + len(self.lines)
        self.joined.clear()

    def take(self, place: int, reader: Session) -> bytes:
        """The lines after C{place}, but C{reader}'s own, joined: the same
        bytes object for every reader from the same place who made none."""
        start, end = max(place, self.base), self.base + len(self.lines)
        if start >= end:
            return b""
        lines = self.lines[start - self.base :]
        if self.spoke.get(reader, 0) > start:
            return b"".join([line for line, by in lines if by is not reader])
        cached = self.joined.get(start)
        if cached is None:
            cached = self.joined[start] = b"".join([line for line, _ in lines])
        return cached

    def numbered(self, place: int, reader: Session) -> list[tuple[int, bytes]]:
        """The lines after C{place}, but C{reader}'s own, with their numbers."""
        i = max(place - self.base, 0)
        return [
            (number, line)
            for number, (line, by) in zip(self.numbers[i:], self.lines[i:], strict=True)
            if by is not reader
        ]

    def forget(self, upto: int) -> None:
        """Drop the lines up to place C{upto}: every reader has them."""
        drop = upto - self.base
        if drop <= 0:
            return
        del self.lines[:drop]
        del self.numbers[:drop]
        self.base = upto
        self.joined.clear()
        spoke = self.spoke
        for sender in [s for s, n in spoke.items() if n <= upto]:
            del spoke[sender]


def gather(parts: list[tuple[Log, int]], reader: Session) -> bytes:
    """What C{reader} has not been given of several logs, from its place in
    each (below each log's end), merged in the order the lines were made:
    each log's lines joined (and shared) when the logs do not interleave,
    as when one has lines and the others none."""
    if len(parts) == 1:
        log, place = parts[0]
        return log.take(place, reader)
    if not parts:
        return b""
    parts.sort(key=lambda part: part[0].numbers[max(part[1] - part[0].base, 0)])
    last = 0
    for log, place in parts:
        if log.numbers[max(place - log.base, 0)] < last:
            break  # interleaved: line by line
        last = log.numbers[-1]
    else:
        return b"".join([log.take(place, reader) for log, place in parts])
    lines = sorted(itertools.chain(*[log.numbered(p, reader) for log, p in parts]))
    return b"".join([line for _, line in lines])


class FanOut:
    """The lobby's public lines (a L{Log}) and each member's place in it.

    A member's place is its session's C{seen}; C{end} is the place of the
    last line made. Invariants:
      - a member's C{seen} is the number of the last line it was given, and
        only this object writes it; -1: not a member (it gets no public line);
      - a member gets every line made from when it joined (L{join}) until it
        left (L{leave}), once each, in order, except the lines it made;
      - lines every member has are dropped (L{Log.forget}), so the log holds
        only what some member has not been given;
      - every line reaches every member by the end of the pass after the one
        under way when it was made (or at once: L{flush});
      - a write may cut its reader, whose departure is a new line: a pass
        reads the end again after every write, and never starts another
        pass (or a flush) inside itself.
    """

    def __init__(
        self,
        config: ServerConfig,
        clock: IReactorTime,
        members: Mapping[str, Session],
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config
        # The room's counters: deliveries (counted as each line is made: by
        # the invariants, every member but its sender gets it, once), and
        # one latency per pass: the wait of the oldest line it started on.
        self.metrics = metrics if metrics is not None else Metrics()
        self._queued_at = 0.0  # when the first of the _waiting lines came
        self._pass_queued: float | None = None  # the same, for the pass
        self.clock = clock
        self._members = members  # the room's, by nickname: read, never written
        # The server's order: every log's lines are numbered from it (the
        # named rooms' too, chatproto/rooms.py).
        self.counter = itertools.count(1)
        self.log = Log(self.counter)
        self._waiting = 0  # lines no pass has started on, and their bytes
        self._waiting_size = 0
        self._pass: list[Session] = []  # left to serve, last first
        self._pass_from = 0  # the last line's number when the pass started
        self._pass_call: IDelayedCall | None = None
        # A pass or a flush is giving users their lines. A write may cut a
        # reader, whose departure is a new line: it joins what is being
        # served, and never starts a flush inside the one under way.
        self._serving = False
        self._flushed = float("-inf")  # when the last pass started
        self._rate = 0.0  # deliveries per second of public lines, lately
        self._delivered = 0  # since _counted_since
        self._counted_since = clock.seconds()

    @property
    def kept(self) -> int:
        """How many public lines some member has not been given yet."""
        return len(self.log.lines)

    @property
    def end(self) -> int:
        """The place of the last public line made: a member whose C{seen}
        is below it has some not given yet (L{take})."""
        log = self.log
        return log.base + len(log.lines)

    def join(self, member: Session) -> None:
        """A member joins: it gets the lines made from now on."""
        member.seen = self.end

    def leave(self, member: Session) -> None:
        """A member leaves: the lines made before still reach it, now."""
        self._serve(member)
        member.seen = -1

    def publish(self, line: bytes, sender: Session | None) -> None:
        """A public line for every member but C{sender}.

        Lines go out in passes over the members: one write per member per
        pass, whatever the number of lines, from the end of the reactor turn
        (pass_size members at a time, see ServerConfig).

        While the chat delivers more than batch_threshold lines a second
        (lines times members, measured over the last second), a pass also
        waits until batch_delay has passed since the previous one started:
        each member gets at most one write per batch_delay, and lines wait
        at most that long. Below it, nothing waits: latency is what
        matters."""
        if not self._members:
            return
        self.log.add(line, sender)
        if not self._waiting:
            self._queued_at = self.clock.seconds()
        self._waiting += 1
        self._waiting_size += len(line)
        self._delivered += len(self._members)
        spoke = sender is not None and sender.seen >= 0  # a member: not for it
        self.metrics.deliveries += len(self._members) - spoke
        full = self._waiting >= BATCH_LINES or self._waiting_size >= BATCH_BYTES
        if full and not self._serving:
            self.flush()
        elif not self._pass and self._pass_call is None:
            self._schedule_pass()

    def catch_up(self, member: Session) -> None:
        """Give a member the public lines made so far, and those of its
        named rooms, in one write, before another line."""
        rooms = member.rooms
        if member.seen < self.end or (rooms is not None and rooms.owed()):
            self._serve(member)

    def take(self, member: Session) -> bytes:
        """The public lines made so far that a member has not been given,
        handed to the caller to write: from now on the member has them."""
        start, end = member.seen, self.end
        if start < 0 or start >= end:
            return b""
        member.seen = end
        return self.log.take(start, member)

    def flush(self) -> None:
        """Give every member every public line now."""
        if self._serving:  # a pass or flush under way gives them out
            return
        if self._pass_call is not None:
            if self._pass_call.active():
                self._pass_call.cancel()
            self._pass_call = None
        queued = self._oldest_queued()
        self._pass = []
        self._waiting = self._waiting_size = 0
        if not self.log.lines:
            return
        self._flushed = self.clock.seconds()
        self._serving = True
        try:
            # Serving may cut a reader, whose departure is a new line: the
            # members already served get it in the next round, until none
            # comes. The members are read anew each round, as cuts remove
            # some.
            while self.log.lines:
                upto = self.end
                for member in tuple(self._members.values()):
                    self._serve(member)
                self.log.forget(upto)
        finally:
            self._serving = False
        if queued is not None:
            self.metrics.observe_latency(self.clock.seconds() - queued)

    def _oldest_queued(self) -> float | None:
        """When the oldest line not yet given to every member was queued, as
        far as a pass tells (None: none waits)."""
        if self._pass and self._pass_queued is not None:
            return self._pass_queued
        return self._queued_at if self._waiting else None

    def _schedule_pass(self) -> None:
        wait = 0.0
        if self._rate >= self.config.batch_threshold:
            wait = self._flushed + self.config.batch_delay - self.clock.seconds()
        self._pass_call = self.clock.callLater(max(0.0, wait), self._run_pass)

    def _run_pass(self) -> None:
        """Serve the next pass_size members of the pass, starting one if none
        is under way; when it ends, start another if lines came meanwhile."""
        self._pass_call = None
        if not self._pass:
            self._pass = list(self._members.values())
            self._pass.reverse()
            self._pass_from = self.end
            self._pass_queued = self._queued_at if self._waiting else None
            self._waiting = self._waiting_size = 0
            self._flushed = now = self.clock.seconds()
            if now - self._counted_since >= 1.0:
                self._rate = self._delivered / (now - self._counted_since)
                self._counted_since, self._delivered = now, 0
        chunk = self._pass
        # _serve, unrolled for the common case: a member who made none of
        # the lines, given the same bytes as the others (profiled: the
        # loop's own cost is most of what the server spends outside the
        # kernel). A write that cuts a reader adds its departure to the log
        # (and empties the cache): the end is read again after each write.
        log = self.log
        lines, base = log.lines, log.base
        end = base + len(lines)
        spoke, joined, chatting = log.spoke, log.joined, State.CHATTING
        self._serving = True
        try:
            for _ in range(min(self.config.pass_size, len(chunk))):
                member = chunk.pop()
                start = member.seen
                if start >= end or member.state is not chatting:
                    continue
                data = joined.get(start)
                # a member of named rooms: merged with theirs (_serve)
                if data is None or member in spoke or member.rooms is not None:
                    self._serve(member)
                else:
                    member.seen = end
                    member.connection.write(data)
                end = base + len(lines)
        finally:
            self._serving = False
        if chunk:
            self._pass_call = self.clock.callLater(0, self._run_pass)
            return
        # Every member has every line up to the pass's start (a newcomer,
        # all lines made before it came): those are nobody's any more.
        self.log.forget(self._pass_from)
        if self._pass_queued is not None:
            self.metrics.observe_latency(self.clock.seconds() - self._pass_queued)
            self._pass_queued = None
        if self.log.lines:
            self._schedule_pass()

    def _serve(self, member: Session) -> None:
        """Give a member, in one write, the public lines it has not been
        given (the same bytes as everyone, or, if it made some of them, all
        but its own), merged in the order made with those of its named
        rooms (L{gather})."""
        rooms = member.rooms
        if rooms is None:
            data = self.take(member)
        else:
            start, end = member.seen, self.end
            if 0 <= start < end:
                member.seen = end
                data = rooms.take((self.log, start))
            else:
                data = rooms.take(None)
        if data:
            member.connection.write(data)
