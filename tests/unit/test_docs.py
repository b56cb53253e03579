"""The documentation stays inside the repository: its relative links lead to files (and
headings) that exist here, and no tracked file points at notes kept outside the repository."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
OUTSIDE = ("../" + "shared", "shared/" + "DESIGN.md")
"""Paths of notes outside the repository (spelled in two pieces so this file has neither)."""

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
_CODE = re.compile(r"`[^`\n]*`")
_INLINE = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s{0,3}\[[^\]\n]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.M)
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def _prose(text: str) -> str:
    """Markdown without code blocks and code spans (whose brackets are not links)."""
    return _CODE.sub("", _FENCE.sub("", text))


def relative_links(md: Path) -> list[str]:
    """The relative link targets of a Markdown file (URLs and mail addresses left out)."""
    text = _prose(md.read_text(encoding="utf-8"))
    targets = _INLINE.findall(text) + _REFERENCE.findall(text)
    return [t for t in targets if not _SCHEME.match(t)]


def anchors(md: Path) -> set[str]:
    """The heading anchors GitHub makes for a Markdown file."""
    slugs: set[str] = set()
    for heading in _HEADING.findall(_FENCE.sub("", md.read_text(encoding="utf-8"))):
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
        slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        slugs.add(slug)
    return slugs


def test_the_docs_are_found() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in DOCS}
    assert {"README.md", "docs/architecture.md", "docs/reference.md"} <= names


@pytest.mark.parametrize("md", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_lead_to_files_in_the_repository(md: Path) -> None:
    broken = []
    for target in relative_links(md):
        path, _, fragment = target.partition("#")
        file = (md.parent / path).resolve() if path else md
        if not file.is_relative_to(ROOT):
            broken.append(f"{target}: outside the repository")
        elif not file.exists():
            broken.append(f"{target}: no such file")
        elif fragment and file.suffix == ".md" and fragment not in anchors(file):
            broken.append(f"{target}: no heading #{fragment} in {file.relative_to(ROOT)}")
    assert not broken, f"{md.relative_to(ROOT)}: " + "; ".join(broken)


def _tracked_files() -> list[Path]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    return [ROOT / name for name in listed.split("\0") if name]


def test_no_tracked_file_points_outside_the_repository() -> None:
    needles = [n.encode() for n in OUTSIDE]
    offenders = []
    for file in _tracked_files():
        if not file.is_file() or file.is_symlink():
            continue  # deleted in the work tree, or a link
        data = file.read_bytes()
        offenders += [f"{file.relative_to(ROOT)}: {n.decode()}" for n in needles if n in data]
    assert not offenders, "tracked files refer to notes outside the repository: " + ", ".join(
        offenders
    )


def test_the_link_finder_finds_links() -> None:
    sample = ROOT / "docs" / "reference.md"
    assert "architecture.md" in relative_links(sample)
    assert "configuration" in anchors(sample)
