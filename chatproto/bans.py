"""The bans of a server: L{Ban}, L{Bans} and their file (docs/operating.md,
"Moderation").

A ban refuses connections from an address (its source(): an IPv6 /64
counts as one) until it expires. The bans live in L{Bans}, kept in a small
file (C{--bans FILE}) rewritten atomically on every change; on a server
alone a ban (or an unban) that cannot be written is refused, and changes
nothing (in a cluster, Redis has the truth). The commands that make and
lift them are chatproto/moderation.py's.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from chatproto.admission import source

log = Logger()


@dataclass(frozen=True)
class Ban:
    """One banned address (a source(): IPv4, or an IPv6 /64) until C{until}
    (seconds since the epoch)."""

    address: str
    until: float
    by: str
    reason: str

    def shared(self) -> bytes:
        """How a cluster keeps it in Redis: C{UNTIL<TAB>BY<TAB>REASON}."""
        return f"{self.until!r}\t{self.by}\t{self.reason}".encode()

    @classmethod
    def from_shared(cls, address: str, value: bytes) -> Ban | None:
        """The ban C{shared} made, or None when the value is damaged."""
        until, _, rest = value.decode("utf-8", "replace").partition("\t")
        by, _, reason = rest.partition("\t")
        try:
            return cls(address, float(until), by, reason)
        except ValueError:
            return None


def ban_address(text: str) -> str | None:
    """The address a ban of C{text} covers (an IPv4 address; an IPv6
    address or a network of at least /64, as its /64), or None when it is
    not an address."""
    try:
        if "/" in text:
            net = ipaddress.ip_network(text, strict=False)
            if net.version == 4 and net.prefixlen == 32:
                return str(net.network_address)
            if net.version == 6 and net.prefixlen >= 64:
                return source(str(net.network_address))
            return None
        return source(str(ipaddress.ip_address(text)))
    except ValueError:
        return None


class Bans:
    """The bans of one server, by address; kept in C{path} when given.

    The file is JSON (C{{"bans": [{"address", "until", "by", "reason"}]}}),
    written whole on every change, to a temporary file (flushed to the
    disk) then renamed over the old one: a crash leaves the old list or the
    new one, never half.

    A server alone keeps its bans in the file, their truth: a change an
    operator makes (L{add}, L{remove}) is written before it holds, and when
    it cannot be (a read-only directory, a full disk), OSError, and nothing
    changed. In a cluster Redis has the truth and the file is the node's
    copy (L{update}, L{replace}); so is a ban expiring: those hold whether
    or not the file can be written (a failure is logged)."""

    def __init__(self, clock: IReactorTime, path: str | None = None) -> None:
        self.clock = clock
        self.path = path
        self.by_address: dict[str, Ban] = {}
        if path is not None and os.path.exists(path):
            self._load(path)

    def _load(self, path: str) -> None:
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except OSError as e:
            raise ValueError(f"cannot read {path}: {e.strerror}.") from None
        except ValueError as e:  # not JSON, or not UTF-8
            raise ValueError(
                f"{path} is not a bans file ({e}); fix it, or delete it to "
                "start with no bans."
            ) from None
        entries = data.get("bans") if isinstance(data, dict) else None
        if not isinstance(entries, list):
            raise ValueError(
                f'{path} is not a bans file: it must be {{"bans": [...]}}, a '
                "list of entries; fix it, or delete it to start with no bans."
            )
        now = self.clock.seconds()
        bans = [
            _ban_entry(path, number, entry) for number, entry in enumerate(entries, 1)
        ]
        self.by_address = {b.address: b for b in bans if b.until > now}

    def check(self, address: str | None) -> Ban | None:
        """The ban on C{address} now, if there is one (an expired one is
        forgotten)."""
        if not self.by_address or address is None:
            return None
        ban = self.by_address.get(address)
        if ban is not None and ban.until <= self.clock.seconds():
            self.update(address, None)
            return None
        return ban

    def add(self, ban: Ban) -> None:
        """An operator's ban: written, then held; OSError if it cannot be
        written (nothing changed)."""
        self._write({**self.by_address, ban.address: ban})

    def remove(self, address: str) -> Ban | None:
        """An operator lifts the ban on C{address}: written, then lifted;
        OSError if it cannot be written (nothing changed). The ban lifted,
        None if there was none."""
        ban = self.by_address.get(address)
        if ban is not None:
            self._write({a: b for a, b in self.by_address.items() if a != address})
        return ban

    def update(self, address: str, ban: Ban | None) -> None:
        """A change of the node's copy of the cluster's bans (C{ban} for
        C{address}, None: none), or a ban expiring: it holds, written if
        the file can be."""
        if self.by_address.get(address) == ban:
            return
        table = {a: b for a, b in self.by_address.items() if a != address}
        if ban is not None:
            table[address] = ban
        self._hold(table)

    def replace(self, bans: list[Ban]) -> list[Ban]:
        """Hold exactly C{bans} (a cluster's, read from Redis: the truth),
        in one write; return those that were not held here."""
        now = self.clock.seconds()
        theirs = {b.address: b for b in bans if b.until > now}
        new = [b for a, b in theirs.items() if self.by_address.get(a) != b]
        if theirs != self.by_address:
            self._hold(theirs)
        return new

    def active(self) -> list[Ban]:
        """The bans in force, soonest to expire first."""
        now = self.clock.seconds()
        if any(b.until <= now for b in self.by_address.values()):
            self._hold({a: b for a, b in self.by_address.items() if b.until > now})
        return sorted(self.by_address.values(), key=lambda b: b.until)

    def _hold(self, table: dict[str, Ban]) -> None:
        """Hold C{table}, and write it if the file can be (else log why)."""
        try:
            self._write(table)
        except OSError as e:
            self.by_address = table
            log.error(
                "cannot write the bans to {path} ({why}): the change holds "
                "here, not in the file",
                path=self.path,
                why=e.strerror or str(e),
            )

    def _write(self, table: dict[str, Ban]) -> None:
        """Write C{table} to the file, then hold it; OSError (the file and
        the table as they were) when it cannot be written."""
        if self.path is not None:
            _write_atomically(self.path, [asdict(b) for b in table.values()])
        self.by_address = table


def _write_atomically(path: str, entries: list[dict[str, Any]]) -> None:
    """C{path} holds C{entries} now, or (OSError) is as it was."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(dir=folder, prefix=".bans-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"bans": entries}, f, ensure_ascii=False, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    _sync_directory(folder)


