"""Redis for the cluster mode, through txredisapi, with a time limit on every call.

txredisapi's reconnecting connections hold a command until Redis answers,
for as long as Redis is away. Here every call fails instead, with
L{ClusterUnreachable}: at once when there is no connection, after
C{timeout} seconds when Redis does not answer. A connection that waits for a
reply longer than that is cut, and txredisapi connects again (backing off to
every C{MAX_RETRY_DELAY} seconds) for as long as it is not closed.

Nothing connects before C{start}: a node is built with its connections and
starts them when its service starts.

Those seconds are seconds this process ran (L{within}): a process that was
stopped for a while (a GC pause, SIGSTOP, a VM migration) does not take
Redis for gone because its own timers fired late.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import txredisapi
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.error import ConnectError, ConnectionClosed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatproto.config import RedisAddress
from chatproto.registry import ClusterUnreachable

log = Logger()
T = TypeVar("T")

# A timer this late (seconds) says the process was stopped; see within().
LATE = 0.05
REGRANTS = 2

# Reconnection backoff: 0.2 s, then up to 2 s between attempts (txredisapi's
# own default, up to 10 s, would keep a node deaf long after Redis returned).
FIRST_RETRY_DELAY = 0.2
MAX_RETRY_DELAY = 2.0


class _Factory(txredisapi.RedisFactory):
    initialDelay = FIRST_RETRY_DELAY
    maxDelay = MAX_RETRY_DELAY


def _endpoint(reactor: Any, address: RedisAddress, timeout: float) -> HostnameEndpoint:
    return HostnameEndpoint(reactor, address.host, address.port, timeout=timeout)


def within(
    d: Deferred[T],
    timeout: float,
    clock: IReactorTime,
    expired: Callable[[], None] | None = None,
) -> Deferred[T]:
    """Cancel C{d} (then call C{expired}) unless it fires within C{timeout}
    seconds of this process running.

    On waking from a stop (a GC pause, SIGSTOP, a VM migration) the reactor
    runs the timers that fell due before it reads what arrived meanwhile:
    Redis's answer may be there. So a timer that fires more than C{LATE}
    seconds late gives Redis the time limit again, from then (at most
    C{REGRANTS} times: a process that is only very busy still gives up), and
    a timer on time gives up only after one more reactor turn, once what is
    readable was read. (Twisted's addTimeout, and txredisapi's replyTimeout,
    give up at once: after a 0.5 s SIGSTOP the node cut its connection, took
    Redis for gone and kept the lines typed meanwhile to itself.)"""
    call: IDelayedCall | None = None
    answered = False  # not d.called: a Deferred waiting on another is called

    def check(due: float, regrants: int) -> None:
        nonlocal call
        now = clock.seconds()
        if now - due > LATE and regrants > 0:
            call = clock.callLater(timeout, check, now + timeout, regrants - 1)
        else:
            call = clock.callLater(0, give_up)

    def give_up() -> None:
        nonlocal call
        call = None
        if answered:
            return
        d.cancel()
        if expired is not None:
            expired()

    def done(result: T) -> T:
        nonlocal answered
        answered = True
        if call is not None and call.active():
            call.cancel()
        return result

    call = clock.callLater(timeout, check, clock.seconds() + timeout, REGRANTS)
    return d.addBoth(done)


def unavailable(failure: Failure) -> Failure:
    """Turn what a Redis call can fail with into L{ClusterUnreachable}."""
    if failure.check(ClusterUnreachable):
        return failure
    if failure.check(DeferredTimeout, CancelledError):
        reason = "Redis did not answer in time"
    elif failure.check(
        txredisapi.ConnectionError, ConnectionClosed, ConnectError
    ):  # lost, refused, or never there
        reason = f"no connection to Redis ({failure.getErrorMessage()})"
    elif failure.check(txredisapi.RedisError):
        # OOM, LOADING after a restart, READONLY replica, BUSY script...
        reason = f"Redis refused: {failure.getErrorMessage()}"
        log.error("Redis refused a command: {error}", error=failure.getErrorMessage())
    else:
        return failure
    return Failure(ClusterUnreachable(reason))


class Commands:
    """One reconnecting connection for commands."""

    def __init__(
        self,
        address: RedisAddress,
        clock: IReactorTime,
        timeout: float,
        reactor: Any = None,
    ) -> None:
        self.address = address
        self.clock = clock
        self.timeout = timeout
        self._reactor = clock if reactor is None else reactor
        factory = _Factory(
            f"{address.host}:{address.port}",
            address.db,
            1,  # one connection: commands run in the order they are sent
            isLazy=True,
            charset=None,  # replies as bytes: lines go through untouched
            password=address.password,
            username=address.username,
            replyTimeout=None,  # see within(): the time limit is ours
            convertNumbers=False,
        )
        self._factory = factory
        # Fires when the first connection is up: a starting node joins then,
        # not a heartbeat later (measured: a second in 3 starts of 8).
        self.first_connected: Deferred[None] = Deferred()
        factory.deferred.addCallbacks(
            lambda _: self.first_connected.callback(None), lambda _: None
        )

    @property
    def started(self) -> bool:
        """Whether it connects, or tries to (start() was called, close()
        was not)."""
        return bool(self._factory.slots) and not self._factory.stopped

    def start(self) -> None:
        """Connect, and connect again whenever the connection is lost."""
        self._factory.startConnecting(
            _endpoint(self._reactor, self.address, self.timeout)
        )

    @property
    def connected(self) -> bool:
        return bool(self._factory.size)

    def call(self, command: str, *args: Any) -> Deferred[Any]:
        """Run one txredisapi command (C{eval}, C{publish}...) within the time
        limit; fail with L{ClusterUnreachable}."""
        if not self._factory.size:
            return fail(ClusterUnreachable("no connection to Redis"))
        try:
            d: Deferred[Any] = getattr(self._factory.handler, command)(*args)
        except txredisapi.ConnectionError as e:
            return fail(ClusterUnreachable(f"no connection to Redis ({e})"))
        within(d, self.timeout, self.clock, self._cut)
        d.addErrback(unavailable)
        return d

    def _cut(self) -> None:
        """Redis did not answer in time: cut the connection (txredisapi
        connects again), rather than wait on it."""
        for connection in list(self._factory.pool):
            if connection.transport is not None:
                connection.transport.abortConnection()

    def eval(self, script: bytes, args: Sequence[Any]) -> Deferred[Any]:
        return self.call("eval", script, [], list(args))

    def close(self) -> Deferred[None]:
        """Stop reconnecting, close the connection, fire when it is closed
        (or after the time limit)."""
        d: Deferred[None] = self._factory.disconnect()
        d.addTimeout(self.timeout, self.clock)
        d.addErrback(lambda f: None)
        return d


class _SubscriberProtocol(txredisapi.SubscriberProtocol):
    """Subscribes each time it connects, and reports to its L{Subscription}."""

    factory: _SubscriberFactory
    _subscribed = False

    def connectionMade(self) -> Any:
        ready = super().connectionMade()
        self.whenConnected().addCallback(self._subscribe)
        return ready

    def _subscribe(self, _: object) -> None:
        owner = self.factory.owner
        owner._protocol = self  # channels added from now on go on it too
        d: Deferred[Any] = self.subscribe(list(owner.channels))
        within(d, owner.timeout, owner.clock)
        d.addCallbacks(self._done, self._failed)

    def _done(self, _: object) -> None:
        if self.connected:
            self._subscribed = True
            self.factory.owner._listening(True, "")

    def _failed(self, failure: Failure) -> None:
        log.warn(
            "subscribing to Redis failed ({why}): connecting again",
            why=failure.getErrorMessage(),
        )
        if self.transport is not None:
            self.transport.abortConnection()

    def messageReceived(self, pattern: object, channel: bytes, message: bytes) -> None:
        try:
            self.factory.owner.on_message(channel, message)
        except Exception:
            log.failure("delivering a message from Redis")

    def connectionLost(self, why: Failure) -> None:
        super().connectionLost(why)
        owner = self.factory.owner
        if owner._protocol is self:
            owner._protocol = None
        if self._subscribed:
            self._subscribed = False
            self.factory.owner._listening(False, why.getErrorMessage())


class _SubscriberFactory(_Factory):
    protocol = _SubscriberProtocol

    def __init__(self, owner: Subscription, address: RedisAddress) -> None:
        super().__init__(
            None,
            None,  # pub/sub channels belong to no database
            1,
            isLazy=True,
            charset=None,
            password=address.password,
            username=address.username,
            convertNumbers=False,
        )
        self.owner = owner


class Subscription:
    """A reconnecting subscriber to a few channels.

    It subscribes again each time it connects, and says when it starts and
    stops hearing them: lines published while it is not are lost to it.
    Channels come and go (L{subscribe}, L{unsubscribe}: a room's, while
    the node has members in it), on the same connection: Redis gives its
    messages in the order it published them, whatever their channel.
    """

    def __init__(
        self,
        address: RedisAddress,
        channels: Sequence[bytes],
        on_message: Callable[[bytes, bytes], None],
        on_listening: Callable[[bool, str], None],
        clock: IReactorTime,
        timeout: float,
        reactor: Any = None,
    ) -> None:
        self.address = address
        self._reactor = clock if reactor is None else reactor
        self.channels = tuple(channels)
        self.on_message = on_message
        self._on_listening = on_listening
        self.clock = clock
        self.timeout = timeout
        self.listening = False
        self._factory = _SubscriberFactory(self, address)
        self._protocol: _SubscriberProtocol | None = None  # its connection

    def subscribe(self, channel: bytes) -> Deferred[None]:
        """Hear C{channel} too, from now on and after each reconnection;
        fires once Redis said so (at once if not connected: the channel is
        subscribed with the others when it connects)."""
        if channel in self.channels:
            return succeed(None)
        self.channels += (channel,)
        return self._send("subscribe", channel)

    def unsubscribe(self, channel: bytes) -> Deferred[None]:
        """Stop hearing C{channel}."""
        if channel not in self.channels:
            return succeed(None)
        self.channels = tuple(c for c in self.channels if c != channel)
        return self._send("unsubscribe", channel)

    def _send(self, command: str, channel: bytes) -> Deferred[None]:
        protocol = self._protocol
        if protocol is None or not protocol.connected:
            return succeed(None)
        try:
            d: Deferred[Any] = getattr(protocol, command)([channel])
        except txredisapi.ConnectionError:
            return succeed(None)  # subscribed again when it reconnects
        within(d, self.timeout, self.clock)
        d.addErrback(unavailable)
        return d.addCallback(lambda _: None)

    @property
    def started(self) -> bool:
        """Whether it connects, or tries to (start() was called, close()
        was not)."""
        return bool(self._factory.slots) and not self._factory.stopped

    def start(self) -> None:
        """Connect and subscribe, and again whenever the connection is lost."""
        self._factory.startConnecting(
            _endpoint(self._reactor, self.address, self.timeout)
        )

    def _listening(self, listening: bool, why: str) -> None:
        self.listening = listening
        self._on_listening(listening, why)

    def close(self) -> Deferred[None]:
        if not self._factory.slots:
            return succeed(None)
        d: Deferred[None] = self._factory.disconnect()
        d.addTimeout(self.timeout, self.clock)
        d.addErrback(lambda f: None)
        return d
