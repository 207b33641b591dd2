"""The built book in a real browser: every page loads cleanly, figures and formulas show."""

from __future__ import annotations

from urllib.parse import urljoin, urlparse

import pytest

from browser_tests.conftest import SITE, toc_files

PAGES = toc_files()
LABS = [page for page in PAGES if page.startswith("labs/")]


# The only resources the site may fetch from elsewhere: the ipywidgets embedder that
# myst-nb adds to pages with stored widget state, and the require.js it needs. This
# machine is offline, so the test answers them with an empty script (which the
# browser then refuses for its integrity hash: that message is expected); any other
# request that leaves localhost is reported as a problem.
EXTERNAL_SCRIPTS = (
    "https://cdnjs.cloudflare.com/ajax/libs/require.js/",
    "https://cdn.jsdelivr.net/npm/@jupyter-widgets/html-manager@",
)


def answer_external(route):
    if route.request.url.startswith(EXTERNAL_SCRIPTS):
        route.fulfill(status=200, content_type="application/javascript", body="")
    else:
        route.abort()


def open_page(browser, url):
    """Load ``url``; return the page and the console errors and failed requests seen."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.route(lambda u: not u.startswith(url.split("/", 3)[0] + "//" + urlparse(url).netloc),
               answer_external)
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
            if m.type == "error" and not any(u in m.text for u in EXTERNAL_SCRIPTS) else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
    page.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.url}")
            if r.status >= 400 else None)
    response = page.goto(url, wait_until="networkidle")
    assert response is not None and response.ok, f"{url}: HTTP {response and response.status}"
    return page, problems


@pytest.mark.parametrize("document", PAGES)
def test_page_loads_without_errors(browser, site_url, document):
    page, problems = open_page(browser, f"{site_url}/{document}.html")
    assert page.locator("h1").count() >= 1, f"{document}: no title"
    assert not problems, f"{document}: {problems}"
    page.close()


@pytest.mark.parametrize("document", PAGES)
def test_internal_links_resolve(browser, site_url, document):
    page, _ = open_page(browser, f"{site_url}/{document}.html")
    hrefs = page.eval_on_selector_all("article a[href]", "els => els.map(e => e.href)")
    page.close()
    broken = []
    for href in hrefs:
        url = urlparse(urljoin(f"{site_url}/{document}.html", href))
        if url.netloc != urlparse(site_url).netloc:
            continue
        target = SITE / url.path.lstrip("/")
        if not target.exists():
            broken.append(href)
    assert not broken, f"{document}: broken internal links {broken}"


@pytest.mark.parametrize("document", LABS)
def test_lab_figures_load(browser, site_url, document):
    page, _ = open_page(browser, f"{site_url}/{document}.html")
    sizes = page.eval_on_selector_all(
        "article img", "imgs => imgs.map(i => [i.src, i.complete, i.naturalWidth])")
    page.close()
    assert sizes, f"{document}: no figures"
    empty = [src for src, complete, width in sizes if not complete or width == 0]
    assert not empty, f"{document}: figures that did not load: {empty}"


@pytest.mark.parametrize("document", [PAGES[0], *LABS[:1]])
def test_formulas_are_typeset(browser, site_url, document, screenshots):
    page, _ = open_page(browser, f"{site_url}/{document}.html")
    page.wait_for_selector("mjx-container", timeout=15_000)
    assert page.locator("mjx-container").count() > 0
    name = document.replace("/", "_")
    page.screenshot(path=str(screenshots / f"{name}.png"), full_page=False)
    page.close()


def test_solutions_are_folded(browser, site_url):
    """Exercise cells render collapsed, so a reader can try before looking."""
    for document in LABS:
        page, _ = open_page(browser, f"{site_url}/{document}.html")
        folded = page.locator("details.hide").count()
        exercises = page.locator(".cell.tag_exercise").count()
        page.close()
        assert exercises > 0 and folded >= exercises, f"{document}: {exercises} exercises, " \
                                                       f"{folded} folded cells"
