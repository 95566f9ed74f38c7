"""The tables of a report section as lists of rows of cell texts (standard library only).

    tables(html, "digits")        # every <table> inside <section id="digits">
    section_text(html, "walkthrough")
"""

from __future__ import annotations

from html.parser import HTMLParser


class _Section(HTMLParser):
    """Collects the text and the tables of the <section> with the given id (nested
    sections included), ignoring everything outside it."""

    def __init__(self, section_id: str):
        super().__init__(convert_charrefs=True)
        self.section_id = section_id
        self.depth = 0  # <section> nesting inside the wanted one (0: outside)
        self.found = False
        self.text: list[str] = []
        self.tables: list[list[list[str]]] = []
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "section":
            if self.depth:
                self.depth += 1
            elif dict(attrs).get("id") == self.section_id:
                self.depth, self.found = 1, True
        if not self.depth:
            return
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if not self.depth:
            return
        if tag == "section":
            self.depth -= 1
        elif tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None and self.tables:
            self.tables[-1].append(self._row)
            self._row = None

    def handle_data(self, data):
        if self.depth:
            self.text.append(data)
            if self._cell is not None:
                self._cell.append(data)


def _parse(html: str, section_id: str) -> _Section:
    p = _Section(section_id)
    p.feed(html)
    p.close()
    if not p.found:
        raise AssertionError(f'no <section id="{section_id}"> in the report')
    return p


def tables(html: str, section_id: str) -> list[list[list[str]]]:
    """Every table inside the section: a list of rows (header row first), each a list of cell texts."""
    return _parse(html, section_id).tables


def section_text(html: str, section_id: str) -> str:
    """The section's visible text, whitespace collapsed."""
    return " ".join("".join(_parse(html, section_id).text).split())
