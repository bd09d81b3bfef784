"""Protected nicknames in the session (docs/protocol.md, "A protected
nickname" and "Protected nicknames"): the password prompt, the one-line
form, /register, /unregister, the throttle, and a nickname nobody protected
answered byte for byte as before."""

from __future__ import annotations

from typing import Any, cast

import pytest
from twisted.internet.defer import Deferred, fail
from twisted.logger import ILogObserver, formatEvent, globalLogPublisher

from chatproto import wire
from chatproto.accounts import DAY, Account, MemoryAccounts
from chatproto.operators import check_here, check_password, make_hash
from chatproto.registry import MemoryRegistry
from chatproto.session import State
from chatproto.testing import Chat, Client

CHEAP = {"n": 16, "r": 1, "p": 1}
PASSWORD = "mon secret"


def notice(text: str) -> bytes:
    return wire.notice(text)


PROMPT = notice(wire.PASSWORD_PROMPT)


class Held:
    """A checker and a hasher whose answers wait until the test gives them:
    what the reactor's thread pool gives the server, without threads."""

    def __init__(self) -> None:
        self.checks: list[tuple[str, str, Deferred[bool]]] = []
        self.hashes: list[tuple[str, Deferred[str]]] = []

    def check(self, password: str, stored: str) -> Deferred[bool]:
        d: Deferred[bool] = Deferred()
        self.checks.append((password, stored, d))
        return d

    def hash(self, password: str) -> Deferred[str]:
        d: Deferred[str] = Deferred()
        self.hashes.append((password, d))
        return d

    def answer(self) -> None:
        """The oldest check ends, with the true answer."""
        password, stored, d = self.checks.pop(0)
        d.callback(check_password(password, stored))

    def made(self) -> None:
        """The oldest hash is made."""
        password, d = self.hashes.pop(0)
        d.callback(make_hash(password, **CHEAP))


def held_chat(**config: Any) -> tuple[Chat, Held, MemoryAccounts]:
    """A chat (no pings, no flood limit) whose nickname "prof" is protected
    with PASSWORD, its checks and hashes held."""
    config.setdefault("ping_interval", 0)
    config.setdefault("flood_rate", 0)
    chat = Chat(**config)
    held = Held()
    protection = chat.factory.protection
    protection.checker = held.check
    protection.hasher = held.hash
    book = cast(MemoryAccounts, protection.accounts)
    stored = make_hash(PASSWORD, **CHEAP)
    book.protect(Account("prof", stored, chat.clock.seconds()))
    return chat, held, book


def names(chat: Chat) -> MemoryRegistry:
    """The chat's nickname registry (who holds a nickname)."""
    return cast(MemoryRegistry, chat.factory.registry)


def connect(chat: Chat, host: str = "192.0.2.9") -> Client:
    client = chat.connect(host)
    assert client.take() == wire.WELCOME
    return client


def welcomed(chat: Chat, nick: str, *others: str) -> bytes:
    names = "".join(f"=>{n}\n" for n in (*others, nick))
    block = f"Bienvenue {nick}\n{wire.RULE.decode()}Utilisateurs en ligne:\n"
    return (block + names).encode() + wire.RULE


# The prompt, the right and the wrong password


def test_a_protected_nickname_asks_for_its_password_and_lets_its_owner_in() -> None:
    chat, held, book = held_chat()
    alice = chat.user("alice")
    prof = connect(chat)
    prof.send(b"/pseudo prof\n")
    assert prof.take() == PROMPT
    assert prof.session.state is State.PASSWORD
    assert "prof" not in names(chat)  # not held while it types
    prof.send(PASSWORD.encode() + b"\n/list\n")
    assert prof.take() == b"" and alice.take() == b""  # checking; /list waits
    assert [c[0] for c in held.checks] == [PASSWORD]  # inner space kept
    held.answer()
    assert prof.take() == welcomed(chat, "prof", "alice") + wire.user_list(
        ["alice", "prof"], 2
    )
    assert alice.take() == chat.stamp() + b"-Connexion de prof\n"
    assert chat.factory.protection.owners == {"prof"}
    assert book.accounts["prof"].used == chat.clock.seconds()


