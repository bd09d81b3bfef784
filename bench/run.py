"""The chat benchmark: our server against a naive Twisted chat, ngIRCd and InspIRCd.

Builds the load generator (bench/chatbench.c) with cc, starts each server as
a real process on a fresh 127.0.0.1 port, drives it with one chatbench
process per scenario, stops the server, and prints a table of absolute
numbers, ratios and the targets of the benchmark issue.

    .venv/bin/python bench/run.py                # every scenario, about 10 minutes
    .venv/bin/python bench/run.py --repeat 3     # medians of 3, about 30 minutes
    .venv/bin/python bench/run.py --quick        # smoke test, under a minute
    .venv/bin/python bench/run.py --servers ours,naive --scenarios msg1,fanout
    .venv/bin/python bench/run.py --scenarios herd,reconnect \
        --servers ours,naive,ngircd,inspircd
    .venv/bin/python bench/run.py --servers ours,ours@HEAD~1 \
        --scenarios msg1,msg5,fanout,idle --repeat 3   # a change, before/after
    .venv/bin/python bench/run.py --servers ours,inspircd \
        --scenarios rooms,room1,lobby   # 100 rooms of 100 against one of 10,000

Every server gets a fresh process for every scenario and is killed (SIGKILL,
so that 10,000 departures are not announced) in all cases. All traffic stays
on 127.0.0.1 and 127.1.x.y; every step has a time bound.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import datetime
import json
import math
import os
import platform
import re
import resource
import select
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
OUT = BENCH / "out"
TOOL_SRC = BENCH / "chatbench.c"
TOOL = OUT / "chatbench"
HOST = "127.0.0.1"
SPREAD = 10  # clients per source address 127.1.x.y (our server allows 16)
IRC_SERVER_NAME = "bench.localhost"
IRC_OPER = "bench:bench"

Result = dict[str, Any]


# ---------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class Scenario:
    """One chatbench run: register, maybe idle, maybe send; or a herd:
    connect every client at once (C{herd}), or register them and restart
    the server under them (C{reconnect})."""

    key: str
    title: str
    clients: int
    senders: int = 0
    rate: float = 1.0
    duration: float = 0.0
    drain: float = 10.0
    idle: float = 0.0
    # which of msg, reg, idle, fanout, rooms, herd, reconnect
    reports: tuple[str, ...] = ()
    deadline: float = 60.0  # herd, reconnect: a client not registered by then is lost
    tries: int = 0  # reconnect: connect() calls each client makes at most
    rooms: int = 0  # chatbench --rooms: the clients split into this many rooms

    @property
    def bound(self) -> float:
        """Seconds after which chatbench stops whatever happens."""
        herd = 2 * self.deadline + RESTART_BOUND if self.key in HERDS else 0
        return 240 + self.idle + self.duration + self.drain + herd


HERDS = ("herd", "reconnect")
ROOMS = ("rooms", "room1", "lobby")  # the rooms against one room, and the lobby
SCENARIOS = ("msg1", "msg5", "reg", "idle", "fanout", *ROOMS, *HERDS)
RESTART_BOUND = 60.0  # seconds a server gets to exit after SIGTERM, then to listen


@dataclass(frozen=True)
class Plan:
    ping_interval: float
    msg1: Scenario
    msg5: Scenario
    big: Scenario
    herd: Scenario
    reconnect: Scenario
    rooms: Scenario
    room1: Scenario
    lobby: Scenario
    quick: bool = False


def make_plan(
    quick: bool,
    wanted: set[str],
    herd_clients: int | None = None,
    reconnect_clients: int | None = None,
    idle_seconds: float | None = None,
) -> tuple[Plan, list[Scenario]]:
    if quick:
        ping, n_msg, s_msg, n_big = 5.0, 200, 20, 1000
        d1, d5, drain5, idle, dfan = 3.0, 2.0, 15.0, 6.0, 3.0
        n_herd, n_re, deadline = 1000, 500, 15.0
        n_rooms, d_rooms = 10, 3.0
    else:
        ping, n_msg, s_msg, n_big = 10.0, 1000, 100, 10_000
        d1, d5, drain5, idle, dfan = 20.0, 10.0, 40.0, 35.0, 15.0
        n_herd, n_re, deadline = 10_000, 5_000, 60.0
        n_rooms, d_rooms = 100, 20.0
    n_herd = herd_clients or n_herd
    idle = idle_seconds or idle
    n_re = reconnect_clients or n_re
    msg1 = Scenario(
        "msg1",
        f"{n_msg:,} clients, {s_msg} senders at 1 line/s for {d1:g} s",
        n_msg,
        senders=s_msg,
        rate=1,
        duration=d1,
        drain=10,
        reports=("msg",),
    )
    msg5 = Scenario(
        "msg5",
        f"{n_msg:,} clients, {s_msg} senders at 5 lines/s for {d5:g} s",
        n_msg,
        senders=s_msg,
        rate=5,
        duration=d5,
        drain=drain5,
        reports=("msg",),
    )
    big_reports = tuple(k for k in ("reg", "idle", "fanout") if k in wanted)
    fan = "fanout" in wanted
    big = Scenario(
        "big",
        f"{n_big:,} clients: register, hold idle {idle:g} s, fan-out from 10 senders",
        n_big,
        senders=10 if fan else 0,
        rate=1,
        duration=dfan if fan else 0,
        drain=15,
        idle=idle if "idle" in wanted else 0,
        reports=big_reports,
    )
    herd = Scenario(
        "herd",
        f"herd: {n_herd:,} clients connect at once (no pacing, no window)",
        n_herd,
        reports=("herd",),
        deadline=deadline,
    )
    reconnect = Scenario(
        "reconnect",
        f"reconnect: {n_re:,} registered clients, the server restarted under them",
        n_re,
        reports=("reconnect",),
        deadline=deadline,
        tries=100,  # at 100-250 ms apart: 10 to 25 s of retries
    )
    # The rooms against one room: the same clients, the same total rate (one
    # line per second per room); in one room every line reaches every client,
    # 100 times the deliveries, hence the longer drain. The lobby: the load of
    # room1 without rooms, the fan-out of the lobby for comparison.
    per_room = n_big // n_rooms
    rooms = Scenario(
        "rooms",
        f"{n_big:,} clients in {n_rooms} rooms of {per_room:,}, one sender per room "
        f"at 1 line/s for {d_rooms:g} s",
        n_big,
        senders=n_rooms,
        rate=1,
        duration=d_rooms,
        drain=10,
        reports=("rooms",),
        rooms=n_rooms,
    )
    room1 = Scenario(
        "room1",
        f"{n_big:,} clients in one room, {n_rooms} senders at 1 line/s for "
        f"{d_rooms:g} s",
        n_big,
        senders=n_rooms,
        rate=1,
        duration=d_rooms,
        drain=drain5,
        reports=("rooms",),
        rooms=1,
    )
    lobby = Scenario(
        "lobby",
        f"{n_big:,} clients in the lobby, {n_rooms} senders at 1 line/s for "
        f"{d_rooms:g} s",
        n_big,
        senders=n_rooms,
        rate=1,
        duration=d_rooms,
        drain=drain5,
        reports=("msg",),
    )
    plan = Plan(
        ping, msg1, msg5, big, herd, reconnect, rooms, room1, lobby, quick=quick
    )
    runs = [s for s in (msg1, msg5) if s.key in wanted]
    if big_reports:
        runs.append(big)
    runs += [s for s in (rooms, room1, lobby, herd, reconnect) if s.key in wanted]
    return plan, runs


# ---------------------------------------------------------------- servers


@dataclass(frozen=True)
class Proc:
    """One process of a server under test."""

    cmd: list[str]
    port: int  # where it listens; the run waits for it
    clients: bool = True  # chatbench's clients connect to this port
    measured: bool = True  # its CPU and memory count as the server's
    # the line protocol over TCP, when clients use another port (a
    # WebSocket): the run waits until it registers a nickname there
    chat_port: int | None = None


@dataclass
class Server:
    """A server under test. One process here; a cluster entry (two chat
    nodes and a Redis, say) returns several from processes()."""

    key: str
    label: str
    dialect: str = "chat"
    # At most this many connects not yet greeted, in the scenarios other than
    # the herds (0: no window). Only for servers whose short listen backlog
    # would otherwise stall those scenarios: the naive chat's is Twisted's
    # default, 50. Never for ours, and never in the herds.
    accept_window: int = 32
    unavailable: str | None = None
    notes: list[str] = field(default_factory=list)
    # The ratio column reads C{KEY/ours} (this server against ours) rather
    # than C{ours/KEY}: for ours over another transport, where the question
    # is what the transport costs.
    over_ours: bool = False

    def command(self, port: int, plan: Plan) -> list[str]:
        raise NotImplementedError

    def processes(self, plan: Plan) -> list[Proc]:
        port = free_port()
        return [Proc(self.command(port, plan), port)]

    def tool_args(self, scenario: Scenario, plan: Plan) -> list[str]:
        return []

    def skips(self, scenario: Scenario) -> str | None:
        """Why this server does not run this scenario (None: it does)."""
        return None


def ours_options(plan: Plan) -> dict[str, str]:
    """Every option the benchmark gives our server beyond its defaults, and
    the one place to add more: a limit that would cut the load is lifted
    here. The per-network limit stays at its default (a quarter of
    --max-connections, 3,750 here): the 10,000 clients of the largest
    scenarios fill four 127.1.x.0/24 networks with 2,500 each. Options this
    twistd does not have are left out with a note."""
    return {
        "--ping-interval": f"{plan.ping_interval:g}",
        # the defaults, 2 lines/s after a burst of 5, would cut the 5 lines/s senders
        "--flood-rate": "100",
        "--flood-burst": "100",
        "--max-connections": "15000",
        # --max-per-ip stays at its default, 16: chatbench puts SPREAD per address
    }


def compile_tree(tree: Path) -> None:
    """Compile the server's modules to bytecode, as installing them does
    (pip compiles what it installs; a first start writes __pycache__).
    Without it, a server started where PYTHONDONTWRITEBYTECODE is set, or
    from a fresh git archive, compiles every module at every start, and the
    compiler's heap stays in its resident memory: 2 MiB at start, measured.
    Twisted and the naive chat's libraries are installed, hence compiled."""
    paths = [str(p) for p in (tree / "chatproto", tree / "twisted") if p.exists()]
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", *paths],
        capture_output=True,
        timeout=120,
        check=False,
    )


