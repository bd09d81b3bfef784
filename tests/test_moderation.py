"""Moderation: operators, /op and its throttle, /kick, /ban, /unban, /bans,
and the log of every act (chatproto/moderation.py)."""

from __future__ import annotations

import errno
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, cast

import pytest
from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.logger import ILogObserver, Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from chatproto import bans, metrics, moderation, operators, wire
from chatproto.bans import Ban, Bans, ban_address
from chatproto.cluster_messages import Kick
from chatproto.moderation import MAX_BAN_MINUTES, Moderation
from chatproto.operators import check_password, make_hash, parse_operators
from chatproto.operators import main as operators_main
from chatproto.registry import nick_key
from chatproto.testing import Chat, Client

ROOT = Path(__file__).resolve().parent.parent

# A cheap scrypt for the tests (the default costs some 50 ms a check).
CHEAP = {"n": 16, "r": 1, "p": 1}


def notice(text: str) -> bytes:
    return wire.notice(text)


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The log events moderation emits, and the room's refusals."""
    seen: list[dict[str, Any]] = []
    observer = cast(ILogObserver, seen.append)
    monkeypatch.setattr(moderation, "log", Logger(observer=observer))
    monkeypatch.setattr(bans, "log", Logger(observer=observer))
    monkeypatch.setattr(metrics, "log", Logger(observer=observer))
    return seen


def chat_with_operators(
    tmp_path: Path | None = None, **operators: str
) -> tuple[Chat, Moderation]:
    """A chat whose operators are the nicknames given, each with its password;
    its bans kept in tmp_path/bans.json when tmp_path is given."""
    # no pings, no arrival notices: each test sees only what it looks at
    chat = Chat(flood_rate=0, ping_interval=0, join_notice_limit=0)
    table = {nick_key(n): make_hash(pw, **CHEAP) for n, pw in operators.items()}
    path = None if tmp_path is None else str(tmp_path / "bans.json")
    chat.factory.moderation = Moderation(chat.factory, table, Bans(chat.clock, path))
    return chat, chat.factory.moderation


def op(chat: Chat, nick: str, password: str, host: str = "192.0.2.1") -> Client:
    user = chat.user(nick, host)
    user.send(f"/op {password}\n".encode())
    assert user.take() == notice(wire.OP_GRANTED)
    return user


# Passwords and the operators file


def test_a_hash_checks_its_own_password_only() -> None:
    stored = make_hash("s3cret", **CHEAP)
    assert stored.startswith("scrypt$16$1$1$")
    assert check_password("s3cret", stored)
    assert not check_password("s3cret ", stored)
    assert make_hash("s3cret", **CHEAP) != stored  # a random salt each time


def test_the_default_hash_is_scrypt_at_the_documented_cost() -> None:
    stored = make_hash("x")
    assert stored.split("$")[:4] == ["scrypt", "16384", "8", "1"]
    assert check_password("x", stored)


def test_the_operators_file_takes_comments_blank_lines_and_any_case() -> None:
    stored = make_hash("pw", **CHEAP)
    text = f"# the operators\n\nAlice:{stored}\n  bob : {stored}  \n"
    assert parse_operators(text) == {"alice": stored, "bob": stored}


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("alice", "line 2: 'alice' is not NICK:HASH"),
        ("al:scrypt$16$1$1$AAAA$AAAA", "line 2: the hash's salt or key"),
        ("alice:md5$abc", "line 2: the hash is not scrypt$N$R$P$SALT$HASH"),
        ("al ice:x", "line 2: 'al ice:x' is not NICK:HASH with a valid nickname"),
        ("alice:scrypt$3$1$1$AAAA$AAAA", "line 2: the hash's scrypt parameters"),
        ("alice:scrypt$1073741824$8$1$AAAA$AAAA", "scrypt parameters are out"),
    ],
)
def test_a_bad_line_of_the_operators_file_is_named(line: str, says: str) -> None:
    with pytest.raises(ValueError, match=r"ops\.txt, line 2") as e:
        parse_operators(f"# ok\n{line}\n", "ops.txt")
    assert says in str(e.value)


def test_an_operator_listed_twice_in_any_case_is_a_mistake() -> None:
    stored = make_hash("pw", **CHEAP)
    with pytest.raises(ValueError, match="line 2: ALICE is listed twice"):
        parse_operators(f"alice:{stored}\nALICE:{stored}\n")


def test_the_hash_command_reads_the_password_from_a_pipe() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert operators_main(["hash"], io.StringIO("mot de passe\n"), out, err) == 0
    assert check_password("mot de passe", out.getvalue().strip())
    assert err.getvalue() == ""


def test_the_hash_command_refuses_an_empty_password_and_bad_usage() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert operators_main(["hash"], io.StringIO("\n"), out, err) == 1
    assert operators_main([], io.StringIO("x\n"), out, err) == 2
    assert out.getvalue() == ""
    assert "usage: python -m chatproto.operators hash" in err.getvalue()


# /op


def test_the_right_password_makes_the_session_an_operator(
    events: list[dict[str, Any]],
) -> None:
    chat, mod = chat_with_operators(alice="pw")
    alice = op(chat, "alice", "pw")
    assert alice.session in mod.op_check.operating
    alice.send(b"/op pw\n")
    assert alice.take() == notice(wire.OP_ALREADY)
    [event] = [e for e in events if e.get("act") == "op"]
    assert (event["operator"], event["operator_address"]) == ("alice", "192.0.2.1")


def test_a_wrong_password_or_an_unlisted_nickname_is_refused(
    events: list[dict[str, Any]],
) -> None:
    chat, mod = chat_with_operators(alice="pw")
    alice = chat.user("alice")
    alice.send(b"/op nope\n")
    assert alice.take() == notice(wire.OP_WRONG)
    bob = chat.user("bob", "192.0.2.2")
    bob.send(b"/op pw\n")  # alice's password is not bob's
    assert bob.take() == notice(wire.OP_WRONG)
    alice.send(b"/op\n")
    assert alice.take() == notice(wire.OP_USAGE)
    assert mod.op_check.operating == set()
    failed = [e for e in events if e.get("act") == "op-failed"]
    assert [(e["nick"], e["address"]) for e in failed] == [
        ("alice", "192.0.2.1"),
        ("bob", "192.0.2.2"),
    ]


def test_a_server_without_operators_says_so() -> None:
    chat = Chat()
    alice = chat.user("alice")
    alice.send(b"/op pw\n")
    assert alice.take() == notice(wire.OP_NONE)


def test_the_file_s_nickname_matches_in_any_case_but_still_needs_the_password() -> None:
    chat, _mod = chat_with_operators(alice="pw")
    upper = chat.user("ALICE")
    upper.send(b"/op guess\n")
    assert upper.take() == notice(wire.OP_WRONG)
    upper.send(b"/op pw\n")
    assert upper.take() == notice(wire.OP_GRANTED)


def test_operator_status_ends_with_the_session() -> None:
    """A new connection under the same nickname must /op again."""
    chat, mod = chat_with_operators(alice="pw")
    alice = op(chat, "alice", "pw")
    alice.send(b"/quit\n")
    assert mod.op_check.operating == set()
    again = chat.user("alice")
    chat.user("bob", "192.0.2.2")
    again.send(b"/kick bob\n")
    assert again.take() == notice(wire.NOT_OPERATOR.format("/kick"))


def test_wrong_passwords_are_throttled_per_address_after_three(
    events: list[dict[str, Any]],
) -> None:
    chat, _mod = chat_with_operators(alice="pw")
    alice = chat.user("alice")
    for _ in range(3):
        alice.send(b"/op nope\n")
        assert alice.take() == notice(wire.OP_WRONG)
    alice.send(b"/op pw\n")  # even the right one waits its turn
    assert alice.take() == notice(wire.OP_THROTTLED.format(5))
    other = chat.user("bob", "192.0.2.1")  # another session, the same address
    other.send(b"/op pw\n")
    assert other.take() == notice(wire.OP_THROTTLED.format(5))
    chat.advance(3)
    alice.send(b"/op pw\n")
    assert alice.take() == notice(wire.OP_THROTTLED.format(2))
    chat.advance(2)
    alice.send(b"/op nope\n")  # one try now, wrong: five seconds more
    assert alice.take() == notice(wire.OP_WRONG)
    alice.send(b"/op pw\n")
    assert alice.take() == notice(wire.OP_THROTTLED.format(5))
    chat.advance(5)
    alice.send(b"/op pw\n")
    assert alice.take() == notice(wire.OP_GRANTED)
    assert len([e for e in events if e.get("act") == "op-failed"]) == 4