def test_the_nickname_after_pseudo_alone_asks_too_and_spaces_around_go() -> None:
    chat, held, _book = held_chat()
    prof = connect(chat)
    prof.send(b"/pseudo\nPROF\n")
    assert prof.take() == wire.PROMPT + PROMPT
    prof.send(b"  " + PASSWORD.encode() + b" \r\n")
    held.answer()
    assert prof.take().startswith(b"Bienvenue PROF\n")


def test_a_wrong_password_is_taken_and_nobody_is_let_in() -> None:
    chat, held, _book = held_chat()
    alice = chat.user("alice")
    prof = connect(chat)
    prof.send(b"/pseudo prof\nnot it\n")
    held.answer()
    assert prof.take() == PROMPT + wire.TAKEN
    assert prof.session.state is State.NAMING and prof.session.nick is None
    assert "prof" not in names(chat)
    assert alice.take() == b""
    prof.send(b"bob\n")  # back to choosing a nickname
    assert prof.take() == welcomed(chat, "bob", "alice")


def test_one_line_does_both_steps() -> None:
    chat, held, _book = held_chat()
    prof = connect(chat)
    prof.send(b"/pseudo prof " + PASSWORD.encode() + b"\n")
    assert prof.take() == b""
    assert [c[0] for c in held.checks] == [PASSWORD]
    held.answer()
    assert prof.take() == welcomed(chat, "prof")
    other = connect(chat, "192.0.2.10")
    other.send(b"/pseudo prof nope nope\n")  # in use and wrong: TAKEN
    held.answer()
    assert other.take() == wire.TAKEN


def test_the_prompt_is_never_a_line_the_ruby_client_exits_on() -> None:
    new = [
        wire.PASSWORD_PROMPT,
        wire.REGISTER_DONE,
        wire.UNREGISTER_DONE,
        wire.REGISTER_USAGE,
        wire.UNREGISTER_USAGE,
        wire.ALREADY_PROTECTED,
        wire.NOT_PROTECTED,
        wire.UNREGISTER_WRONG,
        wire.REGISTER_UNAVAILABLE,
        wire.UNREGISTER_UNAVAILABLE,
    ]
    for line in new:
        assert line.encode() not in wire.CLIENT_EXITS
        assert line.split("{}")[0].encode() not in wire.CLIENT_EXITS
    assert wire.PASSWORD_PROMPT == "Ce pseudo est protégé : entrez son mot de passe"


def test_a_protected_nickname_in_use_asks_for_its_password_then_is_taken() -> None:
    """Looked up before it is claimed: a protected nickname asks for its
    password even in use, and is taken whatever the password (its holder
    stays)."""
    chat, held, _book = held_chat()
    prof = connect(chat)
    prof.send(b"/pseudo prof\n" + PASSWORD.encode() + b"\n")
    held.answer()
    prof.take()
    other = connect(chat, "192.0.2.10")
    other.send(b"/pseudo Prof\n")
    assert other.take() == PROMPT
    assert "prof" in names(chat)
    other.send(PASSWORD.encode() + b"\n")
    held.answer()
    assert other.take() == wire.TAKEN
    assert other.session.state is State.NAMING
    assert prof.session.state is State.CHATTING and prof.connected


def test_the_registration_time_limit_runs_while_the_prompt_waits() -> None:
    chat, _held, _book = held_chat(registration_timeout=60)
    prof = connect(chat)
    prof.send(b"/pseudo prof\n")
    assert prof.take() == PROMPT
    chat.advance(60)
    assert prof.take() == notice(wire.REGISTRATION_EXPIRED)
    assert not prof.connected


def test_a_user_gone_while_its_password_is_checked_takes_nothing() -> None:
    chat, held, _book = held_chat()
    prof = connect(chat)
    prof.send(b"/pseudo prof\n" + PASSWORD.encode() + b"\n/quit\n")
    prof.transport.loseConnection()
    held.answer()
    assert "prof" not in names(chat)
    assert chat.factory.protection.owners == set()


