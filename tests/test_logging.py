"""The library logs and never prints; the command line shows its records as ``privmed: ...`` lines."""

import ast
import logging
from pathlib import Path

from privmed.cli import main
from privmed.cli.logs import show_library_logs

PACKAGE = Path(__file__).resolve().parents[1] / "privmed"


def prints(package: Path) -> list[str]:
    """``file:line`` of every call of ``print`` in the package outside the command line."""
    found = []
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package.parent)
        if relative.parts[1] == "cli" or path.name == "__main__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                found.append(f"{relative}:{node.lineno}")
    return found


def test_no_library_module_prints(tmp_path):
    assert prints(PACKAGE) == [], "log with logging.getLogger(__name__) instead; the CLI shows the records"
    (tmp_path / "toy" / "cli").mkdir(parents=True)
    (tmp_path / "toy" / "a.py").write_text("def f():\n    print('x')\n")
    (tmp_path / "toy" / "cli" / "b.py").write_text("print('shown by the command line')\n")
    assert prints(tmp_path / "toy") == ["toy/a.py:2"]  # the check can fail, and spares the CLI


def test_the_command_line_shows_library_notes_as_privmed_lines(capsys):
    show_library_logs()
    show_library_logs()  # once per process however often main() runs: one line, not two
    logging.getLogger("privmed.data.sources").warning("a note about the data")
    logging.getLogger("privmed.progress").info("reading images: 5/10 img (50%), 6 s so far")
    logging.getLogger("elsewhere").warning("not privmed's")
    err = capsys.readouterr().err.splitlines()
    assert err.count("privmed: a note about the data") == 1
    assert any(line.endswith(" privmed: reading images: 5/10 img (50%), 6 s so far") and line[2] == ":"
               for line in err)  # a progress line keeps its time, as privmed.progress writes it
    assert not any("not privmed's" in line and line.startswith("privmed:") for line in err)


def test_a_restarted_run_is_noted_through_the_log(tmp_path, capsys, phantom_root):
    """A run stopped before its first checkpoint starts again; the note reaches the user as before."""
    from privmed import rundir

    out = tmp_path / "run"
    out.mkdir()
    (out / rundir.CONFIG).write_text("training: {epochs: 1}\n")  # started, stopped before any checkpoint
    code = main(["train", "--data", str(phantom_root), "--out", str(out), "--image-size", "32", "--epochs", "1",
                 "--batch-size", "32", "--bootstrap", "100", "--model", "resnet9_small", "--augment", "false"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert any(line.startswith("privmed: ") and str(out) in line for line in err.splitlines()), err
