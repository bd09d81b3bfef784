"""Rooms on a single server (chatproto/rooms.py): every line of the
protocol's "Rooms" section, the bounds, the errors, a user in several
rooms, leaving the server, and the lobby unchanged byte for byte."""

from __future__ import annotations

import random
import re

import pytest

from chatproto import wire
from chatproto.fanout import BATCH_LINES
from chatproto.history import MemoryHistory
from chatproto.rooms import Rooms
from chatproto.testing import Chat, Client
from tests.test_moderation import chat_with_operators, op


def notice(text: str) -> bytes:
    return wire.notice(text)


def names(*nicks: str) -> bytes:
    return wire.user_list(list(nicks), len(nicks))


def users(chat: Chat, *nicks: str) -> list[Client]:
    found = [chat.user(nick) for nick in nicks]
    for user in found:
        user.take()
    return found


def in_room(chat: Chat, *nicks: str) -> list[Client]:
    """Users registered, then in #a once every pass has run, their
    answers taken."""
    found = users(chat, *nicks)
    for user in found:
        user.send(b"/join #a\n")
    chat.advance(0)
    for user in found:
        user.take()
    return found


def rooms_of(chat: Chat) -> Rooms:
    return chat.factory.rooms


# /join


def test_join_answers_the_current_room_and_its_members_and_tells_the_others() -> None:
    chat = Chat(flood_rate=0)
    alice, bob, carol = users(chat, "alice", "bob", "carol")
    alice.send(b"/join #Salle-B\n")
    assert alice.take() == notice("Salon courant : #salle-b") + names("alice")
    bob.send(b"/join salle-b\n")
    assert bob.take() == notice("Salon courant : #salle-b") + names("alice", "bob")
    assert alice.take() == chat.stamp() + b"-#salle-b Connexion de bob\n"
    assert carol.take() == b""  # the lobby only: nothing of the room


def test_join_a_room_one_is_in_or_the_lobby_makes_it_current_and_tells_nobody() -> None:
    chat = Chat(flood_rate=0)
    alice, bob = users(chat, "alice", "bob")
    alice.send(b"/join #a\n")
    bob.send(b"/join #a\n")
    alice.take(), bob.take()
    alice.send(b"/join #accueil\n")
    assert alice.take() == notice("Salon courant : #accueil") + names("alice", "bob")
    alice.send(b"hello lobby\n")
    assert bob.take() == chat.stamp() + b"-alice: hello lobby\n"
    alice.send(b"/join #A\n")
    assert alice.take() == notice("Salon courant : #a") + names("alice", "bob")
    assert bob.take() == b""
    alice.send(b"hello room\n")
    assert bob.take() == chat.stamp() + b"-#a alice: hello room\n"


def test_join_shows_the_topic_when_the_room_has_one() -> None:
    chat, _ = chat_with_operators(prof="secret1")
    prof = op(chat, "prof", "secret1")
    (eve,) = users(chat, "eve")
    prof.send(b"/join #cours\n")
    prof.take()
    prof.send(b"/topic Les graphes\n")
    assert prof.take() == chat.stamp() + b"-#cours Sujet : Les graphes (par prof)\n"
    eve.send(b"/join #cours\n")
    assert eve.take() == (
        notice("Salon courant : #cours")
        + names("prof", "eve")
        + notice("Sujet de #cours : Les graphes")
    )


@pytest.mark.parametrize(
    "argument", ["", "#", "##a", "#" + "a" * 25, "#é", "#a b", "#a.b", "a/b"]
)
def test_a_name_that_breaks_the_rule_is_refused(argument: str) -> None:
    chat = Chat(flood_rate=0)
    (alice,) = users(chat, "alice")
    alice.send(f"/join {argument}\n".encode())
    usage = "Erreur : tapez {} #SALON, SALON de 1 à 24 lettres a-z, chiffres, _ ou -"
    assert alice.take() == notice(usage.format("/join"))
    if argument:
        alice.send(f"/part {argument}\n".encode())
        assert alice.take() == notice(usage.format("/part"))
    assert rooms_of(chat).rooms == {}


def test_names_of_24_characters_of_every_kind_are_taken() -> None:
    chat = Chat(flood_rate=0)
    (alice,) = users(chat, "alice")
    name = "Ab_-09" + "x" * 18
    alice.send(f"/join {name}\n".encode())
    assert alice.lines()[0] == notice(f"Salon courant : #{name.lower()}")


