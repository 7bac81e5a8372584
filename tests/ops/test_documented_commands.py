"""Every ``manage.py`` command the README and docs/ show, and the one the demo prints, works as written.

Each documented command must exist and take every option written after it. The README's and the demo's commands
must also run verbatim from the repository's root in a shell where no virtualenv is active (a fresh clone after
``make``): a bare ``python`` there lacks the project's packages (``No module named 'environ'``). Those are run
with ``--help`` instead of their arguments, so nothing starts; ``test_demo.py`` runs the printed one for real.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess

import pytest
from django.core.management import get_commands, load_command_class

from ops import demo
from tests.conftest import ROOT

DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# A command as written in a code span or a code block line: up to the span's end, a comment, or the next command.
COMMAND = re.compile(r"((?:[A-Z_]+=\S+ )*)((?:\.venv/bin/)?python3? )?manage\.py ([a-z_]+)([^`#|&;\n]*)")


def documented() -> list[tuple[str, int, re.Match]]:
    """(document, line number, match) of every ``manage.py <command>`` in code."""
    found = []
    for document in DOCUMENTS:
        for number, line in enumerate(document.read_text().splitlines(), start=1):
            for match in COMMAND.finditer(line):
                found.append((document.name, number, match))
    return found


def option_strings(parser: argparse.ArgumentParser) -> set[str]:
    """Every option of a parser and of its sub-commands' parsers."""
    options = set()
    for action in parser._actions:
        options.update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                options |= option_strings(sub)
    return options


def parser_options(name: str) -> set[str]:
    command = load_command_class(get_commands()[name], name)
    return option_strings(command.create_parser("manage.py", name))


def test_every_documented_command_exists_and_takes_the_options_written_after_it():
    commands = get_commands()
    problems = []
    for document, number, match in documented():
        name, rest = match[3], match[4]
        if name not in commands:
            problems.append(f"{document}:{number}: no command {name!r}")
            continue
        written = {token.split("=")[0].strip("[]()") for token in rest.split() if token.lstrip("[(").startswith("--")}
        unknown = written - parser_options(name)
        if unknown:
            problems.append(f"{document}:{number}: {name} has no {sorted(unknown)}")
    assert documented() and problems == []


def test_the_readme_shows_its_commands_with_the_virtualenvs_python():
    """Outside the processes table (as the image runs them, which the README says), no bare ``python``."""
    bare = [
        f"README.md:{number}: {match[0].strip()}"
        for document, number, match in documented()
        if document == "README.md" and match[2] and not match[2].startswith(".venv/bin/")
        and not (ROOT / "README.md").read_text().splitlines()[number - 1].startswith("|")
    ]  # fmt: skip
    assert bare == []


def verbatim_commands() -> list[str]:
    """The README's runnable ``manage.py`` commands and the demo's printed one, their arguments replaced by --help."""
    readme = [
        match[0] for document, _, match in documented() if document == "README.md" and match[2] == ".venv/bin/python "
    ]
    printed = demo.balance_command("demo-producer-1")
    commands = {COMMAND.sub(lambda m: f"{m[1]}{m[2]}manage.py {m[3]} --help", line) for line in [*readme, printed]}
    return sorted(commands)


def bare_shell() -> dict[str, str]:
    """A login shell's environment: no virtualenv on PATH, nothing of this test run's settings."""
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if ".venv" not in p and "venv" not in p)
    return {"PATH": path, "HOME": os.environ.get("HOME", "/tmp"), "DEBUG": "true"}


def test_the_demo_prints_a_balance_command_that_uses_the_virtualenv():
    command = shlex.split(demo.balance_command("demo-producer-1"))
    assert command[:2] == ["DEBUG=true", ".venv/bin/python"] and command[-3:] == [
        "token_balance",
        "--demo",
        "demo-producer-1",
    ]


@pytest.mark.parametrize("command", verbatim_commands())
def test_the_readmes_and_the_demos_commands_run_verbatim_in_a_shell_without_the_virtualenv(command):
    run = subprocess.run(
        ["bash", "-c", command], cwd=ROOT, env=bare_shell(), capture_output=True, text=True, timeout=120
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.startswith("usage: manage.py")
