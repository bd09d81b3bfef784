"""JSON lines for twistd: C{twistd -n --logger=chatproto.logs.json chat ...}.

twistd's C{--logger} takes the name of a callable that makes the log
observer; this one writes each log event as one JSON object on one line of
standard output (where systemd's journal, or any collector, reads it), its
fields named as the code logged them: C{act} (join, departure, refused,
kick, ban, flood, slow_reader, ping...), C{nick}, C{address}, C{reason}.
Read them back with twisted.logger.eventsFromJSONLogFile, or jq.
"""

from __future__ import annotations

import sys
from typing import IO

from twisted.logger import FileLogObserver, jsonFileLogObserver


def json(out: IO[str] | None = None) -> FileLogObserver:
    """An observer writing JSON lines to C{out} (default: the process's
    real standard output, which twistd does not redirect to the log)."""
    if out is None:
        out = sys.__stdout__
    assert out is not None, "no standard output to log to"
    return jsonFileLogObserver(out, recordSeparator="")
