"""A person's path through the demo, in Debian's headless Chromium driven by Playwright.

PNEUMO_SCREENSHOT=docs/screenshot-compare.png PNEUMO_PHONE_SCREENSHOT=docs/screenshot-phone.png
python -m pytest tests/test_browser.py  saves the README's screenshots of the Compare tab (desktop, phone).
"""

import io
import os
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import EXAMPLES, EXTRA_DEMO_MODELS, synthetic_xray, write_dicom

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# "PNEUMONIA 85%, below this model's 87% threshold → NORMAL"
VERDICT = re.compile(r"(NORMAL|PNEUMONIA) [<>\d.]+%, (at or above|below) this model's [<>\d.]+% threshold → "
                     r"(NORMAL|PNEUMONIA)")
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert os.path.exists(CHROMIUM), "install Debian's chromium (apt-get install chromium); .ci/run does"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"])
        yield browser
        browser.close()


def open_page(browser, app_url, viewport):
    page = browser.new_page(viewport=viewport, accept_downloads=True)
    page.set_default_timeout(120_000)
    page.goto(app_url)
    return page


@pytest.fixture(scope="module")
def page(browser, app_url):
    page = open_page(browser, app_url, {"width": 1280, "height": 1400})
    yield page
    page.close()


def visible_tab(page):
    return page.locator("[role=tabpanel]:visible").first


def preview_source(page) -> str | None:
    image = page.locator("#xray-preview img")
    return image.get_attribute("src") if image.count() else None


def wait_for_preview(page, before) -> str:
    """Wait for the server's own picture of a newly chosen X-ray (its `xray.png`) and return its address. An
    example first shows its JPEG, then the server's picture: a test that went on after the first would leave the
    second in flight, to land in the next test."""
    handle = page.wait_for_function(
        "before => { const image = document.querySelector('#xray-preview img'); "
        "return image && image.src.endsWith('/xray.png') && image.src !== before && image.src; }", arg=before)
    return handle.json_value()


def choose(page, path) -> str:
    """Upload `path` in the box above the tabs, wait for its picture and return the picture's address."""
    before = preview_source(page)
    # The upload box, drawn: a page just opened may not have drawn it yet.
    page.locator("#upload input[type=file], #upload button[aria-label=Clear]").first.wait_for(state="attached")
    if page.locator("#upload input[type=file]").count() == 0:  # a file is there already: clear it first
        clear_upload(page)
    page.locator("#upload input[type=file]").set_input_files(str(path))
    return wait_for_preview(page, before)


def clear_upload(page):
    """Clear the upload box and wait for the server to have cleared the picture: a file chosen before that lands
    first, and the clearing then wipes what it showed (the reason a file cannot be read, once on a busy CI)."""
    from playwright.sync_api import expect

    page.locator("#upload button[aria-label=Clear]").click()
    expect(page.locator("#xray-preview img")).to_have_count(0)


def compare(page, path):
    page.get_by_role("tab", name="Compare").click()
    choose(page, path)
    page.get_by_role("button", name="Compare both models").click()
    cards = page.locator("#compare-decisions .pneumo-verdict")
    cards.nth(1).wait_for(state="visible")
    return cards


def test_compare_shows_each_verdict_with_its_threshold_the_banner_and_both_heatmaps(page):
    cards = compare(page, EXAMPLES / "pneumonia_person142_bacteria_683.jpeg")
    texts = [cards.nth(i).inner_text() for i in range(cards.count())]
    assert len(texts) == 2
    for text in texts:
        assert VERDICT.search(" ".join(text.split())), text
        assert "Measured on" in text
    decisions = [cards.nth(i).locator(".pneumo-decision").inner_text() for i in range(2)]
    kind = "agree" if len(set(decisions)) == 1 else "disagree"
    banner = page.locator(f"#compare-decisions .pneumo-banner-{kind}")
    assert banner.count() == 1 and banner.locator(".pneumo-icon").count() == 1
    assert ("Agreement is not confirmation" if kind == "agree" else "The models disagree") in banner.inner_text()
    tab = visible_tab(page)
    assert tab.locator("img[src*='gradio_api/file=']").count() == 2
    assert tab.get_by_text("The heatmap shows where the model looked, not where the disease is.").count() == 2
    assert [cards.nth(i).get_attribute("data-model") for i in range(2)] == ["CNN+LSTM", "ResNet50"]
    assert tab.locator(".pneumo-details table tr").count() == 3  # a header and a row per model
    assert '"probabilities"' not in tab.inner_text()  # no raw JSON on the page
    if os.environ.get("PNEUMO_SCREENSHOT"):
        page.screenshot(path=os.environ["PNEUMO_SCREENSHOT"], full_page=True)


