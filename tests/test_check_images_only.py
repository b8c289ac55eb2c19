"""`data check` on a fine-grained release whose label file is broken: its images are still audited."""

from __future__ import annotations

from pathlib import Path

from test_release_layouts import write_fine_release

from fashattr.data.check import audit


def test_fine_release_split_with_a_bad_label_line_still_has_its_images_checked(tmp_path: Path):
    root = tmp_path / "fine"
    write_fine_release(root)
    attr = root / "Anno_fine" / "train_attr.txt"
    lines = attr.read_text().splitlines()
    lines[1] = "2 " + lines[1][2:]  # a 2 among the multi-hot values: train_attr.txt line 2
    attr.write_text("\n".join(lines) + "\n")
    listed = (root / "Anno_fine" / "train.txt").read_text().split()
    (root / "Img" / listed[2]).unlink()  # train.txt line 3

    report = audit(root, "deepfashion-fine", progress=False, workers=1)
    assert report["unread_splits"] == ["train"] and report["images_only_splits"] == ["train"]
    assert report["splits"]["train"] == {"count": len(listed), "labeled": False, "labels_read": False}
    assert [(m["split"], m["line"], m["path"]) for m in report["missing"]] == [("train", 3, listed[2])]
    assert [e["line"] for e in report["label_errors"]] == [2]
