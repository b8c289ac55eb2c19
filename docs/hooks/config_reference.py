"""MkDocs hook: the configuration reference page, generated from ``fashattr.config``'s dataclasses at every
build, so it cannot drift from the code. Each key's meaning is the comment written beside it (or in the block
just above it) in ``src/fashattr/config/sections.py``; ``tests/test_docs.py`` checks that every key is on the page."""

from __future__ import annotations

import dataclasses
import inspect
import io
import json
import tokenize
from typing import Any

PAGE = "reference/config.md"

INTRO = """# Configuration reference

Generated from the dataclasses of `src/fashattr/config/sections.py` when this site is built: every key a config
file or a `key=value` override can set, its type, its default and what it does.

A config is YAML with these sections (`data:`, `model:`, ...), a recipe name (`fashattr train cpu_quick`), or
both; `key=value` arguments override any key (`train.epochs=3`, `"augment.rrc_scale=[0.5,1.0]"`). An unknown
key is an error that names the closest valid one; a value of the wrong type names the key, the value and the
type expected. Paths in a config file are relative to that file's folder. `fashattr train --print-config`
prints the resolved config of a run without training.
"""


def _comments(cls: type) -> dict[str, str]:
    """Each field's comment: the block of whole-line comments right above it, then the one at its line's end."""
    source = inspect.getsource(cls)
    lines = source.splitlines()
    whole_line: dict[int, str] = {}
    trailing: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            row = tok.start[0]
            text = tok.string.lstrip("#").strip()
            (whole_line if lines[row - 1].strip().startswith("#") else trailing)[row] = text
    out: dict[str, str] = {}
    names = {f.name for f in dataclasses.fields(cls)}
    for row, line in enumerate(lines, 1):
        name = line.strip().split(":", 1)[0]
        if name not in names or not line.startswith("    ") or line.startswith("     "):
            continue
        block, above = [], row - 1
        while above in whole_line:
            block.insert(0, whole_line[above])
            above -= 1
        out[name] = " ".join([*block, trailing.get(row, "")]).strip()
    return out


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _value(value: Any) -> str:
    if isinstance(value, tuple):
        value = list(value)
    return "`" + _cell(json.dumps(value)) + "`"


def reference_markdown() -> str:
    """The whole page: one table per section of :class:`fashattr.config.Config`, one row per key."""
    from fashattr.config import Config

    parts = [INTRO]
    for section in dataclasses.fields(Config):
        value = _default(section)
        if not dataclasses.is_dataclass(value):
            continue
        cls = type(value)
        doc = inspect.getdoc(cls)
        parts.append(f"\n## `{section.name}`\n")
        if doc and not doc.startswith(cls.__name__ + "("):  # dataclasses write a signature when there is no doc
            parts.append(doc + "\n")
        parts.append("| key | type | default | meaning |\n|---|---|---|---|")
        comments = _comments(cls)
        for f in dataclasses.fields(cls):
            kind = f"`{_cell(str(f.type))}`"
            parts.append(
                f"| `{section.name}.{f.name}` | {kind} | {_value(_default(f))} | {_cell(comments.get(f.name, ''))} |"
            )
    top = [f for f in dataclasses.fields(Config) if not dataclasses.is_dataclass(_default(f))]
    parts.append("\n## Top level\n\n| key | type | default | meaning |\n|---|---|---|---|")
    comments = _comments(Config)
    for f in top:
        meaning = _cell(comments.get(f.name, ""))
        parts.append(f"| `{f.name}` | `{_cell(str(f.type))}` | {_value(_default(f))} | {meaning} |")
    return "\n".join(parts) + "\n"


def on_files(files: Any, config: Any) -> Any:
    """Add the generated page to the site's files (mkdocs >= 1.6: ``File.generated``)."""
    from mkdocs.structure.files import File

    files.append(File.generated(config, PAGE, content=reference_markdown()))
    return files
