"""The page as an installable app, as the site serves it: its manifest, its
drawn icons, its service worker (with the page's version put in), each
with its content type, the CSP and its cache headers; and the icons
themselves. tests/test_web_install_browser.py runs them in chromium."""

from __future__ import annotations

import json
import re
import shutil
import struct
import zlib
from pathlib import Path

import pytest
from twisted.internet.address import IPv4Address

from chatproto import icons, web
from chatproto.testing import Chat, RecordingTransport
from chatproto.web import (
    CONTENT_SECURITY_POLICY,
    PAGE,
    PAGE_FILES,
    PAGE_ICONS,
    VERSION_MARK,
    page_files,
    site,
)

Headers = dict[bytes, list[bytes]]


def fetch(path: str, *headers: str) -> tuple[bytes, Headers, bytes]:
    """A GET of the site: the status code, the headers, the body."""
    web_site = site(Chat().factory)
    peer = IPv4Address("TCP", "192.0.2.7", 1)
    channel = web_site.buildProtocol(peer)
    transport = RecordingTransport(peerAddress=peer)
    transport.protocol = channel
    channel.makeConnection(transport)
    extra = "".join(f"{header}\r\n" for header in headers)
    channel.dataReceived(
        f"GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra}"
        "Connection: close\r\n\r\n".encode()
    )
    head, _, body = transport.value().partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    found: Headers = {}
    for line in lines:
        header, _, value = line.partition(b": ")
        found.setdefault(header.lower(), []).append(value)
    if found.get(b"transfer-encoding") == [b"chunked"]:
        body = unchunked(body)
    return status.split(b" ")[1], found, body


