"""What every test in a real browser shares (Debian's chromium driven by
Playwright, tests/conftest.py's fixture): its marks, Playwright's
C{expect} with every wait bounded, and what the page keeps of "se
souvenir de moi". Importing it skips the importing module when
Playwright is not installed."""

from __future__ import annotations

import pytest

from tests.conftest import CHROMIUM

MARKS = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium"),
]
playwright = pytest.importorskip("playwright.sync_api")
expect = playwright.expect
WAIT = 15_000  # ms: every wait is bounded
expect.set_options(timeout=WAIT)
# The nickname and password the page remembers ("se souvenir de moi").
SAVED = "() => JSON.parse(localStorage.getItem('chatproto.remember'))"
