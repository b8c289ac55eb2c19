"""list_attr_cloth.txt as Windows editors save it: with a UTF-8 byte-order mark."""

from __future__ import annotations

from pathlib import Path

import pytest

from fashattr.errors import DatasetError
from fashattr.schema import AI6126_GROUPS, ai6126_schema, read_attr_cloth


def _attr_cloth() -> str:
    rows = [(c, g + 1) for g, classes in enumerate(AI6126_GROUPS.values()) for c in classes]
    return f"{len(rows)}\nattribute_name  attribute_type\n" + "".join(f"{c}  {g}\n" for c, g in rows)


def test_read_attr_cloth_with_a_bom(tmp_path: Path):
    f = tmp_path / "list_attr_cloth.txt"
    f.write_bytes(b"\xef\xbb\xbf" + _attr_cloth().encode())
    assert read_attr_cloth(f) == ai6126_schema()


def test_read_attr_cloth_not_utf8_names_the_file(tmp_path: Path):
    f = tmp_path / "list_attr_cloth.txt"
    f.write_bytes(_attr_cloth().encode() + b"caf\xe9  1\n")
    with pytest.raises(DatasetError, match=r"list_attr_cloth\.txt.*not UTF-8 text"):
        read_attr_cloth(f)
