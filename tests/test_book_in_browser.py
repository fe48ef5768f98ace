"""The built book as a reader meets it, in headless Chromium (run after `make book`).

Screenshots of every page, light and dark, go to _build/screenshots/.
"""

import functools
import http.server
import json
import re
import os
import pathlib
import shutil
import threading
import urllib.request

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"
EXECUTED = ROOT / "_build" / "book-src" / "notebooks"
SCREENSHOTS = ROOT / "_build" / "screenshots"
# Debian's chromium and chromium-driver, or Google Chrome and the chromedriver
# that GitHub's runners provide ($CHROMEWEBDRIVER names its folder).
CHROMIUM = next(filter(None, map(shutil.which, ["chromium", "chromium-browser",
                                                "google-chrome"])), None)
CHROMEDRIVER = shutil.which("chromedriver") or shutil.which(
    "chromedriver", path=os.environ.get("CHROMEWEBDRIVER", ""))
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
TOC = yaml.safe_load((ROOT / "book" / "_toc.yml").read_text())
CHAPTERS = [pathlib.Path(entry["file"]).name for entry in TOC["chapters"]
            if entry["file"].startswith("notebooks/")]

pytestmark = [
    pytest.mark.skipif(not (HTML / "index.html").exists(),
                       reason="no built book: run `make book` first"),
    pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                       reason="needs Debian's chromium and chromium-driver"),
]


@pytest.fixture(scope="module")
def site():
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(HTML))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 "--window-size=1280,1000", "--hide-scrollbars"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def _screenshots(browser, name):
    """Save the whole page, light and dark."""
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1280, min(height, 16000))
    for theme in ("light", "dark"):
        browser.execute_script(
            "document.documentElement.dataset.theme = arguments[0];"
            "document.documentElement.dataset.mode = arguments[0];", theme)
        browser.save_screenshot(str(SCREENSHOTS / f"{name}-{theme}.png"))
    browser.set_window_size(1280, 1000)


def _expected_figures(chapter):
    cells = json.loads((EXECUTED / f"{chapter}.ipynb").read_text())["cells"]
    return sum("image/png" in output.get("data", {})
               for cell in cells for output in cell.get("outputs", []))


def test_home_page_links_every_chapter(site, browser):
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{site}/index.html")  # redirects to the introduction
    WebDriverWait(browser, 30).until(
        lambda b: CONFIG["title"] in b.title
        and b.find_elements("css selector", "nav.bd-links a")
    )
    links = [a.get_attribute("href") for a in
             browser.find_elements("css selector", "nav.bd-links a")]
    for chapter in CHAPTERS:
        assert any(link.endswith(f"notebooks/{chapter}.html") for link in links), chapter
    assert "ConvMixer-256/8" in browser.find_element("tag name", "main").text
    _screenshots(browser, "00_intro")


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_renders_its_figures_without_errors(site, browser, chapter):
    browser.get(f"{site}/notebooks/{chapter}.html")
    heading = browser.find_element("css selector", "article section h1").text
    number = chapter.split("_")[0]  # "03", or "A1" for the appendix
    assert heading and (heading.split(".")[0] == str(int(number)) if number.isdigit()
                        else heading.startswith("Appendix"))
    assert heading.split("#")[0].strip() in browser.title
    images = browser.find_elements("css selector", "main .cell_output img")
    expected = _expected_figures(chapter)
    assert len(images) == expected
    for image in images:
        browser.execute_script("arguments[0].scrollIntoView()", image)
        width = browser.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth", image
        )
        assert width > 100, image.get_attribute("src")
    # Outputs only: the prose may name errors (say, label errors in CIFAR-10);
    # shown source code raises and catches them.
    outputs = "\n".join(o.text for o in browser.find_elements("css selector", "main .cell_output"))
    assert "Traceback" not in outputs, outputs
    assert "Error" not in re.sub(r"\b(raise|except) \w*Error\b", "", outputs), outputs
    assert not browser.find_elements("css selector", ".output.traceback, .output.error")
    assert "google.colab" not in browser.find_element("tag name", "main").text  # plumbing hidden
    _screenshots(browser, chapter)


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_colab_and_download_buttons(site, browser, chapter):
    browser.get(f"{site}/notebooks/{chapter}.html")
    repository = CONFIG["repository"]["url"].removeprefix("https://github.com/")
    colab = (f"https://colab.research.google.com/github/{repository}/blob/"
             f"{CONFIG['repository']['branch']}/notebooks/{chapter}.ipynb")
    hrefs = [a.get_attribute("href") for a in browser.find_elements("css selector", "a")]
    assert colab in hrefs
    download = next(h for h in hrefs if h and h.endswith(f"notebooks/{chapter}.ipynb")
                    and h.startswith(site))
    with urllib.request.urlopen(download) as response:
        notebook = json.load(response)
    assert notebook["nbformat"] == 4 and notebook["cells"]
    first_code = next(c for c in notebook["cells"] if c["cell_type"] == "code")
    assert "google.colab" in "".join(first_code["source"])  # still there for Colab


def test_the_book_has_its_figures():
    figures = {chapter: _expected_figures(chapter) for chapter in CHAPTERS}
    assert figures["01_data"] >= 3 and figures["03_training"] >= 4
    assert figures["05_filters"] >= 4 and figures["07_ablations"] >= 2


def test_search_finds_convmixer(site, browser):
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{site}/search.html?q=ConvMixer")
    # Sphinx adds the results one by one, then writes its summary line.
    def finished_summary(b):
        for line in b.find_elements("css selector", "#search-results p.search-summary"):
            if line.text.startswith(("Search finished", "Your search did not match")):
                return line.text
        return None

    summary = WebDriverWait(browser, 30).until(finished_summary)
    results = browser.find_elements("css selector", "#search-results li")
    assert len(results) >= 4, summary


def test_references_list_every_cited_work_and_a_citation_leads_there(site, browser):
    import re

    bib = (ROOT / "book" / "references.bib").read_text()
    keys = re.findall(r"^@\w+\{([^,]+),", bib, flags=re.MULTILINE)
    sources = (ROOT / "book" / "intro.md").read_text() + "".join(
        path.read_text() for path in sorted((ROOT / "notebooks").glob("*.ipynb")))
    cited = {key.strip() for keys_cited in re.findall(r"\{cite[a-z:]*\}`([^`]+)`", sources)
             for key in keys_cited.split(",")}  # {cite}`a,b` cites two works
    assert cited == set(keys)  # every entry is cited, every citation has an entry
    browser.get(f"{site}/book/references.html")
    text = browser.find_element("tag name", "main").text
    assert "Patches Are All You Need?" in text  # the title as written, not re-cased
    assert all(name in text for name in ("Trockman", "Paul", "Krizhevsky", "Selvaraju"))
    browser.get(f"{site}/notebooks/02_model.html")
    citation = next(a for a in browser.find_elements("css selector", "main a")
                    if "references.html" in (a.get_attribute("href") or ""))
    browser.get(citation.get_attribute("href"))
    assert browser.current_url.split("#")[0].endswith("/book/references.html")
    assert "Trockman" in browser.find_element("tag name", "main").text


def test_a_cross_link_leads_to_the_chapter_it_names(site, browser):
    browser.get(f"{site}/notebooks/03_training.html")
    link = next(a for a in browser.find_elements("css selector", "main a")
                if a.text.strip() == "Chapter 1")
    browser.get(link.get_attribute("href"))
    assert browser.current_url.split("#")[0].endswith("/notebooks/01_data.html")
    assert browser.find_element("css selector", "article section h1").text.startswith("1.")