class Ours(Server):
    def __init__(self, extra: Sequence[str] = (), tree: Path | None = None) -> None:
        super().__init__("ours", "ours", accept_window=0)
        self.extra = list(extra)
        # The code of another revision (see baseline()) comes first on the
        # path; this venv's Twisted and libraries run it.
        self.env = [] if tree is None else ["env", f"PYTHONPATH={tree}"]
        twistd = Path(sys.executable).with_name("twistd")
        self.twistd = str(twistd) if twistd.exists() else shutil.which("twistd")
        self.supported: set[str] = set()
        if not self.twistd:
            self.unavailable = "twistd not found next to this Python"
            return
        try:
            helptext = subprocess.run(
                [*self.env, self.twistd, "chat", "--help"],
                capture_output=True,
                text=True,
                timeout=60,
                cwd=ROOT,
            ).stdout
        except (OSError, subprocess.TimeoutExpired) as e:
            self.unavailable = f"twistd chat --help failed: {e}"
            return
        if "--port" not in helptext:
            self.unavailable = "twistd has no chat plugin (pip install -e .)"
        self.supported = {w.split("=")[0] for w in helptext.split() if w[:2] == "--"}
        compile_tree(tree or ROOT)
        # Its SQLite store (--store), unless told otherwise: one file per
        # port in a temporary directory removed at exit, not bench/out's
        # chat.sqlite3 growing from run to run.
        self.stores = Path(tempfile.mkdtemp(prefix="chatbench-store-"))
        atexit.register(shutil.rmtree, self.stores, ignore_errors=True)

    def command(self, port: int, plan: Plan) -> list[str]:
        assert self.twistd
        cmd = [*self.env, self.twistd, "--pidfile=", "-n", "chat"]
        cmd += ["--port", f"tcp:{port}:interface={HOST}", *self.extra]
        if "--store" in self.supported and "--store" not in self.extra:
            cmd += ["--store", str(self.stores / f"chat-{port}.sqlite3")]
        for name, value in ours_options(plan).items():
            if name in self.supported:
                cmd += [name, value]
            elif f"{name} not supported" not in self.notes:
                self.notes.append(f"{name} not supported")
        return cmd

    def skips(self, scenario: Scenario) -> str | None:
        if scenario.rooms and "--max-rooms" not in self.supported:
            return "no rooms in this server (its twistd chat has no --max-rooms)"
        return None


class Naive(Server):
    def __init__(self) -> None:
        super().__init__("naive", "naive")

    def command(self, port: int, plan: Plan) -> list[str]:
        script = str(BENCH / "naive_chat.py")
        return [sys.executable, script, str(port), f"{plan.ping_interval:g}"]

    def skips(self, scenario: Scenario) -> str | None:
        return "the naive chat has no rooms" if scenario.rooms else None


class IRCServer(Server):
    """An IRC server: NICK/USER, registered at 001."""

    def tool_args(self, scenario: Scenario, plan: Plan) -> list[str]:
        if scenario.key in HERDS:
            return ["--irc-join", "0", "--irc-until-001", "1"]
        if scenario.rooms:
            # a channel #rK per room (chatbench --rooms)
            return ["--irc-join", "1"]
        if scenario.key in ("big", "lobby"):
            # 10,000 JOINs would cost 50 million JOIN lines: no channel;
            # operators send to the server mask instead (every local user).
            return [
                "--irc-join",
                "0",
                "--irc-oper",
                IRC_OPER,
                "--irc-target",
                f"${IRC_SERVER_NAME}",
            ]
        return ["--irc-join", "1", "--irc-target", "#bench"]

    def skips(self, scenario: Scenario) -> str | None:
        if scenario.rooms and scenario.clients // scenario.rooms > 500:
            return (
                f"one channel of {scenario.clients // scenario.rooms:,}: each JOIN "
                "is sent to every member, n²/2 lines (50 million for 10,000), "
                "the reason the 10,000-client runs of IRC servers have no channel"
            )
        return None


class NgIRCd(IRCServer):
    def __init__(self) -> None:
        # ngIRCd listens with a backlog of 10
        super().__init__("ngircd", "ngIRCd", dialect="irc", accept_window=8)
        self.binary = shutil.which("ngircd") or (
            "/usr/sbin/ngircd" if os.path.exists("/usr/sbin/ngircd") else None
        )
        if not self.binary:
            self.unavailable = "ngircd not installed (apt-get install ngircd)"

    def command(self, port: int, plan: Plan) -> list[str]:
        assert self.binary
        conf_dir = OUT / "ngircd"
        (conf_dir / "conf.d").mkdir(parents=True, exist_ok=True)
        conf = conf_dir / f"ngircd-{port}.conf"
        user, password = IRC_OPER.split(":")
        ping = max(5, round(plan.ping_interval))
        conf.write_text(
            f"""[Global]
    Name = {IRC_SERVER_NAME}
    Info = chatproto benchmark
    AdminInfo1 = chatproto benchmark
    AdminInfo2 = loopback only
    AdminEMail = bench@localhost
    Listen = {HOST}
    Ports = {port}
    MotdPhrase = bench
[Limits]
    MaxConnections = 0
    MaxConnectionsIP = 0
    MaxJoins = 0
    MaxNickLength = 12
    MaxPenaltyTime = 0
    PingTimeout = {ping}
    PongTimeout = 20
[Options]
    PAM = no
    Ident = no
    DNS = no
    IncludeDir = {conf_dir / "conf.d"}
[Operator]
    Name = {user}
    Password = {password}
"""
        )
        return [self.binary, "-n", "-f", str(conf)]


class InspIRCd(IRCServer):
    """InspIRCd with every per-class limit lifted: no fake lag, no clone or
    connection limits, no DNS or ident lookups, a listen backlog of 10,000
    (the kernel caps it at net.core.somaxconn)."""

    def __init__(self) -> None:
        super().__init__("inspircd", "InspIRCd", dialect="irc", accept_window=0)
        self.binary = shutil.which("inspircd") or (
            "/usr/sbin/inspircd" if os.path.exists("/usr/sbin/inspircd") else None
        )
        if not self.binary:
            self.unavailable = "inspircd not installed (apt-get install inspircd)"

    def command(self, port: int, plan: Plan) -> list[str]:
        assert self.binary
        conf_dir = OUT / "inspircd"
        conf_dir.mkdir(parents=True, exist_ok=True)
        conf = conf_dir / f"inspircd-{port}.conf"
        motd = conf_dir / "motd"
        motd.write_text("bench\n")
        user, password = IRC_OPER.split(":")
        ping = max(5, round(plan.ping_interval))
        big = 1_000_000
        conf.write_text(
            f"""<config format="xml">
<server name="{IRC_SERVER_NAME}" description="chatproto benchmark" network="bench">
<admin name="bench" nick="bench" email="bench@localhost">
<bind address="{HOST}" port="{port}" type="clients">
<connect name="bench" allow="*" timeout="60" pingfreq="{ping}"
         hardsendq="{64 * big}" softsendq="{big}" recvq="{big}"
         threshold="{big}" commandrate="{big}" fakelag="off"
         localmax="{big}" globalmax="{big}" maxconnwarn="off" limit="{big}"
         resolvehostnames="no" useident="no" maxchans="100">
<class name="bench" commands="*" privs="*" usermodes="*" chanmodes="*" snomasks="*">
<type name="bench" classes="bench">
<oper name="{user}" password="{password}" host="*@*" type="bench">
<files motd="{motd}">
<dns timeout="1">
<pid file="{conf_dir / f"inspircd-{port}.pid"}">
<options syntaxhints="no" announcets="no" hostintopic="no" pingwarning="0">
<security hideserver="" userstats="Pu" flatlinks="no" maxtargets="20">
<performance quietbursts="yes" softlimit="30000" somaxconn="10000"
             netbuffersize="10240" clonesonconnect="no">
<limits maxnick="30">
<channels users="100" opers="100">
<whowas groupsize="0" maxgroups="0" maxkeep="1">
<log method="file" type="* -USERINPUT -USEROUTPUT" level="default"
     target="{conf_dir / f"inspircd-{port}.log"}">
"""
        )
        return [self.binary, "--nofork", "--runasroot", f"--config={conf}"]