def test_another_address_is_not_throttled_by_the_first() -> None:
    chat, _mod = chat_with_operators(alice="pw")
    bob = chat.user("bob")
    for _ in range(4):
        bob.send(b"/op nope\n")
    bob.take()
    op(chat, "alice", "pw", "198.51.100.7")


def test_an_address_is_forgotten_after_ten_quiet_minutes() -> None:
    chat, _mod = chat_with_operators(alice="pw")
    alice = chat.user("alice")
    for _ in range(3):
        alice.send(b"/op nope\n")
    alice.take()
    chat.advance(operators.FORGET_AFTER)
    for _ in range(3):
        alice.send(b"/op nope\n")
        assert alice.take() == notice(wire.OP_WRONG)


class HeldChecker:
    """A checker whose checks wait until the test answers them: what the
    thread pool gives /op, without threads."""

    def __init__(self) -> None:
        self.pending: list[tuple[str, Deferred[bool]]] = []

    def __call__(self, password: str, stored: str) -> Deferred[bool]:
        d: Deferred[bool] = Deferred()
        self.pending.append((password, d))
        return d

    def answer(self, index: int = 0) -> None:
        """The check at C{index} ends, with the right answer."""
        password, d = self.pending.pop(index)
        d.callback(password == "pw")


def held_chat() -> tuple[Chat, Moderation, HeldChecker]:
    chat, mod = chat_with_operators(alice="pw", bob="pw")
    mod.op_check.checker = checker = HeldChecker()
    return chat, mod, checker


def test_the_chat_goes_on_while_a_password_is_checked() -> None:
    chat, mod, checker = held_chat()
    alice = chat.user("alice")
    carol, dan = chat.user("carol", "192.0.2.3"), chat.user("dan", "192.0.2.4")
    carol.take(), dan.take()
    alice.send(b"/op pw\n")
    carol.send(b"bonjour\n")  # answered before the check ends
    assert dan.take() == chat.stamp() + b"-carol: bonjour\n"
    assert alice.take() == chat.stamp() + b"-carol: bonjour\n"
    assert alice.session not in mod.op_check.operating
    checker.answer()
    assert alice.take() == notice(wire.OP_GRANTED)
    assert alice.session in mod.op_check.operating


def test_at_most_two_checks_run_at_once_eight_wait_and_more_are_throttled(
    events: list[dict[str, Any]],
) -> None:
    chat, _mod, checker = held_chat()
    users = [chat.user(f"u{i}", f"198.51.100.{i}") for i in range(11)]
    for user in users:
        user.take()
        user.send(b"/op nope\n")
    assert len(checker.pending) == 2  # the others wait their turn
    assert [u.take() for u in users[:10]] == [b""] * 10
    assert users[10].take() == notice(wire.OP_THROTTLED.format(5))
    busy = [e for e in events if e.get("reason") == "busy"]
    assert [(e["act"], e["address"], e["count"]) for e in busy] == [
        ("op-failed", "198.51.100.10", 1)
    ]
    checker.answer()
    assert users[0].take() == notice(wire.OP_WRONG)
    assert len(checker.pending) == 2  # the next one started
    while checker.pending:
        checker.answer()
    assert [u.take() for u in users[1:10]] == [notice(wire.OP_WRONG)] * 9


def test_a_brute_force_kept_busy_is_logged_as_refusals_are(
    events: list[dict[str, Any]],
) -> None:
    """Every /op past the checks waiting is refused, and logged as the
    refused connections are (metrics.RefusalLog): once at once per
    address, then one summary per interval; not a line each (950 a second
    under a brute force)."""
    chat, _mod, checker = held_chat()
    for i in range(10):  # two checks running, eight waiting
        chat.user(f"u{i}", f"198.51.100.{i}").send(b"/op nope\n")
    attacker = chat.user("zed", "203.0.113.1")
    other = chat.user("yan", "203.0.113.2")
    attacker.take()
    attacker.send(b"/op nope\n" * 1000)
    other.send(b"/op nope\n")
    assert attacker.take() == notice(wire.OP_THROTTLED.format(5)) * 1000
    busy = [e for e in events if e.get("reason") == "busy"]
    assert [(e["act"], e["address"], e["count"]) for e in busy] == [
        ("op-failed", "203.0.113.1", 1),
        ("op-failed", "203.0.113.2", 1),
    ]
    events.clear()
    chat.advance(metrics.REFUSAL_INTERVAL)
    [summary] = [e for e in events if e.get("reason") == "busy"]
    assert (summary["act"], summary["address"], summary["count"]) == (
        "op-failed",
        "203.0.113.1",
        999,
    )
    assert len(checker.pending) == 2  # the checks in line were not disturbed


def test_an_unlisted_nickname_s_check_costs_no_scrypt_in_the_reactor() -> None:
    """The first /op for a nickname the file does not list made the hash it
    is checked against (84 ms of scrypt) in the reactor's thread: every user
    waited. In a fresh process (that hash was made once, then kept), with
    the check itself injected, an /op runs no scrypt at all."""
    script = """
import hashlib
from twisted.internet.defer import succeed
from chatproto.moderation import Moderation
from chatproto.operators import make_hash
from chatproto.testing import Chat

chat = Chat(flood_rate=0, ping_interval=0, join_notice_limit=0)
table = {"alice": make_hash("pw", n=16, r=1, p=1)}
checked = []

def checker(password, stored):
    checked.append(stored)
    return succeed(False)

chat.factory.moderation = Moderation(chat.factory, table, checker=checker)
calls = []
real = hashlib.scrypt
hashlib.scrypt = lambda *a, **k: calls.append(1) or real(*a, **k)
bob = chat.user("bob")
bob.send(b"/op guess\\n")
print(len(calls), bob.take().decode().strip(), checked[0].split("$")[:4])
"""
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    # no scrypt; refused, after a check at the cost of a real one
    assert result.stdout == (f"0 {wire.OP_WRONG} ['scrypt', '16384', '8', '1']\n")


def test_tries_sent_before_the_first_answer_are_throttled_as_failures() -> None:
    """Four connections from one address try at once (one connection's
    next line waits for its answer: test_lines_after_op_wait_for_its_answer)."""
    chat, _mod, checker = held_chat()
    tries = [chat.user(f"u{i}", "192.0.2.9") for i in range(4)]
    for user in tries:
        user.take()
        user.send(b"/op nope\n")
    assert [user.take() for user in tries] == [b""] * 3 + [
        notice(wire.OP_THROTTLED.format(5))
    ]
    assert len(checker.pending) == 2  # the third waits its turn
    while checker.pending:
        checker.answer()
    assert [user.take() for user in tries[:3]] == [notice(wire.OP_WRONG)] * 3


def test_lines_after_op_wait_for_its_answer() -> None:
    """A script sends /op then an operator's command at once: the command
    runs once the password is checked, not before."""
    chat, mod, checker = held_chat()
    carol = chat.user("carol", "192.0.2.3")
    alice = chat.user("alice")
    carol.take(), alice.take()
    alice.send(b"/op pw\n/kick carol\nbonjour\n")
    assert alice.take() == b""
    assert carol.connected
    checker.answer()
    assert alice.take().startswith(notice(wire.OP_GRANTED))
    assert not carol.connected
    assert mod.op_check.operating == {alice.session}