def test_a_book_that_cannot_be_read_says_unavailable() -> None:
    chat, _held, book = held_chat()
    book.find = lambda nick: fail(OSError("disk I/O error"))  # type: ignore[method-assign]
    prof = connect(chat)
    prof.send(b"/pseudo prof\n")
    assert prof.take() == notice(wire.UNAVAILABLE)
    assert prof.session.state is State.NAMING
    assert "prof" not in names(chat)  # given back


# A nickname nobody protected: byte for byte as before


# What the server of main (5cc2a49, before protected nicknames) sent for
# each script, alice registered first: the connection's lines, then
# alice's ("STAMP" the [H.M.S] of the moment). Made with chatproto.testing
# on that commit.
LIST_BOB = (
    b"----------------------\nUtilisateurs en ligne:\n=>alice\n=>bob\n" + wire.RULE
)
TRANSCRIPTS: list[tuple[list[bytes], list[bytes]]] = [
    ([b"/pseudo bob\n"], [b"Bienvenue bob\n" + LIST_BOB, b"STAMP-Connexion de bob\n"]),
    (
        [b"/pseudo\n", b"bob\n"],
        [
            b"Entrez votre pseudo: \n",
            b"Bienvenue bob\n" + LIST_BOB,
            b"STAMP-Connexion de bob\n",
        ],
    ),
    ([b"/pseudo bob secret\n"], [b"Rentrez un pseudo correct\n", b""]),
    ([b"/pseudo  bob   two words \n"], [b"Rentrez un pseudo correct\n", b""]),
    ([b"/pseudo alice\n"], [b"Attention ce pseudo existe deja\n", b""]),
    ([b"/pseudo ALICE secret\n"], [b"Rentrez un pseudo correct\n", b""]),
    (
        [b"/pseudo\n", b"bob secret\n", b"/pseudo bob pw\n", b"bob\n"],
        [
            b"Entrez votre pseudo: \n",
            b"Rentrez un pseudo correct\n",
            b"Rentrez un pseudo correct\n",
            b"Bienvenue bob\n" + LIST_BOB,
            b"STAMP-Connexion de bob\n",
        ],
    ),
    (
        [b"/pseudo b!b pw\n", b"/pseudo x\n"],
        [b"Rentrez un pseudo correct\n", b"Rentrez un pseudo correct\n", b""],
    ),
]


@pytest.mark.parametrize(("script", "expected"), TRANSCRIPTS)
def test_a_nickname_nobody_protected_is_answered_as_before(
    script: list[bytes], expected: list[bytes]
) -> None:
    chat, held, _book = held_chat()
    alice = chat.user("alice")
    client = connect(chat)
    got = []
    for line in script:
        client.send(line)
        got.append(client.take())
    got.append(alice.take())
    stamp = chat.stamp()
    assert got == [e.replace(b"STAMP", stamp) for e in expected]
    assert held.checks == []  # no password was checked


# Throttled, per address and in total


def test_wrong_passwords_are_throttled_per_address() -> None:
    chat, _held, _book = held_chat()
    chat.factory.protection.checker = check_here
    guesser = connect(chat)
    for _ in range(3):
        guesser.send(b"/pseudo prof guess\n")
        assert guesser.take() == wire.TAKEN
    guesser.send(b"/pseudo prof " + PASSWORD.encode() + b"\n")  # waits its turn
    assert guesser.take() == notice(wire.OP_THROTTLED.format(5))
    assert guesser.session.state is State.NAMING
    owner = connect(chat, "198.51.100.1")  # another address: not throttled
    owner.send(b"/pseudo prof\n" + PASSWORD.encode() + b"\n")
    assert owner.take() == PROMPT + welcomed(chat, "prof")
    owner.send(b"/quit\n")
    chat.advance(5)
    guesser.send(b"/pseudo prof\n" + PASSWORD.encode() + b"\n")
    assert guesser.take() == PROMPT + welcomed(chat, "prof")


