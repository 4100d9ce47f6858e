"""The browser annotator in a real browser: ``medsam-segment web`` in its own process on loopback, Debian's
chromium driven by Playwright. Two key boxes drawn by mouse in the red view, Segment pressed, and the page's
segmentation (saved as NIfTI from the page) equal to the command line's mask from the page's key boxes (saved from
the page as the command line's box file)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("trame_slicer")
playwright = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
SCRIPT = os.path.join(os.path.dirname(sys.executable), "medsam-segment")
README_SCREENSHOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "images",
                                 "web_annotator.png")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.needs_time(420, "starts the app, loads the model and segments in a real browser"),
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed (.ci/run installs "
                       "it: apt-get install chromium)"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def demo_nifti(tmp_path, demo_lesion):
    import SimpleITK as sitk

    image, _ = demo_lesion
    volume = sitk.GetImageFromArray(image.array)
    volume.SetSpacing(image.spacing)
    volume.SetOrigin(image.origin)
    volume.SetDirection(image.direction)
    path = str(tmp_path / "demo.nii.gz")
    sitk.WriteImage(volume, path)
    return path


@pytest.fixture
def web_app(demo_nifti, tmp_path):
    port = free_port()
    log = open(tmp_path / "web.log", "w", encoding="utf-8")
    process = subprocess.Popen([SCRIPT, "web", demo_nifti, "--port", str(port)], stdout=log,
                               stderr=subprocess.STDOUT, env={**os.environ, "MEDSAM_NUM_THREADS": "2"})
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        assert process.poll() is None, (tmp_path / "web.log").read_text()
        time.sleep(0.5)
    else:
        pytest.fail("the web app did not listen within 120 s")
    yield url
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


def draw_box(page, view, corner, other):
    """The two clicks of a Box ROI in ``view`` (fractions of the view's width and height)."""
    for x, y in (corner, other):
        page.mouse.click(view["x"] + x * view["width"], view["y"] + y * view["height"])
        page.wait_for_timeout(700)


def test_two_boxes_drawn_by_mouse_segment_as_the_command_line_does(web_app, tmp_path):
    from MedSAMSegmentLib import io

    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900}, accept_downloads=True)
            page.set_default_timeout(60_000)
            page.goto(web_app)
            page.locator("#medsam-place").wait_for()
            red = page.locator("img.image-display-area").first
            red.wait_for()
            page.wait_for_timeout(1500)
            view = red.bounding_box()
            # The red view opens near the lesion's middle slice: Place key boxes, a box around the lesion, two
            # slices further (the view's slider, by keyboard) another; placing goes on until Segment.
            page.locator("#medsam-place").click()
            page.wait_for_timeout(500)
            draw_box(page, view, (0.42, 0.50), (0.63, 0.66))
            page.wait_for_function("document.querySelectorAll('#medsam-boxes .v-list-item').length === 1")
            page.locator(".v-slider-thumb").first.focus()
            page.keyboard.press("ArrowLeft")
            page.keyboard.press("ArrowLeft")
            page.wait_for_timeout(1000)
            draw_box(page, view, (0.43, 0.51), (0.62, 0.65))
            page.wait_for_function("document.querySelectorAll('#medsam-boxes .v-list-item').length === 2")
            assert "not usable" not in page.locator("#medsam-boxes").inner_text()
            page.locator("#medsam-segment-btn").click()
            page.wait_for_function("document.querySelector('#medsam-status').innerText.startsWith('Segmented')",
                                   timeout=300_000)
            page.wait_for_timeout(1000)
            page.screenshot(path=str(tmp_path / "page.png"))
            downloads = {}
            for kind in ("nifti", "boxes"):
                with page.expect_download() as download:
                    page.locator(f"#medsam-save-{kind}").click()
                downloads[kind] = str(tmp_path / download.value.suggested_filename)
                download.value.save_as(downloads[kind])
            shown = page.locator("#medsam-segment").inner_text()
        finally:
            browser.close()

    if os.environ.get("MEDSAM_UPDATE_SCREENSHOTS"):
        shutil.copy(tmp_path / "page.png", README_SCREENSHOT)
    image = io.read_image(str(tmp_path / "demo.nii.gz"))
    page_mask, _ = io.read_mask(downloads["nifti"])
    keys = io.read_box_json(downloads["boxes"], image.shape)
    assert len(keys.boxes) == 2 and keys.slice_axis == 0
    cli_mask_path = str(tmp_path / "cli.nii.gz")
    subprocess.run([SCRIPT, "segment", str(tmp_path / "demo.nii.gz"), "--boxes", downloads["boxes"],
                    "-o", cli_mask_path], check=True, capture_output=True, timeout=300)
    cli_mask, _ = io.read_mask(cli_mask_path)
    assert cli_mask.sum() > 1000
    assert np.array_equal(page_mask, cli_mask)
    assert f"({int(cli_mask.sum())} voxels)" in shown
