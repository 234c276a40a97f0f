"""House style, checked: no file in privmed/ over 400 lines, no function over 60, except the ones listed with why."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "privmed"
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60

#: file (relative to the repository) -> why it may be longer than MAX_FILE_LINES
LONG_FILES: dict[str, str] = {}
#: "file:function" -> why it may be longer than MAX_FUNCTION_LINES
LONG_FUNCTIONS: dict[str, str] = {}


def sizes(package: Path) -> tuple[dict[str, int], dict[str, int]]:
    """Lines of every file, and of every function (``file:name``, nested ones too), under ``package``."""
    root = package.parent
    files, functions = {}, {}
    for path in sorted(package.rglob("*.py")):
        name = str(path.relative_to(root))
        text = path.read_text()
        files[name] = len(text.splitlines())
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                functions[f"{name}:{node.name}"] = node.end_lineno - node.lineno + 1
    return files, functions


def too_long(package: Path, *, long_files=LONG_FILES, long_functions=LONG_FUNCTIONS) -> list[str]:
    """One line per file or function over its limit that the allow-lists do not name."""
    files, functions = sizes(package)
    found = [f"{name}: {n} lines (limit {MAX_FILE_LINES})" for name, n in files.items()
             if n > MAX_FILE_LINES and name not in long_files]
    found += [f"{name}: {n} lines (limit {MAX_FUNCTION_LINES})" for name, n in functions.items()
              if n > MAX_FUNCTION_LINES and name not in long_functions]
    return found


def test_no_file_or_function_over_the_limit():
    found = too_long(PACKAGE)
    assert not found, ("split these by concept, or add them to the allow-list in tests/test_sizes.py with the "
                       "reason:\n" + "\n".join(found))


def test_every_exception_is_still_needed():
    """An exception that is no longer over the limit leaves the list (so the list does not only grow)."""
    files, functions = sizes(PACKAGE)
    stale = [name for name in LONG_FILES if files.get(name, 0) <= MAX_FILE_LINES]
    stale += [name for name in LONG_FUNCTIONS if functions.get(name, 0) <= MAX_FUNCTION_LINES]
    assert not stale, f"remove from the allow-lists in tests/test_sizes.py (now within the limits): {stale}"


def test_the_check_can_fail(tmp_path):
    package = tmp_path / "toy"
    package.mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    (package / "long.py").write_text(f"def f():\n{body}\n" + "\n" * MAX_FILE_LINES)
    found = too_long(package, long_files={}, long_functions={})
    assert found == [f"toy/long.py: {MAX_FILE_LINES + MAX_FUNCTION_LINES + 1} lines (limit {MAX_FILE_LINES})",
                     f"toy/long.py:f: {MAX_FUNCTION_LINES + 1} lines (limit {MAX_FUNCTION_LINES})"]
    assert too_long(package, long_files={"toy/long.py": "why"}, long_functions={"toy/long.py:f": "why"}) == []
