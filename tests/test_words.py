"""Plural forms are right everywhere people read them (issue 16, point 6): no "unit(s)",
"device(s)" or "license(s)" in any message, page, or console line; counts go through
``entitle.text.plural``, which says "1 device", "2 devices"."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from entitle.text import plural

SRC = Path(__file__).resolve().parents[1] / "src" / "entitle"
HEDGED = re.compile(r"[A-Za-z]\(s\)|[A-Za-z]\(es\)")


def _string_parts(tree: ast.AST) -> list[tuple[int, str]]:
    """Every string constant of a module, f-strings' literal parts included, with its line."""
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)]


def test_no_hedged_plural_in_any_message_or_console_line():
    found = []
    for path in sorted(SRC.rglob("*.py")):
        for line, text in _string_parts(ast.parse(path.read_text(), filename=str(path))):
            # a docstring may mention code (``f(s)``); a hedged plural is a word right before "(s)"
            for m in HEDGED.finditer(text):
                if not text[max(0, m.start() - 40):m.start() + 1].rstrip().endswith(("http", "https")):
                    found.append(f"{path.relative_to(SRC)}:{line}: …{text[max(0, m.start() - 30):m.end() + 10]}…")
    assert not found, "\n".join(found)


def test_no_hedged_plural_on_any_page():
    found = []
    for path in sorted((SRC / "web" / "templates").rglob("*.html")):
        text = re.sub(r"\{[{%#].*?[}%#]\}", " ", path.read_text(), flags=re.S)  # the words, not the code
        found += [f"{path.name}: …{text[max(0, m.start() - 30):m.end() + 10]}…" for m in HEDGED.finditer(text)]
    assert not found, "\n".join(found)


def test_plural_says_one_and_many():
    assert plural(1, "device") == "1 device"
    assert plural(0, "device") == "0 devices"
    assert plural(2, "apartment-year") == "2 apartment-years"
    assert plural(1_000, "license", "licenses") == "1,000 licenses"
    assert plural(None, "device") == "unlimited devices"
