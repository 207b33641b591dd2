"""One citation style in text and bibliography: author-year labels.

Each entry of the bibliography files gets the label "Author, year", "Author and Other,
year" or "Author et al., year"; papers with the same label get "a", "b", ... after the
year, in the order of their titles (Han et al., 2016a and 2016b). The text cites with
the same label in parentheses, ``(Han et al., 2015)``, several separated by semicolons,
and the bibliography lists the entries under those labels, sorted by author and year.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from pybtex.database import parse_file
from pybtex.plugin import register_plugin
from pybtex.richtext import Text
from pybtex.style.formatting.unsrt import Style as UnsrtStyle
from pybtex.style.labels import BaseLabelStyle
from sphinx.application import Sphinx
from sphinxcontrib.bibtex import plugin as bibtex_plugin
from sphinxcontrib.bibtex.style.referencing import BracketStyle
from sphinxcontrib.bibtex.style.referencing.label import LabelReferenceStyle

LABELS: dict[str, str] = {}


def _surname(person) -> str:
    return Text.from_latex(" ".join(person.prelast_names + person.last_names)).render_as("text")


def author_part(entry) -> str:
    """"Han", "Zhu and Gupta" or "Han et al." from an entry's authors."""
    people = entry.persons.get("author", [])
    if not people:
        return Text.from_latex(entry.fields["title"]).render_as("text")
    if len(people) == 1:
        return _surname(people[0])
    if len(people) == 2:
        return f"{_surname(people[0])} and {_surname(people[1])}"
    return f"{_surname(people[0])} et al."


def author_year_labels(bibfiles: list[Path]) -> dict[str, str]:
    """The label of every entry of ``bibfiles``, with a, b, ... where labels would clash."""
    groups = defaultdict(list)
    for bibfile in bibfiles:
        for key, entry in parse_file(str(bibfile)).entries.items():
            groups[(author_part(entry), entry.fields.get("year", "n.d."))].append(
                (entry.fields.get("title", ""), key))
    labels = {}
    for (authors, year), entries in groups.items():
        suffixes = "abcdefghijklmnopqrstuvwxyz"[:len(entries)] if len(entries) > 1 else [""]
        for suffix, (_, key) in zip(suffixes, sorted(entries), strict=True):
            labels[key] = f"{authors}, {year}{suffix}"
    return labels


class AuthorYearLabels(BaseLabelStyle):
    def format_labels(self, sorted_entries):
        for entry in sorted_entries:
            yield LABELS[entry.key]


class AuthorYearStyle(UnsrtStyle):
    default_label_style = AuthorYearLabels
    default_sorting_style = "author_year_title"


def _parentheses() -> BracketStyle:
    return BracketStyle(left="(", right=")", sep="; ")


@dataclass
class AuthorYearReferences(LabelReferenceStyle):
    bracket_parenthetical: BracketStyle = field(default_factory=_parentheses)
    bracket_textual: BracketStyle = field(default_factory=_parentheses)
    bracket_label: BracketStyle = field(default_factory=_parentheses)


def load_labels(app: Sphinx) -> None:
    root = Path(app.srcdir)
    LABELS.update(author_year_labels([root / name for name in app.config.bibtex_bibfiles]))


def setup(app: Sphinx) -> dict:
    register_plugin("pybtex.style.formatting", "author_year", AuthorYearStyle)
    bibtex_plugin.register_plugin("sphinxcontrib.bibtex.style.referencing",
                                  "author_year_labels", AuthorYearReferences)
    app.connect("builder-inited", load_labels)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
