"""reports/index.html in real headless Chromium, driven through Selenium with Debian's
`chromium` + `chromium-driver` (installed by the `chromium` fixture when missing):
every image decodes, the browser log has no error, no script runs, and a full-page
screenshot is saved under the test's tmp dir. At 1280x800 a newcomer can find their way:
the answer per dataset on the first screen (a screenshot of it under the tmp dir), the
contents in view wherever the page is scrolled, no sideways scroll, every section folds.
The report is built from synthetic inputs (seconds), not by a study run.
"""

from __future__ import annotations

import struct

import pytest
from selenium.webdriver.common.by import By

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
    assert {"answer", "objectives", "summary", "walkthrough", "provenance"} <= set(sections)
    assert sections[:2] == ["answer", "objectives"] and first_h2 == "Does distillation help?"  # the first screen
    # the screenshot covers the whole page, not only the first viewport
    assert _png_size(shot) == (width, height)
    assert height > 3 * 900
    print(f"full-page screenshot: {shot} ({width}x{height})")


#: The screen a newcomer opens the report on (CSS px).
SCREEN = (1280, 800)


def _at_screen_size(driver) -> None:
    """The viewport exactly SCREEN (the window size would include the browser's own bars)."""
    w, h = SCREEN
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": w, "height": h, "deviceScaleFactor": 1, "mobile": False})


def _rect(driver, selector: str) -> dict:
    return driver.execute_script(
        "const r = document.querySelector(arguments[0]).getBoundingClientRect();"
        " return {top: r.top, bottom: r.bottom, left: r.left, right: r.right, height: r.height}", selector)


def test_first_screen_answers_and_the_page_is_navigable_at_1280(chromium, built_report, tmp_path):
    """At 1280x800: the answer sentences lie within the first 800 px (a screenshot of that
    screen is kept); the page never scrolls sideways (wide tables scroll in their own box,
    and one does here); after scrolling to the bottom the contents are still in the
    viewport and their links still take the reader somewhere; clicking a section's heading
    folds it (its tables hidden) and clicking again unfolds it."""
    width, height = SCREEN
    with headless_chromium(*chromium, width=width, height=height) as driver:
        _at_screen_size(driver)
        driver.get(built_report.as_uri())
        viewport = driver.execute_script("return [window.innerWidth, window.innerHeight]")
        answers = driver.execute_script(
            "return Array.from(document.querySelectorAll('#answer .answer p')).map(p => "
            "({text: p.textContent, top: p.getBoundingClientRect().top, bottom: p.getBoundingClientRect().bottom}))")
        first_screen = tmp_path / "report-first-screen.png"
        driver.save_screenshot(str(first_screen))
        scroll_width = driver.execute_script("return document.documentElement.scrollWidth")
        boxes = driver.execute_script(
            "return Array.from(document.querySelectorAll('.scroll, .wide')).map(b => b.scrollWidth > b.clientWidth)")
        images_right = driver.execute_script(
            "return Math.max(...Array.from(document.images).map(i => i.getBoundingClientRect().right))")

        driver.execute_script("window.scrollTo(0, document.documentElement.scrollHeight)")
        scrolled = driver.execute_script("return window.scrollY")
        nav = _rect(driver, "nav.contents")
        # the contents' first link is on top at its place (nothing covers it), so it can be clicked
        link_on_top = driver.execute_script(
            "const a = document.querySelector('nav.contents a'); const r = a.getBoundingClientRect();"
            " return document.elementFromPoint(r.left + 2, r.top + r.height / 2) === a")
        driver.find_element(By.CSS_SELECTOR, 'nav.contents a[href="#objectives"]').click()
        objectives_top = _rect(driver, "#objectives")["top"]

        folds = driver.execute_script(
            "return Array.from(document.querySelectorAll('section[id] > details.fold')).map(d => d.open)")
        summary = driver.find_element(By.CSS_SELECTOR, "#objectives > details.fold > summary")
        # checkVisibility: false inside a closed <details> (its content is not rendered, though laid out)
        table_shown = "return document.querySelector('#objectives table').checkVisibility()"
        shown_before = driver.execute_script(table_shown)
        summary.click()
        folded = (driver.execute_script("return document.querySelector('#objectives > details').open"),
                  driver.execute_script(table_shown), _rect(driver, "#objectives")["height"])
        summary.click()
        unfolded = (driver.execute_script("return document.querySelector('#objectives > details').open"),
                    driver.execute_script(table_shown))
        errors = console_errors(driver)

    assert viewport == [width, height]
    assert _png_size(first_screen) == (width, height)
    print(f"first-screen screenshot: {first_screen}")
    # the answer: one sentence per dataset (one here), whole, on the first screen
    assert len(answers) == 1 and answers[0]["text"].startswith(f"{EVIL}, against the hard-label baseline: ")
    assert all(0 <= a["top"] and a["bottom"] <= height for a in answers), answers
    # no sideways scroll; a wide table is there and scrolls in its own box; images fit
    assert scroll_width <= width
    assert any(boxes), "no table wider than its box: the sideways-scroll check would prove nothing"
    assert images_right <= width
    # the contents stay in view at the bottom of a long page, and their links work from there
    assert scrolled > 3 * height
    assert nav["height"] > 0 and nav["top"] >= 0 and nav["bottom"] <= height
    assert 0 <= nav["left"] < nav["right"] <= width
    assert link_on_top
    assert abs(objectives_top) <= 2
    # every top-level section folds, open by default
    assert len(folds) >= 5 and all(folds)
    assert shown_before and folded[:2] == (False, False) and folded[2] < 100
    assert unfolded == (True, True)
    assert errors == [], errors


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
