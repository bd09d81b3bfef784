"""The twistd plugin's options and service: C{twistd -n chat --port tcp:7000}."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import importlib.util
import re
import resource
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

from twisted.application import internet, service
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.python import usage

from chatproto._twisted import (
    TLS_IMPORTERS,
    endpoint_address,
    import_with_tls_placeholders,
    import_without_tls,
)
from chatproto.bans import Bans
from chatproto.config import (
    CLUSTER_WINDOW_BYTES,
    CLUSTER_WINDOW_LINES,
    ClusterConfig,
    RedisAddress,
    ServerConfig,
    valid_cluster_name,
)
from chatproto.moderation import Moderation
from chatproto.operators import check_in_threads, hash_in_threads, read_operators
from chatproto.server import EVICTION_GRACE, ChatFactory

if TYPE_CHECKING:
    from chatproto.store import Store

log = Logger()

# Nothing of Twisted's endpoints, TCP transport or reactor is imported here:
# Options imports them once it knows whether an endpoint serves TLS (see
# Options._import_twisted). Nor is the store (sqlite3), the web front end or
# the metrics page: each is imported where its option is given.

_DEFAULTS = ServerConfig()
STORE = "chat.sqlite3"  # --store's default, in the working directory
NODELAY_CHOICES = ("talkers", "all", "none")

# option name -> (config field, type, smallest value allowed, description)
_NUMBERS: dict[str, tuple[str, type, float, str]] = {
    "ping-interval": (
        "ping_interval",
        float,
        0,
        "Seconds between two pings to each user (0: never ping).",
    ),
    "max-missed-pings": (
        "max_missed_pings",
        int,
        1,
        "Pings in a row without a pong before a user is disconnected.",
    ),
    "max-line": ("max_line", int, 16, "Longest line accepted from a client, in bytes."),
    "registration-timeout": (
        "registration_timeout",
        float,
        0,
        "Seconds a connection has to choose a nickname (0: no limit).",
    ),
    "list-limit": (
        "list_limit",
        int,
        1,
        "Nicknames shown in the list sent on registration (/list shows all).",
    ),
    "join-notice-limit": (
        "join_notice_limit",
        int,
        0,
        "Announce arrivals only while the chat has at most this many users.",
    ),
    # Rooms (chatproto/rooms.py)
    "max-rooms": (
        "max_rooms",
        int,
        0,
        "Named rooms at once on the server, the lobby #accueil not counted "
        "(a /join past it that would make a room is refused).",
    ),
    "rooms-per-user": (
        "rooms_per_user",
        int,
        0,
        "Named rooms one user may be in at once, besides the lobby.",
    ),
    "flood-burst": ("flood_burst", int, 1, "Lines a client may send in one burst."),
    "flood-rate": (
        "flood_rate",
        float,
        0,
        "Lines per second a client may send after its burst (0: no limit).",
    ),
    "flood-queue": (
        "flood_queue",
        int,
        1,
        "Lines that may wait their turn (past the burst, at --flood-rate); "
        "a client with more waiting is disconnected as a flooder.",
    ),
    "flood-queue-bytes": (
        "flood_queue_bytes",
        int,
        256,
        "Bytes that may wait their turn; a client with more waiting is "
        "disconnected as a flooder.",
    ),
    "max-output": (
        "max_output",
        int,
        4096,
        "Bytes that may pile up for a client that stopped reading.",
    ),
    "max-per-ip": (
        "max_per_ip",
        int,
        0,
        "Connections allowed from one address (0: no limit).",
    ),
    "max-connections": (
        "max_connections",
        int,
        1,
        "Connections allowed in all (kept under the file-descriptor limit).",
    ),
    "max-per-network": (
        "max_per_network",
        int,
        0,
        "Connections allowed from one network, an IPv4 /--network-prefix or an "
        "IPv6 /--network-prefix6 (default: a quarter of --max-connections; "
        "0: no limit).",
    ),
    "network-prefix": (
        "network_prefix",
        int,
        0,
        "Leading bits of an IPv4 address that name its network (at most 32).",
    ),
    "network-prefix6": (
        "network_prefix6",
        int,
        0,
        "Leading bits of an IPv6 address that name its network (at most 64).",
    ),
    "max-unregistered": (
        "max_unregistered",
        int,
        0,
        "Connections without a nickname past which the oldest of them (if "
        f"connected for {EVICTION_GRACE:g} s) makes room for a newcomer; it "
        "does too when the server is full (default: half of --max-connections).",
    ),
    "batch-delay": (
        "batch_delay",
        float,
        0,
        "Under load (see --batch-threshold), least seconds between two batches "
        "of public lines: lines made sooner wait to go out together, one write "
        "per user (0: a batch per reactor turn, always).",
    ),
    "batch-threshold": (
        "batch_threshold",
        int,
        0,
        "Deliveries per second (public lines times users) above which lines "
        "wait up to --batch-delay to go out together (0: always).",
    ),
    "pass-size": (
        "pass_size",
        int,
        1,
        "Users given the public lines per reactor turn; lines made meanwhile "
        "join the pass for the users it has not reached yet.",
    ),
    "shutdown-timeout": (
        "shutdown_timeout",
        float,
        0,
        "Seconds clients have to go when the server stops.",
    ),
    # History (chatproto/history.py)
    "history-lines": (
        "history_lines",
        int,
        0,
        "Without a store (--store none): public lines kept for /history (0: "
        f"none kept, /history says so; default {_DEFAULTS.history_lines}). In "
        "a cluster (--redis): lines Redis keeps for the nodes (default "
        f"{CLUSTER_WINDOW_LINES} with a store).",
    ),
    "history-bytes": (
        "history_bytes",
        int,
        1024,
        "Without a store or in a cluster: bytes of public lines kept for "
        f"/history; the oldest lines go first (default {_DEFAULTS.history_bytes}; "
        f"{CLUSTER_WINDOW_BYTES} in a cluster with a store).",
    ),
    "history-age": (
        "history_age",
        float,
        1,
        "Without a store or in a cluster: seconds a public line is kept for /history.",
    ),
    # The store (chatproto/store.py)
    "history-days": (
        "history_days",
        float,
        1,
        "Days a public line is kept in the store (--store).",
    ),
    "history-max-bytes": (
        "history_max_bytes",
        int,
        1024,
        "Bytes of public lines kept in the store (--store); the oldest lines go first.",
    ),
    # Protected nicknames (chatproto/accounts.py)
    "nick-days": (
        "nick_days",
        float,
        1,
        "Days after which a protected nickname nobody used is free again.",
    ),
}


# The cluster mode's options, from the fields of ClusterConfig (chatproto.config,
# which needs no Redis client: --help works without one): each field's metadata
# names its option and says what it does, its default is the option's.
_CLUSTER_FIELDS = dataclasses.fields(ClusterConfig)

_CLUSTER_PARAMETERS: list[list[Any]] = [
    [
        f.metadata["option"],
        None,
        None if f.default is dataclasses.MISSING else str(f.default),
        f.metadata["help"],
    ]
    for f in _CLUSTER_FIELDS
]

# The numbers among them: field -> its option, its type, its smallest value.
_CLUSTER_NUMBERS: dict[str, tuple[str, type, float]] = {
    f.name: (f.metadata["option"], type(f.default), f.metadata["least"])
    for f in _CLUSTER_FIELDS
    if "least" in f.metadata
}


def _cluster_config(options: usage.Options) -> ClusterConfig | None:
    """The cluster's configuration, or None without --redis."""
    numbers = {
        field: _number(name, options[name], kind, least)
        for field, (name, kind, least) in _CLUSTER_NUMBERS.items()
    }
    if options["redis"] is None:
        return None
    try:
        address = RedisAddress.parse(options["redis"])
    except ValueError as e:
        raise usage.UsageError(f"--redis: {e}") from None
    if not valid_cluster_name(options["cluster"]):
        raise usage.UsageError(
            f"--cluster: {options['cluster']!r} is not a cluster name: 1 to 64 "
            "letters, digits, _ . or -."
        )
    if numbers["redis_timeout"] * 2 > numbers["node_timeout"]:
        raise usage.UsageError(
            "--redis-timeout must be at most half of --node-timeout, or a slow "
            "answer from Redis would make a live node look dead."
        )
    if importlib.util.find_spec("txredisapi") is None:
        raise usage.UsageError(
            "--redis needs the txredisapi package: pip install 'chatproto[redis]'."
        )
    return ClusterConfig(redis=address, name=options["cluster"], **numbers)


