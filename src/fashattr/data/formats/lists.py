"""What the list-file readers share: text lines, the image root, and problems gathered over files.

The FashionDataset, DeepFashion and fine-grained readers read plain-text lists that name images
relative to a folder. Three things are the same for all of them: a UTF-8 byte-order mark (which
some editors and later copies of the datasets add) is not part of the first line; the folder
the image paths are relative to may be one of several, depending on how an archive was
unpacked; and one read reports the bad lines of every file it reads, not only of the first.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from fashattr.errors import DatasetError

T = TypeVar("T")
# "utf-8-sig" drops a leading BOM and reads a file without one exactly as "utf-8" does.
ENCODING = "utf-8-sig"


def read_lines(path: Path) -> list[str]:
    """The lines of a text file, without a leading BOM or trailing blank lines.

    Raises:
        DatasetError: the file is not UTF-8 text.
    """
    try:
        text = path.read_text(encoding=ENCODING)
    except UnicodeDecodeError as e:
        raise DatasetError(path, f"not UTF-8 text: {e}") from None
    lines = text.splitlines()
    while lines and not lines[-1].strip():  # trailing blank lines only; inner ones are errors
        lines.pop()
    return lines


def find_image_root(candidates: Sequence[Path], listed: str) -> Path | None:
    """The first of ``candidates`` that holds the image ``listed`` (a path from a list file).

    When none holds that very image (it may be the one that is missing), the first that holds
    its top folder (``img/`` for ``img/a/b.jpg``); None when no candidate has either.
    """
    for root in candidates:
        if (root / listed).is_file():
            return root
    top = Path(listed).parts[0] if Path(listed).parts else ""
    for root in candidates:
        if top and (root / top).is_dir():
            return root
    return None


def not_found(listed: str, root: Path | None, tried: Sequence[Path], hint: str = "") -> str:
    """The message for a listed image that is not on disk: under ``root``, or (``root`` None,
    no candidate folder holds the images) under none of the ``tried`` roots."""
    if root is not None:
        return f"listed image {listed!r} not found under {root}"
    return f"listed image {listed!r} not found under any image root tried: {', '.join(map(str, tried))}{hint}"


class GatheredError(DatasetError):
    """Bad lines in several files of one read, raised together.

    Attributes:
        errors: one DatasetError per file, each listing that file's bad lines.
        file: the folder the files share; ``problems`` name each file relative to it.
    """

    def __init__(self, errors: Sequence[DatasetError]) -> None:
        folder = Path(os.path.commonpath([str(Path(e.file).parent) for e in errors]))
        super().__init__(folder, f"problems in {len(errors)} files")
        self.errors = list(errors)
        # Each problem names its file (relative to ``file``) and line, for a consumer that
        # reads ``problems`` as it does for a one-file error.
        self.problems = [(None, _where(e.file, folder, ln) + f": {msg}") for e in errors for ln, msg in e.problems]
        total = len(self.problems)
        self.args = (f"{total} problem(s) in {len(errors)} files:\n" + "\n".join(str(e) for e in errors),)


def _where(file: str, folder: Path, line: int | None) -> str:
    name = os.path.relpath(file, folder)
    return name if line is None else f"{name}:{line}"


class Problems:
    """Bad lines collected while one split is read, from every file it reads."""

    def __init__(self) -> None:
        self._by_file: dict[str, list[tuple[int | None, str]]] = {}

    def add(self, file: str | Path, problems: Sequence[tuple[int | None, str]]) -> None:
        """Record ``problems`` (line, message) of ``file``."""
        if problems:
            self._by_file.setdefault(str(file), []).extend(problems)

    def run(self, read: Callable[[], T]) -> T | None:
        """``read()``, or None with its DatasetError recorded, so the next file is read too."""
        try:
            return read()
        except GatheredError as e:
            for err in e.errors:
                self.add(err.file, err.problems)
        except DatasetError as e:
            self.add(e.file, e.problems)
        return None

    def raise_if_any(self) -> None:
        """Raise every recorded problem: one DatasetError for one file, a GatheredError for more.

        Raises:
            DatasetError: a file had problems; each file's are in line order.
        """
        errors = [
            DatasetError.many(file, sorted(found, key=lambda p: (p[0] is None, p[0] or 0)))
            for file, found in self._by_file.items()
        ]
        if len(errors) == 1:
            raise errors[0]
        if errors:
            raise GatheredError(errors)
