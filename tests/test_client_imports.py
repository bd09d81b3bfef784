"""The client package's modules import one way: each only from those before
it (events <- servers, timings, masking <- pacing, liveness, userlist,
registration <- reading <- protocol <- options <- session <- pipe, terminal
<- __main__),
never back, not even inside a function; and importing the package installs
no reactor and loads no prompt_toolkit.

The imports are read from the source with C{ast}, so that an import hidden
in a function body counts as much as one at the top.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import chatproto.client

PACKAGE = "chatproto.client"
SOURCE = Path(chatproto.client.__file__).parent

#: Each module's place: a module may import only from lower layers.
LAYERS = {
    "events": 0,
    "servers": 1,
    "timings": 1,
    "masking": 1,
    "pacing": 2,
    "liveness": 2,
    "userlist": 2,
    "registration": 2,
    "reading": 3,
    "protocol": 4,
    "options": 5,
    "session": 6,
    "pipe": 7,
    "terminal": 7,
    "__main__": 8,
}
#: The package's C{__init__} re-exports these, and must import nothing else.
REEXPORTED = {"events", "protocol"}


def imports_of(source: str) -> set[str]:
    """The modules of the package that C{source} imports anywhere, top level
    or inside a function; C{"__init__"} for the package itself."""
    found: set[str] = set()

    def add(name: str) -> None:
        if name == PACKAGE:
            found.add("__init__")
        elif name.startswith(PACKAGE + "."):
            found.add(name.removeprefix(PACKAGE + ".").split(".")[0])

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # from . import x, from .x import y
                base = f"{PACKAGE}.{base}" if base else PACKAGE
            if base != PACKAGE:
                add(base)
                continue
            for alias in node.names:
                # from chatproto.client import session: the submodule alone;
                # from chatproto.client import ClientSession: the package.
                is_module = (SOURCE / f"{alias.name}.py").exists()
                add(f"{PACKAGE}.{alias.name}" if is_module else PACKAGE)
    return found


def graph() -> dict[str, set[str]]:
    """Each module of the package, and those of the package it imports."""
    return {
        path.stem: imports_of(path.read_text(encoding="utf-8")) - {path.stem}
        for path in sorted(SOURCE.glob("*.py"))
    }


def test_every_module_of_the_client_has_a_place_in_the_layers() -> None:
    assert set(graph()) == set(LAYERS) | {"__init__"}


def test_each_module_imports_only_from_the_layers_below_it() -> None:
    upward = {
        (module, target)
        for module, targets in graph().items()
        if module != "__init__"
        for target in targets
        if target == "__init__" or LAYERS[target] >= LAYERS[module]
    }
    assert upward == set()


def test_the_package_itself_imports_only_the_events_and_the_protocol() -> None:
    assert graph()["__init__"] <= REEXPORTED


def test_the_imports_of_the_client_have_no_cycle() -> None:
    edges = graph()
    done: set[str] = set()

    def cycle_from(module: str, path: tuple[str, ...]) -> tuple[str, ...] | None:
        if module in path:
            return (*path[path.index(module) :], module)
        if module in done:
            return None
        for target in sorted(edges[module]):
            found = cycle_from(target, (*path, module))
            if found:
                return found
        done.add(module)
        return None

    cycles = [cycle for module in edges if (cycle := cycle_from(module, ()))]
    assert cycles == []


def test_an_import_inside_a_function_counts_as_much_as_one_at_the_top() -> None:
    source = (
        "from chatproto.client.events import Event\n"
        "from . import options\n"
        "from .protocol import Timings\n"
        "def later():\n"
        "    from chatproto.client.terminal import TtyUI\n"
        "    import chatproto.client.pipe\n"
        "    from chatproto.client import ClientSession\n"
    )
    assert imports_of(source) == {
        "events",
        "options",
        "protocol",
        "terminal",
        "pipe",
        "__init__",
    }


def loaded_after(statement: str) -> set[str]:
    """What a fresh interpreter has loaded, after C{statement}, of
    prompt_toolkit (any of its modules counts as C{prompt_toolkit}) and of
    Twisted's reactors."""
    probe = (
        f"{statement}\nimport sys\n"
        "print(sorted({m.split('.')[0] if m.startswith('prompt_toolkit') else m"
        " for m in sys.modules if m.startswith('prompt_toolkit')"
        " or m in ('twisted.internet.reactor', 'twisted.internet.asyncioreactor')}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return set(ast.literal_eval(done.stdout.strip()))


def test_importing_the_package_loads_no_prompt_toolkit_and_no_reactor() -> None:
    assert loaded_after("import chatproto.client") == set()


def test_the_pipe_interface_loads_no_prompt_toolkit_and_no_reactor() -> None:
    assert loaded_after("import chatproto.client.pipe") == set()


def test_the_protocol_is_still_importable_from_the_package() -> None:
    from chatproto.client import ChatClientProtocol
    from chatproto.client.protocol import ChatClientProtocol as defined

    assert ChatClientProtocol is defined


def test_the_client_tests_read_no_private_attribute() -> None:
    """The client's tests observe it through its public, documented surface
    (events, what it wrote, C{stage}, C{waiting}...), never its insides."""
    private = set()
    for path in sorted(Path(__file__).parent.glob("test_client_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        private |= {
            f"{path.name}:{node.lineno}: .{node.attr}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.endswith("__")
        }
    assert private == set()


def test_without_twisted_the_client_says_what_to_run() -> None:
    """From the checkout, a Python without Twisted finds the checkout's
    twisted/ plugin folder instead (No module named 'twisted.internet'):
    the client ends with one sentence naming the command that works, and a
    status that is not 0. (-S: this Python without its site-packages.)"""
    done = subprocess.run(
        [sys.executable, "-S", "-m", "chatproto.client", "localhost", "7000"],
        cwd=SOURCE.parent.parent,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode != 0
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith(
        f"chatproto.client needs Twisted, which {sys.executable} does not have"
    )
    assert ".venv/bin/python -m chatproto.client HOST PORT" in done.stderr
