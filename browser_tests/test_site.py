"""Both editions of the built book in a real browser, as a reader sees them.

Every page loads with no console error and no request that leaves the site; no output
area renders empty; every image loads and has real alt text and a caption; formulas are
typeset; figures are numbered per chapter, cross-references show their numbers, and the
text of every figure is at least 9 px tall as shown; at 400 px no prose runs off the page
sideways; solutions and model answers are folded in the instructor edition and absent
from the student edition. Every launch and download button of the student edition opens
a released notebook, never one that holds solutions, and the instructor chapter is not
part of it. The builds left the work tree as it was committed.
"""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from urllib.parse import urljoin, urlparse
from xml.etree import ElementTree

import nbformat
import pytest
from matplotlib.textpath import TextToPath
from PIL import Image

from browser_tests.conftest import ROOT, tagged_cells, toc_files
from labkit import viz
from labkit.grading.release import BEGIN_SOLUTION, END_SOLUTION, release_notebook

EDITION_ONLY = {"book/instructors": "instructor", "book/honesty": "student"}
"""Pages of one edition only: the student edition has the student page in place of the
instructor chapter."""
PAGES = toc_files() + ["book/honesty"]
LABS = [page for page in PAGES if page.startswith("labs/")]
SCREENSHOT_PAGES = ("book/intro", "book/granularity", "labs/01_granularity")
NARROW = 400
FILE_NAME = re.compile(r"(^|/)[^ ]+\.(png|jpe?g|svg|gif)$", re.IGNORECASE)

_REPORTS: dict[tuple[str, str, int], dict] = {}

FOLDS_JS = """() => {
  const article = document.querySelector("article") || document.body;
  const summary = d => {
    const title = d && d.querySelector("summary");
    return title ? title.innerText : "";
  };
  return {
    exercises: [...article.querySelectorAll(".cell.tag_exercise")].map(cell => {
      const fold = cell.querySelector("details");
      return {folded: !!fold && !fold.open, label: summary(fold).trim(),
              code: (cell.querySelector(".cell_input pre") || {}).textContent || ""};
    }),
    answers: [...article.querySelectorAll("details.model-answer")].map(
      d => ({open: d.open, label: summary(d).trim()})),
  };
}"""

CONTENT_JS = """() => {
  const article = document.querySelector("article") || document.body;
  article.querySelectorAll("details").forEach(d => { d.open = true; });
  const cellName = el => {
    const cell = el.closest(".cell");
    const pre = cell && cell.querySelector(".cell_input pre");
    return pre ? pre.textContent.trim().split("\\n")[0].slice(0, 80) : "(a cell)";
  };
  const visible = "img, svg, table, mjx-container, video, canvas, iframe";
  return {
    empty_outputs: [...article.querySelectorAll(".cell_output > *")]
      .filter(o => o.matches("script, style")
                   || (o.innerText.trim() === "" && !o.querySelector(visible)
                       && !o.matches(visible)))
      .map(cellName),
    images: [...article.querySelectorAll("img")].map(i => {
      const figure = i.closest("figure");
      const caption = figure && figure.querySelector("figcaption");
      return {src: i.getAttribute("src"), url: i.src,
              loaded: i.complete && i.naturalWidth > 0,
              alt: (i.getAttribute("alt") || "").trim(),
              caption: caption ? caption.innerText.trim() : "",
              shown: i.getBoundingClientRect().width};
    }),
    figures: [...article.querySelectorAll("figure")].map(f => {
      const caption = f.querySelector("figcaption");
      const number = f.querySelector(".caption-number");
      return {id: f.id, caption: caption ? caption.innerText.trim() : "",
              number: number ? number.textContent.trim() : ""};
    }),
    numrefs: [...article.querySelectorAll("a .std-numref")].map(
      r => ({href: r.closest("a").href, text: r.textContent.trim()})),
    chapter: (article.querySelector("h1 .section-number") || {textContent: ""})
      .textContent.trim(),
    untypeset: [...article.querySelectorAll(".math")]
      .filter(m => !m.querySelector("mjx-container") && !m.closest("mjx-container"))
      .map(m => m.textContent.trim().slice(0, 60)),
    typeset: article.querySelectorAll("mjx-container").length,
    text: article.innerText,
  };
}"""

