"""Cluster mode for browsers comes free: a WebSocket user on one node and a
TCP user on another, two `twistd chat --redis --web` processes on one real
redis-server, in one chat."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from websockets.sync.client import connect

from tests.redis_fixture import RedisServer
from tests.test_cluster_e2e import WELCOME, Line
from tests.web_server import WebChat

pytestmark = [pytest.mark.redis, pytest.mark.slow]
UNAVAILABLE = "Erreur : inscription impossible pour le moment, réessayez plus tard"


def test_a_browser_on_one_node_chats_with_a_tcp_user_on_another(
    tmp_path: Path, redis: RedisServer
) -> None:
    args = ("--redis", redis.url, "--cluster", "web", "--ping-interval", "0")
    nodes = [WebChat(tmp_path, *args, "--store", f"node{n}.sqlite3") for n in (1, 2)]
    try:
        for node in nodes:
            node.start()
        alice = Line(nodes[1].port)
        alice.until(WELCOME)
        deadline = time.monotonic() + 15
        url = f"ws://127.0.0.1:{nodes[0].web_port}/ws"
        with connect(url, open_timeout=5, close_timeout=5) as ws:
            assert ws.recv(timeout=5) == WELCOME.decode().rstrip("\n")
            while True:  # a node just started may not have joined its cluster
                ws.send("/pseudo bob")
                answer = ws.recv(timeout=5)
                if answer == "Bienvenue bob":
                    break
                assert answer == UNAVAILABLE, answer
                assert time.monotonic() < deadline, "bob never registered"
                time.sleep(0.1)
            while True:
                alice.send(b"/pseudo alice\n")
                answer = alice.until(b"\n")
                if answer == b"Bienvenue alice\n":
                    break
                assert answer.decode().rstrip("\n") == UNAVAILABLE, answer
                assert time.monotonic() < deadline, "alice never registered"
                time.sleep(0.1)
            alice.until(b"=>alice\n----------------------\n")
            ws.send("bonjour d'un autre noeud")
            assert alice.until(b"noeud\n").endswith(b"-bob: bonjour d'un autre noeud\n")
            alice.send(b"msg bob par le cluster\n")
            line = ""
            while not line.endswith("cluster"):
                received = ws.recv(timeout=5)
                assert isinstance(received, str)
                line = received
            assert line.endswith("-message privé de alice: par le cluster")
    finally:
        for node in nodes:
            node.stop()
