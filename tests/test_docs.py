"""Docs stay true: the README and docs/*.md name every CLI command and option, and their links and commands resolve."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from capstore.cli.main import cli

ROOT = Path(__file__).resolve().parents[1]
README_PATH = ROOT / "README.md"
README = README_PATH.read_text()
PAGES = sorted((ROOT / "docs").glob("*.md"))
DOCS = "\n".join([README, *(p.read_text() for p in PAGES)])
# click adds --help to every command itself; it needs no documentation of ours.
UNDOCUMENTED_OPTIONS = {"--help"}
# Options the root group takes before a command, with whether each takes a value.
GLOBAL_OPTIONS = {"--db": True, "--version": False}

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
BASH_BLOCK = re.compile(r"^```bash\n(.*?)^```", re.S | re.M)


def _commands(group: click.Group, prefix: str = "capstore") -> list[tuple[str, click.Command]]:
    out: list[tuple[str, click.Command]] = []
    for name, cmd in group.commands.items():
        path = f"{prefix} {name}"
        out.append((path, cmd))
        if isinstance(cmd, click.Group):
            out.extend(_commands(cmd, path))
    return out


def _long_options(cmd: click.Command) -> list[str]:
    """Every long flag a command accepts (secondary ones such as --no-x included), click's own --help too."""
    ctx = click.Context(cmd, info_name=cmd.name)
    return [o for p in cmd.get_params(ctx) if isinstance(p, click.Option)
            for o in (*p.opts, *p.secondary_opts) if o.startswith("--")]


def _names_option(text: str, option: str) -> bool:
    """``--max-rows`` as a whole word: not a prefix of ``--max-rows-x``, not the tail of ``x--max-rows``."""
    return re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text) is not None


def _links(text: str) -> list[str]:
    """Relative link targets of a Markdown text (no URLs, no in-page anchors), without their #fragment."""
    targets = (m.group(1) for m in LINK.finditer(text))
    return [t.split("#", 1)[0] for t in targets if not re.match(r"[a-z]+:", t) and not t.startswith("#")]


def _bash_invocations(text: str) -> list[list[str]]:
    """The words after ``capstore`` of every capstore command line in the text's ```bash blocks."""
    out: list[list[str]] = []
    for block in BASH_BLOCK.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            for i, word in enumerate(words):
                if word == "capstore" or word.endswith("/bin/capstore"):
                    rest = words[i + 1:]
                    stop = next((j for j, w in enumerate(rest) if w in {"&&", "||", "|", ";", "&"}), len(rest))
                    out.append(rest[:stop])
    return out


def _command_path(words: list[str]) -> list[str]:
    """The command names of an invocation (``db upgrade``), skipping the root group's own options."""
    words = list(words)
    while words and words[0].split("=", 1)[0] in GLOBAL_OPTIONS:
        option = words.pop(0)
        if GLOBAL_OPTIONS[option.split("=", 1)[0]] and "=" not in option:
            words.pop(0)
    path: list[str] = []
    group: click.Command = cli
    while words and isinstance(group, click.Group) and not words[0].startswith("-"):
        name = words.pop(0)
        path.append(name)
        if name not in group.commands:
            break
        group = group.commands[name]
    return path


def _resolves(path: list[str]) -> bool:
    """Whether a command path names a real command (no path: ``capstore --version`` alone)."""
    group: click.Command = cli
    for name in path:
        if not isinstance(group, click.Group) or name not in group.commands:
            return False
        group = group.commands[name]
    return True


def test_every_command_has_help_and_is_in_the_docs() -> None:
    commands = _commands(cli)
    assert len(commands) > 20
    for path, cmd in commands:
        assert (cmd.help or "").strip(), f"{path} has no help text"
        assert path in DOCS, f"{path} is not named in README.md or docs/*.md"


def test_every_option_of_every_command_is_in_the_docs() -> None:
    missing = [f"{path} {option}" for path, cmd in [("capstore", cli), *_commands(cli)]
               for option in _long_options(cmd)
               if option not in UNDOCUMENTED_OPTIONS and not _names_option(DOCS, option)]
    assert not missing, f"options named nowhere in README.md or docs/*.md: {missing}"


def test_option_matching_is_whole_word() -> None:
    assert _names_option("use `--max-rows N`", "--max-rows")
    assert not _names_option("use --max-rows-x", "--max-rows")
    assert not _names_option("use --max", "--max-rows")


def test_readme_has_the_two_setup_commands_and_ci_runs_the_test_one() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    test_cmd = next(line for line in ci.splitlines() if "pytest" in line)
    assert test_cmd.strip() in README
    assert "capstore demo" in README or "capstore --db" in README


def test_readme_links_every_docs_page_and_each_exists() -> None:
    linked = {(ROOT / t).resolve() for t in _links(README) if t.startswith("docs/")}
    assert linked, "README.md links no docs/ page"
    missing = sorted(str(p.relative_to(ROOT)) for p in linked if not p.exists())
    assert not missing, f"README.md links missing files: {missing}"
    unlinked = sorted(p.name for p in PAGES if p.resolve() not in linked)
    assert not unlinked, f"docs pages the README does not link: {unlinked}"


@pytest.mark.parametrize("page", [README_PATH, *PAGES], ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    broken = [t for t in _links(page.read_text()) if not (page.parent / t).exists()]
    assert not broken, f"{page.name} links files that do not exist: {broken}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_docs_pages_link_back_to_the_readme(page: Path) -> None:
    assert "../README.md" in _links(page.read_text()), f"{page.name} does not link back to README.md"


def test_commands_in_bash_blocks_are_real() -> None:
    invocations = _bash_invocations(DOCS)
    assert len(invocations) > 40, "the bash blocks' capstore lines were not found"
    wrong = sorted({" ".join(["capstore", *_command_path(words)]) for words in invocations
                    if not _resolves(_command_path(words))})
    assert not wrong, f"bash blocks in README.md or docs/*.md run commands that do not exist: {wrong}"


def test_bash_block_parsing_skips_global_options_and_catches_typos() -> None:
    text = ("```bash\n.venv/bin/capstore --db x.db demo && capstore --db=pg://h/capstore sql -f q  # capstore nothing\n"
            "capstore --version\ncapstore dataset lsit\ncapstore run \\\n    --method mils\n```\n")
    paths = [_command_path(w) for w in _bash_invocations(text)]
    assert paths == [["demo"], ["sql"], [], ["dataset", "lsit"], ["run"]]
    assert [_resolves(p) for p in paths] == [True, True, True, False, True]