def test_a_throttled_answer_to_the_prompt_is_no_nickname_after_the_wait() -> None:
    """Past three wrong tries, the answer to the prompt is throttled. A
    Ruby client exits on TAKEN only, so its user waits and types the
    password again: that line was taken for a nickname (a password may
    look like one), and everyone saw "Connexion de PASSWORD"."""
    chat, _held, _book = held_chat()
    chat.factory.protection.checker = check_here
    alice = chat.user("alice", "192.0.2.2")
    guesser = connect(chat)
    for _ in range(3):
        guesser.send(b"/pseudo prof guess\n")
        assert guesser.take() == wire.TAKEN
    guesser.send(b"/pseudo prof\nSecret-42\n")
    assert guesser.take() == PROMPT + notice(wire.OP_THROTTLED.format(5))
    chat.advance(5)
    guesser.send(b"Secret-42\n")  # the password again, after the wait
    assert guesser.take() == wire.TAKEN  # a wrong one
    assert b"Secret-42" not in alice.take()
    guesser.send(b"/pseudo prof\n")
    assert guesser.take() == PROMPT


def test_at_most_ten_checks_wait_the_others_are_throttled_and_chat_goes_on() -> None:
    chat, held, _book = held_chat()
    alice, bob = chat.user("alice"), chat.user("bob", "192.0.2.2")
    guessers = [connect(chat, f"198.51.100.{i}") for i in range(11)]
    for guesser in guessers:
        guesser.send(b"/pseudo prof guess\n")
    assert len(held.checks) == 2  # two run; eight wait their turn
    assert [g.take() for g in guessers[:10]] == [b""] * 10
    assert guessers[10].take() == notice(wire.OP_THROTTLED.format(5))
    alice.send(b"bonjour\n")  # the chat does not wait for the checks
    assert bob.take() == chat.stamp() + b"-alice: bonjour\n"
    while held.checks:
        held.answer()
    assert [g.take() for g in guessers[:10]] == [wire.TAKEN] * 10


def test_quit_at_the_password_prompt_leaves() -> None:
    """/quit at the prompt was checked as a password: a wrong try logged
    and throttled, `Attention ce pseudo existe deja`, and no departure."""
    chat, held, _book = held_chat()
    prof = connect(chat)
    prof.send(b"/pseudo prof\n")
    assert prof.take() == PROMPT
    prof.send(b"  /quit \r\n")
    assert prof.take() == wire.BYE
    assert held.checks == [] and not prof.transport.connected


# nick-days


def test_a_protected_nickname_unused_for_nick_days_is_free_again() -> None:
    chat, _held, book = held_chat(nick_days=90)
    chat.advance(90 * DAY)
    prof = connect(chat)
    prof.send(b"/pseudo prof\n")
    assert prof.take() == PROMPT  # 90 days: still protected
    prof.send(b"/quit\n")
    chat.advance(1)
    other = connect(chat, "192.0.2.10")
    other.send(b"/pseudo prof\n")
    assert other.take() == welcomed(chat, "prof")
    assert book.accounts == {}


def test_a_look_alike_of_a_protected_nickname_is_taken_while_it_is() -> None:
    """pr0f (a zero) or PR0F cannot register while prof is protected, its
    owner away: it would pass for prof, and hold prof's look in the
    registry, keeping the owner out. Once the protection lapses (nick-days,
    /unregister), it is a nickname like any other."""
    chat, held, book = held_chat(nick_days=90)
    for nick in (b"pr0f", b"PR0F"):
        other = connect(chat, "192.0.2.10")
        other.send(b"/pseudo " + nick + b"\n")
        assert other.take() == wire.TAKEN
        other.send(b"/quit\n")
    assert len(names(chat)) == 0
    prof = connect(chat)
    prof.send(b"/pseudo prof\n" + PASSWORD.encode() + b"\n")
    held.answer()
    assert prof.take() == PROMPT + welcomed(chat, "prof")
    prof.send(f"/unregister {PASSWORD}\n/quit\n".encode())
    held.answer()
    chat.advance(1)
    assert book.accounts == {}
    other = connect(chat, "192.0.2.10")
    other.send(b"/pseudo pr0f\n")
    assert other.take() == welcomed(chat, "pr0f")


class CountingBook(MemoryAccounts):
    """The chat's book, its reads counted."""

    def __init__(self, book: MemoryAccounts) -> None:
        super().__init__()
        self.accounts, self.looks = book.accounts, book.looks
        self.reads: list[str] = []

    def find(self, nick: str) -> Deferred[Account | None]:
        self.reads.append(nick)
        return super().find(nick)