def _endpoint(description: str) -> str:
    """A bare port number means TCP on that port."""
    return f"tcp:{description}" if description.isdigit() else description


def _server_endpoint(reactor: Any, description: str) -> Any:
    """Twisted's serverFromString, imported when first called."""
    from twisted.internet.endpoints import serverFromString

    return serverFromString(reactor, description)


# Endpoint types that serve no TLS, for which Twisted's own parsers need no
# pyOpenSSL; any other (ssl:, or a plugin's, which may wrap TLS) gets it.
PLAIN_ENDPOINTS = frozenset({"tcp", "tcp6", "unix", "systemd"})


def serves_tls(description: str) -> bool:
    """Whether an endpoint may serve TLS: whether it is of a type other
    than C{PLAIN_ENDPOINTS} (a bare port number is TCP)."""
    kind = _endpoint_arguments(_endpoint(description))[0][0]
    return kind.lower() not in PLAIN_ENDPOINTS


def _endpoint_arguments(description: str) -> tuple[list[str], dict[str, str]]:
    """An endpoint's positional and keyword arguments, split as Twisted
    splits them: at each C{:}, C{name=value} a keyword (a value may hold a
    C{=}), a backslash escaping the next character."""
    fields: list[tuple[str | None, str]] = []
    name: str | None = None
    current = ""
    chars = iter(description)
    for char in chars:
        if char == "\\":
            current += next(chars, "")
        elif char == "=" and name is None:
            name, current = current, ""
        elif char == ":":
            fields.append((name, current))
            name, current = None, ""
        else:
            current += char
    fields.append((name, current))
    args = [value for name, value in fields if name is None]
    keywords = {name: value for name, value in fields if name is not None}
    return args, keywords