def test_a_right_password_forgets_the_tries_counted_while_it_was_checked() -> None:
    chat, mod, checker = held_chat()
    alice = chat.user("alice")
    for password in (b"nope", b"nope", b"pw"):
        alice.send(b"/op " + password + b"\n")
    while checker.pending:
        checker.answer()
    assert alice.take() == notice(wire.OP_WRONG) * 2 + notice(wire.OP_GRANTED)
    assert mod.op_check.operating == {alice.session}
    bob = chat.user("bob")  # the same address: not throttled
    bob.send(b"/op pw\n")
    checker.answer()
    assert bob.take() == notice(wire.OP_GRANTED)


def test_a_user_gone_while_its_password_is_checked_is_no_operator(
    events: list[dict[str, Any]],
) -> None:
    chat, mod, checker = held_chat()
    alice = chat.user("alice")
    alice.send(b"/op pw\n")
    alice.proto.connectionLost(Failure(ConnectionDone()))
    checker.answer()  # no write to a closed connection, no traceback
    assert mod.op_check.operating == set()
    [gone] = [e for e in events if e.get("act") == "op-gone"]
    assert gone["nick"] == "alice"
    again = chat.user("alice")  # the same nickname, a new session
    again.send(b"/kick carol\n")
    assert again.take() == notice(wire.NOT_OPERATOR.format("/kick"))


def test_a_user_kicked_while_its_password_is_checked_is_no_operator() -> None:
    chat, mod, checker = held_chat()
    bob = op_held(chat, checker, "bob", "192.0.2.2")
    alice = chat.user("alice")
    alice.send(b"/op pw\n")
    bob.send(b"/kick alice\n")
    assert not alice.connected
    alice.take()
    checker.answer()
    assert alice.take() == b""
    assert mod.op_check.operating == {bob.session}


def op_held(chat: Chat, checker: HeldChecker, nick: str, host: str) -> Client:
    user = chat.user(nick, host)
    user.send(b"/op pw\n")
    checker.answer()
    assert user.take() == notice(wire.OP_GRANTED)
    return user


def test_two_right_passwords_at_once_make_one_operator() -> None:
    chat, mod, checker = held_chat()
    alice = chat.user("alice")
    alice.send(b"/op pw\n/op pw\n")
    checker.answer()  # the second waited for it: no second check
    assert checker.pending == []
    assert alice.take() == notice(wire.OP_GRANTED) + notice(wire.OP_ALREADY)
    assert mod.op_check.operating == {alice.session}


def test_a_check_that_fails_says_so_and_logs_the_failure(
    events: list[dict[str, Any]],
) -> None:
    chat, mod, checker = held_chat()
    alice = chat.user("alice")
    alice.send(b"/op pw\n")
    checker.pending.pop()[1].errback(MemoryError("scrypt"))
    assert alice.take() == notice(wire.OP_UNAVAILABLE)
    assert mod.op_check.operating == set()
    assert [e["log_failure"].type for e in events if "log_failure" in e] == [
        MemoryError
    ]


def test_the_server_s_checker_runs_scrypt_in_a_thread_of_the_pool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    threads: list[threading.Thread] = []
    real = operators.check_password

    def recording(password: str, stored: str) -> bool:
        threads.append(threading.current_thread())
        return real(password, stored)

    monkeypatch.setattr(operators, "check_password", recording)
    pool = ThreadPool(1, 1)

    class Reactor:
        def getThreadPool(self) -> ThreadPool:
            return pool

        def callFromThread(self, f: Any, *args: Any, **kwargs: Any) -> None:
            f(*args, **kwargs)

    pool.start()
    answers: list[bool] = []
    try:
        check = operators.check_in_threads(Reactor())
        check("pw", make_hash("pw", **CHEAP)).addCallback(answers.append)
    finally:
        pool.stop()  # waits for the check
    assert answers == [True]
    assert threads and threads[0] is not threading.current_thread()


# /kick


def test_a_kicked_user_is_told_who_and_why_then_deconnexion(
    events: list[dict[str, Any]],
) -> None:
    chat, _mod = chat_with_operators(alice="pw")
    alice = op(chat, "alice", "pw")
    bob = chat.user("bob", "192.0.2.2")
    carol = chat.user("carol", "192.0.2.3")
    alice.take(), carol.take()
    alice.send(b"/kick bob trop de spam\n")
    assert bob.take() == (
        b"Vous avez \xc3\xa9t\xc3\xa9 expuls\xc3\xa9 par alice : trop de spam\n"
        b"Deconnexion\n"
    )
    assert not bob.connected
    departure = (
        chat.stamp()
        + "-Déconnection de bob (expulsé par alice : trop de spam)\n".encode()
    )
    assert carol.take() == departure  # once
    assert alice.take() == departure + notice(wire.KICK_DONE.format("bob"))
    [event] = [e for e in events if e.get("act") == "kick"]
    assert {k: event[k] for k in ("operator", "target", "reason", "minutes")} == {
        "operator": "alice",
        "target": "bob",
        "reason": "trop de spam",
        "minutes": 0,
    }
    assert (event["operator_address"], event["target_address"]) == (
        "192.0.2.1",
        "192.0.2.2",
    )
    assert "bob" not in chat.factory.sessions


def test_a_kick_without_a_reason_says_who_only() -> None:
    chat, _mod = chat_with_operators(alice="pw")
    alice = op(chat, "alice", "pw")
    bob = chat.user("bob", "192.0.2.2")
    alice.take()
    alice.send(b"/kick BOB\n")  # any case
    assert bob.take() == notice(wire.KICKED_YOU.format("alice")) + wire.BYE
    assert alice.take() == (
        chat.stamp()
        + "-Déconnection de bob (expulsé par alice)\n".encode()
        + notice(wire.KICK_DONE.format("bob"))
    )


def test_no_one_but_an_operator_can_kick_or_ban() -> None:
    chat, mod = chat_with_operators(alice="pw")
    alice = chat.user("alice")
    bob = chat.user("bob", "192.0.2.2")
    alice.take()
    for command in ("/kick", "/ban", "/unban", "/bans"):
        alice.send(f"{command} bob\n".encode())
        assert alice.take() == notice(wire.NOT_OPERATOR.format(command))
    assert bob.connected and bob.take() == b""
    assert mod.bans.active() == []


def test_kicking_an_absent_user_or_oneself_or_nobody_is_an_error() -> None:
    chat, _mod = chat_with_operators(alice="pw")
    alice = op(chat, "alice", "pw")
    alice.send(b"/kick zoe\n")
    assert alice.take() == notice(wire.NO_SUCH_USER.format("zoe"))
    alice.send(b"/kick alice\n")
    assert alice.take() == notice(wire.KICK_SELF)
    alice.send(b"/kick\n")
    assert alice.take() == notice(wire.KICK_USAGE)
    assert alice.connected


def test_the_moderation_lines_are_none_the_ruby_client_exits_on() -> None:
    lines = [
        value
        for name, value in vars(wire).items()
        if name.isupper() and isinstance(value, str)
    ]
    assert not {line.encode() for line in lines} & wire.CLIENT_EXITS
    departure = wire.kicked_departure("[1.2.3]", "bob", "alice", "x", banned=True)
    assert departure == "[1.2.3]-Déconnection de bob (banni par alice : x)\n".encode()


# /ban, /unban, /bans


def test_a_ban_of_one_minute_says_minute() -> None:
    chat, _mod = chat_with_operators(alice="pw")
    alice = op(chat, "alice", "pw")
    bob = chat.user("bob", "203.0.113.9")
    alice.take()
    alice.send(b"/ban bob 1\n")
    assert (
        bob.take()
        == "Vous avez été banni par alice pour 1 minute\n".encode() + wire.BYE
    )
    assert alice.take().endswith(b"L'adresse 203.0.113.9 est bannie pour 1 minute\n")
    refused = chat.connect("203.0.113.9").take()
    assert refused == b"Votre adresse est bannie de ce chat pour encore 1 minute\n"


