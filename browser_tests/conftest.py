"""Serve each edition of the built site on localhost and drive Debian's Chromium.

No browser is downloaded: Playwright launches the system Chromium by its path
(``$CHROMIUM``, default ``/usr/bin/chromium``). ``make book`` must have built the
instructor edition (``_build/html``) and ``make book EDITION=student`` the student one
(``_build/student/html``).
"""

from __future__ import annotations

import functools
import os
import threading
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
EDITIONS = {"instructor": ROOT / "_build" / "html", "student": ROOT / "_build" / "student" / "html"}
SCREENSHOTS = ROOT / "_build" / "screenshots"
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def toc_files() -> list[str]:
    """Every document of ``_toc.yml``, root first, in reading order."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries):
        for entry in entries:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections", []))

    for part in toc.get("parts", []):
        walk(part["chapters"])
    return files


def tagged_cells(document: str, tag: str) -> int:
    """How many cells of lab ``document`` (``labs/NN_name``) carry ``tag``."""
    notebook = nbformat.read(ROOT / f"{document}.ipynb", as_version=4)
    return sum(tag in cell.metadata.get("tags", []) for cell in notebook.cells)


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@dataclass(frozen=True)
class Site:
    edition: str
    root: Path
    url: str


def _serve(directory: Path):
    handler = functools.partial(QuietHandler, directory=str(directory))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="session")
def servers():
    running = {}
    yield running
    for server in running.values():
        server.shutdown()


@pytest.fixture(scope="session", params=list(EDITIONS))
def site(request, servers) -> Site:
    edition = request.param
    root = EDITIONS[edition]
    if not (root / "index.html").exists():
        command = "make book" + (" EDITION=student" if edition == "student" else "")
        pytest.fail(f"{root} has no index.html: run `{command}` first")
    if edition not in servers:
        servers[edition] = _serve(root)
    return Site(edition, root, f"http://127.0.0.1:{servers[edition].server_port}")


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    executable = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    if not Path(executable).exists():
        pytest.fail(f"no Chromium at {executable}: install Debian's chromium or set $CHROMIUM")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True,
                                             args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def screenshots():
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