def test_max_rooms_refuses_a_new_room_not_an_existing_one() -> None:
    chat = Chat(flood_rate=0, max_rooms=2)
    alice, bob = users(chat, "alice", "bob")
    for name in ("a", "b"):
        alice.send(f"/join #{name}\n".encode())
    alice.take()
    bob.send(b"/join #c\n")
    assert bob.take() == notice(
        "Erreur : trop de salons sur ce serveur (2 au plus), rejoignez-en un qui existe"
    )
    bob.send(b"/join #b\n")
    assert bob.lines()[0] == notice("Salon courant : #b")
    alice.send(b"/part #a\n")  # its last member: the room goes
    alice.take()
    bob.send(b"/join #c\n")
    assert bob.lines()[0] == notice("Salon courant : #c")


def test_rooms_per_user_does_not_count_the_lobby() -> None:
    chat = Chat(flood_rate=0, rooms_per_user=2)
    (alice,) = users(chat, "alice")
    alice.send(b"/join #a\n/join #b\n")
    alice.take()
    alice.send(b"/join #c\n")
    assert alice.take() == notice(
        "Erreur : vous êtes déjà dans 2 salons, quittez-en un avec /part"
    )
    alice.send(b"/join #a\n/join #accueil\n")  # one is in them: no bound
    assert [line for line in alice.lines() if line.startswith(b"Salon")] == [
        notice("Salon courant : #a"),
        notice("Salon courant : #accueil"),
    ]
    assert set(rooms_of(chat).rooms) == {"a", "b"}


def test_arrivals_in_a_room_follow_join_notice_limit() -> None:
    chat = Chat(flood_rate=0, join_notice_limit=2)
    alice, bob, carol = users(chat, "alice", "bob", "carol")
    alice.send(b"/join #a\n")
    alice.take()
    bob.send(b"/join #a\n")
    assert alice.take() == chat.stamp() + b"-#a Connexion de bob\n"
    bob.take()
    carol.send(b"/join #a\n")
    carol.take()
    assert alice.take() == b""
    assert bob.take() == b""


# Lines


def test_a_plain_line_goes_to_the_current_room_only() -> None:
    chat = Chat(flood_rate=0)
    alice, bob, carol = users(chat, "alice", "bob", "carol")
    alice.send(b"/join #a\n")
    bob.send(b"/join #a\n")
    alice.take(), bob.take()
    alice.send(b"bonjour  le salon \n")
    assert bob.take() == chat.stamp() + b"-#a alice: bonjour  le salon \n"
    assert alice.take() == b""
    assert carol.take() == b""


def test_each_member_gets_a_turns_room_lines_in_one_write() -> None:
    chat = Chat(flood_rate=0)
    alice, bob, carol = users(chat, "alice", "bob", "carol")
    for user in (alice, bob, carol):
        user.send(b"/join #a\n")
    chat.turn()
    for user in (alice, bob, carol):
        user.take()
    carol.transport.writes.clear()
    alice.send(b"un\ndeux\n")
    bob.send(b"trois\n")
    chat.turn()
    assert carol.transport.writes == [
        chat.stamp()
        + b"-#a alice: un\n"
        + chat.stamp()
        + b"-#a alice: deux\n"
        + chat.stamp()
        + b"-#a bob: trois\n"
    ]


def test_a_user_in_several_rooms_and_the_lobby_gets_lines_in_the_order_made() -> None:
    chat = Chat(flood_rate=0)
    alice, bob, carol, dave = users(chat, "alice", "bob", "carol", "dave")
    for user in (alice, bob):
        user.send(b"/join #a\n")
    for user in (alice, carol):
        user.send(b"/join #b\n")
    for user in (alice, bob, carol, dave):
        user.take()
    # within one turn: the lobby, room a, the lobby, room b, a private line
    dave.send(b"un\n")
    bob.send(b"deux\n")
    dave.send(b"trois\n")
    carol.send(b"quatre\n")
    dave.send(b"msg alice cinq\n")
    bob.send(b"six\n")
    stamp = chat.stamp()
    assert alice.take() == (
        stamp
        + b"-dave: un\n"
        + stamp
        + b"-#a bob: deux\n"
        + stamp
        + b"-dave: trois\n"
        + stamp
        + b"-#b carol: quatre\n"
        + stamp
        + b"-message priv\xc3\xa9 de dave: cinq\n"
        + stamp
        + b"-#a bob: six\n"
    )


def test_a_user_in_rooms_and_the_lobby_gets_a_turns_lines_in_one_write() -> None:
    chat = Chat(flood_rate=0)
    alice, bob, carol, dave = users(chat, "alice", "bob", "carol", "dave")
    for user in (alice, bob):
        user.send(b"/join #a\n")
    for user in (alice, carol):
        user.send(b"/join #b\n")
    chat.turn()
    for user in (alice, bob, carol, dave):
        user.take()
    alice.transport.writes.clear()
    # one turn: the lobby, room a, the lobby, room b, the lobby
    dave.send(b"un\n")
    bob.send(b"deux\n")
    dave.send(b"trois\n")
    carol.send(b"quatre\n")
    dave.send(b"cinq\n")
    chat.turn()
    stamp = chat.stamp()
    assert alice.transport.writes == [
        stamp
        + b"-dave: un\n"
        + stamp
        + b"-#a bob: deux\n"
        + stamp
        + b"-dave: trois\n"
        + stamp
        + b"-#b carol: quatre\n"
        + stamp
        + b"-dave: cinq\n"
    ]
    # and the lobby's members in no room, one write each as before
    bob.transport.writes.clear()
    dave.send(b"six\n")
    chat.turn()
    assert bob.transport.writes == [stamp + b"-dave: six\n"]