def test_a_banned_user_is_kicked_and_its_address_refused_until_expiry(
    events: list[dict[str, Any]],
) -> None:
    chat, _mod = chat_with_operators(alice="pw")
    alice = op(chat, "alice", "pw")
    bob = chat.user("bob", "203.0.113.9")
    alice.take()
    alice.send(b"/ban bob 10 insultes\n")
    assert bob.take() == (
        notice(wire.BANNED_YOU.format("alice", "10 minutes") + " : insultes") + wire.BYE
    )
    assert alice.take() == (
        chat.stamp()
        + "-Déconnection de bob (banni par alice : insultes)\n".encode()
        + notice(wire.BAN_DONE.format("203.0.113.9", "10 minutes"))
    )
    again = chat.connect("203.0.113.9")
    assert again.take() == notice(wire.BANNED.format("10 minutes"))
    assert not again.connected
    chat.advance(9 * 60 + 1)
    late = chat.connect("203.0.113.9")
    assert late.take() == notice(wire.BANNED.format("1 minute"))
    chat.advance(60)
    assert chat.connect("203.0.113.9").take() == wire.WELCOME
    [ban] = [e for e in events if e.get("act") == "ban"]
    assert (ban["operator"], ban["target"], ban["target_address"]) == (
        "alice",
        "bob",
        "203.0.113.9",
    )
    assert (ban["minutes"], ban["reason"]) == (10, "insultes")
    refused = [e for e in events if e.get("act") == "refused"]
    assert [e["address"] for e in refused] == ["203.0.113.9"] * 2


def test_a_ban_lasts_an_hour_by_default() -> None:
    chat, _mod = chat_with_operators(alice="pw")
    alice = op(chat, "alice", "pw")
    chat.user("bob", "203.0.113.9")
    alice.send(b"/ban bob\n")
    assert notice(wire.BAN_DONE.format("203.0.113.9", "60 minutes")) in alice.take()
    assert moderation.DEFAULT_BAN_MINUTES == 60


def test_an_ipv6_ban_covers_its_whole_64() -> None:
    chat, _mod = chat_with_operators(alice="pw")
    alice = op(chat, "alice", "pw")
    bob = chat.user("bob", "2001:db8:1:2::5")
    alice.take()
    alice.send(b"/ban 2001:db8:1:2::1 30\n")  # an address of the /64
    assert bob.take().endswith(wire.BYE)
    assert alice.take() == (
        notice(wire.BAN_DONE.format("2001:db8:1:2::/64", "30 minutes"))
        + chat.stamp()
        + "-Déconnection de bob (banni par alice)\n".encode()
    )
    assert chat.connect("2001:db8:1:2:ffff::1").take() == notice(
        wire.BANNED.format("30 minutes")
    )
    assert chat.connect("2001:db8:1:3::1").take() == wire.WELCOME


def test_ban_addresses_are_sources() -> None:
    assert ban_address("192.0.2.7") == "192.0.2.7"
    assert ban_address("192.0.2.7/32") == "192.0.2.7"
    assert ban_address("2001:db8::1") == "2001:db8::/64"
    assert ban_address("2001:db8::/64") == "2001:db8::/64"
    assert ban_address("::ffff:192.0.2.7") == "192.0.2.7"
    assert ban_address("192.0.2.0/24") is None  # a network: not one address
    assert ban_address("bob") is None


def test_bad_ban_arguments_get_the_usage() -> None:
    chat, _mod = chat_with_operators(alice="pw")
    alice = op(chat, "alice", "pw")
    usage = notice(wire.BAN_USAGE.format(moderation.MAX_BAN_MINUTES))
    # minutes mistyped: never a ban of 60 minutes with them as the reason
    mistyped = ["bob -5", "bob 1.5", "bob 10min", "bob +3 spam"]
    mistyped += ["bob \u00b2", "bob \uff15"]  # superscript 2, fullwidth 5
    for argument in ["", "bob 0", "bob 99999999", *mistyped]:
        alice.send(f"/ban {argument}\n".encode())
        assert alice.take() == usage
    alice.send(b"/ban zoe\n")
    assert alice.take() == notice(wire.NO_SUCH_USER.format("zoe"))
    alice.send(b"/unban bob\n")
    assert alice.take() == notice(wire.UNBAN_USAGE)
    alice.send(b"/unban 192.0.2.99\n")
    assert alice.take() == notice(wire.NOT_BANNED.format("192.0.2.99"))


def test_bans_are_listed_with_their_expiry_and_lifted_by_unban(
    events: list[dict[str, Any]],
) -> None:
    chat, _mod = chat_with_operators(alice="pw")
    alice = op(chat, "alice", "pw")
    alice.send(b"/bans\n")
    assert alice.take() == notice(wire.NO_BANS)
    alice.send(b"/ban 198.51.100.1 5 spam\n")
    alice.send(b"/ban 198.51.100.2 2\n")
    alice.take()
    alice.send(b"/bans\n")
    until = chat.clock.seconds()
    first = wire.ban_entry("198.51.100.2", _utc(until + 120), 2, "alice", "")
    second = wire.ban_entry("198.51.100.1", _utc(until + 300), 5, "alice", "spam")
    assert alice.take() == (
        notice(wire.BANS_TITLE.format(2)) + notice(first) + notice(second)
    )
    alice.send(b"/unban 198.51.100.1\n")
    assert alice.take() == notice(wire.UNBAN_DONE.format("198.51.100.1"))
    assert chat.connect("198.51.100.1").take() == wire.WELCOME
    [unban] = [e for e in events if e.get("act") == "unban"]
    assert (unban["operator"], unban["target_address"]) == ("alice", "198.51.100.1")


def _utc(when: float) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(when))


def test_banning_an_address_kicks_whoever_is_connected_from_it() -> None:
    chat, _mod = chat_with_operators(alice="pw")
    alice = op(chat, "alice", "pw")
    bob = chat.user("bob", "203.0.113.9")
    carol = chat.user("carol", "203.0.113.9")
    alice.send(b"/ban 203.0.113.9\n")
    assert not bob.connected and not carol.connected
    assert alice.connected


def test_bans_survive_a_restart_in_their_file(tmp_path: Path) -> None:
    chat, _mod = chat_with_operators(tmp_path, alice="pw")
    alice = op(chat, "alice", "pw")
    alice.send(b"/ban 198.51.100.1 5 spam\n")
    path = tmp_path / "bans.json"
    saved = json.loads(path.read_text())
    assert saved == {
        "bans": [
            {
                "address": "198.51.100.1",
                "until": chat.clock.seconds() + 300,
                "by": "alice",
                "reason": "spam",
            }
        ]
    }
    assert [p.name for p in tmp_path.iterdir()] == ["bans.json"]  # no temp left
    restarted = Bans(chat.clock, str(path))
    assert [b.address for b in restarted.active()] == ["198.51.100.1"]
    chat.advance(300)
    assert Bans(chat.clock, str(path)).active() == []  # expired meanwhile


