"""The page of fashattr serve in a real headless chromium, against `fashattr serve` in a subprocess on a free
loopback port: a real FashionDataset photo gets every group rendered with a schema class, Grad-CAM overlays
appear, no console errors; a non-image file shows its error in the page."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser import open_page, wait_until
from serving import serving
from test_serve import make_bundle

from fashattr.schema import ai6126_schema

pytest.importorskip("fastapi")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`fashattr serve BUNDLE --backend torch` on a free loopback port; its URL once /readyz answers 200.

    BUNDLE is a tiny one this fixture makes, or the bundle ``FASHATTR_SERVE_BUNDLE`` names (the README runs
    these tests on the CPU recipe's bundle that way)."""
    named = os.environ.get("FASHATTR_SERVE_BUNDLE")
    bundle = Path(named) if named else make_bundle(tmp_path_factory.mktemp("page"), size=48)
    if not (bundle / "config.json").is_file():
        raise FileNotFoundError(f"FASHATTR_SERVE_BUNDLE={named}: no bundle there (no config.json)")
    with serving(bundle, "--backend", "torch") as url:
        yield url


@pytest.mark.realdata
def test_page_predicts_a_real_photo_with_gradcam(served: str, real_data: Path, tmp_path: Path):
    photo = real_data / "img" / "00001.jpg"
    schema = ai6126_schema()
    with open_page() as (page, log):
        page.goto(served + "/")
        wait_until(page, "document.getElementById('model').textContent.startsWith('model ')")
        page.set_input_files("#files", str(photo))
        page.wait_for_selector(".card .group", timeout=30_000)
        groups = page.locator(".card .group")
        assert groups.count() == len(schema.groups)
        for i, group in enumerate(schema.groups):
            box = groups.nth(i)
            assert box.get_attribute("data-group") == group.name
            chip = box.locator(".chip").first.text_content()
            assert chip in group.classes, (group.name, chip)
        # top-3 alternatives on click
        page.locator(".card .chip").first.click()
        assert page.locator(".card .alts").first.locator("li").count() == 3
        page.get_by_text("Grad-CAM per group").click()
        page.wait_for_selector(".card img.cam", timeout=30_000)
        assert page.locator(".card img.cam").count() == len(schema.groups)
        wait_until(page, "[...document.querySelectorAll('img.cam')].every(i => i.complete && i.naturalWidth > 0)")
        shot = Path(os.environ.get("FASHATTR_SERVE_SCREENSHOT") or tmp_path / "serve.png")
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        assert log.problems() == []


def test_page_shows_the_error_of_a_non_image_file(served: str, tmp_path: Path):
    notes = tmp_path / "notes.jpg"
    notes.write_text("this is not a photo\n")
    with open_page() as (page, log):
        page.goto(served + "/")
        wait_until(page, "document.getElementById('model').textContent.startsWith('model ')")
        page.set_input_files("#files", str(notes))
        err = page.wait_for_selector(".card .error", timeout=30_000)
        text = err.text_content() or ""
        assert text.startswith("422") and "notes.jpg: not an image Pillow can identify" in text
        assert page.locator(".card .group").count() == 0
        # The failed request is an HTTP answer the page handled, not a console error of its own script.
        assert log.page_errors == [] and log.failed_requests == []


@pytest.mark.realdata
def test_page_shows_and_switches_the_decoding_and_marks_unsure_answers(
    tiny_data: Path, real_data: Path, tmp_path: Path
):
    # A calibrated bundle carries the accuracy and balanced decodings: the page offers both (and the raw model),
    # starts on the bundle's default, says which decoding drew each photo's labels, and predicts again on a switch.
    # The model is untrained: its answers are near 1 / classes, below 0.5, so every group is drawn as unsure.
    from conftest import untrained_run

    from fashattr.calibrate import calibrate_run
    from fashattr.deploy.bundle import write_bundle

    run = untrained_run(tiny_data, tmp_path, size=48)
    calibrate_run(run)
    bundle = write_bundle(run, tmp_path / "bundle")
    schema = ai6126_schema()
    with serving(bundle) as url, open_page() as (page, log):
        page.goto(url + "/")
        page.wait_for_selector("#decoding:not([hidden])")
        options = page.locator("#decode option")
        assert [options.nth(i).get_attribute("value") for i in range(options.count())] == [
            "accuracy",
            "balanced",
            "none",
        ]
        assert page.locator("#decode").input_value() == "balanced"  # the run was selected on avg_class_acc
        page.set_input_files("#files", str(real_data / "img" / "00001.jpg"))
        page.wait_for_selector(".card .decoded")
        assert page.locator(".card .decoded").text_content() == "decoding: balanced"
        assert page.locator(".card .chip.unsure").count() == len(schema.groups)
        assert "unsure" in (page.locator(".card .prob").first.text_content() or "")
        page.select_option("#decode", "accuracy")
        page.locator(".card .decoded", has_text="decoding: accuracy").wait_for(timeout=30_000)
        assert page.locator(".card").count() == 1  # predicted again in place, not added
        assert log.problems() == []