def test_the_lobby_and_room_order_holds_across_a_pass_of_several_turns() -> None:
    """A lobby pass serves pass_size users a turn: a room line made while
    it is under way comes after the lobby's line before it."""
    chat = Chat(flood_rate=0, pass_size=1, join_notice_limit=0)
    users_ = users(chat, *[f"u{i}" for i in range(5)])
    last = users_[-1]
    last.send(b"/join #a\n")
    users_[0].send(b"/join #a\n")
    for user in users_:
        user.take()
    users_[1].send(b"lobby\n")
    chat.turn()  # one turn: the pass served one user only
    assert users_[0].transport.value() != b""
    assert last.transport.value() == b""
    users_[0].send(b"room\n")
    stamp = chat.stamp()
    assert last.take() == stamp + b"-u1: lobby\n" + stamp + b"-#a u0: room\n"


def test_private_lines_reach_a_user_in_any_room() -> None:
    chat = Chat(flood_rate=0)
    alice, bob = users(chat, "alice", "bob")
    alice.send(b"/join #a\n")
    alice.take()
    bob.send(b"/join #b\n")
    bob.take()
    bob.send(b"msg alice psst\n")
    assert alice.take() == chat.stamp() + "-message privé de bob: psst\n".encode()


def test_a_rooms_line_costs_deliveries_for_its_members_only() -> None:
    chat = Chat(flood_rate=0, join_notice_limit=0, max_per_ip=0)
    everyone = users(chat, *[f"u{i}" for i in range(50)])
    for user in everyone[:3]:
        user.send(b"/join #petit\n")
    for user in everyone:
        user.take()
    before = chat.factory.metrics.deliveries
    everyone[0].send(b"bonjour\n")
    assert chat.factory.metrics.deliveries - before == 2
    assert [len(user.take()) > 0 for user in everyone[:4]] == [
        False,
        True,
        True,
        False,
    ]


# /part


def test_part_the_current_room_says_so_and_makes_the_lobby_current() -> None:
    chat = Chat(flood_rate=0)
    alice, bob, carol = users(chat, "alice", "bob", "carol")
    alice.send(b"/join #a\n")
    bob.send(b"/join #a\n")
    alice.take(), bob.take()
    alice.send(b"/part\n")
    assert alice.take() == notice("Vous avez quitté #a") + notice(
        "Salon courant : #accueil"
    )
    assert bob.take() == chat.stamp() + "-#a Départ de alice\n".encode()
    assert carol.take() == b""
    alice.send(b"de retour\n")  # the lobby's
    assert carol.take() == chat.stamp() + b"-alice: de retour\n"


def test_part_another_room_keeps_the_current_one() -> None:
    chat = Chat(flood_rate=0)
    (alice,) = users(chat, "alice")
    alice.send(b"/join #a\n/join #b\n")
    alice.take()
    alice.send(b"/part #A\n")
    assert alice.take() == notice("Vous avez quitté #a")
    alice.send(b"/list\n")
    assert alice.take() == names("alice")
    assert set(rooms_of(chat).rooms) == {"b"}


def test_part_errors() -> None:
    chat = Chat(flood_rate=0)
    alice, bob = users(chat, "alice", "bob")
    lobby = notice(
        "Erreur : on ne quitte pas #accueil (tapez /quit pour quitter le chat)"
    )
    alice.send(b"/part\n")
    assert alice.take() == lobby
    alice.send(b"/part #accueil\n")
    assert alice.take() == lobby
    bob.send(b"/join #b\n")
    bob.take()
    alice.send(b"/part #b\n")
    assert alice.take() == notice("Erreur : vous n'êtes pas dans #b")
    alice.send(b"/part nulle_part\n")
    assert alice.take() == notice("Erreur : vous n'êtes pas dans #nulle_part")
    assert bob.take() == b""