def _sync_directory(folder: str) -> None:
    """Make a rename in C{folder} reach the disk (a power cut after it then
    keeps the new file, not the old one). Best effort: a file system that
    cannot sync a directory has already renamed the file."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


# An entry of the bans file: its fields, their types, and what each holds.
_BAN_FIELDS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "address": (str, "an address, as /ban takes it"),
    "until": ((int, float), "a number: when it ends, in seconds since the epoch"),
    "by": (str, "a string: the operator's nickname"),
    "reason": (str, "a string"),
}


def _ban_entry(path: str, number: int, entry: object) -> Ban:
    """The ban of the C{number}th entry of the file at C{path};
    ValueError with a sentence naming the entry and the fix."""
    where = f"{path}, entry {number}"
    fix = "fix it, or delete the entry"
    if not isinstance(entry, dict) or set(entry) != set(_BAN_FIELDS):
        fields = ", ".join(f'"{name}"' for name in _BAN_FIELDS)
        raise ValueError(f"{where}: an entry must have the fields {fields}; {fix}.")
    for name, (kind, what) in _BAN_FIELDS.items():
        value = entry[name]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ValueError(
                f'{where}: "{name}" must be {what}, not {value!r:.40}; {fix}.'
            )
    address = ban_address(entry["address"])
    if address is None:
        raise ValueError(
            f'{where}: "address" must be an IPv4 address or an IPv6 /64, '
            f"not {entry['address']!r:.40}; {fix}."
        )
    if not math.isfinite(entry["until"]):
        raise ValueError(f'{where}: "until" must be a finite number; {fix}.')
    return Ban(address, float(entry["until"]), entry["by"], entry["reason"])