def tls_missing() -> str | None:
    """What keeps this Python from serving TLS, as one sentence naming
    what to install; None when it can."""
    try:
        # What an ssl: endpoint imports (pyOpenSSL, and cryptography under it).
        import twisted.internet.ssl  # noqa: F401
    except ImportError as e:
        return (
            f"serving TLS needs pyOpenSSL and cryptography, and this Python "
            f"cannot import them ({e}): pip install 'twisted[tls]'."
        )
    return None


def tls_problem(description: str) -> str | None:
    """What keeps an C{ssl:} endpoint's key and certificate from serving, as
    one sentence naming the file; None when they serve (or for another
    endpoint).

    Twisted reads them as it parses the endpoint, and a missing file, a file
    that is not PEM, an encrypted key or a key that is not the
    certificate's ends in a traceback that names neither file (C{no start
    line}). Its defaults are followed: C{privateKey=server.pem}, and the
    certificate in the key's file unless C{certKey=} names another."""
    args, keywords = _endpoint_arguments(description)
    if args[:1] != ["ssl"]:
        return None
    key_file = keywords.get("privateKey", args[2] if len(args) > 2 else "server.pem")
    cert_file = keywords.get("certKey", args[3] if len(args) > 3 else key_file)
    files = [("privateKey", key_file), ("certKey", cert_file)]
    files += [
        (n, keywords[n]) for n in ("extraCertChain", "dhParameters") if n in keywords
    ]
    contents: dict[str, bytes] = {}
    for argument, path in files:
        try:
            with open(path, "rb") as f:
                contents[path] = f.read()
        except OSError as e:
            return f"cannot read {argument}={path}: {e.strerror}."
    # Here only: an ssl: endpoint loads cryptography anyway, and a server
    # without one does without it.
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        PublicFormat,
        load_pem_private_key,
    )

    try:
        cert = x509.load_pem_x509_certificate(contents[cert_file])
    except ValueError:
        if cert_file == key_file:
            return (
                f"{cert_file} holds no PEM certificate; give the certificate's "
                "file as certKey= (ssl:7443:privateKey=key.pem:certKey=cert.pem)."
            )
        return f"{cert_file} (certKey=) holds no PEM certificate."
    try:
        key = load_pem_private_key(contents[key_file], password=None)
    except TypeError:  # it needs a passphrase, which twistd cannot ask for
        return (
            f"the private key in {key_file} is encrypted; write it unencrypted "
            f"(openssl pkey -in {key_file} -out key.pem) and keep it private."
        )
    except (ValueError, UnsupportedAlgorithm):
        return f"{key_file} (privateKey=) holds no PEM private key."
    public = (Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    key_public = key.public_key().public_bytes(*public)
    if key_public != cert.public_key().public_bytes(*public):
        return (
            f"the private key in {key_file} is not the certificate's in "
            f"{cert_file}: give the key the certificate was made with."
        )
    return None


# Endpoint types whose listen backlog Twisted takes as a backlog= argument.
_BACKLOG_TYPES = ("tcp", "tcp6", "ssl", "unix")


def with_backlog(description: str, connections: int) -> str:
    """The endpoint, listening with a backlog sized for C{connections}.

    Twisted listens with a backlog of 50 unless told otherwise: when a herd
    of clients connects at once (a restart, a network blip), the kernel's
    queue of connections not yet accepted overflows, and the clients it
    dropped believe they are connected, never welcomed. An explicit
    C{backlog=} in the description wins; the kernel caps the value at
    net.core.somaxconn."""
    kind = description.partition(":")[0].lower()
    if kind not in _BACKLOG_TYPES or re.search(r"(^|:)backlog=", description):
        return description
    return f"{description}:backlog={max(50, connections)}"


def _default(value: object) -> str | None:
    """An option's default as twistd shows it; None (a default computed from
    other options, see ServerConfig) stays None: the option was not given."""
    return None if value is None else str(value)


# Options whose value has a largest sensible value too: the bits of an address.
_MOST = {"network-prefix": 32, "network-prefix6": 64}
# Options whose default depends on the mode: not given (None), they are
# Redis's window in a cluster whose nodes have stores, ServerConfig's
# otherwise (see Options.postOptions).
_CLUSTER_DEFAULT: dict[str, object] = {"history-lines": None, "history-bytes": None}


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "A line-based chat server, compatible with the Ruby ProjetReseaux chat. "
        "Connect with: nc -C localhost 7000"
    )
    optParameters: list[list[Any]] = [
        [
            "port",
            "p",
            "tcp:7000",
            "Where to listen: a Twisted endpoint (tcp:7000, "
            "tcp:7000:interface=127.0.0.1, tcp6:7000, "
            "ssl:7443:privateKey=key.pem:certKey=cert.pem, "
            "unix:/path) or a bare port number.",
        ],
    ] + [
        [
            name,
            None,
            _default(_CLUSTER_DEFAULT.get(name, getattr(_DEFAULTS, field))),
            help,
        ]
        for name, (field, _, _, help) in _NUMBERS.items()
    ]
    optParameters += _CLUSTER_PARAMETERS
    optParameters.append(
        [
            "web",
            None,
            None,
            "Also serve the chat to browsers: the page at / and its WebSocket at "
            "/ws, on this Twisted endpoint (tcp:8080, "
            "ssl:8443:privateKey=key.pem:certKey=cert.pem, "
            "or a bare port number). Without it, no web server.",
        ]
    )
    optParameters.append(
        [
            "nodelay",
            None,
            _DEFAULTS.nodelay,
            "Whose writes go out at once (TCP_NODELAY) rather than waiting for "
            "the acknowledgement of the previous one: talkers (users who have "
            "sent a line; their own acknowledgements are delayed), all, or none.",
        ]
    )

    # Moderation (chatproto/moderation.py)
    optParameters += [
        [
            "operators",
            None,
            None,
            "The operators file: one NICK:HASH line each (the hash made by "
            "python -m chatproto.operators hash); read again on SIGHUP.",
        ],
        [
            "bans",
            None,
            None,
            "The file the bans are kept in, so that they survive a restart "
            "(default: the operators file's name plus .bans; without "
            "--operators, none: no one can ban).",
        ],
    ]

    # The store (chatproto/store.py)
    optParameters.append(
        [
            "store",
            None,
            None,
            "The SQLite file the public lines (and protected nicknames) are "
            f"kept in, created if need be (default: {STORE} in the working "
            "directory; none: keep the history in memory only, as "
            "--history-lines says). In a cluster (--redis), each node's "
            "own: it copies every node's lines into it from Redis.",
        ]
    )

    # Metrics (chatproto/metrics.py)
    optParameters += [
        [
            "metrics",
            None,
            None,
            "Serve /metrics in the Prometheus text format on this Twisted "
            "endpoint (e.g. tcp:9100:interface=127.0.0.1); needs the "
            "prometheus-client package: pip install 'chatproto[metrics]'.",
        ],
    ]

    def _metrics_option(self) -> None:
        """Check --metrics now: a mistake exits 2 before the server starts."""
        if self["metrics"] is None:
            return
        self["metrics"] = _endpoint(self["metrics"])
        from twisted.internet import reactor

        try:
            _server_endpoint(reactor, self["metrics"])
        except (ValueError, KeyError, TypeError) as e:
            raise usage.UsageError(
                f"--metrics: {self['metrics']!r} is not an endpoint Twisted knows "
                f"({e}); try tcp:9100:interface=127.0.0.1."
            ) from None
        if importlib.util.find_spec("prometheus_client") is None:
            raise usage.UsageError(
                "--metrics needs the prometheus-client package: "
                "pip install 'chatproto[metrics]'."
            )

    def _moderation_options(self) -> None:
        """Read the operators file and the bans now: a bad line is a
        mistake in the options (exit 2), told before the server starts."""
        self["operator_table"] = {}
        if self["operators"] is not None:
            try:
                self["operator_table"] = read_operators(self["operators"])
            except ValueError as e:
                raise usage.UsageError(f"--operators: {e}") from None
            if self["bans"] is None:
                self["bans"] = self["operators"] + ".bans"
        if self["bans"] is not None:
            from twisted.internet import reactor

            try:
                Bans(cast(Any, reactor), self["bans"])
            except ValueError as e:
                raise usage.UsageError(f"--bans: {e}") from None

    def opt_web_host(self, hosts: str) -> None:
        """With --web: a host name the site answers to besides localhost,
        127.0.0.1, [::1] and the address it is reached at (the name in the
        page's address, chat.example.org); repeatable, or comma-separated.
        A request for any other Host gets 421, so that a page on a domain
        that resolves to this server (DNS rebinding) cannot chat from its
        visitor's address. Behind a reverse proxy, give the public name
        here and have the proxy pass the browser's Host on (nginx:
        proxy_set_header Host $host)."""
        self.setdefault("web_host", []).append(hosts)

    def opt_web_origin(self, origins: str) -> None:
        """With --web: an origin whose pages may open the chat's WebSocket
        besides the page's own (https://chat.example.org); repeatable, or
        comma-separated."""
        self.setdefault("web_origin", []).append(origins)

    def _tls_options(self) -> None:
        """Check the key and certificate of each ssl: endpoint now, in one
        sentence that names the file (see tls_problem), once pyOpenSSL is
        known to be there (see tls_missing)."""
        for name in ("port", "web", "metrics"):
            if self[name] is not None and self[name].lower().startswith("ssl:"):
                problem = tls_missing() or tls_problem(self[name])
                if problem is not None:
                    raise usage.UsageError(f"--{name}: {problem}")

    def _import_twisted(self) -> None:
        """Import Twisted's endpoints, TCP transport and reactors' base
        class (and the web front end, with --web), before anything else
        does: without pyOpenSSL when no endpoint serves TLS
        (chatproto._twisted.import_without_tls), which keeps some 14 MiB
        of pyOpenSSL and cryptography out of the server. Then install the
        server's reactor (chatproto._reactor), unless one is installed
        (twistd's --reactor, a test's)."""
        endpoints = [self[n] for n in ("port", "web", "metrics") if self[n] is not None]
        if not any(serves_tls(e) for e in endpoints):
            # The web front end too: twisted.web.websocket imports Twisted's
            # HTTP client, which imports pyOpenSSL when it can.
            web = ("chatproto.web",) if self["web"] is not None else ()
            if import_without_tls((*TLS_IMPORTERS, *web)) and self["redis"]:
                # txredisapi imports Twisted's TLS at its top, and uses it
                # only for a TLS connection, which chatproto never asks for.
                # Missing, it is named in a sentence further on.
                with contextlib.suppress(ImportError):
                    import_with_tls_placeholders("txredisapi")
        try:
            from chatproto import _reactor
        except ImportError:  # no epoll (not Linux): Twisted's default reactor
            return
        _reactor.install()

    def _store_option(self) -> None:
        """--store: its default, or none."""
        if self["store"] is None:
            self["store"] = STORE
        elif self["store"] == "none":
            self["store"] = None
        elif not self["store"].strip():
            # was "cannot create the store : No such file or directory."
            raise usage.UsageError(
                "--store takes a file name, or none to keep nothing."
            )

    def postOptions(self) -> None:
        self._tls_options()
        self._import_twisted()
        self._store_option()
        self._moderation_options()
        web_options = ("web_origin", "web_host")
        if self.get("web") is not None or any(self.get(o) for o in web_options):
            try:
                from chatproto.web import check_web_options
            except ImportError as e:  # an older Twisted, or no wsproto
                raise usage.UsageError(
                    f"--web needs Twisted's WebSocket ({e}): pip install "
                    "'twisted[websocket]>=26.10'."
                ) from None
            check_web_options(self)
        self._metrics_option()
        values: dict[str, Any] = {}
        for name, (field, kind, least, _) in _NUMBERS.items():
            if self[name] is None:  # not given: ServerConfig computes it
                continue
            values[field] = _number(name, self[name], kind, least)
            if name in _MOST and values[field] > _MOST[name]:
                raise usage.UsageError(f"--{name} takes at most {_MOST[name]}.")
        if self["nodelay"] not in NODELAY_CHOICES:
            choices = ", ".join(NODELAY_CHOICES)
            raise usage.UsageError(
                f"--nodelay takes {choices}, not {self['nodelay']!r}."
            )
        values["nodelay"] = self["nodelay"]
        if self["redis"] is not None and self["store"] is not None:
            # Redis's window carries the lines from node to node's store.
            values.setdefault("history_lines", CLUSTER_WINDOW_LINES)
            values.setdefault("history_bytes", CLUSTER_WINDOW_BYTES)
        self["config"] = ServerConfig(**values)
        self["cluster_config"] = _cluster_config(self)
        self["port"] = _endpoint(self["port"])
        from twisted.internet import reactor

        try:
            endpoint = _server_endpoint(reactor, self["port"])
        except (ValueError, KeyError, TypeError) as e:
            raise usage.UsageError(
                f"--port: {self['port']!r} is not an endpoint Twisted knows "
                f"({e}); try tcp:7000 or a bare port number."
            ) from None
        # A TCP, TCP6 or SSL endpoint takes any integer as its port, and the
        # kernel's refusal would come only at listen time, after twistd has
        # daemonized. (0 asks for any free port.)
        address = endpoint_address(endpoint)
        if address is not None and not 0 <= address[1] <= 65535:
            raise usage.UsageError(
                f"--port: {address[1]} is not a port number (1-65535)."
            )

    def parseArgs(self, *args: str) -> None:
        if args:
            raise usage.UsageError(
                f"{args[0]!r} is not an option; twistd chat takes options "
                "only (twistd chat --help lists them)."
            )

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        """Parse, and when twistd is the caller, end a mistake with one sentence.

        twistd answers a UsageError with the whole option list and then the
        sentence, and exits 1; a user needs only the sentence. So under twistd
        (which sets C{parent}) the sentence goes to stderr alone and the exit
        status is 2, as for any usage error. Called from Python (the tests,
        another program), the UsageError is raised for the caller."""
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            if self.parent is None:
                raise
            sys.stderr.write(f"twistd chat: {_usage_sentence(str(e))}\n")
            raise SystemExit(2) from None


