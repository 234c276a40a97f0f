"""The public Python API: ``privmed.__all__``, loaded lazily (PEP 562)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NEEDED = {"train", "evaluate_run", "compare_runs", "audit_run", "run_study", "RunConfig", "config_from_dict",
          "StudyConfig", "read_record", "read_metrics", "DataConfig", "load_dataset", "__version__"}


def _python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_import_privmed_lists_the_public_names_and_loads_nothing_heavy():
    out = json.loads(_python("import json, sys, privmed; print(json.dumps({'all': privmed.__all__, "
                             "'heavy': sorted(m for m in ('torch', 'opacus', 'privmed.training') if m in sys.modules)}))"))
    assert NEEDED <= set(out["all"])
    assert out["heavy"] == [], "import privmed must stay fast: names load on first use"


def test_every_public_name_resolves_to_what_its_module_defines():
    out = _python("import privmed\nfor name in privmed.__all__:\n"
                  "    value = getattr(privmed, name)\n"
                  "    assert name == '__version__' or getattr(value, '__module__', '').startswith('privmed.'), name\n"
                  "print(sorted(set(dir(privmed)) & set(privmed.__all__)) == sorted(privmed.__all__))")
    assert out.strip() == "True"


def test_an_unknown_name_is_an_attribute_error():
    import privmed

    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        privmed.nothing  # noqa: B018
    from privmed import config_from_dict
    from privmed.config import config_from_dict as defined

    assert config_from_dict is defined


# --------------------------------------------------------------------------- benchmarks use the public API

BENCHMARKS = ROOT / "benchmarks"
PACKAGE = ROOT / "privmed"
#: benchmarks that measure privmed's internals on purpose: why, and the internal modules each may import
#: (None: any). Every other benchmark imports only names of ``privmed.__all__``. Shrink this, never grow it.
MEASURE_INTERNALS: dict[str, tuple[str, frozenset[str] | None]] = {
    "dp_speed.py": ("DP step time per model, Opacus mode and (--backbones) freeze mode, below any run", None),
    "scale.py": ("memory and step time of the private step and its processes at scale", None),
    "cbis_utility.py": ("the one-shot private head and the centre it releases, planned and composed on features in "
                        "memory; the shifted scanner and acquisition augmentation",
                        frozenset({"privmed.config", "privmed.data.shift", "privmed.privacy.plan",
                                   "privmed.privacy.randomness", "privmed.training.centre", "privmed.training.dp_head"})),
    "transfer.py": ("the shortcut figures (acquisition strata and clusters, lesion mask) and the shifted scanner, on "
                    "images in memory", frozenset({"privmed.data.shift", "privmed.evaluation.shortcut"})),
    "feature_centre.py": ("the private feature centre's release and its share of the budget",
                          frozenset({"privmed.config", "privmed.privacy.plan", "privmed.privacy.randomness",
                                     "privmed.privacy.units", "privmed.training.centre", "privmed.privacy.engine",
                                     "privmed.training.synthetic"})),
    "private_evolution.py": ("the evolution's candidate prior beside the images it writes",
                             frozenset({"privmed.synth.candidates", "privmed.synth.evolve"})),
}


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def internal_imports(path: Path, public: set[str]) -> set[str]:
    """The privmed modules below the public API that ``path`` imports (at any depth of the file)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("privmed.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "privmed":
                found |= {f"privmed.{a.name}" for a in node.names if a.name not in public}
            elif node.module.startswith("privmed."):
                found |= {f"{node.module}.{a.name}" if _is_module(f"{node.module}.{a.name}") else node.module
                          for a in node.names}
    return found


def test_benchmarks_import_only_the_public_api_except_those_measuring_internals():
    import privmed

    public = set(privmed.__all__)
    scripts = sorted(BENCHMARKS.glob("*.py"))
    assert len(scripts) > 10
    outside = {}
    for path in scripts:
        imported = internal_imports(path, public)
        reason, allowed = MEASURE_INTERNALS.get(path.name, ("", frozenset()))
        extra = imported - allowed if allowed is not None else set()
        if extra:
            outside[path.name] = sorted(extra)
        if path.name in MEASURE_INTERNALS:  # the list says what is true today, so it can only shrink
            assert imported, f"{path.name} imports no internals any more: remove it from MEASURE_INTERNALS"
            assert allowed is None or imported == allowed, (path.name, sorted(allowed - imported))
    assert not outside, f"benchmarks importing names outside privmed.__all__: {outside}"
    assert set(MEASURE_INTERNALS) <= {p.name for p in scripts}


def test_the_scan_sees_every_form_of_internal_import(tmp_path):
    script = tmp_path / "b.py"
    script.write_text("import privmed.rundir\nfrom privmed import train, rundir\nfrom privmed.synth import candidates\n"
                      "def f():\n    from privmed.training.trainer import train_in_memory\n")
    assert internal_imports(script, {"train"}) == {"privmed.rundir", "privmed.synth.candidates",
                                                   "privmed.training.trainer"}


def test_read_metrics_refuses_a_folder_without_them_and_says_what_to_do(tmp_path):
    from privmed import PrivmedError, read_metrics
    from privmed.errors import METRICS_MISSING

    with pytest.raises(PrivmedError) as err:
        read_metrics(tmp_path)
    assert str(err.value) == METRICS_MISSING.format(path=tmp_path / "metrics.json")
    (tmp_path / "metrics.json").write_text('{"splits": {"test": {"n": 3}}}')
    assert read_metrics(tmp_path)["splits"]["test"]["n"] == 3


# --------------------------------------------------------------------------- docs/api.md runs as written

API_DOC = ROOT / "docs" / "api.md"


def test_the_api_page_examples_run_in_order():
    """Each ```python block of docs/api.md, one after the other in one namespace (later blocks use the run)."""
    import re

    blocks = re.findall(r"^```python\n(.*?)^```$", API_DOC.read_text(), flags=re.S | re.M)
    assert len(blocks) >= 4
    namespace = {"__name__": "api_example"}
    for i, code in enumerate(blocks):
        exec(compile(code, f"{API_DOC.name}:block{i}", "exec"), namespace)


def test_the_api_page_names_every_public_name():
    import privmed

    text = API_DOC.read_text()
    missing = [name for name in privmed.__all__ if name != "__version__" and f"`{name}`" not in text]
    assert not missing, f"docs/api.md does not name {missing}"