class Cluster(Ours):
    """Our server in cluster mode: N nodes on one Redis, the clients spread
    over the nodes; the CPU of the nodes and of Redis all count."""

    def __init__(self, nodes: int, extra: Sequence[str] = ()) -> None:
        super().__init__(extra)
        self.key = f"cluster{nodes}"
        self.label = f"{nodes} node{'s' if nodes > 1 else ''}+Redis"
        self.nodes = nodes
        self.redis = shutil.which("redis-server")
        if not self.redis and not self.unavailable:
            self.unavailable = "redis-server not installed"
        elif "--redis" not in self.supported and not self.unavailable:
            self.unavailable = "this server has no --redis option"

    def skips(self, scenario: Scenario) -> str | None:
        if scenario.rooms:
            return "rooms on a cluster are not benchmarked yet"
        return super().skips(scenario)

    def processes(self, plan: Plan) -> list[Proc]:
        assert self.redis
        redis_port = free_port()
        redis = [self.redis, "--port", str(redis_port), "--bind", HOST]
        redis += ["--save", "", "--appendonly", "no"]
        procs = [Proc(redis, redis_port, clients=False)]
        url = f"redis://{HOST}:{redis_port}/0"
        for _ in range(self.nodes):
            port = free_port()
            procs.append(Proc([*self.command(port, plan), "--redis", url], port))
        return procs


class OursWS(Ours):
    """Our server with its WebSocket front end (C{--web}): the clients speak
    the chat over C{ws://127.0.0.1:PORT/ws} (chatbench's ws dialect), the
    same process serves them; the TCP port is only the readiness check."""

    def __init__(self, tree: Path | None = None) -> None:
        super().__init__(tree=tree)
        self.key, self.label, self.dialect = "ours-ws", "ours-ws", "ws"
        self.over_ours = True
        if "--web" not in self.supported and not self.unavailable:
            self.unavailable = (
                "this server has no --web option (the WebSocket front end is "
                "not merged yet)"
            )

    def processes(self, plan: Plan) -> list[Proc]:
        tcp, web = free_port(), free_port()
        cmd = [*self.command(tcp, plan), "--web", f"tcp:{web}:interface={HOST}"]
        return [Proc(cmd, web, chat_port=tcp)]

    def tool_args(self, scenario: Scenario, plan: Plan) -> list[str]:
        return ["--path", "/ws"]


def variant(name: str) -> Server:
    """C{ours+OPTION[=VALUE]+...}: our server with more twistd options, to
    compare settings in one run (ours+nodelay=all, ours+batch-delay=0.002);
    C{clusterN+OPTION...} the same for each node of a cluster."""
    kind, *options = name.split("+")
    extra: list[str] = []
    for option in options:
        flag, _, value = option.partition("=")
        extra += [f"--{flag}", value] if value else [f"--{flag}"]
    if kind.startswith("cluster") and kind[7:].isdigit():
        server: Ours = Cluster(int(kind[7:]), extra)
    else:
        server = Ours(extra)
    server.key = server.label = name
    unknown = [o for o in extra if o[:2] == "--" and o not in server.supported]
    if unknown and not server.unavailable:
        server.unavailable = f"this server has no {', '.join(unknown)}"
    return server


def baseline(name: str) -> Server:
    """C{ours@REV}: our server as it was at git revision REV (a commit, a
    tag, HEAD~2, a branch), to measure a change before and after in one run;
    C{ours-ws@REV} the same over its WebSocket. Its files are extracted (git
    archive) into a temporary directory, removed at exit, and run with this
    venv's Python and Twisted."""
    kind, _, revision = name.partition("@")
    make = OursWS if kind == "ours-ws" else Ours
    tree = Path(tempfile.mkdtemp(prefix="chatbench-tree-"))
    atexit.register(shutil.rmtree, tree, ignore_errors=True)
    try:
        archive = subprocess.run(
            ["git", "archive", "--format=tar", f"{revision}^{{commit}}"],
            cwd=ROOT,
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    except (OSError, subprocess.SubprocessError) as e:
        server = make()
        server.unavailable = f"revision {revision!r} could not be extracted: {e}"
    else:
        server = make(tree=tree)
    server.key = server.label = name
    return server


SERVERS: dict[str, Callable[[], Server]] = {
    "ours": Ours,
    "ours-ws": OursWS,
    "naive": Naive,
    "ngircd": NgIRCd,
    "inspircd": InspIRCd,
    "cluster1": lambda: Cluster(1),
    "cluster2": lambda: Cluster(2),
}


# ---------------------------------------------------------------- processes


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for want in (max(hard, 65536), hard):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return want
    return soft


def build_tool() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    if TOOL.exists() and TOOL.stat().st_mtime >= TOOL_SRC.stat().st_mtime:
        return
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        sys.exit("bench: no C compiler (cc) to build bench/chatbench.c")
    cmd = [cc, "-O2", "-Wall", "-o", str(TOOL), str(TOOL_SRC), "-lm"]
    subprocess.run(cmd, check=True, timeout=120)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_listening(
    port: int, proc: subprocess.Popen[bytes], bound: float, every: float = 0.1
) -> None:
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode}")
        with socket.socket() as s:
            s.settimeout(1)
            if s.connect_ex((HOST, port)) == 0:
                return
        time.sleep(every)
    raise RuntimeError(f"server not listening on {HOST}:{port} after {bound:g} s")


def wait_registering(port: int, proc: subprocess.Popen[bytes], bound: float) -> None:
    """Wait until a chat server registers a nickname: a cluster node listens
    before it has joined its cluster, and refuses nicknames until then."""
    deadline = time.monotonic() + bound
    why = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode}")
        nick = f"ready{os.getpid() % 10000}"
        try:
            with socket.create_connection((HOST, port), timeout=5) as s:
                s.sendall(f"/pseudo\n{nick}\n".encode())
                seen = b""
                while b"Bienvenue " + nick.encode() not in seen:
                    chunk = s.recv(4096)
                    if not chunk:
                        why = seen.decode(errors="replace").strip()[-200:]
                        break
                    seen += chunk
                    if b"impossible" in seen or b"existe" in seen:
                        why = seen.decode(errors="replace").strip()[-200:]
                        break
                else:
                    s.sendall(b"/quit\n")
                    with contextlib.suppress(OSError):
                        while s.recv(4096):
                            pass
                    return
        except OSError as e:
            why = str(e)
        time.sleep(0.2)
    raise RuntimeError(f"{HOST}:{port} registers no nickname after {bound:g} s: {why}")


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