OVERFLOW_JS = """() => {
  const article = document.querySelector("article") || document.body;
  const width = document.documentElement.clientWidth;
  const scrollsInBox = el => {
    for (let box = el.parentElement; box && box !== article.parentElement;
         box = box.parentElement) {
      const overflow = getComputedStyle(box).overflowX;
      if (overflow === "auto" || overflow === "scroll") return true;
    }
    return false;
  };
  const prose = [...article.querySelectorAll(
    "p, li, h1, h2, h3, h4, dt:not(.sig), dd, figcaption")];
  const runsOver = el => [el, ...el.querySelectorAll(
      "code, a:not(.headerlink), em, strong, span, mjx-container")]
    .some(part => part.getBoundingClientRect().right > width + 1);
  return {
    page: document.documentElement.scrollWidth, width: width,
    wide: prose.filter(el => !scrollsInBox(el) && runsOver(el))
               .map(el => el.tagName + ": " + el.innerText.trim().slice(0, 70)),
  };
}"""


BUTTONS = ".bd-header-article a[href]"
"""The article's header: its launch (Binder, Colab, JupyterHub) and download buttons."""


def inspect(browser, site, document: str, width: int = 1280, screenshot=None) -> dict:
    """Load one page of one edition (once per width) and measure what a reader sees."""
    if EDITION_ONLY.get(document, site.edition) != site.edition:
        pytest.skip(f"{document} is not part of the {site.edition} edition")
    key = (site.edition, document, width)
    if key in _REPORTS and screenshot is None:
        return _REPORTS[key]
    page = browser.new_page(viewport={"width": width, "height": 900})
    problems: list[str] = []
    own = site.url + "/"

    def route(request_route):
        problems.append(f"off-site request: {request_route.request.url}")
        request_route.abort()

    page.route(lambda url: not url.startswith(own), route)
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
            if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: None if not r.url.startswith(own)
            else problems.append(f"request failed: {r.url}"))
    page.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.url}")
            if r.status >= 400 else None)
    response = page.goto(f"{own}{document}.html", wait_until="networkidle")
    assert response is not None and response.ok, f"{document}: HTTP {response and response.status}"
    page.evaluate("() => window.MathJax && MathJax.startup ? MathJax.startup.promise : null")
    report = {"problems": problems, "titles": page.locator("article h1").count()}
    if width == NARROW:
        report.update(page.evaluate(OVERFLOW_JS))
    else:
        report["hrefs"] = page.eval_on_selector_all("article a[href]",
                                                    "els => els.map(e => e.href)")
        report["buttons"] = page.eval_on_selector_all(BUTTONS, "els => els.map(e => e.href)")
        report["downloads"] = {href: page.request.get(href).text()
                               for href in report["buttons"] if "/_sources/" in href}
        report.update(page.evaluate(FOLDS_JS))
        if screenshot is not None:
            page.screenshot(path=str(screenshot), full_page=False)
        report.update(page.evaluate(CONTENT_JS))
    page.close()
    _REPORTS[key] = report
    return report


@pytest.mark.parametrize("document", PAGES)
def test_page_loads_cleanly_and_stays_on_site(browser, site, document):
    report = inspect(browser, site, document)
    assert report["titles"] >= 1, f"{site.edition} {document}: no title"
    assert not report["problems"], f"{site.edition} {document}: {report['problems']}"


@pytest.mark.parametrize("document", PAGES)
def test_internal_links_resolve(browser, site, document):
    report = inspect(browser, site, document)
    broken = []
    for href in report["hrefs"]:
        url = urlparse(urljoin(f"{site.url}/{document}.html", href))
        local = url.netloc == urlparse(site.url).netloc
        if local and not (site.root / url.path.lstrip("/")).exists():
            broken.append(href)
    assert not broken, f"{site.edition} {document}: broken internal links {broken}"


@pytest.mark.parametrize("document", PAGES)
def test_no_output_renders_empty(browser, site, document):
    empty = inspect(browser, site, document)["empty_outputs"]
    assert not empty, f"{site.edition} {document}: empty output areas below the cells {empty}"