def unchunked(data: bytes) -> bytes:
    out = b""
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return out
        out += data[:size]
        data = data[size + 2 :]


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """A PNG's width, height and rows of RGB bytes (8-bit RGB, unfiltered
    rows only: what chatproto/icons.py writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks: dict[bytes, bytes] = {}
    at = 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind = data[at + 4 : at + 8]
        body = data[at + 8 : at + 8 + length]
        (crc,) = struct.unpack(">I", data[at + 8 + length : at + 12 + length])
        assert zlib.crc32(kind + body) == crc, kind
        chunks[kind] = chunks.get(kind, b"") + body
        at += 12 + length
    assert set(chunks) == {b"IHDR", b"IDAT", b"IEND"}
    width, height, depth, colour, _, _, _ = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert (depth, colour) == (8, 2)
    raw = zlib.decompress(chunks[b"IDAT"])
    stride = 1 + 3 * width
    rows = [raw[y * stride : (y + 1) * stride] for y in range(height)]
    assert all(row[0] == 0 for row in rows)
    return width, height, [row[1:] for row in rows]


def pixel(rows: list[bytes], x: float, y: float) -> tuple[int, ...]:
    """The pixel at (x, y), in units of the side."""
    size = len(rows)
    at = 3 * int(x * size)
    return tuple(rows[int(y * size)][at : at + 3])


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/manifest.webmanifest", b"application/manifest+json"),
        ("/sw.js", b"text/javascript; charset=utf-8"),
        ("/icon-192.png", b"image/png"),
        ("/icon-512.png", b"image/png"),
    ],
)
def test_the_app_s_files_are_served_with_their_type_under_the_csp(
    path: str, content_type: bytes
) -> None:
    status, headers, body = fetch(path)
    assert status == b"200"
    assert headers[b"content-type"] == [content_type]
    assert headers[b"content-security-policy"] == [CONTENT_SECURITY_POLICY.encode()]
    assert headers[b"x-content-type-options"] == [b"nosniff"]
    assert headers[b"cache-control"] == [b"no-cache"]
    assert body == page_files()[path.lstrip("/")][0]


def test_the_csp_lets_the_page_have_its_manifest_and_worker_and_nothing_else() -> None:
    policy = dict(
        directive.strip().split(" ", 1)
        for directive in CONTENT_SECURITY_POLICY.split(";")
    )
    assert policy["default-src"] == "'none'"
    assert policy["manifest-src"] == "'self'"
    assert policy["worker-src"] == "'self'"
    assert policy["script-src"] == "'self'"
    assert policy["connect-src"] == "'self'"
    assert all(
        source in ("'self'", "'none'")
        for sources in policy.values()
        for source in sources.split()
    )


@pytest.mark.parametrize("path", ["/", "/app.js", "/sw.js", "/icon-512.png"])
def test_a_file_the_browser_has_is_revalidated_by_its_etag(path: str) -> None:
    """no-cache: the browser asks each time; an unchanged file costs a 304
    without a body, a changed one comes whole."""
    status, headers, body = fetch(path)
    (etag,) = headers[b"etag"]
    assert re.fullmatch(rb'"[0-9a-f]{32}"', etag)
    status, headers, body = fetch(path, f"If-None-Match: {etag.decode()}")
    assert status == b"304"
    assert body == b""
    status, headers, body = fetch(path, 'If-None-Match: "0123456789abcdef"')
    assert status == b"200"
    assert body


def test_the_manifest_makes_the_page_installable() -> None:
    status, _, body = fetch("/manifest.webmanifest")
    assert status == b"200"
    manifest = json.loads(body)
    assert manifest["name"] == manifest["short_name"] == "chat"
    assert manifest["start_url"] == manifest["scope"] == "./"
    assert manifest["display"] == "standalone"
    assert re.fullmatch("#[0-9a-f]{6}", manifest["theme_color"])
    assert re.fullmatch("#[0-9a-f]{6}", manifest["background_color"])
    sizes = {}
    for entry in manifest["icons"]:
        assert entry["type"] == "image/png"
        status, _, png = fetch("/" + entry["src"])
        assert status == b"200"
        width, height, _ = png_pixels(png)
        assert entry["sizes"] == f"{width}x{height}"
        sizes[entry["purpose"], width] = entry["src"]
    assert set(sizes) == {("any", 192), ("any", 512), ("maskable", 512)}
    html = (PAGE / "index.html").read_text()
    assert '<link rel="manifest" href="manifest.webmanifest">' in html


def test_the_worker_keeps_the_page_s_own_files_and_nothing_else() -> None:
    """Its list is every file the site serves but itself (the page as
    C{./}): no WebSocket, no other origin."""
    worker = page_files()["sw.js"][0].decode()
    (listed,) = re.findall(r"const FILES = \[(.*?)\];", worker, re.S)
    files = set(re.findall(r'"([^"]+)"', listed))
    served = set(PAGE_FILES) | set(PAGE_ICONS)
    assert files == served - {"index.html", "sw.js"} | {"./"}
    assert not re.search(r"['\"/]ws['\"]|new WebSocket", worker)
    assert not re.search(r"https?:", worker)


def test_the_worker_s_version_is_the_page_s_and_changes_with_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new page (any file) is a new sw.js, which the browser installs:
    how an update reaches those who have a copy."""
    (version,) = re.findall(
        r'const VERSION = "([^"]*)";', page_files()["sw.js"][0].decode()
    )
    assert re.fullmatch("[0-9a-f]{16}", version)
    assert VERSION_MARK not in page_files()["sw.js"][0]
    assert page_files()["sw.js"] == page_files()["sw.js"]  # the same page

    copy = tmp_path / "webpage"
    shutil.copytree(PAGE, copy)
    monkeypatch.setattr(web, "PAGE", copy)
    assert page_files()["sw.js"][0] == fetch("/sw.js")[2]
    assert page_files()["sw.js"][0].decode().count(version) == 1
    style = copy / "style.css"
    style.write_text(style.read_text() + "\n/* v2 */\n")
    (other,) = re.findall(
        r'const VERSION = "([^"]*)";', page_files()["sw.js"][0].decode()
    )
    assert other != version

    worker = copy / "sw.js"
    worker.write_text(worker.read_text().replace(VERSION_MARK.decode(), "x"))
    with pytest.raises(ValueError, match="lacks __PAGE_VERSION__"):
        page_files()


def test_the_icons_are_the_drawing_at_each_size() -> None:
    """The page's blue, a white bubble, three blue dots in it; the same
    drawing at any size, and no size out of reason."""
    blue, white = icons.BLUE, icons.WHITE
    for size in (16, 192, 512):
        width, height, rows = png_pixels(icons.icon(size))
        assert (width, height) == (size, size)
        assert pixel(rows, 0, 0) == blue
        assert pixel(rows, 0.99, 0.99) == blue
        assert pixel(rows, 0.5, 0.3) == white  # the bubble
        if size < 192:
            continue  # too few pixels for the details
        assert pixel(rows, 0.36, 0.45) == blue  # a dot
        assert pixel(rows, 0.43, 0.45) == white  # between two dots
        assert pixel(rows, 0.33, 0.72) == white  # the tail
        assert pixel(rows, 0.6, 0.72) == blue  # beside it
    _, _, rows = png_pixels(icons.icon(512))
    edge = {pixel(rows, x / 512, 0.45) for x in range(80, 140)}
    assert len(edge) > 2  # the bubble's side is blended, not a hard step
    for size in (0, 15, 4097):
        with pytest.raises(ValueError, match="give 16 to 4096"):
            icons.icon(size)
