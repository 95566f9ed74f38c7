"""reports/index.html in real headless Chromium, driven through Selenium with Debian's
`chromium` + `chromium-driver` (installed by the `chromium` fixture when missing):
every image decodes, the browser log has no error, no script runs, and a full-page
screenshot is saved under the test's tmp dir. The report is built from synthetic
inputs (seconds), not by a study run.
"""

from __future__ import annotations

import struct

import pytest

import browser as browser_mod
from browser import console_errors, ensure_chromium, full_page_screenshot, headless_chromium, open_dialog
from distillstudy.render import plotting
from distillstudy.stages import report
from synthetic import EVIL, report_inputs


@pytest.fixture(scope="session")
def chromium():
    try:
        return ensure_chromium()
    except RuntimeError as exc:  # no apt, not root, no network: say so instead of erroring obscurely
        pytest.fail(f"headless Chromium and chromedriver are needed and could not be installed: {exc}")


@pytest.fixture(scope="module")
def built_report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    inputs = report_inputs(tmp)
    out = tmp / "reports"
    inputs["params"] = {**inputs["params"], "report": {"title": f"browser test {EVIL}"}}
    report.run(**inputs, out_html=out / "index.html", figures_dir=out / "figures", plots_dir=out / "plots")
    return out / "index.html"


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def test_report_renders_in_headless_chromium(chromium, built_report, tmp_path):
    with headless_chromium(*chromium) as driver:
        driver.get(built_report.as_uri())
        dialog = open_dialog(driver)
        images = driver.execute_script(
            "return Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete,"
            " w: i.naturalWidth, h: i.naturalHeight}))")
        scripts = driver.execute_script("return document.scripts.length")
        title = driver.title
        h1 = driver.execute_script("return document.querySelector('h1').textContent")
        sections = driver.execute_script(
            "return Array.from(document.querySelectorAll('section[id]')).map(s => s.id)")
        first_h2 = driver.execute_script("return document.querySelector('h2').textContent")
        errors = console_errors(driver)
        # and a console error would have been seen: the log check is not blind
        driver.execute_script("console.error('probe ' + 'error')")
        probe = console_errors(driver)
        shot = tmp_path / "report-full-page.png"
        width, height = full_page_screenshot(driver, shot)

    n_expected = len(plotting.STUDY_FIGURES) + 2  # one dataset's figures + the two walkthrough PNGs
    assert len(images) == n_expected
    bad = [i["alt"] for i in images if not (i["complete"] and i["w"] > 0 and i["h"] > 0)]
    assert not bad, f"images that did not load: {bad}"
    assert any("probe error" in e for e in probe), probe
    assert errors == [], errors
    # the hostile dataset name and title are shown as text: no script element, no alert
    assert scripts == 0 and dialog is None
    assert title == h1 == f"browser test {EVIL}"
    assert {"objectives", "summary", "walkthrough", "provenance"} <= set(sections)
    assert sections[0] == "objectives" and first_h2 == "Which objective?"  # the report's first screen
    # the screenshot covers the whole page, not only the first viewport
    assert _png_size(shot) == (width, height)
    assert height > 3 * 900
    print(f"full-page screenshot: {shot} ({width}x{height})")


def test_ensure_chromium_installs_with_apt_when_missing(tmp_path, monkeypatch):
    """On a fresh machine: `apt-get update`, then `apt-get install -y
    --no-install-recommends chromium chromium-driver`, each waiting for another install's
    dpkg lock (a fake apt-get records the calls)."""
    chromium, chromedriver = tmp_path / "usr-bin-chromium", tmp_path / "usr-bin-chromedriver"
    calls = tmp_path / "calls.txt"
    fake_apt = tmp_path / "apt-get"
    fake_apt.write_text(f'#!/bin/sh\necho "$@ [$DEBIAN_FRONTEND]" >> {calls}\n'
                        f'if [ "$3" = install ]; then touch {chromium} {chromedriver}; fi\n')
    fake_apt.chmod(0o755)
    chromium.touch()  # the browser alone is not enough: the driver is missing
    monkeypatch.setattr(browser_mod, "CHROMIUM", chromium)
    monkeypatch.setattr(browser_mod, "CHROMEDRIVER", chromedriver)
    monkeypatch.setattr(browser_mod.shutil, "which", lambda name: str(fake_apt) if name == "apt-get" else None)
    assert browser_mod.ensure_chromium() == (chromium, chromedriver)
    assert calls.read_text().splitlines() == [
        "-o DPkg::Lock::Timeout=600 update [noninteractive]",
        "-o DPkg::Lock::Timeout=600 install -y --no-install-recommends chromium chromium-driver [noninteractive]"]
    browser_mod.ensure_chromium()  # present now: apt is not called again
    assert len(calls.read_text().splitlines()) == 2