# getopt's wording (usage.Options passes it on) -> ours.
_GETOPT_ERRORS = [
    (
        re.compile(r"option (\S+) not recognized"),
        "{} is not an option (twistd chat --help lists them).",
    ),
    (re.compile(r"option (\S+) requires argument"), "{} needs a value."),
    (re.compile(r"option (\S+) must not have an argument"), "{} takes no value."),
    (
        re.compile(r"option (\S+) not a unique prefix"),
        "{} is the start of several options; write the option whole.",
    ),
]


def _usage_sentence(message: str) -> str:
    """The user's mistake as one sentence, in our words where getopt's are terse."""
    for pattern, sentence in _GETOPT_ERRORS:
        match = pattern.fullmatch(message)
        if match:
            return sentence.format(match.group(1))
    return message


def _number(name: str, text: str, kind: type, least: float) -> float | int:
    word = "a whole number" if kind is int else "a number"
    try:
        value = cast(Callable[[str], float], kind)(text)
    except ValueError:
        raise usage.UsageError(f"--{name} takes {word}, not {text!r}.") from None
    if value != value or value in (float("inf"), float("-inf")) or value < least:
        raise usage.UsageError(f"--{name} takes {word} of at least {least:g}.")
    return value


# Descriptors a server uses besides its connections: the listening sockets,
# the log, Redis, the reactor's own, and connections being refused.
FILE_MARGIN = 64


