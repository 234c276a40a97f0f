"""The public Python API: ``privmed.__all__``, loaded lazily (PEP 562)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NEEDED = {"train", "evaluate_run", "compare_runs", "audit_run", "run_study", "RunConfig", "config_from_dict",
          "StudyConfig", "read_record", "__version__"}


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
