"""CI's second run, on the lowest versions setup.cfg allows: the constraints
file it installs with must pin exactly setup.cfg's lower bounds, or that run
would test other versions than the ones setup.cfg promises to work on."""

from __future__ import annotations

import configparser
import os
import subprocess
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
CONSTRAINTS = ROOT / ".ci" / "lowest-constraints.txt"


def lower_bounds() -> dict[str, str]:
    """The runtime dependencies in setup.cfg (install_requires and the redis
    extra), each with its lower bound."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    lines = (
        config["options"]["install_requires"].splitlines()
        + config["options.extras_require"]["redis"].splitlines()
    )
    bounds: dict[str, str] = {}
    for line in filter(None, (line.strip() for line in lines)):
        requirement = Requirement(line)
        (version,) = [s.version for s in requirement.specifier if s.operator == ">="]
        bounds[canonicalize_name(requirement.name)] = version
    return bounds


def pins() -> dict[str, str]:
    """The constraints file's pins, name to version."""
    result: dict[str, str] = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.partition("#")[0].strip()
        if line:
            requirement = Requirement(line)
            (spec,) = requirement.specifier
            assert spec.operator == "==", line
            result[canonicalize_name(requirement.name)] = spec.version
    return result


def test_the_lowest_constraints_pin_every_lower_bound_of_setup_cfg() -> None:
    bounds = lower_bounds()
    assert {"twisted", "prompt-toolkit", "txredisapi", "hiredis"} <= set(bounds)
    assert pins() == bounds


def test_ci_runs_the_tests_on_the_latest_versions_then_on_the_lowest() -> None:
    """.ci/run runs make test, then make test-lowest; the latter installs its
    own venv with the constraints file and runs pytest in it."""
    commands = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip().startswith("make")
    ]
    assert commands == ["make test", "make test-lowest"]
    alone = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    dry_run = ["make", "--no-print-directory", "-n", "-B", "test-lowest"]
    planned = subprocess.run(
        [*dry_run, "LOWEST_VENV=/nonexistent-venv", "ARGS="],
        cwd=ROOT,
        env=alone,  # as if run by hand, not from within make test
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.splitlines()
    assert (
        "/nonexistent-venv/bin/pip install --quiet -c .ci/lowest-constraints.txt"
        " -e '.[test,redis]'"
    ) in planned
    assert planned[-1].strip() == "/nonexistent-venv/bin/python -m pytest -q"
    assert any("Twisted" in line for line in planned)  # says what it ran on