def test_an_empty_room_goes_with_its_topic_and_its_history_stays() -> None:
    chat, _ = chat_with_operators(prof="secret1")
    prof = op(chat, "prof", "secret1")
    prof.send(b"/join #cours\n/topic Arbres\nune ligne\n/part\n")
    prof.take()
    assert rooms_of(chat).rooms == {}
    prof.send(b"/join #cours\n")
    assert prof.take() == notice("Salon courant : #cours") + names("prof")
    prof.send(b"/topic\n")
    assert prof.take() == notice("#cours n'a pas de sujet")
    prof.send(b"/history\n")
    stamp = chat.stamp()
    assert prof.take() == wire.history_block(
        [
            stamp + b"-#cours Sujet : Arbres (par prof)\n",
            stamp + b"-#cours prof: une ligne\n",
            stamp + "-#cours Départ de prof\n".encode(),
        ],
        3,
    )


# /rooms


def test_rooms_lists_the_lobby_first_then_the_rooms_by_name() -> None:
    chat = Chat(flood_rate=0)
    alice, bob, carol = users(chat, "alice", "bob", "carol")
    alice.send(b"/join #zeta\n/join #Alpha\n")
    bob.send(b"/join #zeta\n")
    alice.take(), bob.take()
    carol.send(b"/rooms\n")
    assert carol.take() == (
        b"--- salons (3) ---\n"
        b"#accueil 3 membres\n"
        b"#alpha 1 membre\n"
        b"#zeta 2 membres\n"
        b"--- fin des salons ---\n"
    )
    assert alice.take() == b"" and bob.take() == b""


def test_rooms_alone_in_the_lobby() -> None:
    chat = Chat(flood_rate=0)
    (alice,) = users(chat, "alice")
    alice.send(b"/rooms\n")
    assert alice.take() == (
        b"--- salons (1) ---\n#accueil 1 membre\n--- fin des salons ---\n"
    )


# /topic


def test_topic_set_by_an_operator_reaches_the_room_and_the_operator() -> None:
    chat, _ = chat_with_operators(prof="secret1")
    prof = op(chat, "prof", "secret1")
    eve, lobby = users(chat, "eve", "lobby")
    prof.send(b"/join #cours\n")
    eve.send(b"/join #cours\n")
    prof.take(), eve.take()
    prof.send(b"/topic Les arbres  binaires\n")
    line = chat.stamp() + b"-#cours Sujet : Les arbres  binaires (par prof)\n"
    assert prof.take() == line
    assert eve.take() == line
    assert lobby.take() == b""
    eve.send(b"/topic\n")
    assert eve.take() == notice("Sujet de #cours : Les arbres  binaires")


def test_topic_errors() -> None:
    chat, _ = chat_with_operators(prof="secret1")
    prof = op(chat, "prof", "secret1")
    (eve,) = users(chat, "eve")
    eve.send(b"/topic\n")
    assert eve.take() == notice("#accueil n'a pas de sujet")
    eve.send(b"/join #cours\n")
    eve.take()
    eve.send(b"/topic\n")
    assert eve.take() == notice("#cours n'a pas de sujet")
    eve.send(b"/topic mon sujet\n")
    assert eve.take() == notice("Erreur : seul un opérateur peut changer le sujet")
    prof.send(b"/topic sujet\n")
    assert prof.take() == notice("Erreur : #accueil n'a pas de sujet")
    prof.send(b"/join #cours\n")
    prof.take()
    prof.send(b"/topic " + b"x" * 201 + b"\n")
    assert prof.take() == notice("Erreur : sujet trop long (200 caractères au plus)")
    prof.send(b"/topic " + "é".encode() * 200 + b"\n")  # characters, not bytes
    assert prof.lines()[0].startswith(chat.stamp() + b"-#cours Sujet : ")
    assert eve.take() != b""


# /list, /help


def test_list_shows_the_current_rooms_members_in_join_order() -> None:
    chat = Chat(flood_rate=0)
    alice, bob, carol = users(chat, "alice", "bob", "carol")
    carol.send(b"/join #a\n")
    alice.send(b"/join #a\n")
    carol.take(), alice.take()
    alice.send(b"/list\n")
    assert alice.take() == names("carol", "alice")
    bob.send(b"/list\n")
    assert bob.take() == names("alice", "bob", "carol")


def test_help_lists_the_room_commands() -> None:
    chat = Chat(flood_rate=0)
    (alice,) = users(chat, "alice")
    alice.send(b"/help\n")
    text = alice.take().decode()
    for command in ("/join #SALON", "/part [#SALON]", "/rooms", "/topic [SUJET]"):
        assert f"\n  {command} " in text


# Leaving the server


