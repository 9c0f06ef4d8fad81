"""A person's path through the demo, in Debian's headless Chromium driven by Playwright."""

import os
import shutil

import pytest

from conftest import EXAMPLES

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def page(app_url):
    from playwright.sync_api import sync_playwright

    assert os.path.exists(CHROMIUM), "install Debian's chromium (apt-get install chromium); .ci/run does"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"])
        page = browser.new_page(viewport={"width": 1280, "height": 1400}, accept_downloads=True)
        page.set_default_timeout(120_000)
        page.goto(app_url)
        yield page
        browser.close()


def visible_tab(page):
    return page.locator("[role=tabpanel]:visible").first


def test_compare_shows_both_labels_and_both_heatmaps(page):
    page.get_by_role("tab", name="Compare").click()
    tab = visible_tab(page)
    tab.locator("input[type=file]").first.set_input_files(str(EXAMPLES / "pneumonia_person142_bacteria_683.jpeg"))
    tab.get_by_role("button", name="Compare both models").click()
    heatmaps = tab.locator("img[src*='gradio_api/file=']")
    heatmaps.nth(1).wait_for(state="visible")
    assert heatmaps.count() >= 2
    page.get_by_text("agree").first.wait_for()
    text = tab.inner_text()
    assert text.count("PNEUMONIA") >= 2
    if os.environ.get("PNEUMO_SCREENSHOT"):
        page.screenshot(path=os.environ["PNEUMO_SCREENSHOT"], full_page=True)


def test_the_report_form_produces_a_pdf_with_metadata_and_predictions(page, tmp_path):
    from pypdf import PdfReader

    page.get_by_role("tab", name="Report").click()
    tab = visible_tab(page)
    tab.locator("input[type=file]").first.set_input_files(str(EXAMPLES / "pneumonia_person64_virus_122.jpeg"))
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
    text = "".join(p.extract_text() for p in PdfReader(pdf).pages)
    for words in ("Browser Test Patient 42", "Dr. Headless", "typed in Chromium", "CNN+LSTM", "ResNet50", "PNEUMONIA"):
        assert words in text, words
