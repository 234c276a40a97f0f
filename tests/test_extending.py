"""docs/extending.md's examples run: every ```python block, each in a fresh namespace."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```$", DOC.read_text(), flags=re.S | re.M)


def test_the_page_has_an_example_for_each_way_to_extend():
    assert len(BLOCKS) == 4
    assert "extending.md" in (DOC.parent / "architecture.md").read_text()


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_example_runs(code):
    exec(compile(code, f"{DOC.name}:block", "exec"), {"__name__": "extending_example"})
