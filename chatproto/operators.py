"""Operators: the operators file, its scrypt hashes, and the command that
makes one (docs/operating.md, "Moderation").

Operators are listed in a file (C{--operators FILE}), one C{nick:hash} line
each, the hash made by C{python -m chatproto.operators hash}: scrypt
(C{hashlib.scrypt}, OpenSSL's) with a random salt, written
C{scrypt$N$R$P$SALT$HASH} (salt and hash in base64). A check costs 84 ms of
scrypt: the server runs it in a thread of the reactor's pool
(L{check_in_threads}, and L{hash_in_threads} to make a hash), and L{Tries}
throttles the tries, per address and in total: /op's
(chatproto/moderation.py) and protected nicknames' (chatproto/accounts.py)
each have theirs, and a cluster counts the latter's in Redis
(L{SharedCounts}).

The command reads the password from the terminal (asked twice, not echoed)
or, in a pipe, the first line of standard input, and prints the hash: put
C{NICK:} before it, one operator a line, in the file given to
C{--operators}.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import math
import secrets
import sys
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TextIO, TypeVar

from twisted.internet.defer import Deferred, DeferredSemaphore, fail, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatproto.metrics import RefusalLog
from chatproto.registry import nick_key, valid_nickname

_T = TypeVar("_T")
log = Logger()

# scrypt's cost: 2**14 blocks of 128*8 bytes, 16 MiB and 84 ms a check here
# (the parameters OWASP gives for scrypt). A check runs in a thread (see
# check_in_threads): /op's throttle (chatproto/moderation.py) bounds how
# often one address can make it run, and how many run at once.
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
# What a hash read from the file may ask for at most (a typo must not make
# a check take a gigabyte): 128 * N * R * P bytes.
_MAX_MEMORY = 256 * 1024 * 1024


# Passwords


def make_hash(
    password: str, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P
) -> str:
    """The line's hash for C{password}: C{scrypt$N$R$P$SALT$HASH}."""
    salt = secrets.token_bytes(16)
    key = _scrypt(password, salt, n, r, p)
    return "$".join(["scrypt", str(n), str(r), str(p), _b64(salt), _b64(key)])


def check_password(password: str, stored: str) -> bool:
    """Whether C{password} is the one C{stored} (a L{make_hash}) was made
    from; compared in constant time."""
    n, r, p, salt, key = _parse_hash(stored)
    return hmac.compare_digest(_scrypt(password, salt, n, r, p), key)


# How /op checks a password: (password, stored hash) -> Deferred[bool].
Checker = Callable[[str, str], "Deferred[bool]"]
# How /register makes a hash: password -> Deferred[make_hash's string].
Hasher = Callable[[str], "Deferred[str]"]


def check_here(password: str, stored: str) -> Deferred[bool]:
    """Check in the caller's thread: the result is there at once (a
    Moderation built without a checker, as the unit tests build it)."""
    return maybeDeferred(check_password, password, stored)


def check_in_threads(reactor: Any) -> Checker:
    """A checker that runs each check in a thread of C{reactor}'s pool
    (what the server uses: while scrypt runs, the reactor serves)."""
    from twisted.internet.threads import deferToThreadPool

    def check(password: str, stored: str) -> Deferred[bool]:
        pool = reactor.getThreadPool()
        return deferToThreadPool(reactor, pool, check_password, password, stored)

    return check


def hash_here(password: str) -> Deferred[str]:
    """Make the hash in the caller's thread (a server built without a
    hasher, as the unit tests build it)."""
    return maybeDeferred(make_hash, password)


def hash_in_threads(reactor: Any) -> Hasher:
    """A hasher that makes each hash in a thread of C{reactor}'s pool."""
    from twisted.internet.threads import deferToThreadPool

    def hasher(password: str) -> Deferred[str]:
        pool = reactor.getThreadPool()
        return deferToThreadPool(reactor, pool, make_hash, password)

    return hasher


# The throttle of password tries

# Wrong passwords from one address: the first FREE_TRIES are answered at
# once, then one try every RETRY_AFTER seconds; an address that made no
# mistake for FORGET_AFTER seconds starts afresh.
FREE_TRIES = 3
RETRY_AFTER = 5.0
FORGET_AFTER = 600.0

# Scrypt runs at once (each holds a thread and 16 MiB while it runs), and
# how many more may wait their turn; past that, a try is refused as a
# throttled one, as the many addresses of an attack would otherwise queue
# without end.
MAX_CHECKS = 2
MAX_WAITING = 8

# A cluster's tries, in total: what one server checks at most in a second
# (MAX_CHECKS scrypt runs of 84 ms each), so that N nodes do not check N
# times as many passwords as one server.
CLUSTER_TRIES_PER_SECOND = 24


class Throttled(Exception):
    """A password try refused by its L{Tries}: C{wait} seconds before the
    next one may be taken."""

    def __init__(self, wait: int) -> None:
        super().__init__(f"try again in {wait} seconds")
        self.wait = wait