def test_an_error_names_the_users_file_and_clears_the_previous_results(page, tmp_path):
    compare(page, EXAMPLES / "normal_IM-0039-0001.jpeg")
    bad = tmp_path / "discharge-letter.png"
    bad.write_bytes(b"%PDF-1.4 a letter, not an X-ray")
    clear_upload(page)
    page.locator("#upload input[type=file]").set_input_files(str(bad))
    # The reason stays next to the upload (a toast would leave with it).
    message = page.locator("#upload-note").get_by_text("discharge-letter.png: not an image")
    message.wait_for(state="visible")
    assert "/tmp" not in message.inner_text()
    page.wait_for_timeout(6000)  # past a toast's lifetime
    assert message.is_visible()
    tab = visible_tab(page)
    assert page.locator("#compare-decisions .pneumo-verdict, #compare-decisions .pneumo-banner").count() == 0
    assert tab.locator("img[src*='gradio_api/file=']").count() == 0
    assert tab.locator(".pneumo-details table").count() == 0


def test_the_examples_are_thumbnails_that_fill_the_upload(page):
    from playwright.sync_api import expect

    # Waits for them (count() alone does not): on a busy machine the page can still be drawing them here.
    expect(page.locator("#examples img")).to_have_count(len(list(EXAMPLES.glob("*.jpeg"))))
    before = preview_source(page)
    page.locator("#examples img[src*='pneumonia_person64_virus_122']").click()
    page.wait_for_function("() => document.querySelector('#upload')?.innerText.includes('pneumonia_person64_virus_122')")
    wait_for_preview(page, before)


def test_a_dicom_upload_is_shown_as_the_models_read_it(page, tmp_path):
    from pneumo.prediction.analysis import preview

    pixels = synthetic_xray(160).astype(np.uint16) * 200
    dicom = write_dicom(tmp_path / "chest.dcm", pixels, photometric="MONOCHROME1")
    shown = page.request.get(choose(page, dicom)).body()
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(shown)).convert("L")), preview(dicom))


def test_the_model_tab_runs_the_chosen_model_on_the_xray_chosen_above(page):
    choose(page, EXAMPLES / "pneumonia_person64_virus_122.jpeg")
    page.get_by_role("tab", name="One model").click()
    tab = visible_tab(page)
    tab.get_by_role("radio", name="ResNet50").check()
    tab.get_by_role("button", name="Run ResNet50 on the X-ray above").click()
    card = page.locator("#model-decision .pneumo-verdict")
    card.wait_for(state="visible")
    assert card.get_attribute("data-model") == "ResNet50"
    assert VERDICT.search(" ".join(card.inner_text().split()))
    assert tab.get_by_text("The heatmap shows where the model looked").count() == 1
    assert tab.get_by_text("ResNet50 (Grad-CAM)").count() >= 1  # the heatmap's label
    # Another class to explain: the heatmap of the last one goes, rather than stay captioned with it.
    tab.get_by_role("radio", name="NORMAL").check()
    card.wait_for(state="detached")
    assert tab.get_by_text("contribution to").count() == 0


def pick(page, picker_id: str, name: str):
    """Choose `name` in one of the Compare tab's model dropdowns."""
    page.locator(f"#{picker_id} input").click()
    page.locator("[role=option]").filter(has_text=re.compile(rf"^\W*{re.escape(name)}$")).click()
    page.wait_for_function("([id, name]) => document.querySelector(`#${id} input`).value === name",
                           arg=[picker_id, name])


def test_a_pair_picked_in_the_compare_tab_is_compared_and_goes_into_the_report(browser, app_url):
    page = open_page(browser, app_url, {"width": 1280, "height": 1400})
    try:
        page.get_by_role("tab", name="Compare").click()
        pick(page, "model-a", EXTRA_DEMO_MODELS[1])
        tab = visible_tab(page)
        tab.get_by_text(f"Model A: {EXTRA_DEMO_MODELS[1]} (Grad-CAM)").first.wait_for()  # the heatmap's label
        choose(page, EXAMPLES / "normal_IM-0039-0001.jpeg")
        page.get_by_role("button", name="Compare both models").click()
        cards = page.locator("#compare-decisions .pneumo-verdict")
        cards.nth(1).wait_for(state="visible")
        assert [cards.nth(i).get_attribute("data-model") for i in range(2)] == [EXTRA_DEMO_MODELS[1], "ResNet50"]
        assert tab.locator(".pneumo-details table tr").count() == 3
        page.get_by_role("tab", name="Report").click()
        visible_tab(page).get_by_text(f"{EXTRA_DEMO_MODELS[1]} and ResNet50").wait_for()
    finally:
        page.close()


