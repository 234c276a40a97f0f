"""The documentation points at files that exist: markdown links, and repository paths named in backticks."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)#\s]+)\)")
#: a path in backticks that names a file of the repository (folders and globs are left out)
NAMED_FILE = re.compile(r"`((?:privmed|benchmarks|docs|studies|tests)/[\w./-]+\.(?:md|py|yaml|csv|sh))`")


def _targets(document: Path) -> list[tuple[str, Path]]:
    text = document.read_text()
    links = [(link, document.parent / link) for link in LINK.findall(text) if "://" not in link]
    named = [(name, ROOT / name) for name in NAMED_FILE.findall(text)]
    return links + named


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_file_the_documentation_names_exists(document):
    missing = [name for name, path in _targets(document) if not path.exists()]
    assert not missing, f"{document.name} names files that do not exist: {missing}"


def test_the_link_check_can_fail(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("see [there](nowhere.md) and `benchmarks/no_such_script.py`")
    assert [name for name, path in _targets(page) if not path.exists()] == ["nowhere.md", "benchmarks/no_such_script.py"]


def test_the_readme_stays_a_five_minute_guide():
    """Findings and long explanations live in docs/, benchmark details in benchmarks/README.md."""
    assert len((ROOT / "README.md").read_text().splitlines()) < 200