@pytest.mark.parametrize("document", PAGES)
def test_images_load_with_alt_text_and_caption(browser, site, document):
    images = inspect(browser, site, document)["images"]
    failed = [i["src"] for i in images if not i["loaded"]]
    no_alt = [i["src"] for i in images
              if len(i["alt"]) < 10 or FILE_NAME.search(i["alt"]) or i["alt"] == i["src"]]
    no_caption = [i["src"] for i in images if not i["caption"]]
    assert not failed, f"{site.edition} {document}: images that did not load {failed}"
    assert not no_alt, f"{site.edition} {document}: images without real alt text {no_alt}"
    assert not no_caption, f"{site.edition} {document}: images outside a captioned figure " \
                           f"{no_caption}"


@pytest.mark.parametrize("document", PAGES)
def test_figures_have_captions(browser, site, document):
    figures = inspect(browser, site, document)["figures"]
    assert all(f["caption"] for f in figures), \
        f"{site.edition} {document}: figures without caption {[f['id'] for f in figures]}"


@pytest.mark.parametrize("document", PAGES)
def test_figures_are_numbered_from_one_in_each_chapter(browser, site, document):
    """A chapter of the numbered parts (its title "3. ...") numbers its figures Fig. 3.1,
    3.2, ...; a page outside them (the introduction) Fig. 1, 2, ..."""
    report = inspect(browser, site, document)
    chapter = report["chapter"].rstrip(".")
    prefix = f"{chapter}." if chapter else ""
    numbers = [figure["number"] for figure in report["figures"]]
    expected = [f"Fig. {prefix}{count}" for count in range(1, len(numbers) + 1)]
    assert numbers == expected, f"{site.edition} {document}: figure numbers {numbers}"


def test_figure_numbers_are_unique_and_references_show_them(browser, site):
    """No two figures of an edition share a number, and every cross-reference to a
    figure ({numref}) shows the number of the figure it links to."""
    numbers, references = {}, []
    for document in PAGES:
        if EDITION_ONLY.get(document, site.edition) != site.edition:
            continue
        report = inspect(browser, site, document)
        for figure in report["figures"]:
            numbers[f"{site.url}/{document}.html#{figure['id']}"] = figure["number"]
        references += [(document, ref["href"], ref["text"]) for ref in report["numrefs"]]
    repeated = sorted(number for number, count in Counter(numbers.values()).items()
                      if count > 1)
    assert not repeated, f"{site.edition}: figure numbers used twice {repeated}"
    assert references, f"{site.edition}: no page refers to a figure by its number"
    wrong = [(document, href, text, numbers.get(href)) for document, href, text in references
             if numbers.get(href) != text]
    assert not wrong, f"{site.edition}: references that show another number {wrong}"


MIN_TEXT_PX = 9
"""The smallest text a figure may show, in CSS px, at the width the page shows it."""
TEXT_GROUP = re.compile(r"translate\([^)]*\)( rotate\([^)]*\))? scale\(([\d.]+) -\2\)")
FONT_SIZE = re.compile(r"font-size:\s*([\d.]+)")


def svg_text_sizes(svg: ElementTree.Element) -> list[float]:
    """The font sizes of an SVG's text, in its user units (the units of its viewBox).

    matplotlib, as the chapter figures are written (``svg.fonttype`` "path"), draws each
    text as glyph paths in a group ``translate(x y) [rotate(a)] scale(s -s)``, where
    ``s`` is the size in points over ``TextToPath.FONT_SCALE`` (its viewBox is in
    points); a hand-drawn SVG gives ``font-size`` as an attribute or a style."""
    sizes = []
    for element in svg.iter():
        group = TEXT_GROUP.fullmatch(element.get("transform", ""))
        if group:
            sizes.append(float(group.group(2)) * TextToPath.FONT_SCALE)
        style = FONT_SIZE.search(element.get("style", ""))
        declared = element.get("font-size") or (style and style.group(1))
        if declared:
            sizes.append(float(declared))
    return sizes


def smallest_text_px(site, image: dict) -> float | None:
    """The height in CSS px of the smallest text of figure ``image`` as the page shows it
    (``None`` for a figure without text): its font size in the image's own units times
    the displayed width over the image's width in those units."""
    path = site.root / urlparse(image["url"]).path.lstrip("/")
    if path.suffix == ".svg":
        svg = ElementTree.parse(path).getroot()
        sizes = svg_text_sizes(svg)
        width = float(svg.get("viewBox", f"0 0 {svg.get('width')} 0").split()[2])
        return min(sizes) * image["shown"] / width if sizes else None
    with Image.open(path) as png:
        dpi, width = png.info["dpi"][0], png.width
    return viz.SMALLEST_FONT_PT * dpi / 72 * image["shown"] / width


