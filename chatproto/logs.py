"""The server's log: JSON lines for twistd, and events about users in bursts.

JSON lines: C{twistd -n --logger=chatproto.logs.json chat ...}.

twistd's C{--logger} takes the name of a callable that makes the log
observer; this one writes each log event as one JSON object on one line of
standard output (where systemd's journal, or any collector, reads it), its
fields named as the code logged them: C{act} (join, departure, refused,
kick, ban, flood, slow_reader, ping...), C{nick}, C{address}, C{reason}.
Read them back with twisted.logger.eventsFromJSONLogFile, or jq.

Bursts: the events about one user that come by the thousand when a herd
connects, leaves or stops reading (arrivals, departures, pings unanswered,
slow readers, floods) are gathered by a L{TurnLog}, one event per kind and
reactor turn (see L{Burst}; docs/operating.md, "Logs").
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import IO, Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import FileLogObserver, Logger, jsonFileLogObserver


def json(out: IO[str] | None = None) -> FileLogObserver:
    """An observer writing JSON lines to C{out} (default: the process's
    real standard output, which twistd does not redirect to the log)."""
    if out is None:
        out = sys.__stdout__
    assert out is not None, "no standard output to log to"
    return jsonFileLogObserver(out, recordSeparator="")


@dataclass(frozen=True, eq=False)
class Burst:
    """A kind of log event about one user, that may come by the thousand
    in one reactor turn (a herd connecting, a restart): what a L{TurnLog}
    writes for it.

    One in a turn is written as it always was: C{one} (its format), C{act},
    and the record's C{fields}, through C{logger} (the module's that has
    it, so that its namespace is the same). Several are one event: C{many}
    (a format of C{count} and C{names}, each user named by C{item}), with
    C{act}, C{count}, C{names} and C{users}, every record whole (each with
    its address). Within a turn, kinds are written by C{order}: what cut a
    user (a ping unanswered, a flood) before its departure, an arrival
    before both."""

    logger: Logger
    act: str
    one: str
    many: str
    item: str
    fields: tuple[str, ...]
    order: int = 0


# The most users one event names: its JSON line stays under 32 KiB with
# the longest nicknames and IPv6 networks (about 250 bytes a user), below
# journald's LineMax (48 KiB), past which the journal cuts a line in two
# and jq no longer reads it.
MOST_USERS = 128


class TurnLog:
    """The log events of L{Burst} kinds, gathered per reactor turn.

    The first record of a turn asks C{clock} for one call at the end of the
    turn (C{callLater(0)}), the next ones are appended: a herd of 10,000
    arrivals is a hundred events, not 10,000 formatted and written one by
    one (each 60-80 us in twistd's text observer: a quarter of the CPU of a
    registration, profiled). One event names at most C{most} users (the
    rest of the turn's go in the next events). L{flush} writes what is
    pending at once: at shutdown, so that nothing is lost."""

    def __init__(self, clock: IReactorTime, most: int = MOST_USERS) -> None:
        self.clock = clock
        self.most = most
        self._pending: dict[Burst, list[dict[str, Any]]] = {}
        self._call: IDelayedCall | None = None

    def add(self, burst: Burst, **record: Any) -> None:
        """One event of kind C{burst} about one user: its fields."""
        records = self._pending.get(burst)
        if records is not None:
            records.append(record)
            return
        self._pending[burst] = [record]
        if self._call is None:
            self._call = self.clock.callLater(0, self._turn_ended)

    def _turn_ended(self) -> None:
        self._call = None
        self.flush()

    def flush(self) -> None:
        """Write every pending record now, one event per kind (and per
        C{most} users)."""
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()
        pending, self._pending = self._pending, {}
        most = self.most
        for burst in sorted(pending, key=_order):
            records = pending[burst]
            for start in range(0, len(records), most):
                _write(burst, records[start : start + most])


def _write(burst: Burst, records: list[dict[str, Any]]) -> None:
    """One event about these users: as it always was for one."""
    if len(records) == 1:
        (record,) = records
        fields = {name: record.get(name) for name in burst.fields}
        burst.logger.info(burst.one, act=burst.act, **fields)
    else:
        names = ", ".join([burst.item.format_map(r) for r in records])
        burst.logger.info(
            burst.many, act=burst.act, count=len(records), names=names, users=records
        )


def _order(burst: Burst) -> int:
    return burst.order
