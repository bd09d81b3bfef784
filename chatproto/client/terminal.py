"""The interactive user interface of the chat client (a terminal).

prompt_toolkit edits the line at the bottom of the screen (history with the
arrows, the usual Emacs keys) and prints each event above it, so the line
being typed stays intact while messages arrive. Twisted runs on asyncio for
this: L{run_interactive} installs C{asyncioreactor} before anything imports
the reactor. Only C{python -m chatproto.client} on a terminal imports this
module (L{chatproto.client.__main__}), so that nothing else loads
prompt_toolkit or finds the asyncio reactor installed.

A password is never shown nor kept: the answer to the server's password
prompt is read without echo (C{password: ***}), a command that carries one
(L{chatproto.client.masking}) shows it as stars as it is typed and once
sent, and neither goes into the line editor's history (L{DiscreetHistory}).

What the server sends is printed above the line being edited in batches:
the lines that came meanwhile, up to L{TtyUI.BATCH} of them, in one write
(one C{in_terminal}, which hides the prompt and draws it again), never one
such round per line: a burst of 100,000 lines costs 200 redraws, not
100,000, and the keys the user types are read between two batches. While
the terminal owes more than L{TtyUI.BACKLOG} lines, the client reads
nothing more from the server (L{ClientSession.pause_reading}), so a server
that sends without end cannot make it hold more than that.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections import deque
from collections.abc import Callable
from typing import cast

from prompt_toolkit import PromptSession, print_formatted_text
from prompt_toolkit.application import in_terminal
from prompt_toolkit.application.current import get_app_session
from prompt_toolkit.filters import Condition
from prompt_toolkit.formatted_text import FormattedText, StyleAndTextTuples
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.layout.processors import (
    Processor,
    Transformation,
    TransformationInput,
)
from prompt_toolkit.layout.utils import explode_text_fragments
from prompt_toolkit.renderer import print_formatted_text as print_fragments
from prompt_toolkit.styles import Style
from prompt_toolkit.utils import get_cwidth
from twisted.internet.defer import Deferred

from chatproto.client.events import (
    CurrentRoom,
    Event,
    Private,
    Public,
    Refused,
    Registered,
    RoomEvent,
    RoomPublic,
    UserList,
)
from chatproto.client.masking import carries_password, password_start
from chatproto.client.options import ClientOptions
from chatproto.client.session import ClientSession, run

__all__ = [
    "DiscreetHistory",
    "MaskPasswords",
    "TtyUI",
    "prompt_label",
    "render",
    "run_interactive",
    "wrap",
]

STYLE = Style.from_dict(
    {
        "private": "ansimagenta bold",
        # A room's name on its lines: another room's stands out, the
        # current room's (where a plain line goes) is plainer.
        "room": "ansigreen bold",
        "room-here": "bold",
        "notice": "ansicyan",
        "refused": "ansired bold",
        "client": "ansiyellow",
        "prompt": "bold",
    }
)

Fragments = list[tuple[str, str]]

#: After a user list the client cut (L{UserList.cut}).
LIST_CUT = "* The user list is too long to keep: its other lines follow as they come."


#: What starts each row of a line too long for the terminal after its first.
INDENT = "  "


def wrap(fragments: Fragments, width: int, indent: str = INDENT) -> Fragments:
    """C{fragments} cut into rows of C{width} columns, each row after a
    line's first starting with C{indent}.

    The terminal would wrap a long line itself, its next row starting at
    the left edge as a line of its own does: a user could pad a line with
    blanks to the width of the others' terminals and make what follows
    look like another user's line (C{[20.19.18]-alice: ...}). Rows cut
    here start with C{indent}; only a line's first row starts at the edge.
    Widths are the terminal's columns (C{get_cwidth}: two for a wide
    character)."""
    room = width - get_cwidth(indent)
    if room < 10:  # a terminal too narrow to indent in: as it comes
        return fragments
    out: Fragments = []
    column = 0
    for style, text in fragments:
        if text.isascii() and column + len(text) <= width and "\n" not in text:
            out.append((style, text))  # the common case: it fits
            column += len(text)
            continue
        row: list[str] = []
        for char in text:
            if char == "\n":
                column = 0
                row.append(char)
                continue
            size = get_cwidth(char)
            if column + size > width:
                row.append("\n" + indent)
                column = width - room
            row.append(char)
            column += size
        out.append((style, "".join(row)))
    return out


def render(event: Event, room: str | None = None) -> Fragments:
    """What the terminal shows for C{event}: its lines, styled by kind.

    Private messages are marked with C{» } as well as coloured, so that they
    stand out on a terminal without colours too; the blank lines inside a
    user list are left out, and a line from the client says where a list too
    long to keep was cut. A line of a room (not the lobby's) keeps its text,
    with the room's name in it highlighted: in colour for a room other than
    the current one, C{room}, in bold only for the current room's.
    """
    if isinstance(event, RoomEvent) and event.lines:
        return _room_line(event, here=event.room == room)
    lines = event.lines
    if isinstance(event, UserList):
        lines = tuple(line for line in lines if line.strip())
    if not lines:
        return []
    text = "\n".join(lines)
    if isinstance(event, Public):
        return [("", text)]
    if isinstance(event, Private):
        return [("class:private", "» " + text)]
    if isinstance(event, Refused):
        return [("class:refused", text)]
    if isinstance(event, UserList) and event.cut:
        return [("class:notice", text), ("class:client", "\n" + LIST_CUT)]
    return [("class:notice", text)]


def _room_line(event: RoomEvent, *, here: bool) -> Fragments:
    # The room's name is the line's first '#' (after "[H.M.S]-", "Sujet de "
    # or "Salon courant : "), so the first match is the name itself.
    text = "\n".join(event.lines)
    start = text.find(event.room)
    if start < 0:  # not built by the reader; shown as any notice
        return [("class:notice", text)]
    end = start + len(event.room)
    rest = "" if isinstance(event, RoomPublic) else "class:notice"
    fragments = [
        (rest, text[:start]),
        ("class:room-here" if here else "class:room", event.room),
        (rest, text[end:]),
    ]
    return [fragment for fragment in fragments if fragment[1]]


#: The most characters of a nickname the prompt shows. chatproto's are 12
#: at most, but the Ruby server takes any line as a nickname, and a hostile
#: server may greet with any: a prompt of 60,000 characters took all the
#: CPU to draw, twice a second, and the keys typed were never read.
PROMPT_NICKNAME = 24


def prompt_label(nickname: str | None, room: str | None) -> str:
    """The prompt: the nickname, and the current room once the server has
    said it (C{bob #salle> }); as before rooms (C{bob> }) with a server
    that never says it. A nickname longer than L{PROMPT_NICKNAME} shows
    cut, ending with C{…}."""
    if nickname is not None and len(nickname) > PROMPT_NICKNAME:
        nickname = nickname[: PROMPT_NICKNAME - 1] + "…"
    label = " ".join(part for part in (nickname, room) if part)
    return f"{label}> "


class MaskPasswords(Processor):
    """Shows the password a line carries as stars, one a character, as it
    is typed and once it is sent (the line stays on the screen as shown)."""

    def apply_transformation(self, ti: TransformationInput) -> Transformation:
        line = ti.document.lines[ti.lineno]
        start = password_start(line)
        if start is None:
            return Transformation(ti.fragments)
        masked = [
            (style, "*" if start <= index < len(line) else text, *handler)
            for index, (style, text, *handler) in enumerate(
                explode_text_fragments(ti.fragments)
            )
        ]
        return Transformation(cast(StyleAndTextTuples, masked))


class DiscreetHistory(InMemoryHistory):
    """The line editor's history, which keeps no line that carries a
    password, nor any line while C{secret()} is true (the answer to the
    password prompt)."""

    def __init__(self, secret: Callable[[], bool]) -> None:
        super().__init__()
        self.secret = secret

    def append_string(self, string: str) -> None:
        if not (self.secret() or carries_password(string)):
            super().append_string(string)


class TtyUI:
    """The terminal user interface of one L{ClientSession}."""

    #: The most lines the terminal may owe (received, not printed yet)
    #: before the client stops reading the server until they are printed.
    BACKLOG = 10_000
    #: The most lines printed at a time: the keys typed are read between
    #: two batches, and a slow terminal takes a while to take a batch.
    BATCH = 500

    def __init__(self, session: ClientSession) -> None:
        self.session = session
        self.nickname: str | None = None
        #: The current room, once the server said it (L{CurrentRoom}).
        self.room: str | None = None
        # prompt_toolkit adds an accepted line to the history before the
        # session has it: whether it is the password is still known then.
        asking_password = Condition(lambda: self.session.asking_password)
        # Redrawn twice a second, so that the count of lines waiting their
        # turn (the client paces what it sends) follows the sending.
        self.prompt: PromptSession[str] = PromptSession(
            message=self.prompt_message,
            history=DiscreetHistory(asking_password),
            style=STYLE,
            refresh_interval=0.5,
            is_password=asking_password,
            input_processors=[MaskPasswords()],
        )
        self._task: asyncio.Future[None] | None = None
        #: What waits to be printed above the prompt, and how many lines.
        self._backlog: deque[tuple[Fragments, int]] = deque()
        self._owed = 0
        self._printing: asyncio.Future[None] | None = None

    def prompt_message(self) -> FormattedText:
        """The prompt as it is now: the nickname (or the question being
        asked), the current room, the lines waiting their turn."""
        if self.session.reasking:
            return FormattedText([("class:prompt", "nickname: ")])
        if self.session.asking_password:
            return FormattedText([("class:prompt", "password: ")])
        waiting = self.session.waiting
        fragments: Fragments = []
        if waiting:
            lines = f"{waiting} line{'' if waiting == 1 else 's'} waiting"
            fragments.append(("class:client", f"({lines}) "))
        fragments.append(("class:prompt", prompt_label(self.nickname, self.room)))
        return FormattedText(fragments)

    def show(self, event: Event) -> None:
        if isinstance(event, Registered):
            # A new registration (on a new connection) starts in the lobby.
            self.nickname, self.room = event.nickname, None
            self.prompt.app.invalidate()
        elif isinstance(event, CurrentRoom):
            self.room = event.room
            self.prompt.app.invalidate()
        fragments = render(event, self.room)
        if fragments:
            self._print(fragments)

    def note(self, text: str) -> None:
        """A line from the client itself, not from the server."""
        self._print([("class:client", f"* {text}")])

    def ask_nickname(self, why: str) -> None:
        self.note(f"{why} Type another nickname, or Ctrl-D to leave.")
        self.prompt.app.invalidate()

    def _print(self, fragments: Fragments) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            # No event loop, so no line editor to hide (a test): print now.
            print_formatted_text(FormattedText(fragments), style=STYLE)
            return
        busy = self._printing is not None and not self._printing.done()
        lines = 1 + sum(text.count("\n") for _, text, *_ in fragments)
        self._backlog.append((fragments, lines))
        self._owed += lines
        if self._owed >= self.BACKLOG:
            self.session.pause_reading()
        if not busy:
            self._printing = asyncio.ensure_future(self._print_backlog())

    async def _print_backlog(self) -> None:
        """Print what waits above the prompt, a batch at a time, until
        nothing waits; then read the server again if it was paused."""
        while self._backlog:
            batch: Fragments = []
            lines = 0
            while self._backlog and lines < self.BATCH:
                fragments, count = self._backlog.popleft()
                batch += [*fragments, ("", "\n")]
                lines += count
            self._owed -= lines
            async with in_terminal():
                output = get_app_session().output
                batch = wrap(batch, output.get_size().columns)
                print_fragments(output, FormattedText(batch), STYLE)
                output.flush()
            if self._owed < self.BACKLOG:
                self.session.resume_reading()

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._read())

    def stop(self) -> Deferred[None] | None:
        """Print what waits, then leave the line editor (the terminal gets
        its settings back)."""
        printing = self._printing is not None and not self._printing.done()
        if not printing and (self._task is None or self._task.done()):
            return None
        return Deferred.fromFuture(asyncio.ensure_future(self._stop()))

    async def _stop(self) -> None:
        if self._printing is not None:
            await self._printing
        if self._task is None or self._task.done():
            return
        if self.prompt.app.is_running:
            self.prompt.app.exit()
        else:  # between two prompts
            self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    #: How long leaving may take before the client says what it waits for.
    LEAVING_NOTE = 1.0

    async def _read(self) -> None:
        await self._read_lines()
        if self.session.done.called:
            return
        # Leaving: the line editor is gone, and the server's answer to
        # /quit (or the lines still waiting their turn) may take a while.
        await asyncio.sleep(self.LEAVING_NOTE)
        if not self.session.done.called:
            self.note(self._leaving())

    def _leaving(self) -> str:
        waiting = self.session.waiting
        if waiting == 1:
            what = "Leaving once the line waiting is sent"
        elif waiting:
            what = f"Leaving once the {waiting} lines waiting are sent"
        else:
            what = "Leaving: waiting for the server to answer /quit"
        return f"{what} (Ctrl-C leaves at once)."

    async def _read_lines(self) -> None:
        # The session's own handler (run() installs it before the UI
        # starts): prompt_toolkit before 3.0.4x leaves asyncio's default
        # behind when a prompt ends, and Ctrl-C while leaving would then
        # raise KeyboardInterrupt out of the reactor, a traceback.
        on_interrupt = signal.getsignal(signal.SIGINT)
        while not (self.session.leaving or self.session.done.called):
            try:
                line = await self.prompt.prompt_async()
            except (EOFError, KeyboardInterrupt):
                self.session.user_quit()
                return
            finally:
                if on_interrupt is not None:
                    signal.signal(signal.SIGINT, on_interrupt)
            if line is None:  # stop() ended the prompt
                return
            if not (self.session.asking_password or self.session.reasking):
                # Enter on an empty line says nothing: the Ruby server
                # would show everyone an empty message, and before
                # registering any server answers it with its welcome (a
                # line refused, so an exit status of 1). The blank lines
                # of a paste neither.
                line = "\n".join(part for part in line.split("\n") if part.strip())
                if not line:
                    continue
            self.session.user_line(line)


def run_interactive(options: ClientOptions) -> int:
    """Interactive mode: Twisted on asyncio, under prompt_toolkit."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    from twisted.internet import asyncioreactor

    asyncioreactor.install(loop)
    from twisted.internet import reactor

    return run(reactor, options, TtyUI, reask=True)
