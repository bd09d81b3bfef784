"""The page's home screen icons, drawn here: PNG images of any size, made in
memory when the site is made (no image file in the tree, nothing fetched).

The drawing is the favicon's (chatproto/webpage/favicon.svg): a white
speech bubble on the page's blue, here with three dots, filling the whole
square so that a phone may cut it to its own shape (a "maskable" icon: all
of the bubble lies within the middle 80 %). Each row is painted as spans,
their two ends blended by how much of the pixel they cover, so that the
curves are smooth without drawing pixel by pixel: both sizes take some
25 ms, once a process (L{icon} keeps what it made).
"""

from __future__ import annotations

import functools
import math
import struct
import zlib

BLUE = (0x0B, 0x57, 0xD0)  # the page's accent (style.css, --accent)
WHITE = (0xFF, 0xFF, 0xFF)

# The shapes, on a square of side 1: the bubble (a rounded rectangle: left,
# top, right, bottom, radius), its tail (a right triangle below it: its
# left edge's x, top y, bottom y, and the x its slanted edge starts at),
# and the three dots (centres' x, their y, radius).
BUBBLE = (0.2, 0.24, 0.8, 0.66, 0.09)
TAIL = (0.3, 0.64, 0.8, 0.47)
DOTS = ((0.36, 0.5, 0.64), 0.45, 0.045)

Span = tuple[float, float]


def _bubble(y: float) -> list[Span]:
    left, top, right, bottom, radius = BUBBLE
    if not top <= y <= bottom:
        return []
    into = max(top + radius - y, y - (bottom - radius), 0.0)
    inset = radius - math.sqrt(max(radius * radius - into * into, 0.0))
    return [(left + inset, right - inset)]


def _tail(y: float) -> list[Span]:
    x, top, bottom, slant = TAIL
    if not top <= y <= bottom:
        return []
    return [(x, slant - (slant - x) * (y - top) / (bottom - top))]


def _dots(y: float) -> list[Span]:
    centres, cy, radius = DOTS
    if abs(y - cy) >= radius:
        return []
    half = math.sqrt(radius * radius - (y - cy) ** 2)
    return [(cx - half, cx + half) for cx in centres]


def _paint(row: bytearray, size: int, span: Span, colour: tuple[int, ...]) -> None:
    """Paint C{span} (in units of the square's side) on a row of RGB
    pixels, its partly covered end pixels blended."""
    start, end = span[0] * size, span[1] * size
    if end <= start:
        return
    first, last = math.floor(start), math.floor(end)
    if first == last:
        _blend(row, first, colour, end - start)
        return
    _blend(row, first, colour, first + 1 - start)
    full = last - first - 1
    row[3 * (first + 1) : 3 * last] = bytes(colour) * full
    if last < size:
        _blend(row, last, colour, end - last)


def _blend(row: bytearray, x: int, colour: tuple[int, ...], cover: float) -> None:
    at = 3 * x
    for i in range(3):
        row[at + i] = round(row[at + i] * (1 - cover) + colour[i] * cover)


def _chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


@functools.cache
def icon(size: int) -> bytes:
    """The icon as a PNG of C{size} x C{size} pixels (8-bit RGB)."""
    if not 16 <= size <= 4096:
        raise ValueError(f"an icon of {size} pixels: give 16 to 4096")
    rows = []
    background = bytes(BLUE) * size
    for y in range(size):
        row = bytearray(background)
        middle = (y + 0.5) / size
        for span in _bubble(middle) + _tail(middle):
            _paint(row, size, span, WHITE)
        for span in _dots(middle):
            _paint(row, size, span, BLUE)
        rows.append(b"\x00" + bytes(row))  # each row unfiltered
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", zlib.compress(b"".join(rows), 9)),
            _chunk(b"IEND", b""),
        )
    )
