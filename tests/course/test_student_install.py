"""A student's first cell, the way a student meets it.

A fresh virtual environment without the course package (the packages it depends on are
visible, torch is not), the built student edition served on 127.0.0.1, and the released
lab 00 executed from its first cell: the install cell must install this version's wheel
from the site and torch's CPU build, and the lab must then run. Nothing is downloaded:
pip runs with ``--no-index`` and finds torch's CPU wheel in ``$LABKIT_TORCH_WHEELS``
(default ``/opt/wheels``). Skipped, with the reason, where the student edition has not
been built (``make book EDITION=student``) or that wheel is not there.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import threading
import venv
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from labkit import __version__
from labkit.grading.release import COURSE_FOLDER, course_site, install_cell, wheel_name
from tests.support.paths import ROOT

SITE = ROOT / "_build" / "student" / "html"
BRANCH = ROOT / "_build" / "student" / "branch"
TORCH_WHEELS = Path(os.environ.get("LABKIT_TORCH_WHEELS", "/opt/wheels"))
HIDDEN = ("torch", "torchgen", "functorch", "labkit", "pruning_workbook")


def _missing() -> str | None:
    if not (SITE / COURSE_FOLDER / wheel_name(__version__)).is_file():
        return f"no course wheel in {SITE / COURSE_FOLDER}: run `make book EDITION=student`"
    if not (BRANCH / "labs" / "00_baseline.ipynb").is_file():
        return f"no released lab 00 in {BRANCH}: run `make book EDITION=student`"
    if not list(TORCH_WHEELS.glob("torch-*+cpu-*.whl")):
        return f"no CPU torch wheel in {TORCH_WHEELS} (set $LABKIT_TORCH_WHEELS) to install offline"
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=str(_missing()))


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0),
                                 functools.partial(QuietHandler, directory=str(SITE)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()


def _dependencies(folder: Path) -> Path:
    """A folder that shows every package of this environment but torch and the course."""
    folder.mkdir()
    for site_packages in [Path(p) for p in sys.path if p.endswith("site-packages")]:
        for entry in site_packages.iterdir():
            name = entry.name.split("-")[0].split(".")[0].lower()
            if (name in HIDDEN or entry.suffix == ".pth" or name.startswith("__editable__")
                    or (folder / entry.name).exists()):
                continue
            (folder / entry.name).symlink_to(entry)
    return folder


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    """A fresh environment and a Jupyter kernel spec that runs in it."""
    root = tmp_path_factory.mktemp("student")
    environment = root / "venv"
    venv.create(environment, with_pip=True)
    python = environment / "bin" / "python"
    # the environment's own old setuptools would hide the visible one that torch needs
    subprocess.run([python, "-m", "pip", "uninstall", "--quiet", "--yes", "setuptools"],
                   check=True)
    site_packages = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True, capture_output=True, text=True).stdout.strip()
    Path(site_packages, "course-dependencies.pth").write_text(
        f"{_dependencies(root / 'dependencies')}\n")
    spec = root / "jupyter" / "kernels" / "student"
    spec.mkdir(parents=True)
    spec.joinpath("kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "student", "language": "python",
        "env": {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(TORCH_WHEELS),
                "PIP_DISABLE_PIP_VERSION_CHECK": "1", "LABKIT_CACHE": str(root / "cache"),
                "OMP_NUM_THREADS": "1", "MPLBACKEND": "agg"}}))
    os.environ["JUPYTER_PATH"] = str(root / "jupyter")
    yield python, root
    del os.environ["JUPYTER_PATH"]


def _run(notebook: nbformat.NotebookNode, folder: Path) -> nbformat.NotebookNode:
    NotebookClient(notebook, kernel_name="student", timeout=900, allow_errors=True,
                   resources={"metadata": {"path": str(folder)}}).execute()
    return notebook


def _errors(cell) -> list[str]:
    return [f"{o.ename}: {o.evalue}" for o in cell.get("outputs", [])
            if o.output_type == "error"]


def _released_lab_00(site_url: str) -> nbformat.NotebookNode:
    notebook = nbformat.read(BRANCH / "labs" / "00_baseline.ipynb", as_version=4)
    cell = install_cell(notebook)
    assert course_site(ROOT / "_config.yml") in cell.source
    cell.source = cell.source.replace(course_site(ROOT / "_config.yml"), site_url)
    return notebook


def test_a_failed_install_stops_the_cell_with_one_message(student, site_url):
    python, root = student
    notebook = _released_lab_00(site_url + "no-such-course/")
    notebook.cells = [install_cell(notebook)]
    [cell] = _run(notebook, root).cells
    [error] = _errors(cell)
    assert error.startswith("RuntimeError: cannot reach the course at ")
    assert not any(o.output_type == "stream" for o in cell.outputs)


def test_the_released_lab_00_runs_from_its_first_cell_in_a_fresh_environment(student,
                                                                             site_url):
    python, root = student
    notebook = _run(_released_lab_00(site_url), root)
    assert not install_cell(notebook).outputs, "the install cell printed or failed"
    installed = subprocess.run(
        [python, "-c", "import importlib.metadata as m, labkit, torch; "
         "print(m.version('pruning-workbook'), torch.__version__, labkit.__file__)"],
        cwd=root, check=True, capture_output=True, text=True).stdout.split()
    assert installed[:2] == [__version__, "2.13.0+cpu"]
    assert installed[2].startswith(str(root / "venv"))
    first_exercise = next(index for index, cell in enumerate(notebook.cells)
                          if "exercise" in cell.metadata.get("tags", []))
    failing = {index: _errors(cell) for index, cell in enumerate(notebook.cells)
               if _errors(cell)}
    assert all(index > first_exercise for index in failing), failing
    assert all(error.startswith(("NotImplementedError", "CheckFailed"))
               for errors in failing.values() for error in errors), failing
