"""The README fits on a few screens and every relative link in it and in docs/*.md leads
somewhere: to a file a fresh clone has (exists, not git-ignored: a DVC output such as
reports/figures/ is not there until a study runs) and, with `#anchor`, to a heading of that
markdown file under GitHub's slug rule.

    .venv/bin/python -m pytest -q tests/test_docs.py
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
MAX_README_LINES = 220

FENCE = re.compile(r"^[ \t]*(```|~~~).*?^[ \t]*\1[^\n]*$", re.MULTILINE | re.DOTALL)  # list items indent them
INLINE_CODE = re.compile(r"`[^`\n]*`")
# [text](target) and ![alt](target), with an optional "title"; the text may hold one
# level of brackets (a CI such as [+0.2, +4.3] followed by a space is not a link).
LINK = re.compile(r"!?\[(?:[^\[\]\n]|\[[^\[\]\n]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...


def prose(text: str) -> str:
    """Markdown without fenced code blocks and inline code: what links live in."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def links(text: str) -> list[str]:
    return LINK.findall(prose(text))


def slug(heading: str) -> str:
    """GitHub's heading anchor: markup stripped (code spans keep their text, links their
    label), lowercase, every character but letters, digits, '_', '-' and spaces dropped,
    spaces turned into '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
    text = "".join(c for c in text.lower() if c.isalnum() or c in "_- ")
    return text.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """Every heading's slug; a repeated heading gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    out = set()
    for heading in HEADING.findall(FENCE.sub("", markdown)):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def ignored_by_git(path: Path, root: Path) -> bool:
    """True where git would leave the path out of a clone; False when git cannot say
    (no git, or not a repository)."""
    if shutil.which("git") is None:
        return False
    done = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=root, capture_output=True)
    return done.returncode == 0


def broken_links(page: Path, root: Path) -> list[str]:
    """What is wrong with each relative link of `page`, as 'page: target: why'."""
    problems = []
    where = page.relative_to(root)
    for target in links(page.read_text(encoding="utf-8")):
        if EXTERNAL.match(target):
            continue
        path_part, _, anchor = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        if root not in (dest, *dest.parents):
            problems.append(f"{where}: {target}: leads outside the repository")
            continue
        if not dest.exists():
            problems.append(f"{where}: {target}: {dest.relative_to(root)} does not exist")
            continue
        if ignored_by_git(dest, root):
            problems.append(f"{where}: {target}: {dest.relative_to(root)} is git-ignored (a fresh clone lacks it)")
            continue
        if anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text(encoding="utf-8")):
            problems.append(f"{where}: {target}: no heading of {dest.relative_to(root)} has the anchor #{anchor}")
    return problems


def test_readme_fits_on_a_few_screens():
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_README_LINES, f"README.md has {n} lines; the long sections belong in docs/"


def test_readme_shows_the_two_commands_in_a_code_block():
    code = "\n".join(m.group(0) for m in FENCE.finditer(README.read_text(encoding="utf-8")))
    for command in ("make study", "make test"):
        assert re.search(rf"^[ \t]*{command}\b", code, re.MULTILINE), f"README.md shows no `{command}` command line"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_leads_to_a_file_and_heading(page):
    assert links(page.read_text(encoding="utf-8")), f"{page.relative_to(ROOT)} has no links at all"
    assert broken_links(page, ROOT) == []


def test_readme_links_every_docs_page_and_each_links_back():
    readme_targets = {t.partition("#")[0] for t in links(README.read_text(encoding="utf-8"))}
    for page in PAGES[1:]:
        name = page.relative_to(ROOT).as_posix()
        assert name in readme_targets, f"README.md does not link {name}"
        back = {t.partition("#")[0] for t in links(page.read_text(encoding="utf-8"))}
        assert "../README.md" in back, f"{name} does not link back to ../README.md"


def test_the_checker_reports_a_missing_file_a_bad_anchor_and_an_escape(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs/a.md").write_text("# A page\n\n## Two words, `code`!\n")
    page = tmp_path / "README.md"
    page.write_text(
        "[ok](docs/a.md#two-words-code) [ok too](#readme) [web](https://example.org/x.md)\n"
        "[gone](docs/missing.md) [bad](docs/a.md#nowhere) ![out](../outside.png)\n"
        "a CI [+0.2, +4.3] (kd, T = 8) and `[code](nowhere.md)` are not links\n\n"
        "```\n[fenced](nowhere.md)\n```\n\n1. a step\n\n   ```sh\n   [indented](nowhere.md)\n   ```\n\n# README\n")
    problems = broken_links(page, tmp_path)
    assert len(problems) == 3, problems
    assert "docs/missing.md does not exist" in problems[0]
    assert "#nowhere" in problems[1]
    assert "outside the repository" in problems[2]


def test_slugs_follow_github():
    assert slug("What the default study finds (Intel Xeon, seed 2026)") == \
        "what-the-default-study-finds-intel-xeon-seed-2026"
    assert slug("Transfer protocols: beyond augmentation?") == "transfer-protocols-beyond-augmentation"
    assert slug("snake_case and `code` -- kept") == "snake_case-and-code----kept"
    assert anchors("# X\n## X\n```\n# not a heading\n```\n") == {"x", "x-1"}