class Busy(Throttled):
    """A try refused because too many are under way, here or in the whole
    cluster (not because of its address)."""


class SharedCounts(Protocol):
    """The failures of a cluster's tries, counted where every node counts
    them (L{chatproto.accounts.RedisTries}: in Redis), with the throttle's
    decision, in one step."""

    def take(self, host: str | None) -> Deferred[int]:
        """Count a try from C{host}, a failure until it is answered right:
        the failures in a row from C{host} with it. Fails with L{Throttled}
        (C{host} must wait), L{Busy} (the cluster's tries in total), or
        L{chatproto.registry.ClusterUnreachable}."""

    def right(self, host: str | None) -> Deferred[None]:
        """A try from C{host} was right: its failures are forgotten."""


class Tries:
    """The password tries of one kind (/op's, or protected nicknames'),
    throttled per address and in total.

    A try from an address counts as a failure until its check says it was
    right (so that tries sent before the first answer are throttled as
    failures are); past L{FREE_TRIES} failures, one try every
    L{RETRY_AFTER} seconds. At most L{MAX_CHECKS} scrypt runs at once and
    L{MAX_WAITING} wait; a try past that is refused, and logged as refused
    connections are (L{RefusalLog}, under C{act}, reason C{busy}).

    The failures are counted here, in memory; a cluster node's are counted
    in C{shared} (L{SharedCounts}) when it is given, so that an address
    spreading its guesses over the nodes is throttled as on one server, and
    the whole cluster takes at most L{CLUSTER_TRIES_PER_SECOND} tries a
    second. A try it cannot count fails as C{shared} does: never checked
    unthrottled."""

    def __init__(self, clock: IReactorTime, act: str) -> None:
        self.clock = clock
        self.shared: SharedCounts | None = None
        self._checks = DeferredSemaphore(MAX_CHECKS)
        self._busy = RefusalLog(clock, act=act)
        # In memory: the failures in a row and the last try, by address;
        # with shared counts, the last count read there (for failures()).
        self._failures: dict[str | None, tuple[int, float]] = {}
        self._counting = 0  # tries whose shared count is under way

    def check(
        self, host: str | None, checker: Checker, password: str, stored: str
    ) -> Deferred[bool]:
        """A try of C{password} from C{host}: C{checker}'s answer, in its
        turn; or at once a failure with L{Throttled}."""
        if self.shared is not None:
            return self._check_shared(self.shared, host, checker, password, stored)
        now = self.clock.seconds()
        failures = self.failures(host)
        last = self._failures.get(host, (0, 0.0))[1]
        if failures >= FREE_TRIES and now - last < RETRY_AFTER:
            return fail(Throttled(math.ceil(RETRY_AFTER - (now - last))))
        if self._full(host):
            return fail(Throttled(math.ceil(RETRY_AFTER)))
        self._failures[host] = (failures + 1, now)
        self._prune(now)
        d = self._checks.run(checker, password, stored)
        d.addCallback(self._answered, host)
        return d

    def _check_shared(
        self,
        shared: SharedCounts,
        host: str | None,
        checker: Checker,
        password: str,
        stored: str,
    ) -> Deferred[bool]:
        """L{check}, the failures counted in C{shared}: the try waits for
        its count there, then for its turn here."""
        if self._full(host):
            return fail(Busy(math.ceil(RETRY_AFTER)))
        self._counting += 1

        def counted(failures: int) -> Deferred[bool]:
            now = self.clock.seconds()
            self._failures[host] = (failures, now)
            self._prune(now)
            d = self._checks.run(checker, password, stored)
            d.addCallback(self._answered_shared, shared, host)
            return d

        def refused(failure: Failure) -> Failure:
            if failure.check(Busy):
                self._busy.refused("busy", host)
            return failure

        d = shared.take(host)
        d.addBoth(self._counted)
        return d.addCallbacks(counted, refused)

    def _counted(self, result: _T) -> _T:
        self._counting -= 1
        return result

    def _answered_shared(
        self, right: bool, shared: SharedCounts, host: str | None
    ) -> bool:
        if right:
            self._failures.pop(host, None)
            # Not waited for: a count left there costs the owner a try.
            shared.right(host).addErrback(_not_forgotten, host)
        return right

    def run(
        self, host: str | None, work: Callable[[str], Deferred[_T]], password: str
    ) -> Deferred[_T]:
        """Scrypt work that is no try (making a hash for C{host}): in its
        turn, or at once a failure with L{Throttled}."""
        if self._full(host):
            return fail(Throttled(math.ceil(RETRY_AFTER)))
        return self._checks.run(work, password)

    def failures(self, host: str | None) -> int:
        """The wrong tries in a row from C{host} (tries not answered yet
        included), forgotten after FORGET_AFTER quiet seconds."""
        failures, last = self._failures.get(host, (0, 0.0))
        if failures and self.clock.seconds() - last >= FORGET_AFTER:
            return 0
        return failures

    def _full(self, host: str | None) -> bool:
        """Whether MAX_CHECKS run and MAX_WAITING wait (tries whose shared
        count is under way among them)."""
        checks = self._checks
        running = MAX_CHECKS - checks.tokens
        if running + len(checks.waiting) + self._counting >= MAX_CHECKS + MAX_WAITING:
            # logged as refusals are, or a brute force writes a thousand
            # lines a second
            self._busy.refused("busy", host)
            return True
        return False

    def _answered(self, right: bool, host: str | None) -> bool:
        if right:
            self._failures.pop(host, None)
        return right

    def _prune(self, now: float) -> None:
        """Forget addresses that stopped failing, once there are many."""
        if len(self._failures) > 10_000:
            for host, (_, last) in list(self._failures.items()):
                if now - last >= FORGET_AFTER:
                    del self._failures[host]


