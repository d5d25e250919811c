"""The README stands on its own: its links stay in the repository, its commands parse as written,
and the CLI's help and the web pages speak the user's words (rule IDs live in tests and docs)."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from entitle.cli.main import app

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
RULE_ID = re.compile(r"\bR-(?:CORE|AC|AX|MY)-\d+\b|\bSPEC\b")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    return {_slug(line.lstrip("#")) for line in path.read_text().splitlines() if line.startswith("#")}


def _prose(path: Path) -> str:
    """The document without its fenced code blocks (a URL in an example is not a link)."""
    return re.sub(r"```.*?```", "", path.read_text(), flags=re.S)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_link_stays_in_the_repository_and_resolves(doc: Path) -> None:
    for target in LINK.findall(_prose(doc)):
        assert not re.match(r"[a-z]+:", target), f"{doc.name} links outside the repository: {target}"
        file_part, _, anchor = target.partition("#")
        resolved = (doc.parent / file_part).resolve() if file_part else doc
        assert resolved.is_relative_to(REPO), f"{doc.name} links outside the repository: {target}"
        assert resolved.is_file(), f"{doc.name} links to a missing file: {target}"
        if anchor and resolved.suffix == ".md":
            assert anchor in _anchors(resolved), f"{doc.name}: no heading #{anchor} in {file_part or doc.name}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_no_document_points_outside_the_checkout(doc: Path) -> None:
    text = doc.read_text()
    assert "../shared" not in text and "seeds/" not in text, f"{doc.name} refers to files outside the repository"


def test_the_rules_live_in_the_repository() -> None:
    rules = (REPO / "docs" / "rules.md").read_text()
    for prefix, last in (("R-CORE", 9), ("R-AC", 8), ("R-AX", 13), ("R-MY", 6)):
        for n in range(1, last + 1):
            assert f"**{prefix}-{n} " in rules, f"docs/rules.md lacks {prefix}-{n}"


# --- every command line of the README ----------------------------------------------------------

def readme_commands() -> list[str]:
    """Each `entitle …` line of the README's shell blocks, continuation lines joined."""
    commands: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip().startswith("entitle "):
                commands.append(line.strip())
    return commands


def _argv(line: str) -> list[str]:
    """The words a shell would pass: comments and redirections dropped, `[--optional parts]`
    kept as if given (they must parse too)."""
    words = shlex.split(line.replace("[", " ").replace("]", " "), comments=True)
    if ">" in words:
        words = words[:words.index(">")]
    return words[1:]


def _resolve(argv: list[str]) -> tuple[Any, list[str], list[str]]:
    """Walk the groups as the CLI does: the leaf command, the path to it, and its arguments."""
    command: Any = get_command(app)
    path = ["entitle"]
    while argv and hasattr(command, "get_command") and not argv[0].startswith("-"):
        ctx = command.make_context(" ".join(path), [], resilient_parsing=True)
        sub = command.get_command(ctx, argv[0])
        assert sub is not None, f"`{' '.join(path)}` has no command {argv[0]!r}"
        command, path, argv = sub, [*path, argv[0]], argv[1:]
    return command, path, argv


def test_the_readme_shows_commands() -> None:
    assert len(readme_commands()) > 60


@pytest.mark.parametrize("line", readme_commands())
def test_each_readme_command_parses_as_written(line: str) -> None:
    command, path, argv = _resolve(_argv(line))
    if argv == ["--help"]:
        argv = []
    else:
        assert not hasattr(command, "get_command"), f"`{' '.join(path)}` is a group: {line}"
    # Parse the options the way Click does before it runs a command: an unknown option or a
    # word the command does not take ("unexpected extra argument") fails here.
    ctx = command.make_context(" ".join(path), [], resilient_parsing=True)
    _, extra, _ = command.make_parser(ctx).parse_args(list(argv))
    assert not extra, f"`{' '.join(path)}` does not take {extra}: {line}"
    result = CliRunner().invoke(app, [*_argv(line), "--help"], prog_name="entitle")
    assert result.exit_code == 0, f"{line}\n{result.output}"
    assert "Usage: entitle " + " ".join(path[1:]) in " ".join(result.output.split())


# --- help text in the user's words -------------------------------------------------------------

def _commands() -> Iterator[tuple[str, Any]]:
    def walk(command: Any, path: list[str]) -> Iterator[tuple[str, Any]]:
        yield " ".join(path), command
        if hasattr(command, "get_command"):
            ctx = command.make_context(" ".join(path), [], resilient_parsing=True)
            for name in command.list_commands(ctx):
                yield from walk(command.get_command(ctx, name), [*path, name])
    yield from walk(get_command(app), ["entitle"])


def test_every_command_is_walked() -> None:
    names = {name for name, _ in _commands()}
    assert {"entitle ac calculate", "entitle axis hardware allocate", "entitle site pay card",
            "entitle webhook add", "entitle admin create"} <= names


@pytest.mark.parametrize("name,command", list(_commands()), ids=lambda v: v if isinstance(v, str) else "")
def test_help_speaks_the_users_words_and_wraps_cleanly(name: str, command: Any) -> None:
    texts = [command.help or "", command.short_help or ""]
    texts += [getattr(p, "help", None) or "" for p in command.params]
    for text in texts:
        assert not RULE_ID.search(text), f"`{name} --help` shows a rule ID: {text!r}"
    # Typer joins the first paragraph's lines but keeps the later paragraphs' line breaks as they
    # are: a break there must end a sentence (or start a list item), never cut one.
    paragraphs = (command.help or "").split("\n\n")[1:]
    for paragraph in paragraphs:
        lines = [ln.strip() for ln in paragraph.strip().splitlines()]
        for before, after in zip(lines, lines[1:]):
            assert before.endswith((".", ":", ";", "!", "?")) or after.startswith(("-", "•", "\b")), \
                f"`{name} --help` breaks a sentence: {before!r} / {after!r}"


def test_pages_show_no_rule_ids() -> None:
    for template in sorted((REPO / "src" / "entitle" / "web" / "templates").glob("*.html")):
        visible = re.sub(r"\{#.*?#\}", "", template.read_text(), flags=re.S)
        assert not RULE_ID.search(visible), f"{template.name} shows a rule ID"
