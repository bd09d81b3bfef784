"""What a user's bytes may become before anyone else sees them."""

from __future__ import annotations

import re

# C0 controls but TAB, DEL, C1 controls (so every ANSI escape sequence loses
# its ESC or CSI), and the bidirectional overrides that would let one user
# make a line read backwards on another's screen.
_UNSAFE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
REPLACEMENT = "\ufffd"


def clean(raw: bytes) -> str:
    """Decode a line from a client and make it safe to show to others.

    Invalid UTF-8 becomes U+FFFD, and so does every control character: the
    reader sees that something was there, and their terminal obeys nothing.
    """
    text = raw.decode("utf-8", "replace")
    return _UNSAFE.sub(REPLACEMENT, text)