def test_a_nickname_nobody_protects_is_claimed_without_a_read() -> None:
    """A herd's registrations cost no read of the book each: a nickname
    that the book knows nobody protects, nor a look-alike of it, is
    claimed at once. prof and its look-alikes are still read."""
    chat, _held, book = held_chat()
    counting = CountingBook(book)
    chat.factory.protection.accounts = counting
    bob = connect(chat)
    bob.send(b"/pseudo bob\n")
    assert bob.take() == welcomed(chat, "bob")
    assert counting.reads == []
    prof = connect(chat, "192.0.2.10")
    prof.send(b"/pseudo prof\n")
    assert prof.take() == PROMPT
    other = connect(chat, "192.0.2.11")
    other.send(b"/pseudo PR0F\n")
    assert other.take() == wire.TAKEN
    assert "bob" not in counting.reads and {"prof", "PR0F"} <= set(counting.reads)


def test_a_lapsed_protection_lets_its_look_alike_in() -> None:
    chat, _held, _book = held_chat(nick_days=90)
    chat.advance(90 * DAY + 1)
    other = connect(chat, "192.0.2.10")
    other.send(b"/pseudo pr0f\n")
    assert other.take() == welcomed(chat, "pr0f")


def test_the_owner_s_visits_keep_its_nickname_protected() -> None:
    chat, held, book = held_chat(nick_days=90)
    chat.advance(80 * DAY)
    prof = connect(chat)
    prof.send(b"/pseudo prof " + PASSWORD.encode() + b"\n")
    held.answer()
    chat.advance(5 * DAY)
    prof.send(b"/quit\n")
    prof.transport.loseConnection()
    assert book.accounts["prof"].used == chat.clock.seconds()
    chat.advance(89 * DAY)
    other = connect(chat, "192.0.2.10")
    other.send(b"/pseudo prof\n")
    assert other.take() == PROMPT


# /register and /unregister


def test_register_protects_the_nickname_once_its_hash_is_kept() -> None:
    chat, held, book = held_chat()
    bob = chat.user("bob")
    bob.send(b"/register  deux mots de passe \n/list\n")
    assert bob.take() == b""  # hashing: /list waits
    assert [h[0] for h in held.hashes] == ["deux mots de passe"]
    held.made()
    done = notice(wire.REGISTER_DONE.format("bob"))
    assert bob.take() == done + wire.user_list(["bob"], 1)
    account = book.accounts["bob"]
    assert check_password("deux mots de passe", account.hash)
    bob.send(b"/quit\n")
    bob.transport.loseConnection()
    again = connect(chat, "192.0.2.10")
    again.send(b"/pseudo bob\n")
    assert again.take() == PROMPT


def test_a_register_whose_user_left_protects_nothing() -> None:
    """Its user gone while the hash is made, the nickname may be someone
    else's by then: it must not be protected with the first one's
    password."""
    chat, held, book = held_chat()
    bob = chat.user("bob")
    bob.send(b"/register secret99\n")
    bob.transport.loseConnection()
    other = chat.user("bob")  # someone else takes the free nickname
    held.made()
    assert "bob" not in book.accounts
    other.send(b"/register autre mot\n")
    held.made()
    assert check_password("autre mot", book.accounts["bob"].hash)


def test_an_owner_who_stays_past_nick_days_keeps_its_nickname() -> None:
    chat, held, book = held_chat(nick_days=1)
    prof = connect(chat)
    prof.send(b"/pseudo prof " + PASSWORD.encode() + b"\n")
    held.answer()
    assert prof.take().startswith(b"Bienvenue prof\n")
    chat.advance(3 * 86400)  # three days connected
    assert book.accounts["prof"].used >= chat.clock.seconds() - 3600
    stranger = connect(chat, "192.0.2.10")
    stranger.send(b"/pseudo prof x\n")
    held.answer()
    assert stranger.take() == wire.TAKEN
    prof.send(b"/quit\n")
    stranger.send(b"/pseudo prof\n")
    assert stranger.take() == PROMPT  # still protected once it left


