"""Fill in the course's home, set once in ``_config.yml``, wherever a page names it.

``{{ course_repository }}`` becomes ``repository.url`` (Jupyter Book passes it to the
theme as ``repository_url``), ``{{ course_folder }}`` the folder a clone of it makes,
and ``{{ course_site }}`` ``html.baseurl`` (Sphinx's ``html_baseurl``). The tokens are
replaced in the page's source, so they work in code blocks too, as in the intro's
clone command.
"""

from sphinx.application import Sphinx
from sphinx.errors import ConfigError


def course_values(app: Sphinx) -> dict[str, str]:
    repository = (app.config.html_theme_options or {}).get("repository_url", "").rstrip("/")
    site = (app.config.html_baseurl or "").rstrip("/") + "/"
    if not repository or site == "/":
        raise ConfigError("_config.yml must set repository.url and html.baseurl, the course's "
                          f"home; got {repository!r} and {site!r}")
    return {"course_repository": repository, "course_site": site,
            "course_folder": repository.rsplit("/", 1)[-1].removesuffix(".git")}


def fill_in(app: Sphinx, docname: str, source: list[str]) -> None:
    for name, value in course_values(app).items():
        source[0] = source[0].replace("{{ " + name + " }}", value)


def setup(app: Sphinx) -> dict:
    app.connect("source-read", fill_in)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
