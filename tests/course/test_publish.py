"""The student edition's sources and the student branch, derived from _config.yml."""

import importlib.util
import shutil

import pytest
import yaml

from tests.support.paths import ROOT

spec = importlib.util.spec_from_file_location("publish", ROOT / "book" / "publish.py")
publish = importlib.util.module_from_spec(spec)
spec.loader.exec_module(publish)


@pytest.fixture
def tree(tmp_path):
    for name in ("_config.yml", "_toc.yml", "book/intro.md", "book/instructors.md",
                 "book/honesty.md"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def test_the_student_edition_opens_the_student_branch_and_leaves_the_instructors_out(tree):
    publish.student_edition(tree)
    config = yaml.safe_load((tree / "_config.yml").read_text())
    assert config["repository"]["branch"] == "student"
    assert not config["html"]["use_repository_button"]
    assert not config["html"]["use_issues_button"]
    assert config["launch_buttons"] == yaml.safe_load(
        (ROOT / "_config.yml").read_text())["launch_buttons"]
    toc = (tree / "_toc.yml").read_text()
    assert "book/instructors" not in toc and "file: book/honesty\n" in toc
    assert not (tree / "book" / "instructors.md").exists()
    intro = (tree / "book" / "intro.md").read_text()
    assert "instructors" not in intro and "<honesty>`" in intro


def test_the_student_edition_refuses_a_toc_without_the_instructor_chapter(tree):
    (tree / "_toc.yml").write_text("root: book/intro\n")
    with pytest.raises(ValueError, match="must list book/instructors"):
        publish.student_edition(tree)


def test_the_student_branch_holds_the_released_labs_and_installs_the_course_wheel(tree):
    (tree / "labs").mkdir()
    (tree / "labs" / "00_lab.ipynb").write_text("{}")
    out = tree / "branch"
    publish.student_branch(tree, out)
    assert sorted(p.name for p in (out / "labs").iterdir()) == ["00_lab.ipynb"]
    site = yaml.safe_load((ROOT / "_config.yml").read_text())["html"]["baseurl"]
    requirements = (out / "binder" / "requirements.txt").read_text()
    assert f"-c {site}course/constraints.txt" in requirements
    assert f"pruning-workbook[lab] @ {site}course/pruning_workbook-" in requirements
    assert (out / "binder" / "postBuild").stat().st_mode & 0o111
    assert not (out / "tests").exists() and not (out / "labkit").exists()