@contextlib.contextmanager
def running(cmd: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=OUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
    try:
        yield proc
    finally:
        stop(proc)


def die_with_parent() -> None:
    """In the child: be killed if run.py dies, even by SIGKILL (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Tool:
    """One chatbench process: it prints JSON lines on its standard output
    (one, or in the reconnect scenario a first one when its clients are
    registered) and holds its connections until released."""

    def __init__(self, args: list[str], log: Path) -> None:
        with log.open("ab") as err:
            self.proc = subprocess.Popen(
                [str(TOOL), *args, "--hold-stdin", "1"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        self.pending = b""

    def read(self, bound: float) -> Result:
        """The next JSON line, within C{bound} seconds."""
        proc = self.proc
        assert proc.stdout
        deadline = time.monotonic() + bound
        try:
            fd = proc.stdout.fileno()
            while b"\n" not in self.pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"chatbench gave no result within {bound:g} s")
                ready, _, _ = select.select([fd], [], [], min(left, 1.0))
                if ready:
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        raise RuntimeError(
                            f"chatbench exited ({proc.poll()}) without a result"
                        )
                    self.pending += chunk
        except BaseException:
            stop(proc)
            raise
        line, _, self.pending = self.pending.partition(b"\n")
        result: Result = json.loads(line.decode())
        return result

    def restarted(self) -> None:
        """Tell chatbench the new server listens (reconnect scenario)."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGUSR1)

    def release(self) -> None:
        """Let chatbench close its connections (after the server is gone)."""
        if self.proc.stdin:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            stop(self.proc)


TICK = os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    """CPU seconds the whole machine spent busy since boot, all cores."""
    fields = [
        int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    ]
    return (sum(fields[:8]) - fields[3] - fields[4]) / TICK


def process_cpu_s(pid: int) -> float:
    with contextlib.suppress(OSError, IndexError, ValueError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    return 0.0


def py_spy() -> str | None:
    here = Path(sys.executable).with_name("py-spy")
    return str(here) if here.exists() else shutil.which("py-spy")


@contextlib.contextmanager
def profiling(server: Server, pid: int, tag: str) -> Iterator[None]:
    """Sample a Python server with py-spy for the whole run (--profile)."""
    python = server.key.split("+")[0].split("@")[0] in PYTHON_SERVERS
    spy = py_spy() if PROFILE and python else None
    if spy is None:
        yield
        return
    out = OUT / "profiles" / f"{tag}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [spy, "record", "--pid", str(pid), "--rate", "200", "--format", "raw"]
    cmd += ["--output", str(out), "--nonblocking"]
    with (OUT / "logs" / f"{tag}.py-spy.log").open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                stop(proc)
        if out.exists():
            PROFILES[tag] = out


PROFILE = False
PYTHON_SERVERS = ("ours", "ours-ws", "naive")
PROFILES: dict[str, Path] = {}


def summarize_profile(path: Path, top: int = 15) -> str:
    """The functions where a py-spy raw profile spent its samples: by own
    time (the innermost frame) and by total time (anywhere on the stack)."""
    own: dict[str, int] = {}  # by line
    total: dict[str, int] = {}  # by function
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        samples += n
        frames = stack.split(";")
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for frame in {f.rsplit(":", 1)[0] + ")" for f in frames}:
            if "chatproto/" in frame or "naive_chat" in frame:
                total[frame] = total.get(frame, 0) + n
    if not samples:
        return f"{path.name}: no samples"
    out = [f"{path.name}: {samples} samples"]
    for title, table in (("own time, by line", own), ("total time (our code)", total)):
        out.append(f"  by {title}:")
        for frame, n in sorted(table.items(), key=lambda kv: -kv[1])[:top]:
            out.append(f"    {100 * n / samples:5.1f}%  {frame}")
    return "\n".join(out)


def run_one(server: Server, scenario: Scenario, plan: Plan, rep: int) -> Result:
    tag = f"{scenario.key}-{server.key}-{rep}"
    (OUT / "logs").mkdir(parents=True, exist_ok=True)
    tool: Tool | None = None
    busy0, t0 = machine_busy_s(), time.monotonic()
    code = revision()  # the code each server process starts from
    try:
        with contextlib.ExitStack() as stack:
            started = []
            for n, p in enumerate(server.processes(plan)):
                log = OUT / "logs" / f"{tag}.{n}.log"
                started.append((p, stack.enter_context(running(p.cmd, log))))
            if scenario.key == "reconnect" and len(started) > 1:
                raise RuntimeError("the reconnect scenario restarts one process only")
            for p, proc in started:
                wait_listening(p.port, proc, 30)
            for p, proc in started:
                if p.chat_port is not None:
                    wait_registering(p.chat_port, proc, 30)
                elif p.clients and server.dialect == "chat":
                    wait_registering(p.port, proc, 30)
            ports = [p.port for p, _ in started if p.clients]
            pids = [proc.pid for p, proc in started if p.measured]
            args = tool_args(server, scenario, plan, ports, pids)
            restart: Result = {}
            with profiling(server, pids[0], tag):
                tool = Tool(args, OUT / "logs" / f"{tag}.tool.log")
                if scenario.key == "reconnect":
                    first = tool.read(scenario.bound)
                    p, old = started[0]
                    log = OUT / "logs" / f"{tag}.restarted.log"
                    new, restart = restarted(p, old, tool, log)
                    stack.enter_context(new)
                    started[0] = (p, new.proc)
                    restart["re_initial"] = first["registered"]
                result = tool.read(scenario.bound + 30)
            if restart:
                new_pid = started[0][1].pid
                cpu0 = restart.pop("cpu0")
                restart["re_server_cpu_s"] = process_cpu_s(new_pid) - cpu0
                result.update(restart)
            alive = all(proc.poll() is None for _, proc in started)
            all_cpu = sum(process_cpu_s(proc.pid) for _, proc in started)
            busy = machine_busy_s() - busy0
        # what neither the server nor chatbench used: run.py, and other work
        result["run_s"] = time.monotonic() - t0
        result["other_cpu_s"] = max(
            0.0, busy - all_cpu - restart.get("old_cpu_s", 0) - result["tool_cpu_s"]
        )
        result["server_survived"] = alive
        result["revision"] = code
        return result
    finally:
        if tool:
            tool.release()


@dataclass
class Started:
    """A server process started by restarted(), entered into the run's stack
    so that it is killed with the others."""

    proc: subprocess.Popen[bytes]

    def __enter__(self) -> Started:
        return self

    def __exit__(self, *exc: object) -> None:
        stop(self.proc)


def restarted(
    p: Proc, old: subprocess.Popen[bytes], tool: Tool, log: Path
) -> tuple[Started, Result]:
    """Restart a server the way an operator does: SIGTERM, wait for it to
    exit (SIGKILL after RESTART_BOUND s), start the same command on the same
    port, and signal chatbench the moment the new process listens."""
    t0 = time.monotonic()
    old_cpu = process_cpu_s(old.pid)
    old.terminate()
    try:
        old.wait(timeout=RESTART_BOUND)
        killed = False
    except subprocess.TimeoutExpired:
        stop(old)
        killed = True
    exited = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            p.cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=OUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
    new = Started(proc)
    try:
        wait_listening(p.port, proc, RESTART_BOUND, every=0.01)
    except BaseException:
        stop(proc)
        raise
    tool.restarted()
    listening = time.monotonic()
    return new, {
        "restart_exit_s": exited - t0,
        "restart_killed": killed,
        "restart_listen_s": listening - exited,
        "old_cpu_s": old_cpu,
        "cpu0": process_cpu_s(proc.pid),
    }


def tool_args(
    server: Server, scenario: Scenario, plan: Plan, ports: list[int], pids: list[int]
) -> list[str]:
    options: dict[str, object] = {
        "--host": HOST,
        "--port": ",".join(map(str, ports)),
        "--dialect": server.dialect,
        "--pid": ",".join(map(str, pids)),
        "--clients": scenario.clients,
        "--spread": SPREAD,
        "--accept-window": server.accept_window,
        "--inflight": 256,
        "--connect-rate": 20000,
        "--reg-timeout": 180,
        "--idle": scenario.idle,
        "--senders": scenario.senders,
        "--rate": scenario.rate,
        "--duration": scenario.duration,
        "--drain": scenario.drain,
        "--timeout": scenario.bound,
    }
    if scenario.rooms:
        options["--rooms"] = scenario.rooms
    if scenario.key == "herd":
        # every connect() at once: no window, no bound in flight, no rate
        options.update(
            {
                "--accept-window": 0,
                "--inflight": 0,
                "--connect-rate": 0,
                "--reg-timeout": scenario.deadline,
            }
        )
    if scenario.key == "reconnect":
        # the first registration is paced as in the other scenarios (no
        # window for ours); the reconnections after the restart are not
        options.update(
            {
                "--reconnect": scenario.tries,
                "--reconnect-wait": 2 * RESTART_BOUND + 30,
                "--reconnect-timeout": scenario.deadline,
            }
        )
    args = [str(x) for kv in options.items() for x in kv]
    return args + server.tool_args(scenario, plan)


# ---------------------------------------------------------------- numbers


QUIET = 0.15  # other processes' CPU, in cores, above which a run is noisy


def quiet(r: Result) -> bool:
    return bool(r.get("other_cpu_s", 0) <= QUIET * r.get("run_s", 0))


def median_result(runs: Sequence[Result]) -> Result:
    """The median of each number over the quiet runs (over all runs when
    none is quiet); a null latency (lines lost) counts as the slowest."""
    used = [r for r in runs if quiet(r)] or list(runs)
    out: Result = dict(used[0])
    for key in used[0]:
        values = [r.get(key) for r in used]
        if all(
            v is None or (isinstance(v, int | float) and not isinstance(v, bool))
            for v in values
        ) and any(v is not None for v in values):
            m = statistics.median([math.inf if v is None else v for v in values])
            out[key] = None if math.isinf(m) else m
    out["repeats"] = len(runs)
    out["repeats_used"] = len(used)
    out["repeats_quiet"] = sum(quiet(r) for r in runs)
    return out


def latency(r: Result | None, key: str) -> float | None:
    """A latency in ms; +inf when the share of lines never delivered is
    larger than what the percentile allows (chatbench gives null then);
    None when there was nothing to count."""
    if r is None or r.get("senders", 0) == 0:
        return None
    v = r.get(key)
    if v is None:
        return math.inf
    # -1: nothing to count (no sender receives when each room has one)
    return float(v) if v >= 0 else None


def num(r: Result | None, key: str, scale: float = 1.0) -> float | None:
    if r is None or not isinstance(r.get(key), int | float):
        return None
    return float(r[key]) * scale


def tcp_twin(key: str, keys: Sequence[str]) -> str:
    """The server a WebSocket entry is measured against: C{ours@REV} for
    C{ours-ws@REV} when it is in the run, else C{ours}."""
    twin = "ours" + key.removeprefix("ours-ws")
    return twin if twin in keys else "ours"


def cpu_per_delivery_us(r: Result | None) -> float | None:
    """Server CPU per delivery in µs: the inverse of deliveries per
    CPU-second, the unit of the WebSocket target."""
    v = num(r, "deliveries_per_cpu_s")
    return 1e6 / v if v and v > 0 else None


def per_ping_us(r: Result | None) -> float | None:
    if not r or r.get("idle_pings", 0) <= 0 or r.get("idle_server_cpu_s", -1) < 0:
        return None
    return 1e6 * r["idle_server_cpu_s"] / r["idle_pings"]


def fmt(v: float | None, digits: int = 0) -> str:
    if v is None:
        return "-"
    if math.isinf(v):
        return "lost"
    if digits == 0:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None:
        return "-"
    if math.isinf(a) or math.isinf(b):
        return (
            "-"
            if math.isinf(a) and math.isinf(b)
            else ("inf" if math.isinf(a) else "0")
        )
    if b == 0:
        return "-"
    return f"{a / b:.2f}×"


@dataclass
class Row:
    label: str
    values: dict[str, float | None]
    digits: int = 0
    compare: bool = True  # show ratios


Metric = Callable[[Result], float | None]


def share(cpu: str, wall: str) -> Metric:
    """CPU seconds over wall seconds, in % of one core."""

    def f(r: Result) -> float | None:
        c, w = r.get(cpu, -1), r.get(wall, 0)
        return 100 * c / w if w and c >= 0 else None

    return f


def nodes(key: str) -> Metric:
    """A latency split by whether the line crossed nodes (through Redis):
    only for a server of several nodes (None otherwise)."""

    def f(r: Result) -> float | None:
        cross = r.get("p50_cross_ms")
        if cross is not None and cross < 0:  # nothing crossed: one node
            return None
        return latency(r, key) if key in r else None

    return f


def delivered_pct(r: Result) -> float | None:
    return 100 * r["delivered"] / r["expected"] if r["expected"] else None


def lost_lines(r: Result) -> float | None:
    return float(r["expected"] - r["delivered"])


def wakeups(r: Result) -> float | None:
    return (
        r["idle_wakeups"] / r["idle_s"]
        if r["idle_s"] and r["idle_wakeups"] >= 0
        else None
    )


def herd_time(r: Result) -> float | None:
    """Seconds from the first connect() to the last registration; +inf
    (shown as lost) when some clients never registered."""
    return r["reg_last_s"] if r["registered"] >= r["clients"] else math.inf


def reconnect_lost(r: Result | None) -> float | None:
    """Clients not registered after the restart: those that did not
    re-register in time, and those that never registered before it."""
    if r is None or r.get("re_registered", -1) < 0:
        return None
    return float(r["clients"] - r["re_registered"])


def reconnect_time(r: Result) -> float | None:
    """Seconds from the new server listening to the last re-registration;
    +inf (lost) when some clients did not re-register."""
    if r.get("re_registered", -1) < 0 or r.get("re_s", -1) < 0:
        return None
    return r["re_s"] if reconnect_lost(r) == 0 else math.inf


# (label, metric, digits, compare) for each kind of section
ROWS: dict[str, list[tuple[str, Metric, int, bool]]] = {
    "msg": [
        ("deliveries per second", lambda r: r["deliveries_per_s"], 0, True),
        (
            "deliveries per server CPU-second",
            lambda r: r["deliveries_per_cpu_s"],
            0,
            True,
        ),
        ("latency p50 (ms)", lambda r: latency(r, "p50_ms"), 1, True),
        ("latency p99 (ms)", lambda r: latency(r, "p99_ms"), 1, True),
        ("latency max (ms)", lambda r: r["max_ms"], 1, True),
        (
            "  p99 at the clients that also send (ms)",
            lambda r: latency(r, "p99_senders_ms"),
            1,
            True,
        ),
        ("  p50, receiver on the sender's node (ms)", nodes("p50_local_ms"), 1, True),
        ("  p50, receiver on another node (ms)", nodes("p50_cross_ms"), 1, True),
        ("  p99, receiver on the sender's node (ms)", nodes("p99_local_ms"), 1, True),
        ("  p99, receiver on another node (ms)", nodes("p99_cross_ms"), 1, True),
        ("delivered (% of due)", delivered_pct, 1, False),
        ("server CPU (% of one core)", share("send_server_cpu_s", "send_s"), 0, True),
        (
            "  of which in the kernel (%)",
            share("send_server_sys_s", "send_server_cpu_s"),
            0,
            False,
        ),
        (
            "load generator CPU (% of one core)",
            share("send_tool_cpu_s", "send_s"),
            0,
            False,
        ),
        (
            "other processes' CPU (% of one core)",
            share("other_cpu_s", "run_s"),
            0,
            False,
        ),
    ],
    "reg": [
        ("time (s)", lambda r: r["reg_s"], 2, True),
        ("server CPU (s)", lambda r: r["reg_server_cpu_s"], 2, True),
        ("clients registered", lambda r: r["registered"], 0, False),
        (
            "load generator CPU (% of one core)",
            share("reg_tool_cpu_s", "reg_s"),
            0,
            False,
        ),
    ],
    "idle": [
        ("resident memory (MiB)", lambda r: r["idle_rss_max_kb"] / 1024, 1, True),
        ("server CPU (s)", lambda r: r["idle_server_cpu_s"], 2, True),
        ("server CPU (% of one core)", share("idle_server_cpu_s", "idle_s"), 1, True),
        ("pings answered", lambda r: r["idle_pings"], 0, False),
        ("server CPU per ping (µs)", per_ping_us, 1, True),
        ("server wake-ups per second", wakeups, 1, True),
    ],
}
ROWS["fanout"] = ROWS["msg"]
ROWS["rooms"] = [
    *ROWS["msg"][:-4],
    ("lines lost (due, not delivered)", lost_lines, 0, False),
    ("lines of another room received", lambda r: r.get("wrong_room"), 0, False),
    *ROWS["msg"][-4:],
]
ROWS["herd"] = [
    ("time from the first connect to all registered (s)", herd_time, 2, True),
    ("clients registered", lambda r: r["registered"], 0, False),
    ("clients lost", lambda r: r["clients"] - r["registered"], 0, False),
    (
        "  of which connected, never welcomed",
        lambda r: r["stuck_unwelcomed"] - r.get("stuck_upgrading", 0),
        0,
        False,
    ),
    ("  of which still connecting", lambda r: r["stuck_connecting"], 0, False),
    (
        "  of which welcomed, not registered",
        lambda r: r["stuck_registering"],
        0,
        False,
    ),
    (
        "  of which connected, not upgraded (WebSocket)",
        lambda r: r.get("stuck_upgrading") if r.get("dialect") == "ws" else None,
        0,
        False,
    ),
    (
        "clients welcomed ≥ 0.9 s after connect()",
        lambda r: r["slow_connects"],
        0,
        False,
    ),
    ("server CPU (s)", lambda r: r["reg_server_cpu_s"], 2, True),
    ("load generator CPU (% of one core)", share("reg_tool_cpu_s", "reg_s"), 0, False),
    ("other processes' CPU (% of one core)", share("other_cpu_s", "run_s"), 0, False),
]
ROWS["reconnect"] = [
    ("clients registered before the restart", lambda r: r.get("re_initial"), 0, False),
    (
        "old server's exit after SIGTERM (s)",
        lambda r: r.get("restart_exit_s"),
        2,
        False,
    ),
    (
        "new server listening after the exit (s)",
        lambda r: r.get("restart_listen_s"),
        2,
        False,
    ),
    ("time from listening to all re-registered (s)", reconnect_time, 2, True),
    ("clients re-registered", lambda r: r.get("re_registered"), 0, False),
    ("clients lost", reconnect_lost, 0, False),
    (
        "  of which connected, never welcomed",
        lambda r: r.get("re_unwelcomed"),
        0,
        False,
    ),
    ("connect() calls per client", lambda r: r.get("re_connects_per_client"), 1, False),
    ("new server's CPU (s)", lambda r: r.get("re_server_cpu_s"), 2, True),
    ("other processes' CPU (% of one core)", share("other_cpu_s", "run_s"), 0, False),
]


def section_title(kind: str, s: Scenario) -> str:
    if kind in ("msg", "rooms"):
        return s.title
    if kind == "reg":
        return f"register {s.clients:,} clients"
    if kind == "idle":
        return f"{s.clients:,} idle clients for {s.idle:g} s"
    if kind in HERDS:
        return f"{s.title}; lost = not registered within {s.deadline:g} s"
    return (
        f"fan-out: {s.senders} senders at {s.rate:g} line/s to {s.clients:,} clients "
        f"for {s.duration:g} s"
    )


def rows_for(kind: str, res: dict[str, Result | None]) -> list[Row]:
    rows = [
        Row(label, {k: (fn(r) if r else None) for k, r in res.items()}, digits, cmp)
        for label, fn, digits, cmp in ROWS[kind]
    ]
    return [row for row in rows if any(v is not None for v in row.values.values())]


# ---------------------------------------------------------------- targets


NOT_MEASURED = "not measured"


@dataclass
class Target:
    text: str
    status: str  # PASS, FAIL, or NOT_MEASURED: never PASS or FAIL without a measure
    detail: str


def check(
    text: str, ours: float | None, ref: float | None, factor: float, higher: bool
) -> Target:
    if ours is None or ref is None:
        missing = "ours" if ours is None else "the reference"
        return Target(text, NOT_MEASURED, f"no measurement for {missing}")
    if math.isinf(ref) and math.isinf(ours):
        return Target(text, "FAIL", "both lost lines")
    bound = ref * factor
    ok = ours >= bound if higher else ours <= bound
    r = f"{ours / ref:.3f}×" if ref and not math.isinf(ours) else ratio(ours, ref)
    return Target(
        text, "PASS" if ok else "FAIL", f"{brief(ours)} vs {brief(ref)} ({r})"
    )


def brief(v: float) -> str:
    if math.isinf(v):
        return "lost lines"
    return fmt(v, 2 if v < 10 else 1 if v < 100 else 0)


def none_lost(text: str, r: Result | None, lost: str) -> Target:
    """A target of the herds: ours loses no client."""
    if r is None or not isinstance(r.get(lost), int | float):
        return Target(text, NOT_MEASURED, "no measurement for ours")
    n = r[lost]
    return Target(text, "FAIL" if n else "PASS", f"{n:,.0f} lost")


def targets(results: dict[str, dict[str, Result | None]], plan: Plan) -> list[Target]:
    """The targets of the benchmark issue. In --quick mode nothing runs at
    the size a target is about: each says "not measured", with the numbers."""
    out = measured_targets(results, plan)
    if plan.quick:
        return [
            Target(t.text, NOT_MEASURED, f"--quick runs small loads ({t.detail})")
            for t in out
        ]
    return out


def measured_targets(
    results: dict[str, dict[str, Result | None]], plan: Plan
) -> list[Target]:
    def get(scn: str, srv: str) -> Result | None:
        return results.get(scn, {}).get(srv)

    out: list[Target] = []
    o1, g1 = get("msg1", "ours"), get("msg1", "ngircd")
    o5, n5, g5 = get("msg5", "ours"), get("msg5", "naive"), get("msg5", "ngircd")
    ob, nb = get("big", "ours"), get("big", "naive")
    if "msg1" in results:
        out.append(
            check(
                "1 line/s: deliveries per CPU-second ≥ 1.0× ngIRCd",
                num(o1, "deliveries_per_cpu_s"),
                num(g1, "deliveries_per_cpu_s"),
                1.0,
                True,
            )
        )
        out.append(
            check(
                "1 line/s: p99 ≤ ngIRCd's",
                latency(o1, "p99_ms"),
                latency(g1, "p99_ms"),
                1.0,
                False,
            )
        )
    if "msg5" in results:
        out.append(
            check(
                "5 lines/s: deliveries per CPU-second ≥ 1.5× naive",
                num(o5, "deliveries_per_cpu_s"),
                num(n5, "deliveries_per_cpu_s"),
                1.5,
                True,
            )
        )
        out.append(
            check(
                "5 lines/s: p99 ≤ ngIRCd's",
                latency(o5, "p99_ms"),
                latency(g5, "p99_ms"),
                1.0,
                False,
            )
        )
    for scn, rate in (("msg1", "1 line/s"), ("msg5", "5 lines/s")):
        keys = list(results.get(scn, {}))
        web = [k for k in keys if k.split("@")[0] == "ours-ws"]
        if not web:
            continue  # the WebSocket front end was not in this run
        ws, tcp = get(scn, web[0]), get(scn, tcp_twin(web[0], keys))
        out.append(
            check(
                f"{rate}: server CPU per delivery (µs) over WebSocket ≤ 1.5× over TCP",
                cpu_per_delivery_us(ws),
                cpu_per_delivery_us(tcp),
                1.5,
                False,
            )
        )
        out.append(
            check(
                f"{rate}: p99 over WebSocket ≤ 10× over TCP (the same order)",
                latency(ws, "p99_ms"),
                latency(tcp, "p99_ms"),
                10.0,
                False,
            )
        )
    big = next((s for s in results if s == "big"), None)
    reports = plan.big.reports if big else ()
    if "reg" in reports:
        out.append(
            check(
                f"{plan.big.clients:,} registrations in ≤ 0.25× the naive time",
                num(ob, "reg_s")
                if ob and ob["registered"] == plan.big.clients
                else None,
                num(nb, "reg_s"),
                0.25,
                False,
            )
        )
    if "idle" in reports:
        out.append(
            check(
                "idle resident memory ≤ naive's",
                num(ob, "idle_rss_max_kb", 1 / 1024),
                num(nb, "idle_rss_max_kb", 1 / 1024),
                1.0,
                False,
            )
        )
        t = check(
            "idle: no CPU beyond the pings (CPU per ping ≤ naive's)",
            per_ping_us(ob),
            per_ping_us(nb),
            1.0,
            False,
        )
        if ob and t.status == "PASS":
            due = plan.big.clients * int(plan.big.idle // plan.ping_interval)
            if ob["idle_pings"] < 0.9 * due:
                t = Target(
                    t.text, "FAIL", f"only {ob['idle_pings']:,} pings for {due:,} due"
                )
        out.append(t)
    if "fanout" in reports:
        out.append(
            check(
                "fan-out p99 ≤ 0.3× naive's",
                latency(ob, "p99_ms"),
                latency(nb, "p99_ms"),
                0.3,
                False,
            )
        )
    if "herd" in results:
        out.append(
            none_lost(
                f"herd: {plan.herd.clients:,} clients connect at once, none lost",
                herd_lost(get("herd", "ours")),
                "lost",
            )
        )
    if "reconnect" in results:
        out.append(
            none_lost(
                f"reconnect: {plan.reconnect.clients:,} clients re-register "
                "after a restart, none lost",
                {"lost": reconnect_lost(get("reconnect", "ours"))},
                "lost",
            )
        )
    return out


def herd_lost(r: Result | None) -> Result | None:
    return {"lost": r["clients"] - r["registered"]} if r else None


# ---------------------------------------------------------------- report


def environment(nofile: int) -> dict[str, str]:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    ngircd = "not installed"
    binary = shutil.which("ngircd") or "/usr/sbin/ngircd"
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        first = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10
        )
        ngircd = first.stdout.split("-")[0].strip() or ngircd
    inspircd = "not installed"
    binary = shutil.which("inspircd") or "/usr/sbin/inspircd"
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        first = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10
        )
        inspircd = (
            first.stdout.strip().split("-debian")[0].replace("-", " ") or inspircd
        )
    try:
        twisted = metadata.version("twisted")
    except metadata.PackageNotFoundError:
        twisted = "?"
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "revision": revision(),
        "machine": f"{os.cpu_count()} × {model}",
        "kernel": f"Linux {platform.release()}",
        "python": platform.python_version(),
        "twisted": twisted,
        "ngircd": ngircd,
        "inspircd": inspircd,
        "load_before": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
        "nofile": str(nofile),
    }


