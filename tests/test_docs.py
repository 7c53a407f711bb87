"""The README and docs/ pages point only at things in the repository.

- every relative link in README.md and docs/*.md resolves to a file or folder of the repository,
  and to a heading of the target page where the link names an anchor;
- every ``docs/<page>.md`` named in code, properties, tests or CI exists, and a heading quoted
  after it (``docs/data.md, "The raw files"``) is one of that page's headings;
- no file refers to the design notes or the paper's README copy that live outside the
  repository (they are not shipped; the facts are in docs/).

Pure: reads files only.
"""

from __future__ import annotations

import re
import subprocess
import unicodedata
from pathlib import Path

from conftest import REPO

FENCE = re.compile(r"^(```|~~~)")
LINK = re.compile(r"(?<!!)\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
INLINE_CODE = re.compile(r"`[^`]*`")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
DOCS_POINTER = re.compile(r"docs/([A-Za-z0-9_.-]+\.md)(?:#([A-Za-z0-9_-]+)|,\s*\"([^\"]+)\")?")

# Built from parts so that this file does not mention them itself.
OUTSIDE = [
    re.compile(r"(?<![\w/.-])" + "DATA" + r"\.md\b"),
    re.compile(r"(?<![\w/.-])" + "STACK" + r"\.md\b"),
    re.compile(r"(?<![\w/.-])" + "ARCHITECTURE" + r"\.md\b"),
    re.compile("seed" + r"\s+README", re.I),
    re.compile(r"shared/" + "design"),
    re.compile(r"shared/" + "seed"),
]


def tracked_files() -> list[Path]:
    """The repository's files: git's list in a checkout, else every file outside build folders."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True)
        names = [n for n in out.stdout.decode().split("\0") if n]
        if names:
            return [REPO / n for n in names if (REPO / n).is_file()]
    except (OSError, subprocess.CalledProcessError):
        pass
    skip = {".git", ".venv", ".venv-modern", "dataset", "dataset_atomic", "results", "saved", "log",
            "log_tensorboard", "build", "dist", "__pycache__", ".pytest_cache"}
    return [p for p in REPO.rglob("*") if p.is_file() and not skip & set(p.relative_to(REPO).parts)]


def text_of(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None


def prose_lines(text: str):
    """(line number, line) outside fenced code blocks."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: link and code markup dropped, lower case, punctuation
    removed (letters, digits, spaces, hyphens and underscores stay), spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").strip().lower()
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return kept.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    for _, line in prose_lines(page.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def headings(page: Path) -> set[str]:
    return {m.group(2) for _, line in prose_lines(page.read_text(encoding="utf-8"))
            if (m := HEADING.match(line))}


def doc_pages() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def test_the_docs_exist():
    pages = doc_pages()
    assert (REPO / "docs" / "README.md") in pages and len(pages) > 2


def test_every_relative_link_resolves():
    broken = []
    for page in doc_pages():
        for number, line in prose_lines(page.read_text(encoding="utf-8")):
            for target in LINK.findall(INLINE_CODE.sub("", line)):
                if re.match(r"^[a-z][a-z0-9+.-]*:", target, flags=re.I):
                    continue  # http:, https:, mailto: ...
                where = f"{page.relative_to(REPO)}:{number}: {target}"
                path_part, _, anchor = target.partition("#")
                resolved = (page.parent / path_part).resolve() if path_part else page
                try:
                    resolved.relative_to(REPO)
                except ValueError:
                    broken.append(f"{where} (outside the repository)")
                    continue
                if not resolved.exists():
                    broken.append(f"{where} (no such file)")
                elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                    broken.append(f"{where} (no heading with that anchor)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_every_docs_pointer_in_the_repository_resolves():
    broken = []
    for path in tracked_files():
        text = text_of(path)
        if text is None or path.suffix == ".md" and path.parent in (REPO, REPO / "docs"):
            continue  # the pages' own links are checked above
        for number, line in enumerate(text.splitlines(), 1):
            for page_name, anchor, heading in DOCS_POINTER.findall(line):
                page = REPO / "docs" / page_name
                where = f"{path.relative_to(REPO)}:{number}: docs/{page_name}"
                if not page.is_file():
                    broken.append(f"{where} (no such page)")
                elif anchor and anchor not in anchors(page):
                    broken.append(f"{where}#{anchor} (no heading with that anchor)")
                elif heading and heading not in headings(page):
                    broken.append(f'{where}, "{heading}" (no such heading)')
    assert not broken, "pointers to missing docs:\n" + "\n".join(broken)


def test_nothing_points_outside_the_repository():
    found = []
    for path in tracked_files():
        text = text_of(path)
        if text is None:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if any(pattern.search(line) for pattern in OUTSIDE):
                found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()[:120]}")
    assert not found, "references to notes that are not in the repository:\n" + "\n".join(found)


def test_the_slug_follows_github():
    assert slug("Feature-fair baselines (`+mm`)") == "feature-fair-baselines-mm"
    assert slug("The paper's model and recipe") == "the-papers-model-and-recipe"
    assert slug("Engine: Ray, faults & retries") == "engine-ray-faults--retries"