@pytest.mark.parametrize("how", ["quit", "lost", "kick", "flood", "shutdown"])
def test_leaving_the_server_takes_a_user_out_of_every_room_silently(how: str) -> None:
    chat, _ = chat_with_operators(prof="secret1")
    prof = op(chat, "prof", "secret1")
    alice, bob = users(chat, "alice", "bob")
    for room in ("#a", "#b"):
        alice.send(f"/join {room}\n".encode())
    bob.send(b"/join #a\n")
    alice.take(), bob.take(), prof.take()
    if how == "quit":
        alice.send(b"/quit\n")
    elif how == "lost":
        alice.transport.loseConnection()
    elif how == "kick":
        prof.send(b"/kick alice\n")
    elif how == "flood":
        alice.session.say_goodbye(wire.FLOODED, reason="flood")
    else:
        chat.factory.shutdown()
    got = bob.take()
    assert b"#a" not in got
    if how != "shutdown":
        assert got.startswith(chat.stamp() + "-Déconnection de alice".encode())
    assert rooms_of(chat).rooms.keys() == ({"a"} if how != "shutdown" else set())
    if how != "shutdown":
        assert list(rooms_of(chat).rooms["a"].members) == [bob.session]


def test_a_cut_reader_in_a_room_is_taken_out_of_it() -> None:
    chat = Chat(flood_rate=0, max_output=4096)
    alice, bob = users(chat, "alice", "bob")
    alice.send(b"/join #a\n")
    bob.send(b"/join #a\n")
    alice.take(), bob.take()
    bob.buffer_full()  # bob stops reading
    alice.send(b"x" * 3000 + b"\n" + b"y" * 3000 + b"\n")
    chat.advance(2)
    alice.send(b"z" * 3000 + b"\n")
    chat.advance(2)
    assert not bob.connected
    assert list(rooms_of(chat).rooms["a"].members) == [alice.session]


# History and search, per room (memory; the store's: test_rooms_store.py)


def test_history_and_search_read_the_current_rooms_lines_only() -> None:
    chat = Chat(flood_rate=0)
    alice, bob = users(chat, "alice", "bob")
    alice.send(b"/join #a\n")
    bob.send(b"/join #b\n")
    alice.send(b"pomme rouge\n")
    bob.send(b"pomme verte\n")
    bob.send(b"/join #accueil\n")
    bob.send(b"pomme jaune\n")
    alice.take(), bob.take()
    stamp = chat.stamp()
    alice.send(b"/history\n")
    assert alice.take() == wire.history_block(
        [stamp + b"-#a Connexion de alice\n", stamp + b"-#a alice: pomme rouge\n"], 2
    )
    alice.send(b"/search pomme\n")
    assert alice.take() == wire.search_block(
        "pomme", [stamp + b"-#a alice: pomme rouge\n"], 1
    )
    bob.send(b"/search pomme\n")
    assert bob.take() == wire.search_block(
        "pomme", [stamp + b"-alice: pomme jaune\n".replace(b"alice", b"bob")], 1
    )
    bob.send(b"/history 2\n")
    assert bob.take() == wire.history_block(
        [stamp + b"-Connexion de bob\n", stamp + b"-bob: pomme jaune\n"], 2
    )
    bob.send(b"/join #b\n")
    bob.take()
    bob.send(b"/history 1 avant fin\n")
    assert isinstance(chat.factory.history, MemoryHistory)
    assert bob.take() == wire.history_before_block(
        [stamp + b"-#b bob: pomme verte\n"], 1, 6, 6
    )
    bob.send(b"/history 5 avant 6\n")  # numbers are the whole history's
    assert bob.take() == wire.history_before_block(
        [stamp + b"-#b Connexion de bob\n"], 1, 4, 4
    )


def test_unread_reads_the_lobby_whatever_the_current_room() -> None:
    chat = Chat(flood_rate=0)
    alice, bob = users(chat, "alice", "bob")
    bob.send(b"/quit\n")
    alice.send(b"/join #a\n")
    alice.send(b"dans a\n")
    alice.send(b"/join #accueil\n")
    alice.send(b"dans le hall\n")
    alice.send(b"/join #a\n")
    (bob,) = users(chat, "bob")
    bob.send(b"/join #a\n")
    bob.take()
    bob.send(b"/unread\n")
    got = bob.take()
    assert b"dans le hall" in got
    assert b"dans a" not in got
    assert got.startswith("--- 1 message depuis votre dernière visite".encode())


# The lobby, byte for byte