def test_the_browser_keeps_no_history_of_runs(page, app_url):
    compare(page, EXAMPLES / "normal_IM-0039-0001.jpeg")
    page.reload()
    page.get_by_role("button", name="Compare both models").wait_for()
    assert page.evaluate("Object.keys(localStorage).filter(key => key.includes('run-history'))") == []
    assert page.get_by_role("link", name=re.compile("^Runs")).count() == 0
    assert page.request.get(app_url.rstrip("/") + "/gradio_api/runs").status == 404


def test_on_a_phone_both_verdicts_are_on_screen_together(browser, app_url):
    phone = open_page(browser, app_url, PHONE)
    try:
        cards = compare(phone, EXAMPLES / "pneumonia_person142_bacteria_683.jpeg")
        # Both cards whole inside the 390x844 window (the page scrolls them there once they are drawn).
        phone.wait_for_function(
            "() => { const cards = [...document.querySelectorAll('#compare-decisions .pneumo-verdict')]; "
            "return cards.length === 2 && cards.every(card => { const box = card.getBoundingClientRect(); "
            "return box.top >= 0 && box.bottom <= window.innerHeight; }); }")
        assert cards.count() == 2
        # One model tab with a picker rather than a tab per model: every tab fits the phone's tab bar.
        assert all(phone.get_by_role("tab", name=name).is_visible() for name in ("Compare", "One model", "Report",
                                                                                 "About"))
        if os.environ.get("PNEUMO_PHONE_SCREENSHOT"):
            phone.screenshot(path=os.environ["PNEUMO_PHONE_SCREENSHOT"])
    finally:
        phone.close()


def test_the_report_form_produces_a_pdf_with_metadata_and_predictions(page, tmp_path):
    from pypdf import PdfReader

    choose(page, EXAMPLES / "pneumonia_person64_virus_122.jpeg")
    page.get_by_role("tab", name="Report").click()
    tab = visible_tab(page)
    tab.get_by_label("Patient name or ID").fill("Browser Test Patient 42")
    tab.get_by_label("Referring physician").fill("Dr. Headless")
    tab.get_by_label("Notes").fill("typed in Chromium")
    tab.get_by_role("button", name="Create PDF report").click()
    link = tab.locator("a[download$='.pdf']").first
    link.wait_for(state="visible")
    with page.expect_download() as download_info:
        link.click()
    pdf = tmp_path / "report.pdf"
    download_info.value.save_as(pdf)
    text = " ".join("".join(p.extract_text() for p in PdfReader(pdf).pages).split())
    for words in ("Browser Test Patient 42", "Dr. Headless", "typed in Chromium", "CNN+LSTM", "ResNet50", "PNEUMONIA",
                  "threshold"):
        assert words in text, words
    # The link goes with its one download, and the page says why: no second click into a refused download.
    tab.get_by_text("Downloaded. The server has deleted its copy").wait_for(state="visible")
    assert tab.locator("a[download$='.pdf']").count() == 0
    assert re.fullmatch(r"pneumo-report-\d{4}-\d\d-\d\d-\d{4}\.pdf", download_info.value.suggested_filename)


# The table cells on the page whose text takes more than one line: a word broken letter by letter ("P(NO RM AL)")
# shows up so, as does a cell wrapped between words.
WRAPPED_CELLS = """() => [...document.querySelectorAll('td, th')].filter(cell => cell.offsetParent).filter(cell => {
    const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT), tops = new Set();
    while (walker.nextNode()) {
        const range = document.createRange();
        range.selectNodeContents(walker.currentNode);
        for (const rect of range.getClientRects()) if (rect.width > 0) tops.add(Math.round(rect.top / 4));
    }
    return tops.size > 1;
}).map(cell => cell.innerText)"""


def test_on_a_phone_tables_keep_their_words_whole_and_the_heatmap_its_width(browser, app_url):
    phone = open_page(browser, app_url, PHONE)
    try:
        phone.get_by_role("tab", name="About").click()
        visible_tab(phone).locator("table").first.wait_for(state="visible")
        assert phone.evaluate("document.documentElement.scrollHeight") < 3500  # 5,880 px before
        assert phone.evaluate(WRAPPED_CELLS) == []
        choose(phone, EXAMPLES / "pneumonia_person64_virus_122.jpeg")
        phone.get_by_role("tab", name="One model").click()
        tab = visible_tab(phone)
        tab.get_by_role("button", name=re.compile("^Run ")).click()
        heatmap = tab.locator("img[src*='gradio_api/file=']").first
        heatmap.wait_for(state="visible")
        tab.locator(".pneumo-details table").wait_for(state="visible")
        assert heatmap.bounding_box()["width"] >= 300  # about 160 px beside its caption before
        assert phone.evaluate(WRAPPED_CELLS) == []
    finally:
        phone.close()