def _raise_file_limit(wanted: int) -> int | None:
    """Raise the soft limit on open files toward C{wanted} descriptors plus
    FILE_MARGIN; return the soft limit (None: no limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted + FILE_MARGIN
    if soft != resource.RLIM_INFINITY and soft < target:
        new = target if hard == resource.RLIM_INFINITY else min(target, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
        except (ValueError, OSError):
            pass
    return None if soft == resource.RLIM_INFINITY else soft


def _other_sites(options: usage.Options, config: ServerConfig) -> dict[str, int]:
    """The connections the other sites hold besides the chat's sessions, by
    site: the web site's before their handshake, the metrics site's."""
    sites = {}
    if options.get("web") is not None:
        from chatproto.web import pending_limit

        sites["the web site"] = pending_limit(config)
    if options.get("metrics") is not None:
        from chatproto.metrics_page import CONNECTIONS

        sites["the metrics site"] = CONNECTIONS
    return sites


def _fit_file_limit(options: usage.Options, config: ServerConfig) -> ServerConfig:
    """One budget of descriptors for every front end: the chat's sessions
    (TCP and WebSocket: --max-connections), the web site's connections not
    yet WebSockets, and the metrics site's, under the open-file limit (raised
    when it can be). When they do not fit, --max-connections is lowered to
    the most that fits with the others (the web site's bound follows it),
    and the server says so in one sentence; when no session fits at all,
    it cannot start."""

    def needs(connections: int) -> int:
        fitted = dataclasses.replace(config, max_connections=connections)
        return connections + sum(_other_sites(options, fitted).values())

    limit = _raise_file_limit(needs(config.max_connections))
    if limit is None or needs(config.max_connections) <= limit - FILE_MARGIN:
        return config
    fitting, most = 0, config.max_connections  # the most that fits: bisected
    while fitting < most:
        middle = (fitting + most + 1) // 2
        if needs(middle) <= limit - FILE_MARGIN:
            fitting = middle
        else:
            most = middle - 1
    fitted = dataclasses.replace(config, max_connections=max(1, fitting))
    them = "".join(
        f", {n} for {site}" for site, n in _other_sites(options, fitted).items()
    )
    if fitting < 1:
        sentence = (
            f"the open-file limit ({limit}) is too low for these options: "
            f"{FILE_MARGIN} descriptors for the server itself{them} leave none "
            "for the chat; raise it (ulimit -n, or LimitNOFILE= under systemd)."
        )
        log.error("{sentence}", sentence=sentence)
        _tell(sentence)
        raise SystemExit(1)
    sentence = (
        f"the open-file limit ({limit}) fits {fitting} chat connections "
        f"beside {FILE_MARGIN} descriptors for the server itself{them}: "
        f"--max-connections lowered from {config.max_connections} to {fitting} "
        "(raise the limit with ulimit -n, or LimitNOFILE= under systemd)."
    )
    log.warn("{sentence}", sentence=sentence)
    _tell(sentence)
    return fitted


class CannotStart(SystemExit, Exception):
    """The server cannot start, for a reason told in one sentence.

    An Exception, so that twistd does what it does for a failed start: remove
    its pid file and, when it daemonized, report the failure to the waiting
    parent (which prints "An error has occurred: ..." with this sentence, if
    the address was free when _try_to_listen tried it before the fork).
    A SystemExit (status 1), so that when twistd raises it again, Python
    exits without a traceback."""

    def __init__(self, sentence: str) -> None:
        super().__init__(1)
        self.sentence = sentence

    def __str__(self) -> str:
        return self.sentence


def cannot_listen(error: CannotListenError) -> str:
    """Why the server cannot listen, as one sentence naming the address."""
    if error.interface is None:  # a UNIX socket: the port is its path
        where = f"the socket {error.port}"
    elif error.interface in ("", "0.0.0.0", "::"):
        where = f"port {error.port}"
    else:
        where = f"port {error.port} on {error.interface}"
    reason = error.socketError
    code = getattr(reason, "errno", None)
    if code == errno.EADDRINUSE:
        return f"{where} is already in use."
    if code == errno.EADDRNOTAVAIL:
        return f"cannot listen on {where}: this machine has no such address."
    text = getattr(reason, "strerror", None) or str(reason)
    return f"cannot listen on {where}: {text}."


def _try_to_listen(endpoint: object) -> None:
    """Bind, then free, the TCP address a daemon will listen on; raise
    CannotListenError as Twisted would.

    A daemon listens after twistd has forked and sent its stderr to
    /dev/null; twistd's parent then reports a failure as "An error has
    occurred: b'...'" and a pointer to the log. Tried here, before the fork,
    the reason is still ours to tell on the terminal. (A UNIX socket is left
    to the real listen.)"""
    address = endpoint_address(endpoint)  # TCP, TCP6 and SSL endpoints
    if address is None:
        return
    interface, port = address
    from twisted.internet.endpoints import TCP6ServerEndpoint

    ipv6 = isinstance(endpoint, TCP6ServerEndpoint)
    with socket.socket(socket.AF_INET6 if ipv6 else socket.AF_INET) as probe:
        # As Twisted does, so that a port in TIME_WAIT counts as free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((interface, port))
        except OSError as e:
            raise CannotListenError(interface, port, e) from None


def _tell(sentence: str) -> None:
    """Write C{sentence} to the terminal's stderr, even once twistd's logging
    has taken sys.stderr over."""
    if sys.__stderr__ is not None:
        sys.__stderr__.write(f"twistd chat: {sentence}\n")
        sys.__stderr__.flush()


class _Listener(internet.StreamServerEndpointService):
    """Listens as twistd starts the server, and turns a refusal into a sentence.

    Twisted raises CannotListenError out of twistd, a traceback of some 37
    lines. Here the reason is logged, written alone on stderr, and ends the
    process through L{CannotStart}."""

    # Fail at once, in privilegedStartService, rather than log later.
    _raiseSynchronously = True

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            sentence = cannot_listen(e)
            log.error("{sentence}", sentence=sentence)
            _tell(sentence)  # a daemon's stderr is /dev/null: see _try_to_listen
            raise CannotStart(sentence) from None


class _Reloader(service.Service):
    """Reads the operators file again on SIGHUP (a broken one leaves the
    old list in force: see Moderation.reload). Installed always: SIGHUP's
    default is to end the process, and systemctl reload sends it."""

    def __init__(self, moderation: Moderation, path: str | None, reactor: Any) -> None:
        self.moderation = moderation
        self.path = path
        self.reactor = reactor
        self._previous: Any = None

    def startService(self) -> None:
        super().startService()
        self._previous = signal.signal(signal.SIGHUP, self._hangup)

    def stopService(self) -> None:
        super().stopService()
        if self._previous is not None:
            signal.signal(signal.SIGHUP, self._previous)
            self._previous = None

    def _hangup(self, signum: int, frame: object) -> None:
        if self.path is None:
            log.info("SIGHUP: nothing to reload (no --operators)", act="reload")
            return
        log.info("SIGHUP: reading {path} again", path=self.path)
        self.reactor.callFromThread(self.moderation.reload, self.path)


class _Shutdown(service.Service):
    """Says goodbye to every client when the server stops."""

    def __init__(self, factory: ChatFactory) -> None:
        self.factory = factory

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self.factory.shutdown()


def _open_store(
    options: usage.Options, config: ServerConfig, factory: ChatFactory, reactor: Any
) -> Store | None:
    """The server's store (--store; None: none), or a start stopped with
    one sentence."""
    if options.get("store") is None:
        return None
    from chatproto.store import Store, StoreError  # here only: sqlite3

    try:
        return Store.open(
            options["store"],
            reactor,
            reactor,
            days=config.history_days,
            max_bytes=config.history_max_bytes,
            nick_days=config.nick_days,
            metrics=factory.metrics,
        )
    except StoreError as e:
        log.error("{sentence}", sentence=str(e))
        _tell(str(e))
        raise CannotStart(str(e)) from None


def makeService(options: usage.Options, reactor: Any = None) -> service.IService:
    """The server as a twistd service; C{reactor} is the global one unless
    a test gives another (it must provide time, TCP and the core)."""
    if reactor is None:
        from twisted.internet import reactor
    config = _fit_file_limit(options, options["config"])
    top = service.MultiService()
    cluster: ClusterConfig | None = options.get("cluster_config")
    factory = ChatFactory(
        config,
        clock=reactor,
        operators=options.get("operator_table"),
        bans=Bans(reactor, options.get("bans")),
        checker=check_in_threads(reactor),
        hasher=hash_in_threads(reactor),
    )
    if cluster is not None:
        # Here only: the cluster needs txredisapi, an optional extra that a
        # server without --redis does without.
        from chatproto.cluster import ClusterNode

        # The node is built with its chat, then each of its roles fills a
        # seam of the chat: each needs the other, and neither is ever half
        # attached. The history keeps a public line in the same Redis call
        # as the relay publishes it (chatproto/cluster_roles.py, Outbox).
        # A node with a store copies Redis's window into it, and answers
        # /history, /search and /unread from it (StoreFeed).
        keeps_history = config.history_lines > 0
        store = None
        if keeps_history:
            store = _open_store(options, config, factory, reactor)
        node = ClusterNode(
            cluster,
            factory,
            clock=reactor,
            history=config if keeps_history else None,
            store=None if store is None else store.history,
        )
        if store is not None:  # stopped after the node, whose last lines it keeps
            store.service.setServiceParent(top)
        factory.room.registry = node.nicknames  # nicknames, claimed in Redis
        factory.room.relay = node.relay  # lines to and from the other nodes
        factory.rooms.attach(node.rooms)  # rooms across the nodes
        if node.history is not None:  # the cluster's history, in Redis
            factory.room.history = node.history
        factory.moderation.cluster = node.moderation  # kicks, answers, bans
        factory.protection.accounts = node.accounts  # protected nicknames
        factory.protection.tries.shared = node.tries  # their tries, counted in Redis
        # First in, so stopped last: the users' departures are announced to
        # the other nodes before the node leaves the cluster.
        node.setServiceParent(top)
    elif (store := _open_store(options, config, factory, reactor)) is not None:
        factory.room.history = store.history
        factory.protection.accounts = store.accounts  # protected nicknames
        # First in, so stopped last: the departures said at shutdown are kept.
        store.service.setServiceParent(top)
    # Always: SIGHUP would end the process otherwise.
    _Reloader(factory.moderation, options.get("operators"), reactor).setServiceParent(
        top
    )
    if options.get("bans") is not None and options.get("operators") is None:
        log.warn(
            "--bans without --operators: the bans in {path} hold, but nobody "
            "can ban or lift a ban (give --operators FILE too)",
            path=options["bans"],
        )
    # Stopped in reverse order: stop listening first, then say goodbye.
    _Shutdown(factory).setServiceParent(top)
    port = with_backlog(options["port"], config.max_connections)
    endpoint = _server_endpoint(reactor, port)
    twistd = options.parent  # None unless twistd runs us
    if twistd is not None and not twistd.get("nodaemon", True):
        try:
            _try_to_listen(endpoint)
        except CannotListenError as e:
            _tell(cannot_listen(e))
            raise SystemExit(1) from None
    _Listener(endpoint, factory).setServiceParent(top)
    if options.get("web") is not None:  # stopped first: no new browser
        from chatproto.web import site

        web = _server_endpoint(
            reactor, with_backlog(options["web"], config.max_connections)
        )
        web_site = site(factory, options["web_origins"], options["web_hosts"])
        _Listener(web, web_site).setServiceParent(top)
    if options.get("metrics") is not None:
        from chatproto.metrics_page import metrics_site

        metrics = _server_endpoint(reactor, options["metrics"])
        _Listener(metrics, metrics_site(factory, reactor)).setServiceParent(top)
    return top
