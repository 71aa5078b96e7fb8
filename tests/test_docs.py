"""Docs stay true: every CLI command has help text and is named in the README."""

from __future__ import annotations

from pathlib import Path

import click

from capstore.cli.main import cli

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _commands(group: click.Group, prefix: str = "capstore") -> list[tuple[str, click.Command]]:
    out: list[tuple[str, click.Command]] = []
    for name, cmd in group.commands.items():
        path = f"{prefix} {name}"
        out.append((path, cmd))
        if isinstance(cmd, click.Group):
            out.extend(_commands(cmd, path))
    return out


def test_every_command_has_help_and_is_in_readme() -> None:
    commands = _commands(cli)
    assert commands
    for path, cmd in commands:
        assert (cmd.help or "").strip(), f"{path} has no help text"
        assert path in README, f"{path} is not mentioned in README.md"


def test_readme_has_the_two_setup_commands_and_ci_runs_the_test_one() -> None:
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    test_cmd = next(line for line in ci.splitlines() if "pytest" in line)
    assert test_cmd.strip() in README
    assert "capstore demo" in README or "capstore --db" in README
