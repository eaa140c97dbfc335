"""Every pointer to a section of a doc (`docs/<name>.md`, "<section>") names a heading or a bold label of
that doc, so moving or renaming a section cannot leave the code, configs and docs pointing at nothing."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [
    "*.md",
    "docs/*.md",
    "*.py",
    "speech/**/*.py",
    "scripts/**/*.py",
    "eval/**/*.py",
    "configs/**/*.yaml",
]
# `docs/x.md`, "Section" or `docs/x.md` ("Section"; the quote may wrap over lines
POINTER = re.compile(r'(docs/[\w.-]+\.md)`?,?\s*\(?"([^"]+)"')


def _words(text: str) -> str:
    return " ".join(text.split()).rstrip(".,:;")


def labels(doc: Path) -> list[str]:
    """The headings and the bold labels (``**...**``) of a markdown file."""
    text = re.sub(r"`[^`\n]*`", lambda code: code[0].replace("*", ""), doc.read_text())  # `C ** q` is no bold
    headings = [line.lstrip("#") for line in text.splitlines() if line.startswith("#")]
    return [_words(label) for label in headings + re.findall(r"\*\*(.+?)\*\*", text, re.S)]


def pointers() -> list[tuple[str, str, str]]:
    found = []
    for pattern in SOURCES:
        for path in sorted(ROOT.glob(pattern)):
            if ".venv" in path.parts:
                continue
            for match in POINTER.finditer(path.read_text(errors="replace")):
                found.append((str(path.relative_to(ROOT)), match.group(1), _words(match.group(2))))
    return found


def test_the_sources_point_at_sections():
    """The pattern finds the pointers this test is for (a broken pattern would pass everything)."""
    found = pointers()
    assert len(found) >= 40
    training = ("docs/training.md", "a run that would continue on another tokenizer's tokens")
    assert ("docs/main_job.md", *training) in found


@pytest.mark.parametrize(("source", "doc", "section"), pointers())
def test_every_pointer_names_a_section_of_its_doc(source, doc, section):
    assert (ROOT / doc).exists(), f"{source} points at {doc}, which does not exist"
    known = labels(ROOT / doc)
    assert any(label.startswith(section) for label in known), (
        f'{source} points at {doc}, "{section}", which is neither a heading nor a bold label there'
    )
