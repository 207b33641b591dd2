"""One citation style in text and bibliography: author-year.

Papers whose first authors and year would print alike get "a", "b", ... after the year,
in the order of their titles (Han et al., 2016a and 2016b): the suffix is written into the
parsed entries' year, so the text, the hover titles and the bibliography all show it.
``{cite}`key``` prints "(Han et al., 2015)", ``{cite:t}`key``` "Han et al. (2015)", and
the bibliography lists every entry under its "Han et al., 2015" label, sorted by author
and year.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

from pybtex.plugin import register_plugin
from pybtex.richtext import Text
from pybtex.style.formatting.unsrt import Style as UnsrtStyle
from pybtex.style.labels import BaseLabelStyle
from sphinx.application import Sphinx
from sphinxcontrib.bibtex import plugin as bibtex_plugin
from sphinxcontrib.bibtex.style.referencing import BracketStyle
from sphinxcontrib.bibtex.style.referencing.author_year import AuthorYearReferenceStyle

SUFFIXES = "abcdefghijklmnopqrstuvwxyz"


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


def distinguish_years(entries) -> None:
    """Append a, b, ... to the year of entries whose author part and year coincide."""
    groups = defaultdict(list)
    for entry in entries.values():
        year = re.match(r"\d*", entry.fields.get("year", "")).group()
        groups[(author_part(entry), year)].append(entry)
    for (_, year), clashing in groups.items():
        if len(clashing) > 1:
            ordered = sorted(clashing, key=lambda entry: entry.fields.get("title", ""))
            for suffix, entry in zip(SUFFIXES, ordered, strict=False):
                entry.fields["year"] = f"{year}{suffix}"


class AuthorYearLabels(BaseLabelStyle):
    def format_labels(self, sorted_entries):
        for entry in sorted_entries:
            yield f"{author_part(entry)}, {entry.fields.get('year', 'n.d.')}"


class AuthorYearStyle(UnsrtStyle):
    default_label_style = AuthorYearLabels
    default_sorting_style = "author_year_title"


def _parentheses() -> BracketStyle:
    return BracketStyle(left="(", right=")", sep="; ")


@dataclass
class RoundAuthorYear(AuthorYearReferenceStyle):
    bracket_parenthetical: BracketStyle = field(default_factory=_parentheses)
    bracket_textual: BracketStyle = field(default_factory=_parentheses)
    bracket_author: BracketStyle = field(default_factory=_parentheses)
    bracket_label: BracketStyle = field(default_factory=_parentheses)
    bracket_year: BracketStyle = field(default_factory=_parentheses)


def on_builder_inited(app: Sphinx) -> None:
    distinguish_years(app.env.get_domain("cite").bibdata.data.entries)


def setup(app: Sphinx) -> dict:
    register_plugin("pybtex.style.formatting", "author_year", AuthorYearStyle)
    bibtex_plugin.register_plugin("sphinxcontrib.bibtex.style.referencing",
                                  "round_author_year", RoundAuthorYear)
    app.connect("builder-inited", on_builder_inited, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