def _lobby_scenario(rooms: bool) -> dict[str, bytes]:
    """Four users; with C{rooms}, carol and dave also use rooms. What alice
    and bob (a Ruby client: the lobby only) get."""
    chat = Chat(flood_rate=0)
    alice, bob, carol, dave = (
        chat.user(nick) for nick in ("alice", "bob", "carol", "dave")
    )

    def say(user: Client, line: bytes) -> None:
        user.send(line)
        chat.turn()

    say(alice, b"bonjour tout le monde\n")
    if rooms:
        say(carol, b"/join #projet\n")
        say(dave, b"/join projet\n")
        say(carol, b"on se parle ici\n")
        say(dave, b"/topic\n")
    say(bob, b"salut alice\n")
    say(carol, b"/join #accueil\n" if rooms else b"/list\n")
    say(carol, b"dans le hall\n")
    if rooms:
        say(dave, b"toujours dans le salon\n")
    say(alice, b"msg carol un secret\n")
    say(bob, b"/list\n")
    say(alice, b"/history 5\n")
    say(bob, b"/search bonjour\n")
    if rooms:
        say(dave, b"/part\n")
        say(carol, b"/join #autre\n")
        say(carol, b"seule ici\n")
    say(dave, b"/quit\n")
    say(alice, b"au revoir\n")
    chat.advance(10)  # a ping
    say(carol, b"/quit\n")
    stamps = re.compile(rb"\[\d+\.\d+\.\d+\]")
    return {
        "alice": stamps.sub(b"[H.M.S]", alice.take()),
        "bob": stamps.sub(b"[H.M.S]", bob.take()),
    }


# What main (before rooms) sent alice and bob in the scenario without rooms,
# recorded by running _lobby_scenario(False) on main's code.
BEFORE_ROOMS = {
    "alice": b"[H.M.S]-Connexion de bob\n[H.M.S]-Connexion de carol\n"
    b"[H.M.S]-Connexion de dave\n[H.M.S]-bob: salut alice\n"
    b"[H.M.S]-carol: dans le hall\n--- historique (5 lignes) ---\n"
    b"[H.M.S]-Connexion de carol\n[H.M.S]-Connexion de dave\n"
    b"[H.M.S]-alice: bonjour tout le monde\n[H.M.S]-bob: salut alice\n"
    b"[H.M.S]-carol: dans le hall\n--- fin de l'historique ---\n"
    b"[H.M.S]-D\xc3\xa9connection de dave\nping\n"
    b"[H.M.S]-D\xc3\xa9connection de carol\n",
    "bob": b"[H.M.S]-Connexion de carol\n[H.M.S]-Connexion de dave\n"
    b"[H.M.S]-alice: bonjour tout le monde\n[H.M.S]-carol: dans le hall\n"
    b"----------------------\nUtilisateurs en ligne:\n=>alice\n=>bob\n=>carol\n"
    b"=>dave\n----------------------\n"
    b"--- recherche \xc2\xab bonjour \xc2\xbb (1 ligne) ---\n"
    b"[H.M.S]-alice: bonjour tout le monde\n--- fin de la recherche ---\n"
    b"[H.M.S]-D\xc3\xa9connection de dave\n[H.M.S]-alice: au revoir\nping\n"
    b"[H.M.S]-D\xc3\xa9connection de carol\n",
}


@pytest.mark.parametrize("rooms", [False, True])
def test_a_lobby_user_sees_exactly_what_it_saw_before_rooms(rooms: bool) -> None:
    assert _lobby_scenario(rooms) == BEFORE_ROOMS


def test_joins_list_is_bounded_as_at_registration_and_list_has_all() -> None:
    chat = Chat(flood_rate=0, list_limit=2, join_notice_limit=0)
    found = users(chat, "u1", "u2", "u3", "u4")
    for user in found[:3]:
        user.send(b"/join #grand\n")
        user.take()
    last = found[3]
    last.send(b"/join #grand\n")
    assert last.take() == notice(wire.ROOM_CURRENT.format("grand")) + wire.user_list(
        ["u1", "u2"], 4
    )
    last.send(b"/list\n")
    assert last.take() == names("u1", "u2", "u3", "u4")
    last.send(b"/join #accueil\n")
    assert last.take() == notice(wire.ROOM_CURRENT.format("accueil")) + (
        wire.user_list(["u1", "u2"], 4)
    )


def test_a_rooms_pass_serves_pass_size_members_a_turn() -> None:
    """A line to a big room does not make one long reactor turn: its
    members get it pass_size a turn, each once."""
    chat = Chat(flood_rate=0, join_notice_limit=0, pass_size=2)
    found = in_room(chat, *[f"u{i}" for i in range(5)])
    found[0].send(b"x\n")
    others = found[1:]
    chat.turn()
    assert sum(bool(user.transport.value()) for user in others) == 2
    chat.turn()
    assert sum(bool(user.transport.value()) for user in others) == 4
    assert {user.take() for user in others} == {chat.stamp() + b"-#a u0: x\n"}
    assert found[0].take() == b""


