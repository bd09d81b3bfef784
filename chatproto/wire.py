"""The lines the server sends, byte for byte (docs/protocol.md).

The first group is fixed by the Ruby peer: its client matches some of these
lines exactly, and exits on C{INVALID_NICK}, C{TAKEN} and C{BYE}. Everything
else the server says is plain French, one line, and never equal to those.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

WELCOME = b"Bienvenue dans le chat v.1, enregistrez-vous avec la commande /pseudo\n"
PROMPT = b"Entrez votre pseudo: \n"
INVALID_NICK = b"Rentrez un pseudo correct\n"
TAKEN = b"Attention ce pseudo existe deja\n"
BYE = b"Deconnexion\n"
PING = b"ping\n"
RULE = b"----------------------\n"
LIST_TITLE = b"Utilisateurs en ligne:\n"

# What the Ruby client exits on: no other line may be equal to one of these.
CLIENT_EXITS = frozenset(line.rstrip(b"\n") for line in (INVALID_NICK, TAKEN, BYE))

HELP = (
    "Commandes :\n"
    "  /pseudo PSEUDO     choisir son pseudo (ou /pseudo, puis le pseudo)\n"
    "  /list              voir qui est dans le salon courant\n"
    "  /history [N]       les N dernières lignes publiques (20 par défaut)\n"
    "  /search MOTS       les 20 dernières lignes publiques qui ont ces mots\n"
    "  /unread            les lignes publiques dites depuis votre dernière visite\n"
    "  msg PSEUDO TEXTE   envoyer un message privé à PSEUDO\n"
    "  /join #SALON       rejoindre un salon, qui devient le salon courant\n"
    "  /part [#SALON]     quitter un salon (par défaut, le salon courant)\n"
    "  /rooms             voir les salons et leurs membres\n"
    "  /topic [SUJET]     le sujet du salon courant (le changer : opérateurs)\n"
    "  /register MDP      protéger son pseudo par le mot de passe MDP\n"
    "  /unregister MDP    lever cette protection\n"
    "  /help              cette aide\n"
    "  /quit              quitter le chat\n"
    "Toute autre ligne est envoyée au salon courant (#accueil au départ).\n"
).encode()

TOO_LONG = "Erreur : ligne trop longue (plus de {} octets), ignorée"
UNKNOWN_COMMAND = "Erreur : commande inconnue {} (tapez /help pour l'aide)"
PRIVATE_USAGE = "Erreur : pour un message privé, tapez msg PSEUDO TEXTE"
PRIVATE_EMPTY = "Erreur : message privé vide pour {}"
PRIVATE_NOT_A_NICK = "Erreur : {} n'est pas un pseudo, tapez msg PSEUDO TEXTE"
NO_SUCH_USER = "Erreur : {} n'est pas connecté"
ALREADY_NAMED = "Erreur : vous êtes déjà enregistré sous le pseudo {}"
UNAVAILABLE = "Erreur : inscription impossible pour le moment, réessayez plus tard"
PRIVATE_UNAVAILABLE = (
    "Erreur : message privé pour {} impossible pour le moment, réessayez plus tard"
)
INTERNAL_ERROR = "Erreur interne du serveur, votre ligne est perdue"
REGISTRATION_EXPIRED = "Délai d'enregistrement dépassé, au revoir"
SERVER_FULL = "Le serveur est plein, réessayez plus tard"
TOO_MANY_FROM_HOST = "Trop de connexions depuis votre adresse, réessayez plus tard"
TOO_MANY_FROM_NETWORK = "Trop de connexions depuis votre réseau, réessayez plus tard"
MADE_ROOM = (
    "Place faite à un nouveau venu : vous ne vous êtes pas enregistré, au revoir"
)
STOPPING = "Le serveur s'arrête, à bientôt"
CLUSTER_LOST = (
    "Le serveur a perdu le contact avec le reste du chat, qui vous a vu partir : "
    "vous êtes déconnecté, reconnectez-vous"
)
# To a user whose nickname another node gave away while this one was cut off.
NICK_LOST = (
    "Votre pseudo {} a été pris par quelqu'un d'autre pendant une coupure "
    "du serveur : reconnectez-vous avec un autre pseudo"
)
FLOOD = "Trop de messages trop vite : vous êtes déconnecté"
FLOODED = (FLOOD + "\n").encode()
# To a user cut for not answering pings (--max-missed-pings): an nc user
# learns why, and what to type.
PING_TIMEOUT = "Déconnecté : pas de réponse aux pings (répondez pong)"


def departure_prefix(stamp: str) -> bytes:
    """The start of a departure line, C{[H.M.S]-Déconnection de }: the
    nickname and C{\\n} follow. (A cluster's Redis scripts complete it.)"""
    return f"{stamp}-Déconnection de ".encode()


def notice(text: str) -> bytes:
    """One line of plain text from the server."""
    return (text + "\n").encode()


def user_list(names: Sequence[str], total: int) -> bytes:
    """The user list block; when it shows only the first of C{total} users,
    a line says how many more there are."""
    parts = [RULE, LIST_TITLE, _names(names)]
    if total > len(names):
        more = total - len(names)
        parts.append(
            f"... et {more} autres (tapez /list pour tous les voir)\n".encode()
        )
    parts.append(RULE)
    return b"".join(parts)


# The last names encoded by _names, and their bytes.
_last_names: tuple[tuple[str, ...], bytes] = ((), b"")


def _names(names: Sequence[str]) -> bytes:
    """The names of a list block. Each newcomer to a big chat is sent the
    same first --list-limit names: encoded once (profiled: a tenth of the
    cost of a registration), and found again by comparing with the last
    ones (the same string objects: 0.5 us for 100 names, where hashing
    them for a cache took 4)."""
    global _last_names
    key = tuple(names)
    last, block = _last_names
    if key != last:
        block = b"".join([b"=>" + name.encode() + b"\n" for name in key])
        _last_names = (key, block)
    return block


# Moderation (chatproto/moderation.py): operators, kicks, bans. None of these
# is a line the Ruby client exits on; a kicked user gets BYE after its line.
OP_GRANTED = (
    "Vous êtes opérateur : /kick PSEUDO [raison], /ban PSEUDO|ADRESSE "
    "[minutes] [raison], /unban ADRESSE, /bans"
)
OP_ALREADY = "Vous êtes déjà opérateur"
OP_NONE = "Erreur : ce serveur n'a pas d'opérateurs"
OP_USAGE = "Erreur : tapez /op MOT_DE_PASSE"
OP_WRONG = "Erreur : mot de passe d'opérateur refusé"
OP_THROTTLED = "Erreur : trop d'essais de mot de passe, réessayez dans {} secondes"
NOT_OPERATOR = "Erreur : {} est réservé aux opérateurs (tapez /op MOT_DE_PASSE)"
KICK_USAGE = "Erreur : tapez /kick PSEUDO [raison]"
KICK_SELF = "Erreur : vous ne pouvez pas vous expulser vous-même"
KICK_DONE = "{} est expulsé"
KICK_UNAVAILABLE = (
    "Erreur : expulsion de {} impossible pour le moment, réessayez plus tard"
)
KICKED_YOU = "Vous avez été expulsé par {}"
BANNED_YOU = "Vous avez été banni par {} pour {}"
BAN_USAGE = "Erreur : tapez /ban PSEUDO|ADRESSE [minutes, de 1 à {}] [raison]"
BAN_DONE = "L'adresse {} est bannie pour {}"
UNBAN_USAGE = "Erreur : tapez /unban ADRESSE"
UNBAN_DONE = "L'adresse {} n'est plus bannie"
NOT_BANNED = "Erreur : l'adresse {} n'est pas bannie"
NO_BANS = "Aucune adresse bannie"
BANS_TITLE = "Adresses bannies : {}"
BANNED = "Votre adresse est bannie de ce chat pour encore {}"


def minutes(n: int) -> str:
    """C{1 minute}, C{5 minutes}: a ban's length, in the lines above."""
    return f"{n} minute" if n == 1 else f"{n} minutes"


def ban_entry(address: str, until: str, left: int, by: str, reason: str) -> str:
    """One line of /bans:
    C{  ADDRESS jusqu'au UNTIL (encore N min), par OP[ : raison]}."""
    entry = f"  {address} jusqu'au {until} (encore {left} min), par {by}"
    return f"{entry} : {reason}" if reason else entry


def kicked_departure(
    stamp: str, nick: str, operator: str, reason: str, banned: bool = False
) -> bytes:
    """The departure of a kicked (or banned) user, as everyone sees it: the
    usual departure line, C{[H.M.S]-Déconnection de NICK}, then
    C{ (expulsé par OP : raison)} or C{ (banni par OP : raison)}."""
    why = f"{'banni' if banned else 'expulsé'} par {operator}"
    if reason:
        why += f" : {reason}"
    return departure_prefix(stamp) + f"{nick} ({why})\n".encode()


# History (chatproto/history.py): /history [N] answers with the last N public
# lines, as they were sent, between these two markers; neither is equal to a
# line the Ruby client exits on, nor to the list block's rule.
HISTORY_END = b"--- fin de l'historique ---\n"
HISTORY_USAGE = "Erreur : tapez /history ou /history N, N un nombre de 1 à {}"
HISTORY_OFF = "Erreur : ce serveur ne garde pas d'historique"
HISTORY_UNAVAILABLE = (
    "Erreur : historique impossible à lire pour le moment, réessayez plus tard"
)


def history_header(count: int) -> bytes:
    """The line before the history's lines: C{--- historique (N lignes) ---}
    (C{ligne} for 0 or 1)."""
    word = "lignes" if count > 1 else "ligne"
    return f"--- historique ({count} {word}) ---\n".encode()


def history_block(lines: list[bytes], count: int) -> bytes:
    """The answer to /history: the header, the lines (C{count} public lines
    and their day lines), the end marker."""
    return b"".join([history_header(count), *lines, HISTORY_END])


# A /history or /search block introduces the lines of each day other than
# today (the server's local time) with a day line:
# C{--- WEEKDAY DAY MONTH YEAR ---}, e.g. C{--- lundi 7 décembre 2026 ---}.
DAY_LINE = "--- {} {} {} {} ---"
WEEKDAYS = ("lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche")
MONTHS = (
    "janvier",
    "février",
    "mars",
    "avril",
    "mai",
    "juin",
    "juillet",
    "août",
    "septembre",
    "octobre",
    "novembre",
    "décembre",
)


def day_line(day: time.struct_time) -> bytes:
    """The day line of C{day} (a local time): C{1er} for the first of the
    month, the day's number otherwise."""
    number = "1er" if day.tm_mday == 1 else str(day.tm_mday)
    weekday, month = WEEKDAYS[day.tm_wday], MONTHS[day.tm_mon - 1]
    return notice(DAY_LINE.format(weekday, number, month, day.tm_year))


# /history N avant K: the N lines kept before line number K (K: a number
# of a header below, or "fin" for after the newest line), between a header
# that gives their numbers and HISTORY_END; none: HISTORY_START alone.
HISTORY_START = "--- début de l'historique ---"
HISTORY_BEFORE_USAGE = (
    "Erreur : tapez /history N avant K, N un nombre de 1 à {}, "
    "K un numéro de ligne ou fin"
)


def history_before_block(
    lines: list[bytes], count: int, first: int, last: int
) -> bytes:
    """The answer to /history N avant K: C{--- historique (N lignes, n° F
    à L) ---} (C{1 ligne}), the lines and their day lines, HISTORY_END."""
    word = "lignes" if count > 1 else "ligne"
    header = f"--- historique ({count} {word}, n° {first} à {last}) ---\n"
    return b"".join([header.encode(), *lines, HISTORY_END])


# /unread: the public lines kept since the user's read position (the
# newest line when it last left, chatproto/positions.py), the last
# UNREAD_MOST of them, with day lines, between a header and UNREAD_END.
UNREAD_END = "--- fin des messages depuis votre dernière visite ---"
UNREAD_NONE = "Aucun message depuis votre dernière visite"
UNREAD_UNKNOWN = "Erreur : aucune visite précédente connue pour ce pseudo"
UNREAD_USAGE = "Erreur : tapez /unread, sans rien après"
UNREAD_UNAVAILABLE = (
    "Erreur : messages depuis votre dernière visite impossibles à lire "
    "pour le moment, réessayez plus tard"
)


def unread_block(
    lines: list[bytes], total: int, count: int, first: int, last: int
) -> bytes:
    """The answer to /unread: C{--- N messages depuis votre dernière visite
    (n° F à L) ---} (C{1 message}; when only the last C{count} of C{total}
    are given: C{, voici les COUNT derniers} before the numbers), the lines
    and their day lines, UNREAD_END."""
    word = "messages" if total > 1 else "message"
    shown = f", voici les {count} derniers" if count < total else ""
    header = (
        f"--- {total} {word} depuis votre dernière visite{shown} "
        f"(n° {first} à {last}) ---\n"
    )
    return b"".join([header.encode(), *lines, notice(UNREAD_END)])


# /search WORDS answers with the last public lines that hold every word,
# between these two markers (with day lines, as /history), or with one line
# that says none does. WORDS is the argument as the user typed it.
SEARCH_END = b"--- fin de la recherche ---\n"
SEARCH_NONE = "Aucune ligne ne contient « {} »"
SEARCH_USAGE = "Erreur : tapez /search MOTS, de 1 à {} mots et {} caractères au plus"
SEARCH_UNAVAILABLE = "Erreur : recherche impossible pour le moment, réessayez plus tard"


def search_header(words: str, count: int) -> bytes:
    """The line before the lines found: C{--- recherche « WORDS » (N lignes) ---}
    (C{ligne} for 1)."""
    word = "lignes" if count > 1 else "ligne"
    return f"--- recherche « {words} » ({count} {word}) ---\n".encode()


def search_block(words: str, lines: list[bytes], count: int) -> bytes:
    """The answer to /search: the header, the lines (C{count} public lines
    and their day lines), the end marker."""
    return b"".join([search_header(words, count), *lines, SEARCH_END])


# Moderation's loose ends (chatproto/moderation.py): /op's check failed
# (not the password: the server could not check it).
OP_UNAVAILABLE = (
    "Erreur : mot de passe impossible à vérifier pour le moment, réessayez plus tard"
)
# A ban or an unban while the cluster cannot be reached: refused, as it
# would hold on one node only.
BAN_UNAVAILABLE = (
    "Erreur : bannissement impossible pour le moment (cluster injoignable), "
    "réessayez plus tard"
)
UNBAN_UNAVAILABLE = (
    "Erreur : levée du bannissement impossible pour le moment "
    "(cluster injoignable), réessayez plus tard"
)
# A ban or an unban of a server alone whose bans file cannot be written (a
# read-only directory, a full disk): refused, as it would not survive a
# restart (chatproto/bans.py, Bans).
BANS_NOT_SAVED = (
    "Erreur : le fichier des bannissements ne peut pas être écrit "
    "(voir le journal du serveur), rien n'a changé"
)

# A /ban of a user of another node that its node never answered (it died,
# or could not answer, meanwhile: chatproto/moderation.py, ANSWER_WAIT).
BAN_UNANSWERED = (
    "Pas de réponse du serveur de {} : bannissement incertain, vérifiez avec /bans"
)

# Protected nicknames (chatproto/accounts.py, and the session): registering
# one asks for its password (a wrong one gets TAKEN, as a taken nickname;
# too many tries, OP_THROTTLED); /register and /unregister. None is a line
# the Ruby client exits on.
PASSWORD_PROMPT = "Ce pseudo est protégé : entrez son mot de passe"
REGISTER_DONE = "Pseudo {} protégé : il faudra ce mot de passe pour le reprendre"
UNREGISTER_DONE = "Pseudo {} libéré : chacun peut le prendre"
REGISTER_USAGE = "Erreur : tapez /register MOT_DE_PASSE (de {} à {} caractères)"
UNREGISTER_USAGE = "Erreur : tapez /unregister MOT_DE_PASSE"
ALREADY_PROTECTED = "Erreur : le pseudo {} est déjà protégé"
NOT_PROTECTED = "Erreur : le pseudo {} n'est pas protégé"
UNREGISTER_WRONG = "Erreur : mot de passe refusé, le pseudo {} reste protégé"
REGISTER_UNAVAILABLE = (
    "Erreur : protection du pseudo impossible pour le moment, réessayez plus tard"
)
UNREGISTER_UNAVAILABLE = (
    "Erreur : libération du pseudo impossible pour le moment, réessayez plus tard"
)


# Rooms (chatproto/rooms.py): the lobby, #accueil, is the chat above, line
# for line; named rooms are joined with /join. A room's own lines start
# with its name after the stamp: [H.M.S]-#NAME ...
LOBBY = "accueil"
ROOM_CURRENT = "Salon courant : #{}"
ROOM_TOPIC = "Sujet de #{} : {}"
ROOM_NO_TOPIC = "#{} n'a pas de sujet"
ROOM_LEFT = "Vous avez quitté #{}"
ROOMS_END = "--- fin des salons ---"
ROOM_USAGE = "Erreur : tapez {} #SALON, SALON de 1 à 24 lettres a-z, chiffres, _ ou -"
TOO_MANY_ROOMS = (
    "Erreur : trop de salons sur ce serveur ({} au plus), rejoignez-en un qui existe"
)
ROOMS_PER_USER = "Erreur : vous êtes déjà dans {} salons, quittez-en un avec /part"
PART_LOBBY = "Erreur : on ne quitte pas #accueil (tapez /quit pour quitter le chat)"
NOT_IN_ROOM = "Erreur : vous n'êtes pas dans #{}"
TOPIC_NOT_OPERATOR = "Erreur : seul un opérateur peut changer le sujet"
TOPIC_LOBBY = "Erreur : #accueil n'a pas de sujet"
TOPIC_TOO_LONG = "Erreur : sujet trop long ({} caractères au plus)"
ROOMS_UNAVAILABLE = (
    "Erreur : salons impossibles pour le moment (cluster injoignable), "
    "réessayez plus tard"
)


def room_prefix(stamp: str, room: str) -> str:
    """The start of a room's line: C{[H.M.S]-#NAME }."""
    return f"{stamp}-#{room} "


def room_said(stamp: str, room: str, nick: str, text: str) -> bytes:
    """A member's line to its room: C{[H.M.S]-#NAME NICK: TEXT}."""
    return f"{stamp}-#{room} {nick}: {text}\n".encode()


def room_arrival(stamp: str, room: str, nick: str) -> bytes:
    """C{[H.M.S]-#NAME Connexion de NICK}: NICK joined the room."""
    return f"{stamp}-#{room} Connexion de {nick}\n".encode()


def room_departure(stamp: str, room: str, nick: str) -> bytes:
    """C{[H.M.S]-#NAME Départ de NICK}: NICK left the room (/part)."""
    return f"{stamp}-#{room} Départ de {nick}\n".encode()


def room_topic_set(stamp: str, room: str, topic: str, nick: str) -> bytes:
    """C{[H.M.S]-#NAME Sujet : TOPIC (par NICK)}: an operator set it."""
    return f"{stamp}-#{room} Sujet : {topic} (par {nick})\n".encode()


def rooms_block(rooms: list[tuple[str, int]]) -> bytes:
    """The answer to /rooms: C{--- salons (COUNT) ---}, one line per room,
    C{#NAME N membres} (C{membre} for 1), the lobby first, C{ROOMS_END}."""
    lines = [f"--- salons ({len(rooms)}) ---\n"]
    for name, count in rooms:
        word = "membre" if count == 1 else "membres"
        lines.append(f"#{name} {count} {word}\n")
    lines.append(ROOMS_END + "\n")
    return "".join(lines).encode()
