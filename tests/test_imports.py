"""No import circles among chatproto's modules (the client package included),
and a server without the cluster mode's optional Redis client (txredisapi).

A circle makes what a module holds depend on which module was imported
first; the cluster's _redis.py and cluster.py once imported each other.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import chatproto

PACKAGE = Path(chatproto.__file__).parent


def modules(package: Path) -> dict[str, Path]:
    """The modules of the package, subpackages included, by dotted name."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join((package.name, *parts))] = path
    return found


def imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The modules of C{known} that the file imports anywhere: at module
    level, in a function (a lazy import) or under TYPE_CHECKING. Each one is
    a dependency all the same, and a circle through a lazy import is a
    circle that only waits for the call."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0]
                base = f"{anchor}.{base}" if base else anchor
            # from PACKAGE import MODULE, or from MODULE import NAME
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        found.update(target for target in targets if target in known)
    found.discard(name)
    return found


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports."""
    found = modules(package)
    names = set(found)
    return {name: imports(path, name, names) for name, path in found.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of the graph, each as the path that closes it."""
    found: list[list[str]] = []
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            found.append([*path[path.index(name) :], name])
            return
        if name in done:
            return
        for target in sorted(graph[name]):
            visit(target, [*path, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])
    return found


def test_no_module_of_chatproto_imports_itself_through_others() -> None:
    graph = import_graph(PACKAGE)
    assert {"chatproto.cluster", "chatproto._redis", "chatproto.config"} <= set(graph)
    assert {"chatproto.client", "chatproto.client.terminal"} <= set(graph)
    assert {"chatproto.session", "chatproto.fanout", "chatproto.output"} <= set(graph)
    assert [" -> ".join(circle) for circle in circles(graph)] == []


def test_the_configuration_is_read_by_the_cluster_and_the_plugin_alike() -> None:
    """config.py needs no other module of chatproto; tap.py and the
    cluster read it, and _redis.py does not import the cluster."""
    graph = import_graph(PACKAGE)
    assert graph["chatproto.config"] == set()
    assert "chatproto.config" in graph["chatproto.tap"]
    assert "chatproto.config" in graph["chatproto._redis"]
    assert "chatproto.cluster" not in graph["chatproto._redis"]
    assert "chatproto._redis" in graph["chatproto.cluster"]


def test_the_circle_finder_finds_a_circle_through_a_lazy_import(
    tmp_path: Path,
) -> None:
    """The pair as it was: _redis.py imported the cluster at module level,
    the cluster imported _redis in a function and under TYPE_CHECKING."""
    package = tmp_path / "chatproto"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "_redis.py").write_text("from chatproto.cluster import RedisAddress\n")
    (package / "cluster.py").write_text(
        textwrap.dedent(
            """
            from typing import TYPE_CHECKING
            if TYPE_CHECKING:
                from chatproto._redis import Commands
            def connect():
                from chatproto._redis import Commands
            """
        )
    )
    graph = import_graph(package)
    assert set(graph) == {"chatproto", "chatproto._redis", "chatproto.cluster"}
    assert circles(graph) == [
        ["chatproto._redis", "chatproto.cluster", "chatproto._redis"]
    ]


def test_every_module_imports_alone_in_a_fresh_interpreter() -> None:
    """Whichever module a program imports first, it imports (a circle of
    from-imports fails only in some orders)."""
    names = sorted(import_graph(PACKAGE))
    running = {
        name: subprocess.Popen(
            [sys.executable, "-c", f"import {name}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for name in names
    }
    failed = {}
    for name, process in running.items():
        output, _ = process.communicate(timeout=60)
        if process.returncode != 0:
            failed[name] = output.decode(errors="replace")
    assert failed == {}


WITHOUT_TXREDISAPI = """
import sys
sys.modules["txredisapi"] = None  # import txredisapi: ImportError
from twisted.python.usage import UsageError
from chatproto.tap import Options, makeService
options = Options()
options.parseOptions(["--port", "tcp:0", "--store", "none"])
makeService(options)
assert "--redis=" in str(Options())
try:
    Options().parseOptions(["--redis", "redis://127.0.0.1:1/0"])
except UsageError as e:
    print(e)
print(sorted(m for m in sys.modules if m in ("chatproto.cluster", "chatproto._redis")))
"""


def test_a_server_without_redis_needs_no_redis_client() -> None:
    """Without --redis, the plugin builds its server (and --help lists the
    cluster's options) with txredisapi missing; --redis then says what to
    install."""
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_TXREDISAPI],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert done.stdout.decode().splitlines() == [
        "--redis needs the txredisapi package: pip install 'chatproto[redis]'.",
        "[]",
    ]


WITHOUT_WEB = """
import sys
from chatproto.tap import Options, makeService
options = Options()
options.parseOptions(["--port", "tcp:0", "--store", "none"])
makeService(options)
print(sorted(m for m in sys.modules if m.startswith(("twisted.web", "prometheus"))))
"""


def test_a_server_without_web_or_metrics_loads_no_web_server() -> None:
    """The room keeps its counters in chatproto.metrics, which imports no
    twisted.web: only --web and --metrics load a web server (2.4 MiB)."""
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_WEB],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert done.stdout.decode().splitlines() == ["[]"]


# What a server has imported once twistd has started it: the plugin's
# options parsed, then its service made (the reactor imported by then).
AT_REST = """
import sys
from chatproto.tap import Options, makeService
options = Options()
options.parseOptions(sys.argv[1:])
makeService(options)
watched = ("OpenSSL", "cryptography", "sqlite3", "prometheus_client", "twisted.web")
watched += ("chatproto.store", "chatproto.web", "chatproto.metrics_page")
print(" ".join(w for w in watched if w in sys.modules))
"""


@pytest.mark.parametrize(
    ("argv", "loaded"),
    [
        (["--store", "none"], []),
        ([], ["sqlite3", "chatproto.store"]),
        (["--store", "none", "--web", "tcp:0"], ["twisted.web", "chatproto.web"]),
        (
            ["--store", "none", "--metrics", "tcp:0"],
            ["prometheus_client", "twisted.web", "chatproto.metrics_page"],
        ),
        (["--store", "none", "--port", "ssl"], ["OpenSSL", "cryptography"]),
    ],
)
def test_a_server_at_rest_imports_only_what_its_options_use(
    tmp_path: Path, argv: list[str], loaded: list[str]
) -> None:
    """Each of TLS (pyOpenSSL and cryptography, 14 MiB resident), the store
    (sqlite3), the web front end and the metrics page is imported only by
    the option that uses it: no later import brings them back unseen."""
    if "ssl" in argv:
        from tests.test_tls import self_signed

        argv[argv.index("ssl")] = f"ssl:0:privateKey={self_signed(tmp_path)}"
    done = subprocess.run(
        [sys.executable, "-c", AT_REST, "--port", "tcp:0", *argv],
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert sorted(done.stdout.decode().split()) == sorted(loaded)


def test_a_cluster_node_at_rest_keeps_tls_out(tmp_path: Path) -> None:
    """A cluster node (--redis) serving no TLS has no pyOpenSSL either:
    txredisapi imports Twisted's TLS, with placeholders in its place."""
    pytest.importorskip("txredisapi")
    redis = ["--redis", "redis://127.0.0.1:1/0"]
    done = subprocess.run(
        [sys.executable, "-c", AT_REST, "--port", "tcp:0", "--store", "none", *redis],
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    loaded = done.stdout.decode().split()
    assert "OpenSSL" not in loaded
    assert "cryptography" not in loaded