@pytest.mark.parametrize("blank", [b"\t", b"\xc2\xa0", b" \t "])
def test_a_tab_ends_the_command_of_a_password(blank: bytes) -> None:
    """The client (and the page) hide what follows /register and a blank
    as a password; the server took C{/register<TAB>PASSWORD} for an
    unknown command, and its error line showed the password in clear."""
    chat, held, _ = held_chat()
    bob = chat.user("bob")
    bob.send(b"/register" + blank + b"mon-secret-1\n")
    assert [h[0] for h in held.hashes] == ["mon-secret-1"]
    held.made()
    assert bob.take() == notice(wire.REGISTER_DONE.format("bob"))
    bob.send(b"/op" + blank + b"mon-secret-2\n")
    assert b"mon-secret-2" not in bob.take()


def test_register_s_errors() -> None:
    chat, held, book = held_chat()
    bob = chat.user("bob")
    usage = notice(wire.REGISTER_USAGE.format(6, 128))
    for line in (
        b"/register\n",
        b"/register 12345\n",
        b"/register " + b"x" * 129 + b"\n",
    ):
        bob.send(line)
        assert bob.take() == usage
    assert held.hashes == []
    bob.send(b"/register " + b"x" * 128 + b"\n")
    held.made()
    assert bob.take() == notice(wire.REGISTER_DONE.format("bob"))
    bob.send(b"/register 123456\n")
    assert bob.take() == notice(wire.ALREADY_PROTECTED.format("bob"))
    carol = chat.user("carol")
    book.protect = lambda account: fail(OSError("disk full"))  # type: ignore[method-assign]
    carol.send(b"/register 123456\n")
    held.made()
    assert carol.take() == notice(wire.REGISTER_UNAVAILABLE)
    assert "carol" not in book.accounts


def test_unregister_frees_the_nickname_with_its_password() -> None:
    chat, held, book = held_chat()
    prof = connect(chat)
    prof.send(b"/pseudo prof " + PASSWORD.encode() + b"\n")
    held.answer()
    prof.take()
    prof.send(b"/unregister\n")
    assert prof.take() == notice(wire.UNREGISTER_USAGE)
    prof.send(b"/unregister wrong\n")
    held.answer()
    assert prof.take() == notice(wire.UNREGISTER_WRONG.format("prof"))
    assert "prof" in book.accounts
    prof.send(b"/unregister " + PASSWORD.encode() + b"\n")
    held.answer()
    assert prof.take() == notice(wire.UNREGISTER_DONE.format("prof"))
    assert book.accounts == {} and chat.factory.protection.owners == set()
    prof.send(b"/unregister " + PASSWORD.encode() + b"\n")
    assert prof.take() == notice(wire.NOT_PROTECTED.format("prof"))


def test_help_lists_register_and_unregister() -> None:
    chat, _held, _book = held_chat()
    bob = chat.user("bob")
    bob.send(b"/help\n")
    help_block = bob.take()
    assert b"/register MDP" in help_block and b"/unregister MDP" in help_block


# Passwords are never in the log


@pytest.fixture
def logged() -> Any:
    events: list[dict[str, Any]] = []
    observer = cast(ILogObserver, events.append)
    globalLogPublisher.addObserver(observer)
    yield events
    globalLogPublisher.removeObserver(observer)


def test_no_password_is_ever_in_the_log(logged: list[dict[str, Any]]) -> None:
    chat, held, book = held_chat()
    guesser = connect(chat, "198.51.100.1")
    for _ in range(4):  # wrong ones, then throttled
        guesser.send(b"/pseudo prof guess-one\n")
        if held.checks:
            held.answer()
    prof = connect(chat)
    prof.send(b"/pseudo prof\n" + PASSWORD.encode() + b"\n")
    held.answer()
    prof.send(b"/unregister guess-two\n")
    held.answer()
    prof.send(b"/unregister " + PASSWORD.encode() + b"\n")
    held.answer()
    prof.send(b"/register guess-three\n")
    held.hashes.pop()[1].errback(MemoryError("scrypt"))  # a failure, logged
    prof.send(b"/register guess-four\n")
    held.made()
    prof.send(b"/unregister guess-five\n")
    held.checks.pop()[2].errback(ValueError("bad hash"))
    book.find = lambda nick: fail(OSError("disk I/O error"))  # type: ignore[method-assign]
    other = connect(chat, "198.51.100.2")
    other.send(b"/pseudo prof guess-six\n")
    assert other.take() == notice(wire.UNAVAILABLE)
    acts = {e.get("act") for e in logged}
    assert {"nick-failed", "accounts-failed", "nick-protected", "nick-freed"} <= acts
    text = "\n".join(
        repr(e)
        + formatEvent(e)
        + (e["log_failure"].getTraceback() if "log_failure" in e else "")
        for e in logged
    )
    for secret in (
        PASSWORD,
        "guess-one",
        "guess-two",
        "guess-three",
        "guess-four",
        "guess-five",
        "guess-six",
    ):
        assert secret not in text