@pytest.mark.parametrize("document", PAGES)
def test_figure_text_is_legible_at_the_width_shown(browser, site, document):
    """Every figure's smallest text is at least 9 px tall (its font size, in CSS px) at
    the width the page shows it, 1280 px wide.

    An SVG (a chapter figure) declares its text sizes (:func:`svg_text_sizes`): the
    smallest, times the displayed width over the width of its viewBox. A PNG (a lab's
    output, stored by the inline backend) carries its dpi (the pHYs chunk matplotlib
    writes, 200 for the stored "retina" figures) but not its text, drawn with
    ``labkit.viz.STYLE``: the style's smallest size in pt, times dpi / 72 px per pt,
    times the displayed width over the PNG's width in px. Subscripts of formulas are
    drawn smaller than their text and are not counted."""
    small = {}
    for image in inspect(browser, site, document)["images"]:
        size = smallest_text_px(site, image)
        if size is not None and size < MIN_TEXT_PX:
            small[image["src"]] = round(size, 1)
    assert not small, f"{site.edition} {document}: figures whose smallest text is under " \
                      f"{MIN_TEXT_PX} px as shown {small}"


@pytest.mark.parametrize("document", PAGES)
def test_formulas_are_typeset(browser, site, document):
    report = inspect(browser, site, document)
    assert not report["untypeset"], f"{site.edition} {document}: formulas left as text " \
                                    f"{report['untypeset']}"


@pytest.mark.parametrize("document", PAGES)
def test_no_prose_overflows_at_400px(browser, site, document):
    report = inspect(browser, site, document, width=NARROW)
    assert report["page"] <= report["width"] + 1, \
        f"{site.edition} {document}: the page is {report['page']} px wide at {NARROW} px"
    assert not report["wide"], f"{site.edition} {document}: prose wider than the column " \
                               f"{report['wide']}"


@pytest.mark.parametrize("document", LABS)
def test_solutions_and_answers_folded_or_absent(browser, site, document):
    report = inspect(browser, site, document)
    exercises, answers = report["exercises"], report["answers"]
    questions = tagged_cells(document, "question")
    assert len(exercises) == tagged_cells(document, "exercise") > 0
    if site.edition == "instructor":
        unfolded = [e["code"][:60] for e in exercises
                    if not e["folded"] or "Show solution" not in e["label"]]
        assert not unfolded, f"{document}: exercises not under 'Show solution' {unfolded}"
        assert len(answers) == questions, f"{document}: {questions} model answers, " \
                                          f"{len(answers)} folds"
        assert all(not a["open"] and a["label"] == "Model answer" for a in answers), answers
    else:
        assert not answers, f"{document}: the student edition folds {len(answers)} answers"
        assert all("raise NotImplementedError" in e["code"] for e in exercises), \
            f"{document}: an exercise cell of the student edition is not the placeholder"
        leaked = [line for line in solution_lines(document) if line in report["text"]]
        assert not leaked, f"{document}: solution code in the student edition {leaked[:3]}"


@pytest.mark.parametrize("document", SCREENSHOT_PAGES)
def test_screenshots(browser, site, document, screenshots):
    folder = screenshots / site.edition
    folder.mkdir(exist_ok=True)
    path = folder / f"{document.replace('/', '_')}.png"
    inspect(browser, site, document, screenshot=path)
    assert path.stat().st_size > 10_000


def solution_lines(document: str) -> list[str]:
    """The distinctive lines of a lab's solutions: inside the solution markers of its
    exercise cells, longer than 25 characters, and in no other text of the notebook."""
    notebook = nbformat.read(ROOT / f"{document}.ipynb", as_version=4)
    solution, elsewhere = set(), []
    for cell in notebook.cells:
        inside = False
        for line in cell.source.splitlines():
            marker = line.strip()
            if "exercise" in cell.metadata.get("tags", []) and marker in (BEGIN_SOLUTION,
                                                                         END_SOLUTION):
                inside = marker == BEGIN_SOLUTION
            elif inside and len(marker) > 25:
                solution.add(marker)
            elif not inside:
                elsewhere.append(line)
    text = "\n".join(elsewhere)
    return sorted(line for line in solution if line not in text)