def test_a_ban_s_rename_is_synced_to_the_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bans file is written, synced, renamed, and then its directory is
    synced: a power cut after a ban is answered keeps the new file."""
    done: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        done.append("sync " + os.path.realpath(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    def replace(source: str, target: str) -> None:
        done.append("rename")
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    store = Bans(task.Clock(), str(tmp_path / "bans.json"))
    store.add(Ban("198.51.100.1", 300.0, "alice", "spam"))
    assert done[1:] == ["rename", f"sync {tmp_path.resolve()}"]
    assert done[0].startswith(f"sync {tmp_path.resolve()}/.bans-")


def failing_write(monkeypatch: pytest.MonkeyPatch, where: str, code: int) -> None:
    """Make writing the bans file fail: at "open" (the temporary file
    cannot be made: a read-only directory, as under the systemd unit's
    ProtectSystem=strict) or at "flush" (the disk fills once it is open)."""

    def fail(*args: object, **kwargs: object) -> Any:
        raise OSError(code, os.strerror(code))

    if where == "open":
        monkeypatch.setattr(tempfile, "mkstemp", fail)
    else:
        monkeypatch.setattr(os, "fsync", fail)


WRITES_THAT_FAIL = [("open", errno.EROFS), ("flush", errno.ENOSPC)]


@pytest.mark.parametrize(("where", "code"), WRITES_THAT_FAIL)
@pytest.mark.parametrize("target", ["bob", "203.0.113.9"])
def test_a_ban_that_cannot_be_written_is_refused_and_changes_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    events: list[dict[str, Any]],
    where: str,
    code: int,
    target: str,
) -> None:
    """Alone, the bans file is the truth: a ban holds once written there,
    or is refused with one line; never enforced and listed but lost at the
    next start, nor answered as made while the write failed."""
    chat, mod = chat_with_operators(tmp_path, alice="pw")
    alice = op(chat, "alice", "pw")
    alice.send(b"/ban 198.51.100.1 5\n")  # one ban on disk already
    path = tmp_path / "bans.json"
    before = path.read_text()
    bob = chat.user("bob", "203.0.113.9")
    alice.take()
    failing_write(monkeypatch, where, code)
    alice.send(f"/ban {target} 5 spam\n".encode())
    assert alice.take() == notice(wire.BANS_NOT_SAVED)
    assert bob.connected and bob.take() == b""  # not kicked
    assert chat.connect("203.0.113.9").take() == wire.WELCOME  # not enforced
    assert [b.address for b in mod.bans.active()] == ["198.51.100.1"]
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["bans.json"]  # no temp left
    [failed] = [e for e in events if e.get("act") == "ban-failed"]
    assert (failed["operator"], failed["address"]) == ("alice", "203.0.113.9")
    assert failed["why"] == os.strerror(code)
    assert [e for e in events if e.get("act") == "ban"] == [
        e for e in events if e.get("address") == "198.51.100.1"
    ]
    monkeypatch.undo()  # the disk is writable again: the same ban is made
    alice.send(f"/ban {target} 5 spam\n".encode())
    assert not bob.connected
    assert notice(wire.BAN_DONE.format("203.0.113.9", "5 minutes")) in alice.take()
    assert "203.0.113.9" in path.read_text()


@pytest.mark.parametrize(("where", "code"), WRITES_THAT_FAIL)
def test_an_unban_that_cannot_be_written_is_refused_and_the_ban_holds(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    events: list[dict[str, Any]],
    where: str,
    code: int,
) -> None:
    chat, mod = chat_with_operators(tmp_path, alice="pw")
    alice = op(chat, "alice", "pw")
    alice.send(b"/ban 198.51.100.1 5\n")
    alice.take()
    failing_write(monkeypatch, where, code)
    alice.send(b"/unban 198.51.100.1\n")
    assert alice.take() == notice(wire.BANS_NOT_SAVED)
    assert [b.address for b in mod.bans.active()] == ["198.51.100.1"]
    assert chat.connect("198.51.100.1").take() == notice(
        wire.BANNED.format("5 minutes")
    )
    assert "198.51.100.1" in (tmp_path / "bans.json").read_text()
    assert [e["act"] for e in events if e.get("act", "").startswith("unban")] == [
        "unban-failed"
    ]


def test_a_ban_expiring_is_forgotten_even_if_the_file_cannot_be_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An expired ban left in the file is skipped when the file is read."""
    chat, mod = chat_with_operators(tmp_path, alice="pw")
    alice = op(chat, "alice", "pw")
    alice.send(b"/ban 198.51.100.1 5\n")
    failing_write(monkeypatch, "open", errno.EROFS)
    chat.advance(300)
    assert chat.connect("198.51.100.1").take() == wire.WELCOME
    assert mod.bans.active() == []
    assert Bans(chat.clock, str(tmp_path / "bans.json")).active() == []


def test_a_cluster_s_ban_holds_on_a_node_whose_file_cannot_be_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a cluster Redis has the truth, the file is the node's copy."""
    chat, mod = chat_with_operators(tmp_path, alice="pw")
    mod.cluster = cluster = FakeKicker(set())
    alice = op(chat, "alice", "pw")
    failing_write(monkeypatch, "open", errno.EROFS)
    alice.send(b"/ban 198.51.100.1 5\n")
    assert alice.take() == notice(wire.BAN_DONE.format("198.51.100.1", "5 minutes"))
    assert [b.address for b in cluster.shared] == ["198.51.100.1"]
    mod.heard_ban(Ban("198.51.100.2", chat.clock.seconds() + 60, "zoe", ""))
    assert [b.address for b in mod.bans.active()] == ["198.51.100.2", "198.51.100.1"]


GOOD_ENTRY = {"address": "192.0.2.1", "until": 4e9, "by": "alice", "reason": ""}


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("{not json", "is not a bans file (Expecting property name"),
        ("[]", 'is not a bans file: it must be {"bans": [...]}'),
        ('{"bans": {}}', 'is not a bans file: it must be {"bans": [...]}'),
        ({"bans": [GOOD_ENTRY, "192.0.2.2"]}, "entry 2: an entry must have"),
        (
            {"bans": [{"address": "192.0.2.2"}]},
            'entry 1: an entry must have the fields "address", "until"',
        ),
        (
            {"bans": [{**GOOD_ENTRY, "until": "soon"}]},
            'entry 1: "until" must be a number: when it ends, in seconds '
            "since the epoch, not 'soon'",
        ),
        (
            {"bans": [{**GOOD_ENTRY, "until": True}]},
            'entry 1: "until" must be a number',
        ),
        (
            {"bans": [GOOD_ENTRY, {**GOOD_ENTRY, "by": 7}]},
            'entry 2: "by" must be a string',
        ),
        (
            {"bans": [{**GOOD_ENTRY, "address": "nowhere"}]},
            'entry 1: "address" must be an IPv4 address or an IPv6 /64',
        ),
        (
            '{"bans": [{"address": "192.0.2.1", "until": Infinity, '
            '"by": "", "reason": ""}]}',
            'entry 1: "until" must be a finite number',
        ),
    ],
)
def test_a_bans_file_of_the_wrong_shape_or_type_is_one_sentence(
    tmp_path: Path, content: str | dict[str, Any], says: str
) -> None:
    """The sentence names the file and the entry, and says what to do;
    neither a traceback nor Python's words (a field of the wrong type
    stopped the start with a TypeError)."""
    path = tmp_path / "bans.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(ValueError) as e:
        Bans(Chat().clock, str(path))
    sentence = str(e.value)
    assert sentence.startswith(f"{path}")
    assert says in sentence
    assert sentence.endswith(("delete the entry.", "start with no bans."))
    assert sentence.count("\n") == 0


def test_a_bans_file_written_by_hand_holds_its_addresses_as_bans_do(
    tmp_path: Path,
) -> None:
    path = tmp_path / "bans.json"
    entries = [
        {**GOOD_ENTRY, "address": "2001:DB8::1", "until": 4_000_000_000},
        {**GOOD_ENTRY, "address": "192.0.2.9", "until": 1},  # long expired
    ]
    path.write_text(json.dumps({"bans": entries}))
    [ban] = Bans(Chat().clock, str(path)).active()
    assert (ban.address, ban.until) == ("2001:db8::/64", 4e9)


# Reloading the operators file


def test_a_reload_replaces_the_operators_and_a_broken_file_keeps_them(
    tmp_path: Path, events: list[dict[str, Any]]
) -> None:
    _chat, mod = chat_with_operators(alice="pw")
    path = tmp_path / "ops"
    path.write_text(f"bob:{make_hash('bpw', **CHEAP)}\n")
    assert mod.reload(str(path))
    assert set(mod.op_check.operators) == {"bob"}
    path.write_text("garbage\n")
    assert not mod.reload(str(path))
    assert set(mod.op_check.operators) == {"bob"}
    why = [e["why"] for e in events if e.get("act") == "reload" and "why" in e]
    assert why == [f"{path}, line 1: 'garbage' is not NICK:HASH with a valid nickname."]


def test_a_reload_does_not_end_the_operators_of_the_sessions() -> None:
    """Status belongs to the session: a reload changes who can /op next."""
    chat, mod = chat_with_operators(alice="pw")
    alice = op(chat, "alice", "pw")
    mod.op_check.operators = {}
    bob = chat.user("bob", "192.0.2.2")
    alice.take()
    alice.send(b"/kick bob\n")
    assert not bob.connected


# From another node (cluster mode)