def revision() -> str:
    """The commit of the code under test, and whether chatproto/ differs."""
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            [
                "git",
                "-C",
                str(ROOT),
                "status",
                "--porcelain",
                "-uno",
                "--",
                "chatproto",
            ],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return f"{head or '?'}{' + uncommitted changes' if dirty else ''}"


def busy_share(seconds: float = 1.0) -> float:
    """Share of the machine's CPU time that was busy, over a short sample."""

    def sample() -> tuple[int, int]:
        fields = [
            int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        ]
        idle = fields[3] + fields[4]
        return sum(fields), idle

    t0, i0 = sample()
    time.sleep(seconds)
    t1, i1 = sample()
    return 1 - (i1 - i0) / max(1, t1 - t0)


def render(
    env: dict[str, str],
    servers: list[Server],
    runs: list[Scenario],
    results: dict[str, dict[str, Result | None]],
    tlist: list[Target],
    notes: list[str],
    markdown: bool,
) -> str:
    keys = [s.key for s in servers]
    labels = {s.key: s.label for s in servers}
    # ours/X for every other server X; X/REF for one over ours, REF being
    # ours at the same revision (ours-ws@web/ours@web) when it ran, else ours
    over = {s.key: tcp_twin(s.key, keys) for s in servers if s.over_ours}
    ratios = [
        (o, f"{labels[o]}/{labels[over[o]]}" if o in over else f"ours/{labels[o]}")
        for o in keys
        if o != "ours" and (over.get(o) or "ours") in keys
    ]
    head = ["", *[labels[k] for k in keys], *[r[1] for r in ratios]]
    lines: list[str] = []
    table: list[list[str]] = []
    for scn in runs:
        res = results.get(scn.key, {})
        for kind in scn.reports:
            title = section_title(kind, scn)
            table.append([f"**{title}**" if markdown else f"{title}"])
            for row in rows_for(kind, res):
                cells = [row.label if markdown else "  " + row.label]
                cells += [fmt(row.values.get(k), row.digits) for k in keys]
                cells += [
                    ""
                    if not row.compare
                    else ratio(row.values.get(o), row.values.get(over[o]))
                    if o in over
                    else ratio(row.values.get("ours"), row.values.get(o))
                    for o, _ in ratios
                ]
                table.append(cells)
    header = (
        f"chatproto benchmark, {env['date']}, chatproto {env['revision']}, "
        f"{env['machine']}, {env['kernel']}, Python {env['python']}, "
        f"Twisted {env['twisted']}, {env['ngircd']}, {env.get('inspircd', '?')}"
    )
    if markdown:
        lines.append("# Benchmark results")
        lines.append("")
        lines.append(
            "Regenerated by `make results` from one run (earlier runs: git "
            "history); how it works: [README.md](README.md)."
        )
        lines.append("")
    lines.append(header)
    if env.get("command"):
        lines.append("")
        lines.append(f"Command: `{env['command']}`" if markdown else env["command"])
    lines.append("")
    if markdown:
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for cells in table:
            cells = cells + [""] * (len(head) - len(cells))
            lines.append("| " + " | ".join(cells) + " |")
    else:
        widths = [
            max(len(c[i]) for c in [head, *table] if len(c) > 1 and i < len(c))
            for i in range(len(head))
        ]
        widths[0] = max(widths[0], 40)

        def line(cells: list[str]) -> str:
            if len(cells) == 1:
                return cells[0]
            first = cells[0].ljust(widths[0])
            return "  ".join(
                [
                    first,
                    *[c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)],
                ]
            )

        lines.append(line(head))
        lines.extend(line(c) for c in table)
    lines.append("")
    lines.append("Targets (ratios within this run):")
    for t in tlist:
        lines.append(f"{'- ' if markdown else '  '}[{t.status}] {t.text}: {t.detail}")
    lines.append("")
    lines.append("Notes:")
    for n in notes:
        lines.append(f"{'- ' if markdown else '  '}{n}")
    return "\n".join(lines)