def _repository() -> tuple[str, str]:
    """``owner/name`` of the course repository and the site's address, from _config.yml."""
    import yaml

    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    return (urlparse(config["repository"]["url"]).path.strip("/").removesuffix(".git"),
            config["html"]["baseurl"])


def _released(document: str) -> nbformat.NotebookNode:
    """The student notebook ``labkit release`` writes for lab ``document``."""
    from labkit.grading.release import course_site, install_source

    install = install_source(course_site(ROOT / "_config.yml"))
    return release_notebook(nbformat.read(ROOT / f"{document}.ipynb", as_version=4),
                            install=install)


@pytest.mark.parametrize("document", PAGES)
def test_launch_and_download_buttons_open_the_editions_own_notebooks(browser, site, document):
    """Instructor edition: the labs on main. Student edition: the released notebooks, on
    the student branch (written to _build/student/branch) and as the download."""
    report = inspect(browser, site, document)
    repository, _ = _repository()
    branch = "student" if site.edition == "student" else "main"
    notebook = f"{document}.ipynb"
    launch = [href for href in report["buttons"]
              if urlparse(href).netloc in ("mybinder.org", "colab.research.google.com")
              or "git-pull" in href]
    sources = [href for href in report["buttons"] if "/_sources/" in href]
    others = set(report["buttons"]) - set(launch) - set(sources)
    if document in LABS:
        assert sorted(launch) == sorted([
            f"https://mybinder.org/v2/gh/{repository}/{branch}?urlpath=lab/tree/{notebook}",
            f"https://colab.research.google.com/github/{repository}/blob/{branch}/{notebook}",
        ]), f"{site.edition} {document}: launch buttons {launch}"
        assert {urlparse(href).path.rsplit("/_sources/", 1)[-1] for href in sources} \
            == {notebook}, f"{site.edition} {document}: downloads {sources}"
    else:
        assert not launch, f"{site.edition} {document}: a chapter with launch buttons {launch}"
        assert all(href.endswith(f"/_sources/{document}.md") for href in sources), sources
    if site.edition == "student":
        assert not others, f"{document}: the student edition links to {sorted(others)}"
    if site.edition == "student" and document in LABS:
        released = [cell.source for cell in _released(document).cells]
        branch_copy = nbformat.read(ROOT / "_build" / "student" / "branch" / notebook,
                                    as_version=4)
        downloads = [nbformat.reads(text, as_version=4)
                     for text in report["downloads"].values()]
        for opened in (branch_copy, *downloads):
            assert [cell.source for cell in opened.cells] == released, \
                f"{document}: a button opens a notebook other than the released one"
            text = nbformat.writes(opened)
            assert BEGIN_SOLUTION not in text and not [
                line for line in solution_lines(document) if line in text]


def test_the_student_edition_leaves_the_instructor_chapter_out(site):
    pages = {path.relative_to(site.root).as_posix() for path in site.root.rglob("*.html")}
    if site.edition == "student":
        assert "book/instructors.html" not in pages and "book/honesty.html" in pages
        linking = sorted(page for page in pages if "instructors.html" in
                         (site.root / page).read_text(encoding="utf-8"))
        assert not linking, f"student pages that link to the instructor chapter: {linking}"
        assert not (site.root / "_sources" / "book" / "instructors.md").exists()
    else:
        assert "book/instructors.html" in pages and "book/honesty.html" not in pages


def test_both_editions_publish_the_course_wheel_the_install_cells_take(site):
    from labkit import __version__
    from labkit.grading.release import COURSE_FOLDER, wheel_name

    course = site.root / COURSE_FOLDER
    assert (course / wheel_name(__version__)).is_file()
    assert (course / "constraints.txt").read_text() == (ROOT / "constraints.txt").read_text()


def test_the_builds_leave_the_work_tree_as_committed():
    """`make book` (both editions) rewrites no tracked file and leaves no untracked one:
    figures redraw byte for byte and the install cells are already the config's."""
    status = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    assert status == "", f"the book build changed the work tree:\n{status}"