class SlowBook(MemoryAccounts):
    """A book whose reads wait until the test answers them, and that knows
    nothing without a read (a busy Redis of a cluster)."""

    def __init__(self, book: MemoryAccounts) -> None:
        super().__init__()
        self.accounts = book.accounts
        self.finds: list[tuple[str, Deferred[Account | None]]] = []

    def surely_free(self, nick: str) -> bool:
        return False

    def find(self, nick: str) -> Deferred[Account | None]:
        d: Deferred[Account | None] = Deferred()
        self.finds.append((nick, d))
        return d

    def answer(self) -> None:
        while self.finds:
            nick, d = self.finds.pop(0)
            d.callback(self.accounts.get(nick.lower()))


def test_a_book_unreadable_at_the_prompt_keeps_the_prompt() -> None:
    chat, held, book = held_chat()
    slow = SlowBook(book)
    chat.factory.protection.accounts = slow
    prof = connect(chat)
    prof.send(b"/pseudo prof\n")
    slow.answer()
    assert prof.take() == PROMPT
    prof.send(PASSWORD.encode() + b"\n")
    _, d = slow.finds.pop(0)
    d.errback(OSError("disk I/O error"))
    assert prof.take() == notice(wire.UNAVAILABLE)
    # Typed again, the line is the password still, never a nickname.
    prof.send(PASSWORD.encode() + b"\n")
    slow.answer()
    held.answer()
    assert prof.take().startswith(b"Bienvenue prof\n")


def test_a_stranger_asking_while_reads_are_slow_never_holds_the_nickname() -> None:
    """Issue 21: a nickname was claimed, then looked up. A stranger sending
    /pseudo prof while the book was slow to read held prof for each read,
    and its owner, its password right, found it taken."""
    chat, held, book = held_chat()
    slow = SlowBook(book)
    chat.factory.protection.accounts = slow
    owner = connect(chat)
    owner.send(b"/pseudo prof\n")
    slow.answer()
    assert owner.take() == PROMPT
    owner.send(PASSWORD.encode() + b"\n")  # its check reads the book
    stranger = connect(chat, "198.51.100.7")
    stranger.send(b"/pseudo prof\n")  # so does the stranger's request
    assert [nick for nick, _ in slow.finds] == ["prof", "prof"]
    assert "prof" not in names(chat)
    _, first = slow.finds.pop(0)
    first.callback(book.accounts["prof"])  # the owner's read
    held.answer()
    assert owner.take().startswith(b"Bienvenue prof\n")
    slow.answer()  # the stranger's, answered last
    assert stranger.take() == PROMPT
    stranger.send(b"guess\n")
    slow.answer()
    held.answer()
    assert stranger.take() == wire.TAKEN
    assert owner.session.state is State.CHATTING


def test_a_user_gone_while_its_nickname_is_looked_up_claims_nothing() -> None:
    chat, _held, book = held_chat()
    slow = SlowBook(book)
    chat.factory.protection.accounts = slow
    claims: list[str] = []
    registry = names(chat)
    claim = registry.claim

    def counted(nick: str) -> Deferred[str]:
        claims.append(nick)
        return claim(nick)

    registry.claim = counted  # type: ignore[method-assign]
    bob = connect(chat)
    bob.send(b"/pseudo bob\n")
    bob.transport.loseConnection()
    slow.answer()
    assert claims == [] and "bob" not in registry