# ---------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="a small run, for a smoke test")
    p.add_argument(
        "--servers",
        default="ours,naive,ngircd",
        help="comma-separated: ours,ours-ws,naive,ngircd,inspircd,cluster1,"
        "cluster2; ours+OPTION=VALUE (ours with a twistd option), ours@REV and "
        "ours-ws@REV (at a git revision)",
    )
    p.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help="comma-separated: msg1,msg5,reg,idle,fanout (these three share a run),"
        "rooms,room1,lobby,herd,reconnect",
    )
    p.add_argument(
        "--herd-clients",
        type=int,
        help="clients of the herd scenario (default 10,000; --quick 1,000)",
    )
    p.add_argument(
        "--reconnect-clients",
        type=int,
        help="clients of the reconnect scenario (default 5,000; --quick 500)",
    )
    p.add_argument(
        "--idle",
        type=float,
        metavar="SECONDS",
        help="how long the idle scenario holds its clients (default 35 s; "
        "--quick 6 s): long enough to take in the collector's full pass "
        "after the herd registers, whenever it comes",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs of each scenario; the table shows medians",
    )
    p.add_argument("--json", type=Path, help="write every measurement to this file")
    p.add_argument(
        "--profile",
        action="store_true",
        help="sample the Python servers with py-spy (bench/out/profiles/); "
        "the sampler takes CPU: do not use the numbers of such a run",
    )
    p.add_argument(
        "--markdown", type=Path, help="also write the table as Markdown to this file"
    )
    p.add_argument(
        "--from-json",
        type=Path,
        metavar="FILE",
        help="measure nothing: print the table of a run saved with --json",
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        args.quick = saved["quick"]
        args.scenarios = saved["scenarios"]
        sizes = saved.get("sizes", {})
        plan, runs = make_plan(
            args.quick,
            set(args.scenarios.split(",")),
            sizes.get("herd"),
            sizes.get("reconnect"),
            sizes.get("idle"),
        )
        shown = [
            Server(
                s["key"],
                s["label"],
                notes=s["notes"],
                over_ours=s.get("over_ours", False),
            )
            for s in saved["servers"]
        ]
        report(
            args,
            plan,
            runs,
            shown,
            saved["environment"],
            saved["runs"],
            saved["run_notes"],
        )
        return 0
    wanted = {s.strip() for s in args.scenarios.split(",") if s.strip()}
    unknown = wanted - set(SCENARIOS)
    if unknown:
        sys.exit(f"bench: unknown scenarios {sorted(unknown)}")
    if args.idle is not None and not 1 <= args.idle <= 600:
        sys.exit("bench: --idle takes 1 to 600 seconds")
    for size in (args.herd_clients, args.reconnect_clients):
        if size is not None and not 1 <= size <= 20_000:
            sys.exit("bench: --herd-clients and --reconnect-clients take 1 to 20,000")
    args.scenarios = ",".join(sorted(wanted))
    names = [s.strip() for s in args.servers.split(",") if s.strip()]
    bad = [
        n
        for n in names
        if n not in SERVERS
        and not n.startswith(("ours+", "ours@", "ours-ws@"))
        and not re.fullmatch(r"cluster\d+\+.+", n)
    ]
    if bad:
        sys.exit(f"bench: unknown servers {bad} (known: {', '.join(SERVERS)})")
    plan, runs = make_plan(
        args.quick, wanted, args.herd_clients, args.reconnect_clients, args.idle
    )
    global PROFILE
    PROFILE = args.profile
    if PROFILE and not py_spy():
        sys.exit("bench: --profile needs py-spy (pip install py-spy)")

    def on_signal(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    nofile = raise_nofile()
    build_tool()
    notes: list[str] = []
    servers: list[Server] = []
    for name in names:
        if name in SERVERS:
            server = SERVERS[name]()
        else:
            at = name.startswith(("ours@", "ours-ws@"))
            server = baseline(name) if at else variant(name)
        if server.unavailable:
            notes.append(f"{server.label} skipped: {server.unavailable}.")
        else:
            servers.append(server)
    if not servers:
        print("\n".join(notes))
        return 1
    biggest = max(s.clients for s in runs) if runs else 0
    if nofile < biggest + 100:
        notes.append(
            f"open-file limit {nofile} < {biggest:,} clients: connects will fail."
        )
    busy = busy_share()
    env = environment(nofile)
    env["command"] = shlex.join(["bench/run.py", *sys.argv[1:]])
    if busy > 0.1:
        notes.append(
            f"the machine was {busy:.0%} busy with other work just before the run."
        )
    if PROFILE:
        notes.append(
            "--profile: py-spy sampled the Python servers; numbers are skewed."
        )
    raw = measure(args.repeat, runs, servers, plan, notes)
    report(args, plan, runs, servers, env, raw, notes)
    for path in PROFILES.values():
        print()
        print(summarize_profile(path))
    return 0


def measure(
    repeat: int,
    runs: list[Scenario],
    servers: list[Server],
    plan: Plan,
    notes: list[str],
) -> dict[str, dict[str, list[Result]]]:
    """Every run of every scenario on every server, in the order that puts
    the servers of one scenario back to back; notes get what went wrong."""
    raw: dict[str, dict[str, list[Result]]] = {s.key: {} for s in runs}
    started = time.monotonic()
    try:
        for scenario in runs:
            for rep in range(repeat):
                order = servers[rep % len(servers) :] + servers[: rep % len(servers)]
                for server in order:
                    why = server.skips(scenario)
                    if why:
                        if rep == 0:
                            notes.append(
                                f"{server.label}, {scenario.key}: skipped: {why}."
                            )
                        continue
                    print(
                        f"bench: {scenario.key} {server.key} ({rep + 1}/{repeat}) "
                        f"at {time.monotonic() - started:.0f} s",
                        file=sys.stderr,
                        flush=True,
                    )
                    try:
                        r = run_one(server, scenario, plan, rep)
                    except RuntimeError as e:
                        where = f"{server.label}, {scenario.key}"
                        notes.append(f"{where}: {e} (see bench/out/logs/).")
                        continue
                    raw[scenario.key].setdefault(server.key, []).append(r)
    except KeyboardInterrupt:
        notes.append("interrupted: partial results.")
    return raw


def report(
    args: argparse.Namespace,
    plan: Plan,
    runs: list[Scenario],
    servers: list[Server],
    env: dict[str, str],
    raw: dict[str, dict[str, list[Result]]],
    run_notes: list[str],
) -> None:
    results: dict[str, dict[str, Result | None]] = {}
    for scenario in runs:
        by_server = raw.get(scenario.key, {})
        results[scenario.key] = {
            s.key: median_result(by_server[s.key]) if by_server.get(s.key) else None
            for s in servers
        }
    tlist = targets(results, plan)
    notes = run_notes + standing_notes(plan, servers, results, args)
    revisions = sorted(
        {
            str(r.get("revision"))
            for by in raw.values()
            for rs in by.values()
            for r in rs
        }
    )
    if len(revisions) > 1:
        notes.insert(0, f"THE CODE CHANGED DURING THE RUN: {', '.join(revisions)}.")
    for server in servers:
        notes += [f"{server.label}: {n}." for n in server.notes]
    text = render(env, servers, runs, results, tlist, notes, markdown=False)
    print(text)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "last-table.txt").write_text(text + "\n")
    if args.markdown:
        markdown = render(env, servers, runs, results, tlist, notes, markdown=True)
        args.markdown.write_text(markdown + "\n")
    if args.json:
        saved = {
            "environment": env,
            "quick": args.quick,
            "scenarios": args.scenarios,
            "sizes": {
                "herd": plan.herd.clients,
                "reconnect": plan.reconnect.clients,
                "idle": plan.big.idle,
            },
            "servers": [
                {
                    "key": s.key,
                    "label": s.label,
                    "notes": s.notes,
                    "over_ours": s.over_ours,
                }
                for s in servers
            ],
            "plan": {
                "ping_interval": plan.ping_interval,
                "scenarios": [vars(s) for s in runs],
            },
            "results": results,
            "runs": raw,
            "run_notes": run_notes,
            "targets": [vars(t) for t in tlist],
            "notes": notes,
        }
        args.json.write_text(json.dumps(saved, indent=1, default=str) + "\n")


def standing_notes(
    plan: Plan,
    servers: list[Server],
    results: dict[str, dict[str, Result | None]],
    args: argparse.Namespace,
) -> list[str]:
    keys = {s.key for s in servers}
    notes = [
        "load generator: bench/chatbench.c, one process, epoll; one fresh server "
        "process per scenario; a delivery is one line received by one client; "
        "latency = receive time - send time (CLOCK_MONOTONIC, same machine); "
        "lines never delivered count as slower than any (shown as 'lost').",
        f"clients use source addresses 127.1.x.y, {SPREAD} per address; "
        f"ping interval {plan.ping_interval:g} s for every server.",
    ]
    if args.quick:
        notes.append(
            "--quick: small numbers for a smoke test; the targets are not measured."
        )
    if "ours" in keys:
        given = " ".join(f"{k} {v}" for k, v in ours_options(plan).items())
        notes.append(
            f"ours runs with {given} (--flood-*: the defaults, "
            "2 lines/s after a burst of 5, would cut the 5 lines/s senders); "
            "every other option at its default. chatbench paces no connect to ours: "
            "no accept window in any scenario. Its modules (and those of every "
            "ours@REV) are compiled to bytecode first, as installing them does."
        )
    if "ours-ws" in keys:
        notes.append(
            "ours-ws: the same twistd command as ours plus --web "
            "tcp:PORT:interface=127.0.0.1; chatbench's clients speak the chat "
            "over ws://127.0.0.1:PORT/ws (its ws dialect: one text message per "
            "line, every client frame masked, the upgrade's accept key checked); "
            "the server's CPU is the same single process. Its ratio column is "
            "ours-ws/ours: what the WebSocket costs over TCP."
        )
    if "naive" in keys:
        notes.append(
            "naive: bench/naive_chat.py, a LineReceiver and a ping LoopingCall per "
            "client, each line encoded per receiver, the full user list written "
            "in one piece on registration."
        )
    if "ngircd" in keys:
        notes.append(
            f"ngIRCd: in the {plan.msg1.clients:,}-client runs all users JOIN "
            f"#bench and senders PRIVMSG it; at {plan.big.clients:,} clients nobody "
            "joins (the JOIN echoes would cost n²/2 lines), registration ends with "
            "the MOTD, and "
            "the 10 senders are IRC operators sending to the server mask "
            f"${IRC_SERVER_NAME} (every user gets it, the sender's echo is ignored). "
            "No PAM, ident, DNS, penalties or connection limits; PingTimeout = the "
            "ping interval; its listen backlog is 10, so outside the herds chatbench "
            "keeps at most 8 connects unanswered (32 for the naive chat, Twisted's "
            "backlog of 50; none for ours)."
        )
    if "inspircd" in keys:
        notes.append(
            "InspIRCd: configured by bench/run.py (bench/out/inspircd/): no fake lag, "
            "no DNS or ident, connect-class limits lifted, somaxconn 10000 (the "
            "kernel caps the backlog at net.core.somaxconn), pingfreq = the ping "
            "interval; no accept window. It completes registrations in a timer "
            "once a second, so every client waits up to 1 s for its 001."
        )
    if any(s in results for s in ROOMS[:2]):
        notes.append(
            "rooms, room1: chatbench --rooms N puts client i in room #r(i×N/clients) "
            "(consecutive ids, so the senders, spread over the ids, fall one per "
            "room); a chat client registers, sends /join #rK and counts as "
            "registered once it has read 'Salon courant : #rK' and the room's user "
            "list; an IRC client JOINs #rK. Each line is due to the other members "
            "of its sender's room, and counts only when it names the receiver's "
            "room and comes from a sender of that room."
        )
    notes += room_ratios(results)
    if any(s in results for s in HERDS):
        notes.append(
            "herds: every server gets the same unpaced connect (no accept window, "
            "no bound in flight, no rate); IRC clients count as registered at 001, "
            "chat clients after the user list. reconnect: the first registration is "
            "paced as in the other scenarios; then run.py sends SIGTERM, waits for "
            "the exit, starts the same command on the same port and tells chatbench "
            "when it listens; each client retries 100-250 ms after a close, a "
            "refusal or a reset, at most 100 connects."
        )
    for scn, by_server in results.items():
        for key, r in by_server.items():
            if r:
                notes += run_notes(f"{key}, {scn}", r)
                if r["repeats_quiet"] < r["repeats"]:
                    notes.append(
                        f"{key}, {scn}: {r['repeats'] - r['repeats_quiet']} of "
                        f"{r['repeats']} runs had other processes above "
                        f"{QUIET:.0%} of a core; the table uses "
                        + (
                            f"the {r['repeats_used']} quiet one(s)."
                            if r["repeats_quiet"]
                            else "them all."
                        )
                    )
    return notes


def room_ratios(results: dict[str, dict[str, Result | None]]) -> list[str]:
    """For each server, the rooms against one room (and one room against the
    lobby) in this run: what a line costs where it reaches 99 members rather
    than 9,999, and what a named room costs over the lobby."""
    notes = []
    for a, b, what in (
        ("rooms", "room1", "rooms against one room"),
        ("room1", "lobby", "one room against the lobby"),
    ):
        for key, ra in results.get(a, {}).items():
            rb = results.get(b, {}).get(key)
            if not ra or not rb:
                continue
            cpu = [
                1000 * r["send_server_cpu_s"] / r["sent"] if r.get("sent") else None
                for r in (ra, rb)
            ]
            deliveries = [num(r, "deliveries_per_cpu_s") for r in (ra, rb)]
            p99 = [latency(r, "p99_ms") for r in (ra, rb)]
            notes.append(
                f"{key}, {what} ({a}/{b} in this run): deliveries per server "
                f"CPU-second {fmt(deliveries[0])} against {fmt(deliveries[1])} "
                f"({ratio(*deliveries)}); p99 {fmt(p99[0], 1)} ms against "
                f"{fmt(p99[1], 1)} ms ({ratio(*p99)}); server CPU per line sent "
                f"{fmt(cpu[0], 3)} ms against {fmt(cpu[1], 3)} ms ({ratio(*cpu)}); "
                f"lines lost {ra['expected'] - ra['delivered']:,.0f} against "
                f"{rb['expected'] - rb['delivered']:,.0f}."
            )
    return notes


def run_notes(where: str, r: Result) -> list[str]:
    notes = []
    if r.get("registered", 0) < r.get("clients", 0):
        notes.append(f"{where}: {r['registered']:,} of {r['clients']:,} registered.")
    dropped = r.get("idle_dead", 0) + r.get("send_dead", 0)
    if dropped:
        notes.append(f"{where}: the server dropped {dropped:,} clients.")
    for phase in ("send", "reg"):
        cpu, wall = r.get(f"{phase}_tool_cpu_s", -1), r.get(f"{phase}_s", 0)
        if wall and cpu / wall > 0.85:
            notes.append(
                f"{where}: the load generator used {cpu / wall:.0%} of a core "
                f"during {phase}: it may have been the bottleneck."
            )
    if r.get("restart_killed"):
        notes.append(
            f"{where}: the old server did not exit within {RESTART_BOUND:g} s of "
            "SIGTERM and was killed."
        )
    if not r.get("server_survived", True):
        notes.append(f"{where}: the server died during the run.")
    return notes


if __name__ == "__main__":
    sys.exit(main())
