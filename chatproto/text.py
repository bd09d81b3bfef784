"""What a user's bytes may become before anyone else sees them."""

from __future__ import annotations

import re

# C0 controls but TAB, DEL, C1 controls (so every ANSI escape sequence loses
# its ESC or CSI); the line and paragraph separators, which some clients
# take for line ends (a forged second line); the bidirectional embeddings,
# overrides and isolates, which make a line read backwards; and invisible
# characters that hide text (zero width space, word joiner and invisible
# operators, byte order mark). Left alone: the marks LRM, RLM, ALM and the
# joiners ZWJ, ZWNJ, which right-to-left scripts and emoji need. The terminal
# client replaces the same characters in what a server sends it.
UNSAFE = re.compile(
    "[\x00-\x08\x0a-\x1f\x7f-\x9f\u200b\u2028-\u202e\u2060-\u2064\u2066-\u2069\ufeff]"
)
REPLACEMENT = "\ufffd"


def clean(raw: bytes) -> str:
    """Decode a line from a client and make it safe to show to others.

    Invalid UTF-8 becomes U+FFFD, and so does every control character: the
    reader sees that something was there, and their terminal obeys nothing.
    """
    text = raw.decode("utf-8", "replace")
    return UNSAFE.sub(REPLACEMENT, text)
