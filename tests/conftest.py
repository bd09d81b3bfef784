"""Drive the real server factory over in-memory transports and a fake clock
(the doubles are chatproto.testing's, public)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from chatproto.testing import Chat


@pytest.fixture
def chat() -> Iterator[Chat]:
    yield Chat()