class FakeKicker:
    """A cluster node that Redis answers (or not: C{accepting}, C{failing})."""

    def __init__(self, holds: set[str]) -> None:
        self.holds = holds
        self.sent: list[Kick] = []
        self.shared: list[Any] = []
        self.answers: list[tuple[str, str, bytes]] = []
        self.accepting = True
        self.failing = False  # Redis goes away as a change is shared

    def _share(self, what: Any) -> Deferred[None]:
        from twisted.internet.defer import fail, succeed

        from chatproto.registry import ClusterUnreachable

        if self.failing:
            return fail(ClusterUnreachable("the cluster cannot be reached"))
        self.shared.append(what)
        return succeed(None)

    def share_ban(self, ban: Any) -> Deferred[None]:
        return self._share(ban)

    def share_unban(self, address: str) -> Deferred[None]:
        return self._share(address)

    def kick(self, kick: Kick) -> Any:
        from twisted.internet.defer import succeed

        self.sent.append(kick)
        return succeed(kick.target in self.holds)

    def whisper(self, target: str, line: bytes) -> Any:
        from twisted.internet.defer import succeed

        return succeed(False)

    def answer(self, operator: str, target: str, line: bytes) -> Any:
        from twisted.internet.defer import succeed

        self.answers.append((operator, target, line))
        return succeed(False)


class Link:
    """One node's cluster, in memory: kicks, private lines and bans go to
    the other node's chat as the Redis channels carry them (cluster.py)."""

    def __init__(self, peer: Chat) -> None:
        self.peer = peer

    def kick(self, kick: Kick) -> Any:
        from twisted.internet.defer import succeed

        if kick.target not in self.peer.factory.sessions:
            return succeed(False)
        self.peer.factory.heard_kick(kick)
        return succeed(True)

    def whisper(self, target: str, line: bytes) -> Any:
        from twisted.internet.defer import succeed

        return succeed(self.peer.factory.deliver_private(target, line))

    def answer(self, operator: str, target: str, line: bytes) -> Any:
        from twisted.internet.defer import succeed

        if nick_key(operator) not in self.peer.factory.sessions:
            return succeed(False)
        self.peer.factory.moderation.heard_answer(operator, target, line)
        return succeed(True)

    accepting = True

    def share_ban(self, ban: Any) -> Deferred[None]:
        from twisted.internet.defer import succeed

        self.peer.factory.moderation.heard_ban(ban)
        return succeed(None)

    def share_unban(self, address: str) -> Deferred[None]:
        from twisted.internet.defer import succeed

        self.peer.factory.moderation.heard_unban(address)
        return succeed(None)


def two_nodes() -> tuple[Chat, Chat]:
    """Two chats linked as two nodes of one cluster; alice may /op on both."""
    one, _ = chat_with_operators(alice="pw")
    two, _ = chat_with_operators(alice="pw")
    one.factory.moderation.cluster = Link(two)
    two.factory.moderation.cluster = Link(one)
    return one, two


def test_a_ban_by_nickname_reaches_a_user_of_another_node(
    events: list[dict[str, Any]],
) -> None:
    one, two = two_nodes()
    alice = op(one, "alice", "pw")
    bob = two.user("bob", "203.0.113.9")
    carol = two.user("carol", "192.0.2.3")
    carol.take()
    alice.send(b"/ban BOB 10 spam\n")
    assert bob.take() == (
        notice(wire.BANNED_YOU.format("alice", "10 minutes") + " : spam") + wire.BYE
    )
    assert not bob.connected
    assert carol.take() == (
        two.stamp() + "-Déconnection de bob (banni par alice : spam)\n".encode()
    )
    # the answer comes from bob's node, which knew its address
    assert alice.take() == notice(wire.BAN_DONE.format("203.0.113.9", "10 minutes"))
    for node in (one, two):
        assert node.connect("203.0.113.9").take() == notice(
            wire.BANNED.format("10 minutes")
        )
    [ban] = [e for e in events if e.get("act") == "ban"]
    assert (ban["operator"], ban["operator_address"]) == ("alice", "192.0.2.1")
    assert (ban["target"], ban["target_address"]) == ("bob", "203.0.113.9")
    [kick] = [e for e in events if e.get("act") == "kick"]
    assert (kick["target"], kick["minutes"]) == ("bob", 10)


def test_a_ban_of_a_nickname_nobody_holds_is_the_usual_error() -> None:
    one, _two = two_nodes()
    alice = op(one, "alice", "pw")
    alice.send(b"/ban zoe 10\n")
    assert alice.take() == notice(wire.NO_SUCH_USER.format("zoe"))
    assert one.factory.moderation.bans.active() == []


def test_a_ban_heard_for_a_user_gone_meanwhile_answers_the_operator() -> None:
    one, two = two_nodes()
    alice = op(one, "alice", "pw")
    two.factory.heard_kick(Kick("bob", 10, "alice", "192.0.2.1", "spam"))
    assert alice.take() == notice(wire.NO_SUCH_USER.format("bob"))
    assert two.factory.moderation.bans.active() == []


def test_a_ban_another_node_never_answers_is_said_unknown_after_the_wait(
    events: list[dict[str, Any]],
) -> None:
    """bob's node heard the ban, then died before it answered."""
    chat, mod = chat_with_operators(alice="pw")
    mod.cluster = FakeKicker({"bob"})
    alice = op(chat, "alice", "pw")
    alice.send(b"/ban Bob 10 spam\n")
    chat.advance(moderation.ANSWER_WAIT - 0.1)
    assert alice.take() == b""
    chat.advance(0.1)
    assert alice.take() == notice(wire.BAN_UNANSWERED.format("Bob"))
    assert chat.clock.getDelayedCalls() == []
    [event] = [e for e in events if e.get("act") == "ban-unanswered"]
    assert (event["operator"], event["target"]) == ("alice", "Bob")
    # a late answer still says what happened
    done = notice(wire.BAN_DONE.format("203.0.113.9", "10 minutes"))
    mod.heard_answer("alice", "bob", done)
    assert alice.take() == done


@pytest.mark.parametrize(
    "line",
    [
        notice(wire.BAN_DONE.format("203.0.113.9", "10 minutes")),
        notice(wire.NO_SUCH_USER.format("bob")),
        notice(wire.BAN_UNAVAILABLE),
    ],
)
def test_the_answer_of_the_user_s_node_ends_the_wait(line: bytes) -> None:
    chat, mod = chat_with_operators(alice="pw")
    mod.cluster = FakeKicker({"bob"})
    alice = op(chat, "alice", "pw")
    alice.send(b"/ban bob 10\n")
    mod.heard_answer("ALICE", "bob", line)
    assert alice.take() == line
    assert chat.clock.getDelayedCalls() == []
    chat.advance(moderation.ANSWER_WAIT)
    assert alice.take() == b""


def test_the_answer_through_the_cluster_ends_the_wait() -> None:
    one, two = two_nodes()
    alice = op(one, "alice", "pw")
    two.user("bob", "203.0.113.9")
    alice.send(b"/ban bob 10\n")
    assert alice.take() == notice(wire.BAN_DONE.format("203.0.113.9", "10 minutes"))
    assert one.clock.getDelayedCalls() == []
    one.advance(moderation.ANSWER_WAIT)
    assert alice.take() == b""


def test_each_of_two_bans_of_one_user_waits_for_its_own_answer() -> None:
    chat, mod = chat_with_operators(alice="pw")
    mod.cluster = FakeKicker({"bob"})
    alice = op(chat, "alice", "pw")
    alice.send(b"/ban bob 10\n")
    chat.advance(1)
    alice.send(b"/ban bob 20\n")
    done = notice(wire.BAN_DONE.format("203.0.113.9", "10 minutes"))
    mod.heard_answer("alice", "bob", done)
    assert alice.take() == done
    chat.advance(moderation.ANSWER_WAIT)
    assert alice.take() == notice(wire.BAN_UNANSWERED.format("bob"))
    assert chat.clock.getDelayedCalls() == []


