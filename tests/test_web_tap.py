"""twistd chat --web: the options, and the web site beside the TCP port."""

from __future__ import annotations

import sys

import pytest
from twisted.internet.testing import MemoryReactorClock
from twisted.python.usage import UsageError
from twisted.web.server import Site

from chatproto.server import ChatFactory
from chatproto.tap import makeService
from chatproto.web import ChatWebSocketResource, _SecureSite
from tests.test_tap import parse


def test_without_web_there_is_no_web_server() -> None:
    reactor = MemoryReactorClock()
    makeService(parse("--port", "tcp:7000"), reactor=reactor).startService()
    assert [listen[0] for listen in reactor.tcpServers] == [7000]


def test_web_serves_the_site_on_the_same_room_as_the_tcp_port() -> None:
    reactor = MemoryReactorClock()
    options = parse(
        "--port", "tcp:7000", "--web", "8080", "--web-origin", "https://a.example"
    )
    assert options["web"] == "tcp:8080"
    makeService(options, reactor=reactor).startService()
    (_, chat, *_), (port, site, *_) = reactor.tcpServers
    assert port == 8080
    assert isinstance(chat, ChatFactory)
    assert isinstance(site, Site)
    websocket = site.resource.children[b"ws"]
    assert isinstance(websocket, ChatWebSocketResource)
    assert websocket.chat is chat  # one room for both
    assert websocket.origins == {"https://a.example"}


def test_web_origins_are_repeatable_and_comma_separated() -> None:
    options = parse(
        "--web",
        "tcp:8080",
        "--web-origin",
        "https://a.example,http://b.example:8000",
        "--web-origin=https://C.example/",
    )
    assert options["web_origins"] == {
        "https://a.example",
        "http://b.example:8000",
        "https://c.example",
    }


def test_web_hosts_are_repeatable_and_comma_separated_and_served() -> None:
    reactor = MemoryReactorClock()
    options = parse(
        "--web",
        "8080",
        "--web-host",
        "Chat.Example.org,b.example",
        "--web-host=c.example",
    )
    assert options["web_hosts"] == {"chat.example.org", "b.example", "c.example"}
    makeService(options, reactor=reactor).startService()
    (_, site, *_) = reactor.tcpServers[1]
    assert isinstance(site, _SecureSite)
    assert site.hosts == {"chat.example.org", "b.example", "c.example"}


@pytest.mark.parametrize(
    ("argv", "start"),
    [
        (
            ["--web", "carrier-pigeon:80"],
            "--web: 'carrier-pigeon:80' is not an endpoint",
        ),
        (["--web", "8080", "--web-origin", "a.example"], "--web-origin: 'a.example'"),
        (["--web-origin", "https://a.example"], "--web-origin is for the web page"),
        (["--web-host", "a.example"], "--web-host is for the web page"),
        (["--web", "8080", "--web-host", "a.example:80"], "--web-host: 'a.example:80'"),
    ],
)
def test_web_mistakes_are_explained(argv: list[str], start: str) -> None:
    with pytest.raises(UsageError) as raised:
        parse(*argv)
    assert str(raised.value).startswith(start)


def test_web_without_twisted_websocket_is_one_sentence(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Twisted before 26.10 has no twisted.web.websocket (and 26.4's split
    fragmented messages): --web says what to install, no traceback."""
    monkeypatch.setitem(sys.modules, "twisted.web.websocket", None)
    monkeypatch.delitem(sys.modules, "chatproto.web", raising=False)
    with pytest.raises(UsageError) as raised:
        parse("--web", "8080")
    assert str(raised.value).startswith("--web needs Twisted's WebSocket (")
    assert str(raised.value).endswith("pip install 'twisted[websocket]>=26.10'.")
