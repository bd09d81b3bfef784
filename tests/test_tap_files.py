"""One descriptor budget for every front end (chatproto/tap.py): the chat's
sessions, the web site's connections before their handshake and the
metrics site's fit under the open-file limit, or the server says so."""

from __future__ import annotations

import os
import resource
import subprocess
from pathlib import Path
from typing import Any

import pytest

from chatproto.tap import Options, _Shutdown, makeService
from tests.test_twistd import ROOT, twistd


def parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


@pytest.fixture
def limit(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """An open-file limit of [soft, hard] that cannot be raised."""
    limits = [1000, 1000]

    def setrlimit(which: int, values: tuple[int, int]) -> None:
        if values[0] > limits[1]:
            raise ValueError("not allowed")
        limits[0] = values[0]

    monkeypatch.setattr(resource, "getrlimit", lambda which: tuple(limits))
    monkeypatch.setattr(resource, "setrlimit", setrlimit)
    return limits


def sites(top: Any) -> tuple[Any, list[Any]]:
    """The chat's factory, and the factories of its other listeners."""
    factory = next(s.factory for s in top if isinstance(s, _Shutdown))
    others = [
        s.factory for s in top if hasattr(s, "endpoint") and s.factory is not factory
    ]
    return factory, others


def test_every_front_end_fits_under_the_open_file_limit(
    limit: list[int], capfd: pytest.CaptureFixture[str]
) -> None:
    """10,000 web connections and 6,300 chat ones exhausted 16,384
    descriptors: the web and metrics sites' connections count in the budget
    too, and --max-connections is lowered so that all fit, in one sentence."""
    top = makeService(
        parse(
            "--port=tcp:0",
            "--web=tcp:0",
            "--metrics=tcp:0:interface=127.0.0.1",
            "--max-connections=2000",
        )
    )
    factory, others = sites(top)
    chat = factory.config.max_connections
    held = sum(site.admission.config.max_connections for site in others)
    assert len(others) == 2
    assert chat + held + 64 == 1000
    assert capfd.readouterr().err == (
        "twistd chat: the open-file limit (1000) fits 736 chat connections "
        "beside 64 descriptors for the server itself, 184 for the web site, "
        "16 for the metrics site: --max-connections lowered from 2000 to 736 "
        "(raise the limit with ulimit -n, or LimitNOFILE= under systemd).\n"
    )


def test_a_limit_raised_far_enough_says_nothing(
    limit: list[int], capfd: pytest.CaptureFixture[str]
) -> None:
    limit[1] = 20_000
    top = makeService(parse("--port=tcp:0", "--web=tcp:0"))
    factory, _ = sites(top)
    assert factory.config.max_connections == 10_000
    assert limit[0] == 10_000 + 2_500 + 64
    assert capfd.readouterr().err == ""


def test_a_limit_too_low_for_any_chat_connection_stops_the_start(
    limit: list[int], capfd: pytest.CaptureFixture[str]
) -> None:
    limit[:] = [120, 120]
    with pytest.raises(SystemExit) as raised:
        makeService(parse("--port=tcp:0", "--web=tcp:0"))
    assert raised.value.code == 1
    assert capfd.readouterr().err == (
        "twistd chat: the open-file limit (120) is too low for these options: "
        "64 descriptors for the server itself, 64 for the web site leave none "
        "for the chat; raise it (ulimit -n, or LimitNOFILE= under systemd).\n"
    )


@pytest.mark.slow
def test_twistd_under_a_low_limit_stops_with_one_sentence(tmp_path: Path) -> None:
    """As a user starts it, under ulimit -n 120: the web site's 64 and the
    server's own 64 leave no descriptor for the chat, said in one sentence,
    exit 1 (before, it started with one chat connection or more besides
    the site's unbounded share)."""

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (120, 120))

    result = subprocess.run(
        twistd("-n", "--pidfile=", "chat", "--port=tcp:0", "--web=tcp:0"),
        cwd=tmp_path,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        preexec_fn=low_limit,
        timeout=20,
    )
    assert result.returncode == 1
    assert result.stderr.decode() == (
        "twistd chat: the open-file limit (120) is too low for these options: "
        "64 descriptors for the server itself, 64 for the web site leave none "
        "for the chat; raise it (ulimit -n, or LimitNOFILE= under systemd).\n"
    )