def test_an_operator_who_leaves_leaves_no_wait_behind() -> None:
    chat, mod = chat_with_operators(alice="pw")
    mod.cluster = FakeKicker({"bob"})
    alice = op(chat, "alice", "pw")
    alice.send(b"/ban bob 10\n")
    assert len(chat.clock.getDelayedCalls()) == 1
    alice.send(b"/quit\n")
    assert not alice.connected
    chat.advance(0)  # the end of the turn: its departure logged
    assert chat.clock.getDelayedCalls() == []


def test_an_answer_for_a_user_who_is_no_operator_is_not_delivered() -> None:
    """The operator left, and someone else took its nickname."""
    chat, mod = chat_with_operators(alice="pw")
    impostor = chat.user("alice")
    mod.heard_answer(
        "alice", "bob", notice(wire.BAN_DONE.format("1.2.3.4", "10 minutes"))
    )
    assert impostor.take() == b""


def test_a_ban_no_node_takes_or_that_cannot_be_sent_waits_for_nothing() -> None:
    chat, mod = chat_with_operators(alice="pw")
    mod.cluster = kicker = FakeKicker(set())
    alice = op(chat, "alice", "pw")
    alice.send(b"/ban zoe 10\n")
    assert alice.take() == notice(wire.NO_SUCH_USER.format("zoe"))
    assert chat.clock.getDelayedCalls() == []
    kicker.accepting = True

    def unreachable(kick: Kick) -> Any:
        from twisted.internet.defer import fail

        from chatproto.registry import ClusterUnreachable

        return fail(ClusterUnreachable("the cluster cannot be reached"))

    kicker.kick = unreachable  # type: ignore[method-assign]
    alice.send(b"/ban zoe 10\n")
    assert alice.take() == notice(wire.KICK_UNAVAILABLE.format("zoe"))
    assert chat.clock.getDelayedCalls() == []
    chat.advance(moderation.ANSWER_WAIT)
    assert alice.take() == b""


def test_a_kick_heard_from_another_node_answers_nobody() -> None:
    """A kick's answer is the operator's node's (whether the node heard)."""
    one, two = two_nodes()
    alice = op(one, "alice", "pw")
    two.user("bob", "203.0.113.9")
    alice.send(b"/kick bob\n")
    assert alice.take() == notice(wire.KICK_DONE.format("bob"))
    assert two.factory.moderation.bans.active() == []


def test_a_user_of_another_node_is_kicked_through_the_kicker() -> None:
    chat, mod = chat_with_operators(alice="pw")
    mod.cluster = kicker = FakeKicker({"zoe"})
    alice = op(chat, "alice", "pw")
    alice.send(b"/kick zoe hors sujet\n")
    assert alice.take() == notice(wire.KICK_DONE.format("zoe"))
    assert kicker.sent == [Kick("zoe", 0, "alice", "192.0.2.1", "hors sujet")]
    alice.send(b"/kick yann\n")
    assert alice.take() == notice(wire.NO_SUCH_USER.format("yann"))


def test_a_kick_heard_from_another_node_expels_the_user_here(
    events: list[dict[str, Any]],
) -> None:
    chat, _mod = chat_with_operators()
    bob = chat.user("bob")
    carol = chat.user("carol", "192.0.2.3")
    carol.take()
    chat.factory.heard_kick(Kick("bob", 0, "alice", "198.51.100.4", "hors sujet"))
    assert bob.take() == (
        notice(wire.KICKED_YOU.format("alice") + " : hors sujet") + wire.BYE
    )
    assert carol.take() == (
        chat.stamp()
        + "-Déconnection de bob (expulsé par alice : hors sujet)\n".encode()
    )
    chat.factory.heard_kick(
        Kick("nobody", 0, "alice", None, "x")
    )  # gone meanwhile: nothing
    [event] = [e for e in events if e.get("act") == "kick"]
    assert (event["operator"], event["operator_address"], event["target"]) == (
        "alice",
        "198.51.100.4",
        "bob",
    )


# The twistd options


def test_the_options_read_the_operators_and_put_the_bans_beside_them(
    tmp_path: Path,
) -> None:
    from twisted.application.service import MultiService

    from chatproto.tap import Options, makeService

    path = tmp_path / "ops"
    stored = make_hash("pw", **CHEAP)
    path.write_text(f"Alice:{stored}\n")
    options = Options()
    options.parseOptions(["--port=tcp:0", "--operators", str(path)])
    assert options["operator_table"] == {"alice": stored}
    assert options["bans"] == f"{path}.bans"
    from twisted.internet.testing import MemoryReactorClock

    top = cast(MultiService, makeService(options, reactor=MemoryReactorClock()))
    [factory] = {s.factory for s in top if hasattr(s, "factory")}
    assert factory.moderation.op_check.operators == {"alice": stored}
    assert factory.moderation.bans.path == f"{path}.bans"


def test_a_damaged_bans_file_is_an_option_mistake(tmp_path: Path) -> None:
    from twisted.python.usage import UsageError

    from chatproto.tap import Options

    bans = tmp_path / "bans"
    bans.write_text('{"bans": [{"address": "192.0.2.1", "until": "x"}]}')
    with pytest.raises(UsageError) as e:
        Options().parseOptions(["--bans", str(bans)])
    assert str(e.value) == (
        f'--bans: {bans}, entry 1: an entry must have the fields "address", '
        '"until", "by", "reason"; fix it, or delete the entry.'
    )
    bans.write_text(json.dumps({"bans": [{**GOOD_ENTRY, "until": "x"}]}))
    with pytest.raises(UsageError, match='entry 1: "until" must be a number'):
        Options().parseOptions(["--bans", str(bans)])


@pytest.mark.parametrize(
    "name", ["operators.txt", "operators.txt.bans", "ops.bans", ".bans-k2j.tmp"]
)
def test_the_operators_and_bans_files_of_a_checkout_are_not_committed(
    name: str,
) -> None:
    """The README makes operators.txt (password hashes) in the checkout,
    and the server its bans beside it (the same name plus .bans)."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    result = subprocess.run(
        ["git", "-C", str(ROOT), "check-ignore", "-q", name],
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 0, f"{name} is not ignored by git"


@pytest.fixture
def tap_events(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The log events of the twistd plugin (chatproto/tap.py)."""
    from chatproto import tap

    seen: list[dict[str, Any]] = []
    monkeypatch.setattr(tap, "log", Logger(observer=cast(ILogObserver, seen.append)))
    return seen


def test_sighup_without_operators_reloads_nothing_and_stops_nothing(
    tap_events: list[dict[str, Any]],
) -> None:
    """SIGHUP's default ends the process (no goodbye, no departure), and
    systemctl reload sends it: the server always handles it."""
    import signal

    from twisted.application.service import MultiService
    from twisted.internet.testing import MemoryReactorClock

    from chatproto.tap import Options, makeService

    options = Options()
    options.parseOptions(["--port=tcp:0"])
    top = cast(MultiService, makeService(options, reactor=MemoryReactorClock()))
    before = signal.getsignal(signal.SIGHUP)
    top.startService()
    try:
        handler = signal.getsignal(signal.SIGHUP)
        assert callable(handler)
        handler(signal.SIGHUP, None)
    finally:
        top.stopService()
    assert signal.getsignal(signal.SIGHUP) == before
    [event] = [e for e in tap_events if e.get("act") == "reload"]
    assert event["log_format"] == "SIGHUP: nothing to reload (no --operators)"


def test_bans_without_operators_are_said_at_start(
    tmp_path: Path, tap_events: list[dict[str, Any]]
) -> None:
    from twisted.internet.testing import MemoryReactorClock

    from chatproto.tap import Options, makeService

    bans = tmp_path / "bans.json"
    options = Options()
    options.parseOptions(["--port=tcp:0", "--bans", str(bans)])
    makeService(options, reactor=MemoryReactorClock())
    [warning] = [e for e in tap_events if "--bans" in e["log_format"]]
    assert warning["path"] == str(bans)
    assert warning["log_level"].name == "warn"
    assert "nobody can ban or lift a ban" in warning["log_format"]


