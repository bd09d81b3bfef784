"""The interactive user interface of the chat client (a terminal).

prompt_toolkit edits the line at the bottom of the screen (history with the
arrows, the usual Emacs keys) and prints each event above it, so the line
being typed stays intact while messages arrive. Twisted runs on asyncio for
this: L{run_interactive} installs C{asyncioreactor} before anything imports
the reactor. Only C{python -m chatproto.client} on a terminal imports this
module (L{chatproto.client.__main__}), so that nothing else loads
prompt_toolkit or finds the asyncio reactor installed.
"""

from __future__ import annotations

import asyncio

from prompt_toolkit import PromptSession, print_formatted_text
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.styles import Style
from twisted.internet.defer import Deferred

from chatproto.client.events import (
    Event,
    Private,
    Public,
    Refused,
    Registered,
    UserList,
)
from chatproto.client.options import ClientOptions
from chatproto.client.session import ClientSession, run

__all__ = ["TtyUI", "render", "run_interactive"]

STYLE = Style.from_dict(
    {
        "private": "ansimagenta bold",
        "notice": "ansicyan",
        "refused": "ansired bold",
        "client": "ansiyellow",
        "prompt": "bold",
    }
)

Fragments = list[tuple[str, str]]

#: After a user list the client cut (L{UserList.cut}).
LIST_CUT = "* The user list is too long to keep: its other lines follow as they come."


def render(event: Event) -> Fragments:
    """What the terminal shows for C{event}: its lines, styled by kind.

    Private messages are marked with C{» } as well as coloured, so that they
    stand out on a terminal without colours too; the blank lines inside a
    user list are left out, and a line from the client says where a list too
    long to keep was cut.
    """
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


class TtyUI:
    """The terminal user interface of one L{ClientSession}."""

    def __init__(self, session: ClientSession) -> None:
        self.session = session
        self.nickname: str | None = None
        # Redrawn twice a second, so that the count of lines waiting their
        # turn (the client paces what it sends) follows the sending.
        self.prompt: PromptSession[str] = PromptSession(
            message=self._message,
            history=InMemoryHistory(),
            style=STYLE,
            refresh_interval=0.5,
        )
        self._task: asyncio.Future[None] | None = None

    def _message(self) -> FormattedText:
        if self.session.reasking:
            return FormattedText([("class:prompt", "nickname: ")])
        waiting = self.session.waiting
        fragments: Fragments = []
        if waiting:
            lines = f"{waiting} line{'' if waiting == 1 else 's'} waiting"
            fragments.append(("class:client", f"({lines}) "))
        fragments.append(("class:prompt", f"{self.nickname or ''}> "))
        return FormattedText(fragments)

    def show(self, event: Event) -> None:
        if isinstance(event, Registered):
            self.nickname = event.nickname
            self.prompt.app.invalidate()
        fragments = render(event)
        if fragments:
            self._print(fragments)

    def note(self, text: str) -> None:
        """A line from the client itself, not from the server."""
        self._print([("class:client", f"* {text}")])

    def ask_nickname(self, why: str) -> None:
        self.note(f"{why} Type another nickname, or Ctrl-D to leave.")
        self.prompt.app.invalidate()

    def _print(self, fragments: Fragments) -> None:
        print_formatted_text(FormattedText(fragments), style=STYLE)

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._read())

    def stop(self) -> Deferred[None] | None:
        """Leave the line editor (the terminal gets its settings back)."""
        if self._task is None or self._task.done():
            return None
        if self.prompt.app.is_running:
            self.prompt.app.exit()
        else:  # between two prompts
            self._task.cancel()
        return Deferred.fromFuture(self._task)

    async def _read(self) -> None:
        while not (self.session.leaving or self.session.done.called):
            try:
                line = await self.prompt.prompt_async()
            except (EOFError, KeyboardInterrupt):
                self.session.user_quit()
                return
            if line is None:  # stop() ended the prompt
                return
            self.session.user_line(line)


def run_interactive(options: ClientOptions) -> int:
    """Interactive mode: Twisted on asyncio, under prompt_toolkit."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    from twisted.internet import asyncioreactor

    asyncioreactor.install(loop)
    from twisted.internet import reactor

    return run(reactor, options, TtyUI, reask=True)
