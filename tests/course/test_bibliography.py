"""Every work the book cites can be found: each entry has a DOI, an arXiv entry or an
address, and the course itself links its lectures."""


import pytest
from pybtex.database import parse_file

from tests.support.paths import ROOT

ENTRIES = parse_file(ROOT / "book" / "references.bib").entries


@pytest.mark.parametrize("key", sorted(ENTRIES))
def test_every_entry_links_to_the_work(key):
    fields = ENTRIES[key].fields
    assert {"doi", "url", "eprint"} & set(fields), f"{key}: no doi, url or eprint"
    if "eprint" in fields:
        assert fields.get("archiveprefix") == "arXiv" and fields["eprint"][:4].isdigit()
    if "url" in fields:
        assert fields["url"].startswith("https://")
    if "doi" in fields:
        assert fields["doi"].startswith("10.")


def test_the_course_is_cited_with_its_page_of_videos_and_slides():
    course = ENTRIES["mit65940"].fields
    assert course["url"] == "https://hanlab.mit.edu/courses/2024-fall-65940"
    assert course["year"] == "2024" and "videos and slides" in course["howpublished"]