def test_room_lines_wait_for_a_batch_only_while_the_rooms_are_busy() -> None:
    """As the lobby's: below batch_threshold deliveries a second nothing
    waits; above it a room's line made within batch_delay of the last
    pass waits for it, and goes out with the next ones in one write."""
    chat = Chat(batch_delay=0.02, batch_threshold=40, flood_rate=0)
    alice, bob, carol = users(chat, "alice", "bob", "carol")
    for user in (alice, bob, carol):
        user.send(b"/join #a\n")
    chat.advance(1)
    for user in (alice, bob, carol):
        user.take()

    def lines_a_second(n: int) -> None:
        for _ in range(n):
            alice.send(b"hop\n")
            chat.advance(1 / n)
        carol.take()

    lines_a_second(10)  # 20 deliveries a second: no waiting
    alice.send(b"quiet\n")
    assert carol.take().endswith(b"-#a alice: quiet\n")
    lines_a_second(30)  # 60 a second, for two seconds: lines wait
    lines_a_second(30)
    carol.transport.writes.clear()
    alice.send(b"one\n")
    chat.advance(0.001)
    bob.send(b"two\n")
    assert carol.take() == b""
    chat.advance(0.02)
    [write] = carol.transport.writes  # in one write
    one, two = write.splitlines()
    assert (one.endswith(b"-#a alice: one"), two.endswith(b"-#a bob: two")) == (
        True,
        True,
    )
    carol.take()
    chat.advance(5)  # quiet again
    alice.send(b"again\n")
    assert carol.take().endswith(b"-#a alice: again\n")


# Each room's log (chatproto/fanout.py's Log) and the members' places in it


def test_a_member_joins_at_the_rooms_end_even_within_a_turn() -> None:
    """Lines of the room made before a member joined, even in the same
    reactor turn (no pass has given them to anyone yet), are not its."""
    chat = Chat(flood_rate=0, join_notice_limit=0)
    alice, bob, carol = users(chat, "alice", "bob", "carol")
    alice.send(b"/join #a\n")
    bob.send(b"/join #a\n")
    chat.advance(0)
    alice.take(), bob.take()
    alice.send(b"avant\n")
    carol.send(b"/join #a\n")  # the same turn: no pass ran
    alice.send(b"apres\n")
    stamp = chat.stamp()
    assert (
        carol.take()
        == (notice("Salon courant : #a") + names("alice", "bob", "carol"))
        + stamp
        + b"-#a alice: apres\n"
    )
    assert bob.take() == stamp + b"-#a alice: avant\n" + stamp + b"-#a alice: apres\n"


def test_a_rooms_log_keeps_only_lines_some_member_has_not_been_given() -> None:
    chat = Chat(flood_rate=0, join_notice_limit=0, pass_size=2)
    found = in_room(chat, *[f"u{i}" for i in range(5)])
    room = rooms_of(chat).rooms["a"]
    found[0].send(b"un\n")
    found[1].send(b"deux\n")
    assert len(room.log.lines) == 2
    chat.turn()  # two members of four served: both lines still owed
    assert len(room.log.lines) == 2
    chat.advance(0)  # the pass ends: every member has them
    assert len(room.log.lines) == 0
    found[4].send(b"/part\n")
    found[0].send(b"trois\n")
    chat.advance(0)
    assert len(room.log.lines) == 0
    assert found[4].take().count(b"trois") == 0
    # a line for nobody (its sender is the room's only member) is not kept
    found[0].send(b"/join #seul\n")
    found[0].send(b"personne\n")
    assert len(rooms_of(chat).rooms["seul"].log.lines) == 0
    # nor is a room's line the lobby's
    assert chat.factory.room.fanout.kept == 0


def test_a_member_who_parts_gets_the_lines_made_before_and_none_after() -> None:
    chat = Chat(flood_rate=0, join_notice_limit=0)
    alice, bob = users(chat, "alice", "bob")
    alice.send(b"/join #a\n")
    bob.send(b"/join #a\n")
    chat.advance(0)
    alice.take(), bob.take()
    bob.transport.writes.clear()
    alice.send(b"avant\n")
    bob.send(b"/part\n")  # the same turn: the line is still in the log
    alice.send(b"apres\n")
    stamp = chat.stamp()
    assert bob.transport.writes[0] == stamp + b"-#a alice: avant\n"
    assert bob.take() == (
        stamp
        + b"-#a alice: avant\n"
        + notice("Vous avez quitté #a")
        + notice("Salon courant : #accueil")
    )


def test_a_member_who_parts_during_a_pass_of_several_turns_gets_no_more() -> None:
    """The pass serves the members it started with, pass_size a turn: one
    who left the room meanwhile is not given its later lines."""
    chat = Chat(flood_rate=0, join_notice_limit=0, pass_size=1)
    found = in_room(chat, *[f"u{i}" for i in range(4)])
    found[0].send(b"x\n")
    chat.turn()  # the pass gave u1 its line; u2 and u3 wait
    found[2].send(b"/rooms\n")  # u2 is given it, before the answer
    found[3].send(b"/part\n")  # and u3, as it leaves: both at the same place
    found[0].send(b"y\n")
    chat.advance(0)
    stamp = chat.stamp()
    assert found[3].take() == (
        stamp
        + b"-#a u0: x\n"
        + notice("Vous avez quitté #a")
        + notice("Salon courant : #accueil")
    )
    assert found[2].take() == (
        stamp
        + b"-#a u0: x\n"
        + wire.rooms_block([("accueil", 4), ("a", 4)])
        + wire.room_departure(stamp.decode(), "a", "u3")
        + stamp
        + b"-#a u0: y\n"
    )