def _not_forgotten(failure: Failure, host: str | None) -> None:
    log.warn(
        "the password tries of {address} could not be forgotten: {why}",
        address=host,
        why=failure.getErrorMessage(),
        act="accounts-failed",
    )


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode(),
        salt=salt,
        n=n,
        r=r,
        p=p,
        dklen=32,
        maxmem=_MAX_MEMORY + 1024 * 1024,
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _parse_hash(stored: str) -> tuple[int, int, int, bytes, bytes]:
    """N, R, P, the salt and the key of a hash; ValueError with a sentence
    when it is not one this module makes."""
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        raise ValueError(
            "the hash is not scrypt$N$R$P$SALT$HASH "
            "(make one with: python -m chatproto.operators hash)"
        )
    try:
        n, r, p = (int(x) for x in parts[1:4])
        salt = base64.b64decode(parts[4], validate=True)
        key = base64.b64decode(parts[5], validate=True)
    except ValueError:
        raise ValueError("the hash's numbers or base64 are damaged") from None
    if n < 2 or n & (n - 1) or r < 1 or p < 1 or 128 * n * r * p > _MAX_MEMORY:
        raise ValueError(
            "the hash's scrypt parameters are out of bounds (N a power of 2, "
            f"128*N*R*P at most {_MAX_MEMORY} bytes)"
        )
    if not salt or len(key) != 32:
        raise ValueError("the hash's salt or key has the wrong length")
    return n, r, p, salt, key


# The operators file


# What a password is checked against for a nickname the file does not list:
# a random salt and key at the default cost, so that the check costs what a
# real one does (the answer's delay says nothing of who is an operator) and
# matches no password; making it costs no scrypt, in any thread.
DUMMY_HASH = "$".join(
    [
        "scrypt",
        str(SCRYPT_N),
        str(SCRYPT_R),
        str(SCRYPT_P),
        _b64(secrets.token_bytes(16)),
        _b64(secrets.token_bytes(32)),
    ]
)


def parse_operators(text: str, name: str = "the operators file") -> dict[str, str]:
    """The operators of a file's text, nickname key -> hash. One
    C{nick:hash} line each; blank lines and lines starting with C{#} are
    skipped. ValueError naming the line for any other line."""
    operators: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        nick, colon, stored = line.partition(":")
        where = f"{name}, line {number}"
        if not colon or not valid_nickname(nick.strip()):
            raise ValueError(
                f"{where}: {line[:40]!r} is not NICK:HASH with a valid nickname."
            )
        try:
            _parse_hash(stored.strip())
        except ValueError as e:
            raise ValueError(f"{where}: {e}.") from None
        key = nick_key(nick.strip())
        if key in operators:
            raise ValueError(f"{where}: {nick.strip()} is listed twice.")
        operators[key] = stored.strip()
    return operators


def read_operators(path: str) -> dict[str, str]:
    """The operators of the file at C{path}; ValueError with a sentence
    when it cannot be read or has a bad line."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read {path}: {getattr(e, 'strerror', e)}.") from None
    return parse_operators(text, path)


# The command


USAGE = "usage: python -m chatproto.operators hash  (the password on stdin)\n"


def main(
    argv: Sequence[str] | None = None,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Print the hash of the password read; the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    if args != ["hash"]:
        stderr.write(USAGE)
        return 2
    if stdin.isatty():
        password = getpass.getpass("Mot de passe : ")
        if getpass.getpass("Encore une fois : ") != password:
            stderr.write("The two passwords differ; nothing was made.\n")
            return 1
    else:
        password = stdin.readline().rstrip("\r\n")
    if not password:
        stderr.write("An empty password cannot be an operator's.\n")
        return 1
    if password != password.strip():
        # /op PASSWORD loses the spaces around it: such a hash never matches
        stderr.write("A password cannot start or end with a space.\n")
        return 1
    stdout.write(make_hash(password) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
