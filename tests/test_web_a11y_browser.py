"""The page's accessibility, audited by axe-core (the engine behind browsers'
accessibility audits) in a real browser (Debian's chromium, as in
tests/test_web_browser.py), in each of its states: before registering, the
password field, registered with lines of every kind, the unread marker, the
search panel, the rooms (one shown with its topic, another with unread
lines and a mention, the list open on a phone); phone-sized and desktop,
light and dark. No violation of moderate impact or worse is allowed.

axe-core comes from the npm registry, pinned in tests/package.json and
tests/package-lock.json: `make tests/node_modules/.installed` (which
`make test` runs when npm is there, and .ci/run always) installs it with
`npm ci`. Without it the test is skipped, saying so.

axe is put into the page through Playwright's evaluate, which the page's
Content-Security-Policy does not govern: the CSP the page is audited under
is the site's own, untouched.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser import MARKS, expect
from tests.test_web_account_browser import PASSWORD, FakeChat, Tab
from tests.test_web_browser import HIDE, SHOW
from tests.web_server import WebChat, running

AXE = Path(__file__).resolve().parent / "node_modules" / "axe-core" / "axe.min.js"
pytestmark = [
    *MARKS,
    pytest.mark.skipif(
        not AXE.exists(),
        reason="needs axe-core from npm: make tests/node_modules/.installed "
        "(npm ci in tests/; needs node and npm)",
    ),
]

# The impacts that fail the test: every one but "minor".
FAILING = ("moderate", "serious", "critical")
# axe run on the whole page, its violations in short: the rule, its impact,
# and the elements (CSS selectors) that break it.
AUDIT = """async (failing) => {
  const result = await axe.run(document, { resultTypes: ["violations"] });
  return result.violations
    .filter((violation) => failing.includes(violation.impact))
    .map((violation) => ({
      rule: violation.id,
      impact: violation.impact,
      help: violation.help,
      nodes: violation.nodes.map((node) => node.target.join(" ")),
    }));
}"""


class LiveChat(FakeChat):
    """The fake chat of tests/test_web_account_browser.py, which can also
    say a line to the page (as another user's line reaches it)."""

    def __init__(self) -> None:
        super().__init__()
        self.sockets: list[Any] = []

    def connect(self, ws: Any) -> None:
        self.sockets.append(ws)
        super().connect(ws)

    def say(self, *lines: str) -> None:
        for line in lines:
            self.sockets[-1].send(line)


@pytest.fixture(scope="module")
def chat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebChat]:
    with running(tmp_path_factory.mktemp("chat"), "--shutdown-timeout=2") as server:
        yield server


class Audited(Tab):
    """A tab whose every state is audited: C{found} holds, by state, the
    violations axe found in it."""

    def __init__(self, *args: Any, **context: Any) -> None:
        self.found: dict[str, list[dict[str, Any]]] = {}
        super().__init__(*args, **context)

    def say(self, line: str) -> None:
        field = self.page.get_by_label("Message")
        field.fill(line)
        field.press("Enter")

    def audit(self, state: str) -> None:
        if not self.page.evaluate("() => typeof axe === 'object'"):
            # evaluate runs outside the page's CSP, which stays as it is
            self.page.evaluate(AXE.read_text(encoding="utf-8"))
        self.found[state] = self.page.evaluate(AUDIT, list(FAILING))


@pytest.mark.parametrize(
    ("width", "height", "scheme"),
    [
        (360, 740, "light"),
        (360, 740, "dark"),
        (1100, 700, "light"),
        (1100, 700, "dark"),
    ],
    ids=["phone-light", "phone-dark", "desktop-light", "desktop-dark"],
)
def test_axe_finds_nothing_moderate_or_worse_in_any_state_of_the_page(
    chat: WebChat, browser: Any, width: int, height: int, scheme: str
) -> None:
    fake = LiveChat()
    tab = Audited(
        browser,
        chat,
        fake,
        viewport={"width": width, "height": height},
        color_scheme=scheme,
        is_mobile=width < 600,
        has_touch=width < 600,
    )
    page = tab.page

    expect(page.get_by_label("Pseudo")).to_be_visible()
    tab.audit("before registering")

    tab.join("alice")  # protected: the password field
    expect(page.get_by_label("Mot de passe")).to_be_visible()
    tab.audit("the password field")

    tab.type_password(PASSWORD)
    tab.connected("alice")
    notifications = page.get_by_role("button", name="activer les notifications")
    expect(notifications).to_be_visible()  # audited too
    fake.say(
        "[10.0.0]-Connexion de bob",
        "[10.0.1]-bob: bonjour, voyez https://example.org/doc",
        "[10.0.2]-bob: alice, tu es là ?",
        "[10.0.3]-message privé de bob: entre nous",
        "[10.0.4]-Déconnection de carol (exclue par un opérateur)",
    )
    tab.say("msg bob oui")
    tab.say("/history 2")  # a block with its day lines: separators
    expect(page.locator("#log .separator").last).to_have_text("— fin de l'historique —")
    expect(page.locator("#log li", has_text="entre nous")).to_have_class("private")
    tab.audit("registered, with lines")

    page.evaluate(HIDE)
    fake.say("[10.0.5]-bob: encore là ?")
    expect(page.locator("#unread")).to_be_visible()
    tab.audit("the unread marker")
    page.evaluate(SHOW)

    search = page.get_by_label("Rechercher")
    search.fill("chat noir")
    search.press("Enter")
    expect(page.get_by_role("region", name="Recherche").locator("li")).to_have_count(4)
    tab.audit("the search panel")
    page.get_by_role("button", name="Fermer la recherche").click()

    # Two rooms joined by the field (on a phone, in the rooms' panel), one
    # shown with its topic, the other with unread lines and a mention.
    for room in ("projet", "salle"):
        field = page.get_by_label("Salon", exact=True)
        if not field.is_visible():
            page.locator("#rooms summary").click()  # a phone: the panel
        field.fill(room)
        field.press("Enter")
        expect(page.locator("#room-title")).to_have_text(f"#{room}")
    expect(page.locator("#topic")).to_contain_text("le plan de la semaine")
    fake.say("[10.0.6]-#salle dave: bonjour", "[10.0.7]-#projet dave: alice, regarde")
    expect(page.locator("#room-list .badge.mention")).to_have_text("1")
    if not page.get_by_label("Salon", exact=True).is_visible():
        page.locator("#rooms summary").click()  # the panel open, on a phone
    expect(page.get_by_role("button", name="quitter #salle")).to_be_visible()
    tab.audit("the rooms")

    assert set(tab.found) == {
        "before registering",
        "the password field",
        "registered, with lines",
        "the unread marker",
        "the search panel",
        "the rooms",
    }
    violations = {state: found for state, found in tab.found.items() if found}
    assert violations == {}, violations
    assert tab.errors == []
    tab.context.close()