def test_our_client_reads_the_nickname_of_a_kicked_departure() -> None:
    from chatproto.client.servers import DEPARTURE

    for line in (
        "[1.2.3]-Déconnection de bob (expulsé par alice : spam (beaucoup))",
        "[1.2.3]-Déconnection de bob (banni par alice)",
        "[1.2.3]-Déconnection de bob",
    ):
        match = DEPARTURE.fullmatch(line)
        assert match is not None and match["nick"] == "bob"
    ruby = DEPARTURE.fullmatch("[1.2.3]-Déconnection de un nom (libre)")
    assert ruby is not None and ruby["nick"] == "un nom (libre)"


def test_a_ban_heard_from_another_node_holds_here_and_kicks_from_there() -> None:
    chat, mod = chat_with_operators()
    bob = chat.user("bob", "203.0.113.9")
    carol = chat.user("carol", "192.0.2.3")
    until = chat.clock.seconds() + 600
    mod.heard_ban(Ban("203.0.113.9", until, "alice", "spam"))
    assert bob.take() == (
        notice(wire.BANNED_YOU.format("alice", "10 minutes") + " : spam") + wire.BYE
    )
    assert carol.take() == (
        chat.stamp() + "-Déconnection de bob (banni par alice : spam)\n".encode()
    )
    assert chat.connect("203.0.113.9").take() == notice(
        wire.BANNED.format("10 minutes")
    )
    mod.heard_unban("203.0.113.9")
    assert chat.connect("203.0.113.9").take() == wire.WELCOME
    mod.heard_ban(Ban("203.0.113.8", chat.clock.seconds(), "alice", ""))  # expired
    assert mod.bans.active() == []


def test_the_cluster_s_bans_replace_the_node_s_copy_and_kick_from_new_ones() -> None:
    """Read whole as the node joins or comes back, Redis's bans are the
    truth: one lifted elsewhere meanwhile goes, one made meanwhile holds
    here and kicks whoever is connected from its address."""
    chat, mod = chat_with_operators(alice="pw")
    mod.cluster = cluster = FakeKicker(set())
    bob = chat.user("bob", "198.51.100.2")
    now = chat.clock.seconds()
    lifted = Ban("198.51.100.1", now + 60, "alice", "")
    mod.bans.add(lifted)
    theirs = Ban("198.51.100.2", now + 120, "zoe", "x")
    mod.reading_bans()
    mod.heard_bans([theirs, Ban("198.51.100.3", now - 1, "zoe", "")])
    assert mod.bans.active() == [theirs]
    assert cluster.shared == []  # nothing of this node's goes back to Redis
    assert (
        bob.take()
        == notice(wire.BANNED_YOU.format("zoe", "2 minutes") + " : x") + wire.BYE
    )
    assert chat.connect("198.51.100.1").take() == wire.WELCOME


def test_changes_made_while_the_bans_are_read_hold_over_the_answer() -> None:
    chat, mod = chat_with_operators(alice="pw")
    mod.cluster = FakeKicker(set())
    alice = op(chat, "alice", "pw")
    now = chat.clock.seconds()
    old = Ban("198.51.100.9", now + 600, "zoe", "")
    mod.reading_bans()  # the answer is on its way
    alice.send(b"/ban 198.51.100.1 5\n")  # made (in Redis) after the read
    mod.heard_unban("198.51.100.9")  # lifted elsewhere after the read
    mod.heard_bans([old])
    assert [b.address for b in mod.bans.active()] == ["198.51.100.1"]
    mod.heard_bans([])  # a later read, with nothing in flight: the truth
    assert mod.bans.active() == []


def test_a_ban_sent_to_redis_after_the_read_holds_over_its_answer() -> None:
    """One connection to Redis answers in order: the read's answer comes
    before the ban's, and must not lift it."""
    chat, mod = chat_with_operators(alice="pw")
    mod.cluster = cluster = FakeKicker(set())
    sent: list[Deferred[None]] = []

    def share_later(what: Any) -> Deferred[None]:
        sent.append(Deferred())
        return sent[-1]

    cluster.share_ban = cluster.share_unban = share_later  # type: ignore[method-assign,assignment]
    alice = op(chat, "alice", "pw")
    mod.reading_bans()
    alice.send(b"/ban 198.51.100.1 5\n")
    mod.heard_bans([])  # read before the ban reached Redis
    sent.pop().callback(None)
    assert alice.take() == notice(wire.BAN_DONE.format("198.51.100.1", "5 minutes"))
    assert [b.address for b in mod.bans.active()] == ["198.51.100.1"]
    [ban] = mod.bans.active()
    mod.reading_bans()
    alice.send(b"/unban 198.51.100.1\n")
    mod.heard_bans([ban])  # read before the unban reached Redis
    sent.pop().callback(None)
    assert alice.take() == notice(wire.UNBAN_DONE.format("198.51.100.1"))
    assert mod.bans.active() == []


def test_a_ban_or_an_unban_while_cut_off_is_refused_and_changes_nothing() -> None:
    chat, mod = chat_with_operators(alice="pw")
    mod.cluster = cluster = FakeKicker(set())
    alice = op(chat, "alice", "pw")
    bob = chat.user("bob", "198.51.100.2")
    alice.take()
    held = Ban("198.51.100.9", chat.clock.seconds() + 600, "zoe", "")
    mod.bans.add(held)
    cluster.accepting = False  # Redis is away
    for command in (b"/ban 198.51.100.2 5\n", b"/ban bob\n"):
        alice.send(command)
        assert alice.take() == notice(wire.BAN_UNAVAILABLE)
    alice.send(b"/unban 198.51.100.9\n")
    assert alice.take() == notice(wire.UNBAN_UNAVAILABLE)
    alice.send(b"/ban bob 0\n")  # a mistake is still answered as one
    assert alice.take() == notice(wire.BAN_USAGE.format(MAX_BAN_MINUTES))
    assert bob.connected and bob.take() == b""
    assert mod.bans.active() == [held]
    assert cluster.shared == []


def test_a_change_that_does_not_reach_redis_is_undone_and_the_operator_told(
    events: list[dict[str, Any]],
) -> None:
    chat, mod = chat_with_operators(alice="pw")
    mod.cluster = cluster = FakeKicker(set())
    alice = op(chat, "alice", "pw")
    held = Ban("198.51.100.9", chat.clock.seconds() + 600, "zoe", "")
    mod.bans.add(held)
    cluster.failing = True  # accepting, but Redis goes away as it is asked
    alice.send(b"/ban 198.51.100.1 5\n")
    assert alice.take() == notice(wire.BAN_UNAVAILABLE)
    alice.send(b"/unban 198.51.100.9\n")
    assert alice.take() == notice(wire.UNBAN_UNAVAILABLE)
    assert mod.bans.active() == [held]
    assert [e["act"] for e in events if e["act"].endswith("-failed")] == [
        "ban-failed",
        "unban-failed",
    ]
    assert not [e for e in events if e.get("act") in ("ban", "unban")]


def test_a_ban_and_an_unban_are_shared_with_the_cluster() -> None:
    chat, mod = chat_with_operators(alice="pw")
    mod.cluster = cluster = FakeKicker(set())
    alice = op(chat, "alice", "pw")
    alice.send(b"/ban 198.51.100.1 5\n/unban 198.51.100.1\n")
    [ban, lifted] = cluster.shared
    assert (ban.address, ban.until, lifted) == (
        "198.51.100.1",
        chat.clock.seconds() + 300,
        "198.51.100.1",
    )


def test_the_hash_command_refuses_a_password_that_op_could_not_send() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert operators_main(["hash"], io.StringIO(" pw \n"), out, err) == 1
    assert err.getvalue() == "A password cannot start or end with a space.\n"


def test_banning_a_user_without_an_address_kicks_it_and_says_so() -> None:
    chat, _ = chat_with_operators(alice="pw")
    alice = op(chat, "alice", "pw")
    bob, connection = chat.session(None)  # type: ignore[arg-type]
    bob.line_received(b"/pseudo bob")
    alice.take()
    alice.send(b"/ban bob\n")
    assert connection.closed
    assert alice.take().endswith(notice(wire.KICK_DONE.format("bob")))
    assert chat.factory.moderation.bans.active() == []