def test_a_full_batch_of_a_rooms_lines_goes_out_at_once_in_one_write() -> None:
    """Past BATCH_LINES lines no pass started on, the room's members are
    given them at once (as the lobby's are), before the turn ends."""
    chat = Chat(flood_rate=0, join_notice_limit=0)
    alice, bob = users(chat, "alice", "bob")
    alice.send(b"/join #a\n")
    bob.send(b"/join #a\n")
    chat.advance(0)
    alice.take(), bob.take()
    bob.transport.writes.clear()
    alice.send(b"".join(b"l%d\n" % i for i in range(BATCH_LINES)))
    [write] = bob.transport.writes  # no reactor turn ran
    assert write.count(b"\n") == BATCH_LINES
    assert len(rooms_of(chat).rooms["a"].log.lines) == 0


def test_a_reader_cut_in_the_middle_of_a_rooms_pass_leaves_as_any_departure() -> None:
    """A write of the rooms' pass that cuts its reader: it leaves the room
    and the lobby (its departure, a lobby line, comes after the room's
    lines to the members the pass had not reached yet), and the others get
    every line once."""
    chat = Chat(flood_rate=0, join_notice_limit=0, max_output=4096, pass_size=1)
    alice, bob, carol = in_room(chat, "alice", "bob", "carol")
    bob.buffer_full()  # bob stops reading
    alice.send(b"x" * 3000 + b"\n" + b"y" * 3000 + b"\n")
    chat.advance(2)
    alice.send(b"z" * 3000 + b"\n")
    chat.advance(2)
    assert not bob.connected
    assert list(rooms_of(chat).rooms["a"].members) == [alice.session, carol.session]
    got = carol.take()
    assert [got.count(c * 3000) for c in (b"x", b"y", b"z")] == [1, 1, 1]
    assert got.index(b"z" * 3000) < got.index("Déconnection de bob".encode())
    assert len(rooms_of(chat).rooms["a"].log.lines) == 0


@pytest.mark.parametrize("seed", range(12))
def test_every_line_reaches_each_member_once_in_the_order_made(seed: int) -> None:
    """Users in several rooms and the lobby, joining and leaving, lines of
    every kind within and across turns, passes of several turns: each user
    gets every line made while it could hear it, once, in the order the
    server made them (lobby, rooms, private lines merged)."""
    rng = random.Random(seed)
    chat = Chat(flood_rate=0, join_notice_limit=0, pass_size=rng.choice([1, 2, 64]))
    nicks = [f"u{i}" for i in range(6)]
    clients = dict(zip(nicks, users(chat, *nicks), strict=True))
    rooms = ["a", "b", "c"]
    members: dict[str, set[str]] = {room: set() for room in rooms}
    current: dict[str, str | None] = dict.fromkeys(nicks)
    expected: dict[str, list[str]] = {nick: [] for nick in nicks}
    for step in range(300):
        nick = rng.choice(nicks)
        client = clients[nick]
        token = f"m{step}"
        action = rng.random()
        if action < 0.15:
            room = rng.choice(rooms)
            client.send(f"/join #{room}\n".encode())
            members[room].add(nick)
            current[nick] = room
        elif action < 0.22:
            room = rng.choice(rooms)
            if nick in members[room]:
                client.send(f"/part #{room}\n".encode())
                members[room].discard(nick)
                if current[nick] == room:
                    current[nick] = None
        elif action < 0.27:
            client.send(b"/join #accueil\n")
            current[nick] = None
        elif action < 0.35:
            other = rng.choice([other for other in nicks if other != nick])
            client.send(f"msg {other} {token}\n".encode())
            expected[other].append(token)
        elif action < 0.85:
            client.send(f"{token}\n".encode())
            said_in = current[nick]
            hearers = set(nicks) if said_in is None else members[said_in]
            for hearer in hearers - {nick}:
                expected[hearer].append(token)
        elif action < 0.95:
            chat.turn()
        else:
            client.send(b"/rooms\n")  # an answer: a write outside any pass
    chat.advance(1)
    tokens = re.compile(rb": (m\d+)$")
    for nick, client in clients.items():
        got = [
            match[1].decode()
            for line in client.transport.value().splitlines()
            if (match := tokens.search(line))
        ]
        assert got == expected[nick], nick
    for named in rooms_of(chat).rooms.values():
        assert named.log.lines == []
